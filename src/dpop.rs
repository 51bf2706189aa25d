//! DPoP (RFC 9449): a session's EC P-256 key, the proofs made with it (for the
//! token endpoint and for each upstream request), and the check of a proof, which
//! the development IdP and the echo upstream use.
//!
//! A proof is a JWS (`typ` `dpop+jwt`, `alg` ES256, the public key as `jwk`) over
//! `jti`, `htm` (the method), `htu` (the URL without query and fragment), `iat`,
//! and, when the request carries an access token, `ath` (its SHA-256), and a
//! `nonce` when the server asked for one.
//!
//! ```
//! use bff_proxy::dpop::{DpopKey, check_proof};
//!
//! let key = DpopKey::generate().unwrap();
//! let proof = key.proof("GET", "https://api.example/orders", Some("token"), None, 1_000).unwrap();
//! let seen = check_proof(&proof, "GET", "https://api.example/orders", Some("token"), 1_000).unwrap();
//! assert_eq!(seen.jkt, key.thumbprint());
//! ```

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SystemRandom;
use ring::signature::{
    ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _,
    UnparsedPublicKey,
};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

/// How far a proof's `iat` may be from the checker's clock, in seconds.
pub const PROOF_LEEWAY: u64 = 60;

/// The wall clock in Unix seconds: proofs are made and checked on it (a server
/// that checks one knows no other time).
#[must_use]
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The longest proof checked.
const MAX_PROOF: usize = 4096;

/// A session's DPoP key: an EC P-256 key pair, kept as its PKCS#8 document.
#[derive(Clone, PartialEq, Eq)]
pub struct DpopKey {
    pkcs8: Vec<u8>,
}

impl fmt::Debug for DpopKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DpopKey({})", self.thumbprint())
    }
}

impl DpopKey {
    /// A new key from the operating system's generator.
    pub fn generate() -> Result<Self, String> {
        let doc =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                .map_err(|_| "cannot generate a DPoP key".to_owned())?;
        Ok(Self {
            pkcs8: doc.as_ref().to_vec(),
        })
    }

    /// The key a session kept ([`DpopKey::to_pkcs8`]); None when it does not parse.
    #[must_use]
    pub fn from_pkcs8(pkcs8: &[u8]) -> Option<Self> {
        Self::pair(pkcs8).map(|_| Self {
            pkcs8: pkcs8.to_vec(),
        })
    }

    /// The PKCS#8 document, to keep in the sealed session.
    #[must_use]
    pub fn to_pkcs8(&self) -> &[u8] {
        &self.pkcs8
    }

    fn pair(pkcs8: &[u8]) -> Option<EcdsaKeyPair> {
        EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            pkcs8,
            &SystemRandom::new(),
        )
        .ok()
    }

    /// The public key as a JWK (`kty`, `crv`, `x`, `y`).
    #[must_use]
    pub fn jwk(&self) -> Value {
        let point = Self::pair(&self.pkcs8)
            .map(|p| p.public_key().as_ref().to_vec())
            .unwrap_or_default();
        jwk_of_point(&point).unwrap_or(Value::Null)
    }

    /// The JWK SHA-256 thumbprint (RFC 7638) of the public key: what an access
    /// token bound to it names as `cnf.jkt`.
    #[must_use]
    pub fn thumbprint(&self) -> String {
        thumbprint(&self.jwk()).unwrap_or_default()
    }

    /// A proof for a request with `method` to `url` (its query and fragment are
    /// left out), carrying `access_token` (as `ath`) and `nonce` when given, made at
    /// `iat` (Unix seconds).
    pub fn proof(
        &self,
        method: &str,
        url: &str,
        access_token: Option<&str>,
        nonce: Option<&str>,
        iat: u64,
    ) -> Result<String, String> {
        let pair = Self::pair(&self.pkcs8).ok_or("the DPoP key does not parse")?;
        let header = json!({
            "typ": "dpop+jwt",
            "alg": "ES256",
            "jwk": jwk_of_point(pair.public_key().as_ref()).ok_or("bad public key")?,
        });
        let mut claims = json!({
            "jti": crate::random::random_text(16),
            "htm": method,
            "htu": htu(url),
            "iat": iat,
        });
        if let Some(at) = access_token {
            claims["ath"] = ath(at).into();
        }
        if let Some(n) = nonce {
            claims["nonce"] = n.into();
        }
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = pair
            .sign(&SystemRandom::new(), signing_input.as_bytes())
            .map_err(|_| "cannot sign the DPoP proof".to_owned())?;
        Ok(format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature.as_ref())
        ))
    }
}

