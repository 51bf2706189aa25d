//! The client's private key for `private_key_jwt`, read from PEM: checked at config
//! load and used by the OIDC client, so it depends on neither.

use jsonwebtoken::{Algorithm, EncodingKey};

/// Parses a PEM private key for `private_key_jwt`: RSA (PKCS#1 or PKCS#8) signs
/// RS256, EC P-256 (PKCS#8) signs ES256.
pub fn parse_private_key(pem: &str) -> Result<(EncodingKey, Algorithm), String> {
    if let Ok(key) = EncodingKey::from_rsa_pem(pem.as_bytes()) {
        return Ok((key, Algorithm::RS256));
    }
    EncodingKey::from_ec_pem(pem.as_bytes())
        .map(|key| (key, Algorithm::ES256))
        .map_err(|_| {
            "must be a PEM private key: RSA (PKCS#1 or PKCS#8) or EC P-256 (PKCS#8)".to_owned()
        })
}
