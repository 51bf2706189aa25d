//! Tokens the IdP signs: the JWKS (cached, refetched on an unknown `kid` at most so
//! often), ID tokens verified at login, back-channel logout tokens, and the one
//! reader of a JWT's claims without verification.

#![allow(clippy::wildcard_imports)]

use super::*;

/// The algorithms a JWKS key verifies: the one its `alg` names, or when it names
/// none, those its key type allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum KeyAlgs {
    Exact(Algorithm),
    Rsa,
    Ec(Algorithm),
    Okp,
}

impl KeyAlgs {
    pub(super) fn allows(self, alg: Algorithm) -> bool {
        match self {
            Self::Exact(a) | Self::Ec(a) => a == alg,
            Self::Rsa => matches!(
                alg,
                Algorithm::RS256
                    | Algorithm::RS384
                    | Algorithm::RS512
                    | Algorithm::PS256
                    | Algorithm::PS384
                    | Algorithm::PS512
            ),
            Self::Okp => alg == Algorithm::EdDSA,
        }
    }
}

/// A signature key from the JWKS.
pub(super) struct JwksKey {
    key: DecodingKey,
    algs: KeyAlgs,
}

/// What the JWKS holds: keys by `kid`, and the keys without one.
#[derive(Default, Clone)]
pub(super) struct KeySet {
    by_kid: HashMap<String, Arc<JwksKey>>,
    anonymous: Vec<Arc<JwksKey>>,
}

impl KeySet {
    pub(super) fn len(&self) -> usize {
        self.by_kid.len() + self.anonymous.len()
    }

    /// The key for a token's `kid`. A token without `kid` (or one whose `kid` the set
    /// does not list by name) may use the set's only key: OIDC Core 10.1 lets a
    /// provider with a single key leave `kid` out.
    pub(super) fn find(&self, kid: Option<&str>) -> Option<Arc<JwksKey>> {
        if let Some(key) = kid.and_then(|k| self.by_kid.get(k)) {
            return Some(Arc::clone(key));
        }
        if self.len() != 1 {
            return None;
        }
        match kid {
            None => self
                .anonymous
                .first()
                .or_else(|| self.by_kid.values().next())
                .cloned(),
            // A kid the set does not name: only a kid-less single key may serve it.
            Some(_) => self.anonymous.first().cloned(),
        }
    }
}

pub(super) struct JwksCache {
    pub(super) keys: KeySet,
    pub(super) fetched_at: Option<Instant>,
    /// When an unknown kid last caused a refetch.
    pub(super) unknown_kid_at: Option<Instant>,
}

/// The claims the BFF reads from an ID token.
#[derive(Debug, Clone)]
pub struct IdClaims {
    /// All claims, for `/bff/user`.
    pub all: Value,
    /// `sub`.
    pub sub: String,
    /// `sid`, the IdP's session id, if present.
    pub sid: Option<String>,
}

/// How old a logout token may be (`iat`), and so how long its `jti` is remembered.
pub const LOGOUT_TOKEN_MAX_AGE: Duration = Duration::from_secs(300);
/// The back-channel logout event's name.
pub(super) const BACKCHANNEL_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

/// What a valid logout token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogoutClaims {
    /// `iss`.
    pub iss: String,
    /// `sub` (empty when the token names only `sid`).
    pub sub: String,
    /// `sid`, the IdP session.
    pub sid: Option<String>,
    /// `jti`, refused the second time.
    pub jti: String,
    /// `iat` (Unix seconds).
    pub iat: u64,
}