/// A URL as `htu` names it: without query and fragment.
#[must_use]
pub fn htu(url: &str) -> &str {
    let end = url.find(['?', '#']).unwrap_or(url.len());
    &url[..end]
}

/// `ath`: the base64url SHA-256 of an access token.
#[must_use]
pub fn ath(access_token: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(access_token.as_bytes()))
}

fn jwk_of_point(point: &[u8]) -> Option<Value> {
    // An uncompressed P-256 point: 0x04, x (32 bytes), y (32 bytes).
    if point.len() != 65 || point[0] != 4 {
        return None;
    }
    Some(json!({
        "kty": "EC",
        "crv": "P-256",
        "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
        "y": URL_SAFE_NO_PAD.encode(&point[33..]),
    }))
}

/// The RFC 7638 thumbprint of an EC JWK: the SHA-256 of its required members in
/// lexicographic order, base64url.
#[must_use]
pub fn thumbprint(jwk: &Value) -> Option<String> {
    let (crv, x, y) = (
        jwk.get("crv")?.as_str()?,
        jwk.get("x")?.as_str()?,
        jwk.get("y")?.as_str()?,
    );
    if jwk.get("kty")?.as_str()? != "EC" {
        return None;
    }
    let canonical = format!(r#"{{"crv":"{crv}","kty":"EC","x":"{x}","y":"{y}"}}"#);
    Some(URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes())))
}

/// What a valid proof says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedProof {
    /// The thumbprint of the key that signed it.
    pub jkt: String,
    /// Its `jti` (for the checker's replay cache).
    pub jti: String,
    /// Its `nonce`, if any.
    pub nonce: Option<String>,
}