/// The claim rules of a logout token, signature aside (OIDC Back-Channel Logout 2.4
/// and 2.6, and DESIGN.md): the logout event, `sid` or `sub`, no `nonce`, a `jti`,
/// `iat` no older than [`LOGOUT_TOKEN_MAX_AGE`] and no more than the clock skew in
/// the future, `exp` (when present) not past.
pub fn check_logout_claims(claims: &Value, now: u64) -> Result<LogoutClaims, String> {
    let text = |name: &str| claims.get(name).and_then(Value::as_str);
    let iss = text("iss").ok_or("iss missing")?.to_owned();
    if let Some(exp) = claims.get("exp") {
        let exp = exp.as_u64().ok_or("exp is not a number")?;
        if exp.saturating_add(LEEWAY_SECS) < now {
            return Err("logout token expired".into());
        }
    }
    let iat = claims
        .get("iat")
        .and_then(Value::as_u64)
        .ok_or("iat missing")?;
    if iat > now.saturating_add(LEEWAY_SECS) {
        return Err("iat in the future".into());
    }
    if iat.saturating_add(LOGOUT_TOKEN_MAX_AGE.as_secs()) < now {
        return Err("iat older than 5 minutes".into());
    }
    if !claims
        .get("events")
        .and_then(|e| e.get(BACKCHANNEL_EVENT))
        .is_some_and(Value::is_object)
    {
        return Err("not a back-channel logout event".into());
    }
    if claims.get("nonce").is_some() {
        return Err("a logout token must not have a nonce".into());
    }
    let jti = text("jti")
        .filter(|j| !j.is_empty() && j.len() <= 256)
        .ok_or("jti missing")?
        .to_owned();
    let sid = text("sid").filter(|s| !s.is_empty()).map(str::to_owned);
    let sub = text("sub").unwrap_or_default().to_owned();
    if sid.is_none() && sub.is_empty() {
        return Err("neither sid nor sub".into());
    }
    Ok(LogoutClaims {
        iss,
        sub,
        sid,
        jti,
        iat,
    })
}

/// The claims of a JWT, **unverified**: only for tokens that were verified when
/// they entered (the ID token in our own sealed session) or whose claims decide
/// nothing about trust (an access token's `exp`, as a hint).
pub(crate) fn unverified_claims(token: &str) -> Option<Value> {
    serde_json::from_slice(&unverified_payload(token)?).ok()
}

/// A JWT's payload bytes (the JSON of its claims), decoded but not verified.
pub(crate) fn unverified_payload(token: &str) -> Option<Vec<u8>> {
    let payload = token.split('.').nth(1)?;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()
}

/// A JWT's header, when its algorithm is on the allowlist.
pub(super) fn checked_header(token: &str) -> Result<jsonwebtoken::Header, OidcError> {
    let header = jsonwebtoken::decode_header(token)
        .map_err(|e| OidcError::IdToken(format!("malformed: {e}")))?;
    if !ALLOWED_ALGS.contains(&header.alg) {
        return Err(OidcError::IdToken(format!(
            "algorithm {:?} is not allowed",
            header.alg
        )));
    }
    Ok(header)
}

pub(super) fn check_key_fits(
    header: &jsonwebtoken::Header,
    key: &JwksKey,
) -> Result<(), OidcError> {
    if key.algs.allows(header.alg) {
        Ok(())
    } else {
        Err(OidcError::IdToken(format!(
            "token algorithm {:?} does not fit the key ({:?})",
            header.alg, key.algs
        )))
    }
}

/// The signature, `iss` and `aud` of a logout token, then its claims
/// ([`check_logout_claims`]).
pub(super) fn verify_logout_token(
    token: &str,
    header: &jsonwebtoken::Header,
    key: &JwksKey,
    issuer: &str,
    client_id: &str,
    now: u64,
) -> Result<LogoutClaims, OidcError> {
    let mut validation = Validation::new(header.alg);
    validation.leeway = LEEWAY_SECS;
    validation.set_audience(&[client_id]);
    validation.set_issuer(&[issuer, &format!("{issuer}/")]);
    validation.set_required_spec_claims(&["iss", "aud"]);
    validation.validate_exp = false;
    let claims = jsonwebtoken::decode::<Value>(token, &key.key, &validation)
        .map_err(|e| OidcError::IdToken(e.to_string()))?
        .claims;
    check_logout_claims(&claims, now).map_err(OidcError::IdToken)
}

/// The whole logout-token validation against a JWKS document, without the
/// network: for the fuzz targets.
#[cfg(feature = "fuzzing")]
pub(crate) fn validate_logout_token_with(
    token: &str,
    jwks: &jsonwebtoken::jwk::JwkSet,
    issuer: &str,
    client_id: &str,
    now: u64,
) -> Result<LogoutClaims, OidcError> {
    let keys = key_set(jwks);
    let header = checked_header(token)?;
    let key = keys
        .find(header.kid.as_deref())
        .ok_or_else(|| OidcError::IdToken("no such key".into()))?;
    check_key_fits(&header, &key)?;
    verify_logout_token(token, &header, &key, issuer, client_id, now)
}

/// The keys of a JWKS the BFF can verify signatures with: encryption keys, symmetric
/// keys and algorithms off the allowlist are left out. A key without `alg` verifies
/// the algorithms its type allows (RSA: RS*/PS*; EC: by curve; OKP: EdDSA).
pub(super) fn key_set(set: &jsonwebtoken::jwk::JwkSet) -> KeySet {
    use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, PublicKeyUse};
    let mut keys = KeySet::default();
    for jwk in &set.keys {
        if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
            continue;
        }
        let algs = match (&jwk.common.key_algorithm, &jwk.algorithm) {
            (Some(named), _) => match named.to_string().parse::<Algorithm>() {
                Ok(alg) if ALLOWED_ALGS.contains(&alg) => KeyAlgs::Exact(alg),
                _ => continue,
            },
            (None, AlgorithmParameters::RSA(_)) => KeyAlgs::Rsa,
            (None, AlgorithmParameters::EllipticCurve(ec)) => match ec.curve {
                EllipticCurve::P256 => KeyAlgs::Ec(Algorithm::ES256),
                EllipticCurve::P384 => KeyAlgs::Ec(Algorithm::ES384),
                _ => continue,
            },
            (None, AlgorithmParameters::OctetKeyPair(_)) => KeyAlgs::Okp,
            (None, _) => continue,
        };
        let Ok(key) = DecodingKey::from_jwk(jwk) else {
            continue;
        };
        let key = Arc::new(JwksKey { key, algs });
        match &jwk.common.key_id {
            Some(kid) => {
                keys.by_kid.insert(kid.clone(), key);
            }
            None => keys.anonymous.push(key),
        }
    }
    keys
}

impl Oidc {
    /// True once the JWKS has been fetched.
    #[must_use]
    pub fn jwks_loaded(&self) -> bool {
        self.jwks
            .lock()
            .map(|j| j.fetched_at.is_some())
            .unwrap_or(false)
    }

    /// Fetches the JWKS when it is missing or stale, or when `kid` is unknown to a
    /// fresh set: at most one such unknown-kid refetch per
    /// [`JWKS_REFETCH_INTERVAL`], so a flood of made-up kids cannot make the BFF
    /// hammer the IdP.
    pub(super) async fn refetch_jwks(&self, kid: Option<&str>) -> Result<(), OidcError> {
        let _one_at_a_time = self.jwks_refetch.lock().await;
        {
            let Ok(mut cache) = self.jwks.lock() else {
                return Ok(());
            };
            let stale = cache.fetched_at.is_none_or(|t| t.elapsed() > JWKS_TTL);
            if !stale {
                match kid {
                    // Fetched by another caller while this one waited.
                    Some(kid) if cache.keys.by_kid.contains_key(kid) => return Ok(()),
                    Some(_) => {
                        if cache
                            .unknown_kid_at
                            .is_some_and(|t| t.elapsed() < JWKS_REFETCH_INTERVAL)
                        {
                            return Ok(());
                        }
                        cache.unknown_kid_at = Some(Instant::now());
                    }
                    None => {}
                }
            }
        }
        self.fetch_jwks().await
    }