/// Checks a proof for a request with `method` to `url`: its form, the ES256
/// signature by the key in its header, `htm`, `htu`, `iat` within
/// [`PROOF_LEEWAY`] of `now`, and `ath` when the request carries `access_token`.
pub fn check_proof(
    proof: &str,
    method: &str,
    url: &str,
    access_token: Option<&str>,
    now: u64,
) -> Result<CheckedProof, &'static str> {
    if proof.len() > MAX_PROOF {
        return Err("the proof is too long");
    }
    let mut parts = proof.split('.');
    let (Some(h), Some(c), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("the proof is not a JWS");
    };
    let decode = |part: &str| -> Result<Value, &'static str> {
        let bytes = URL_SAFE_NO_PAD.decode(part).map_err(|_| "bad base64")?;
        serde_json::from_slice(&bytes).map_err(|_| "bad JSON")
    };
    let header = decode(h)?;
    let claims = decode(c)?;
    if header.get("typ").and_then(Value::as_str) != Some("dpop+jwt") {
        return Err("typ is not dpop+jwt");
    }
    if header.get("alg").and_then(Value::as_str) != Some("ES256") {
        return Err("alg is not ES256");
    }
    let jwk = header.get("jwk").ok_or("no jwk in the header")?;
    if jwk.get("d").is_some() {
        return Err("the jwk holds a private key");
    }
    let coord = |name: &str| -> Result<Vec<u8>, &'static str> {
        let text = jwk
            .get(name)
            .and_then(Value::as_str)
            .ok_or("jwk coordinates missing")?;
        let bytes = URL_SAFE_NO_PAD
            .decode(text)
            .map_err(|_| "bad jwk coordinate")?;
        (bytes.len() == 32)
            .then_some(bytes)
            .ok_or("bad jwk coordinate")
    };
    if jwk.get("kty").and_then(Value::as_str) != Some("EC")
        || jwk.get("crv").and_then(Value::as_str) != Some("P-256")
    {
        return Err("the jwk is not an EC P-256 key");
    }
    let mut point = vec![4u8];
    point.extend(coord("x")?);
    point.extend(coord("y")?);
    let signature = URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|_| "bad signature encoding")?;
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &point)
        .verify(format!("{h}.{c}").as_bytes(), &signature)
        .map_err(|_| "the signature does not verify")?;
    if claims.get("htm").and_then(Value::as_str) != Some(method) {
        return Err("htm is not the request's method");
    }
    if claims.get("htu").and_then(Value::as_str) != Some(htu(url)) {
        return Err("htu is not the request's URL");
    }
    let iat = claims.get("iat").and_then(Value::as_u64).ok_or("no iat")?;
    if iat.abs_diff(now) > PROOF_LEEWAY {
        return Err("iat is too far from now");
    }
    let jti = claims
        .get("jti")
        .and_then(Value::as_str)
        .filter(|j| !j.is_empty())
        .ok_or("no jti")?;
    if let Some(at) = access_token {
        if claims.get("ath").and_then(Value::as_str) != Some(ath(at).as_str()) {
            return Err("ath is not the access token's hash");
        }
    }
    Ok(CheckedProof {
        jkt: thumbprint(jwk).ok_or("bad jwk")?,
        jti: jti.to_owned(),
        nonce: claims
            .get("nonce")
            .and_then(Value::as_str)
            .map(str::to_owned),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proofs_check_and_bind() {
        let key = DpopKey::generate().unwrap();
        let again = DpopKey::from_pkcs8(key.to_pkcs8()).unwrap();
        assert_eq!(again.thumbprint(), key.thumbprint());
        assert_eq!(key.thumbprint().len(), 43);
        let url = "https://api.example/orders?x=1#f";
        let proof = key
            .proof("POST", url, Some("at"), Some("n-1"), 1000)
            .unwrap();
        let seen = check_proof(
            &proof,
            "POST",
            "https://api.example/orders",
            Some("at"),
            1030,
        )
        .unwrap();
        assert_eq!(seen.jkt, key.thumbprint());
        assert_eq!(seen.nonce.as_deref(), Some("n-1"));
        // Wrong method, URL, token, time; another key's signature.
        assert!(check_proof(&proof, "GET", url, Some("at"), 1000).is_err());
        assert!(
            check_proof(
                &proof,
                "POST",
                "https://api.example/other",
                Some("at"),
                1000
            )
            .is_err()
        );
        assert!(check_proof(&proof, "POST", url, Some("other"), 1000).is_err());
        assert!(check_proof(&proof, "POST", url, Some("at"), 1000 + PROOF_LEEWAY + 1).is_err());
        let other = DpopKey::generate()
            .unwrap()
            .proof("POST", url, Some("at"), None, 1000)
            .unwrap();
        let (head, _) = proof.rsplit_once('.').unwrap();
        let (_, foreign_sig) = other.rsplit_once('.').unwrap();
        assert!(
            check_proof(
                &format!("{head}.{foreign_sig}"),
                "POST",
                url,
                Some("at"),
                1000
            )
            .is_err()
        );
        assert!(check_proof("a.b", "POST", url, None, 1000).is_err());
        assert!(DpopKey::from_pkcs8(b"not a key").is_none());
        assert!(!format!("{key:?}").contains(&URL_SAFE_NO_PAD.encode(key.to_pkcs8())));
    }

    #[test]
    fn the_thumbprint_follows_rfc_7638() {
        // RFC 7638 section 3.1 is an RSA example; this is the canonical EC form
        // computed by hand for a fixed key.
        let jwk = json!({"kty": "EC", "crv": "P-256", "x": "AAAA", "y": "BBBB", "kid": "ignored"});
        let expected = URL_SAFE_NO_PAD.encode(Sha256::digest(
            br#"{"crv":"P-256","kty":"EC","x":"AAAA","y":"BBBB"}"#,
        ));
        assert_eq!(thumbprint(&jwk).unwrap(), expected);
    }
}