    pub(super) async fn fetch_jwks(&self) -> Result<(), OidcError> {
        let meta = self.metadata().await?;
        let resp = self.http.get(&meta.jwks_uri, METADATA_TIMEOUT).await;
        self.count("jwks", &resp);
        let resp = resp?;
        if !resp.status.is_success() {
            return Err(OidcError::BadAnswer(format!(
                "JWKS answered HTTP {}",
                resp.status.as_u16()
            )));
        }
        let set: jsonwebtoken::jwk::JwkSet = serde_json::from_slice(&resp.body)
            .map_err(|e| OidcError::BadAnswer(format!("JWKS: {e}")))?;
        let keys = key_set(&set);
        if let Ok(mut cache) = self.jwks.lock() {
            cache.keys = keys;
            cache.fetched_at = Some(Instant::now());
        }
        Ok(())
    }

    pub(super) async fn key_for(&self, kid: Option<&str>) -> Result<Arc<JwksKey>, OidcError> {
        let lookup = |this: &Self| {
            this.jwks.lock().ok().and_then(|j| {
                let stale = j.fetched_at.is_none_or(|t| t.elapsed() > JWKS_TTL);
                (!stale).then(|| j.keys.find(kid)).flatten()
            })
        };
        if let Some(key) = lookup(self) {
            return Ok(key);
        }
        // Unknown kid (or a stale set): one refetch, rate-limited.
        self.refetch_jwks(Some(kid.unwrap_or(""))).await?;
        lookup(self).ok_or_else(|| match kid {
            Some(kid) => OidcError::IdToken(format!("no JWKS key with kid {kid:?}")),
            None => OidcError::IdToken(
                "the token has no kid and the JWKS does not hold exactly one key".into(),
            ),
        })
    }

    /// Decodes a JWT header and finds its key: the algorithm must be allowed and one
    /// the key verifies.
    pub(super) async fn token_key(
        &self,
        token: &str,
    ) -> Result<(jsonwebtoken::Header, Arc<JwksKey>), OidcError> {
        let header = checked_header(token)?;
        let key = self.key_for(header.kid.as_deref()).await?;
        check_key_fits(&header, &key)?;
        Ok((header, key))
    }

    /// Validates an ID token: signature (JWKS), algorithm allowlist, `iss`, `aud`
    /// (and `azp`), `exp`, and `nonce` when one is expected.
    pub async fn validate_id_token(
        &self,
        token: &str,
        nonce: Option<&str>,
    ) -> Result<IdClaims, OidcError> {
        let (header, key) = self.token_key(token).await?;
        let mut validation = Validation::new(header.alg);
        validation.leeway = LEEWAY_SECS;
        validation.set_audience(&[&self.client_id]);
        validation.set_issuer(&[&self.issuer, &format!("{}/", self.issuer)]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let claims = jsonwebtoken::decode::<Value>(token, &key.key, &validation)
            .map_err(|e| OidcError::IdToken(e.to_string()))?
            .claims;
        // OIDC Core 3.1.3.7: with several audiences, azp must be us.
        if claims["aud"].as_array().is_some_and(|a| a.len() > 1)
            && claims["azp"].as_str() != Some(self.client_id.as_str())
        {
            return Err(OidcError::IdToken("azp is not this client".into()));
        }
        if let Some(expected) = nonce {
            if claims["nonce"].as_str() != Some(expected) {
                return Err(OidcError::IdToken("nonce does not match".into()));
            }
        }
        let sub = claims["sub"]
            .as_str()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| OidcError::IdToken("sub missing".into()))?
            .to_owned();
        let sid = claims["sid"].as_str().map(str::to_owned);
        Ok(IdClaims {
            all: claims,
            sub,
            sid,
        })
    }

    /// Validates a back-channel logout token (OIDC Back-Channel Logout 2.6):
    /// signature, `iss`, `aud`, then [`check_logout_claims`] at `now` (Unix seconds).
    /// Replay (a `jti` seen before) is the caller's to check, with the store.
    pub async fn validate_logout_token(
        &self,
        token: &str,
        now: u64,
    ) -> Result<LogoutClaims, OidcError> {
        let (header, key) = self.token_key(token).await?;
        verify_logout_token(token, &header, &key, &self.issuer, &self.client_id, now)
    }
}
