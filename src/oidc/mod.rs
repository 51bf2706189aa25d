//! The OpenID Connect client: discovery and JWKS (cached), ID-token validation, and
//! token-endpoint requests with every client authentication method, whose answers
//! are classified the way the refresh engine needs (dead session, our own
//! misconfiguration, or a transient failure).
//!
//! ```
//! use bff_proxy::oidc::{TokenError, classify_token_error};
//! use http::StatusCode;
//!
//! // IdPs differ: a bare 400 with an empty body means the refresh token is dead...
//! assert!(matches!(classify_token_error(StatusCode::BAD_REQUEST, b"", None), TokenError::Dead { .. }));
//! // ...while invalid_client means our own configuration is wrong.
//! let e = classify_token_error(StatusCode::UNAUTHORIZED, br#"{"error":"invalid_client"}"#, None);
//! assert!(matches!(e, TokenError::Misconfigured { .. }));
//! ```

mod client;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http::StatusCode;
use http::header::{HeaderValue, RETRY_AFTER};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Validation};
use serde::Deserialize;
use serde_json::Value;

pub use crate::client_key::parse_private_key;
pub use client::{FetchError, IdpHttp, IdpResponse, MAX_IDP_BODY, client_tls_config};

use crate::config::{ClientAuth, Config};
use crate::metrics::Metrics;

/// How long discovery stays cached.
const DISCOVERY_TTL: Duration = Duration::from_secs(3600);
/// How long the JWKS stays cached before a routine refetch.
const JWKS_TTL: Duration = Duration::from_secs(3600);
/// An unknown `kid` triggers at most one JWKS refetch per this interval.
const JWKS_REFETCH_INTERVAL: Duration = Duration::from_secs(10);
/// Time allowed for one discovery or JWKS request.
const METADATA_TIMEOUT: Duration = Duration::from_secs(10);
/// Clock skew tolerated on ID-token `exp`/`iat`.
const LEEWAY_SECS: u64 = 60;
/// Signature algorithms accepted on ID tokens (never `none`, never HMAC with a
/// public key).
const ALLOWED_ALGS: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// The provider metadata the BFF uses (from discovery).
#[derive(Debug, Clone, Deserialize)]
pub struct ProviderMetadata {
    /// `issuer`.
    pub issuer: String,
    /// `authorization_endpoint`.
    pub authorization_endpoint: String,
    /// `token_endpoint`.
    pub token_endpoint: String,
    /// `jwks_uri`.
    pub jwks_uri: String,
    /// `revocation_endpoint` (RFC 7009), if any.
    #[serde(default)]
    pub revocation_endpoint: Option<String>,
    /// `end_session_endpoint` (RP-initiated logout), if any.
    #[serde(default)]
    pub end_session_endpoint: Option<String>,
}

/// A token-endpoint answer. `Debug` redacts the tokens.
#[derive(Clone, Deserialize)]
pub struct TokenResponse {
    /// The access token.
    pub access_token: String,
    /// Its type (`Bearer`).
    #[serde(default)]
    pub token_type: String,
    /// Lifetime in seconds: a number or a numeric string (Azure AD v1 and ADFS send
    /// `"3599"`); anything else counts as absent.
    #[serde(default, deserialize_with = "lenient_seconds")]
    pub expires_in: Option<u64>,
    /// A (possibly rotated) refresh token; `""` counts as none returned.
    #[serde(default, deserialize_with = "non_empty")]
    pub refresh_token: Option<String>,
    /// An ID token.
    #[serde(default)]
    pub id_token: Option<String>,
    /// The granted scope.
    #[serde(default)]
    pub scope: Option<String>,
}

impl fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenResponse")
            .field("token_type", &self.token_type)
            .field("expires_in", &self.expires_in)
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "<redacted>"),
            )
            .field("id_token", &self.id_token.as_ref().map(|_| "<redacted>"))
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

/// The longest `expires_in` believed (ten years): more is a mistake, and would
/// overflow clock arithmetic.
const MAX_EXPIRES_IN: u64 = 10 * 365 * 24 * 3600;

fn lenient_seconds<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let value = Option::<Value>::deserialize(d)?;
    let secs = match &value {
        Some(Value::Number(n)) => n.as_u64().or_else(|| {
            n.as_f64()
                .filter(|f| f.is_finite() && *f >= 0.0)
                .map(|f| f as u64)
        }),
        Some(Value::String(text)) => text.trim().parse::<u64>().ok().or_else(|| {
            text.trim()
                .parse::<f64>()
                .ok()
                .filter(|f| f.is_finite() && *f >= 0.0)
                .map(|f| f as u64)
        }),
        _ => None,
    };
    Ok(secs.map(|s| s.min(MAX_EXPIRES_IN)))
}

fn non_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(Option::<String>::deserialize(d)?.filter(|t| !t.is_empty()))
}

/// Reads a 2xx token-endpoint body. An answer without an access token, or one that
/// is not the JSON of RFC 6749 5.1, is unreadable.
pub fn parse_token_response(body: &[u8]) -> Result<TokenResponse, TokenError> {
    let tokens: TokenResponse =
        serde_json::from_slice(body).map_err(|e| TokenError::Unreadable {
            why: format!("unreadable token response: {}", e.classify_text()),
        })?;
    if tokens.access_token.is_empty() {
        return Err(TokenError::Unreadable {
            why: "token response without an access token".into(),
        });
    }
    if !tokens.token_type.is_empty() && !tokens.token_type.eq_ignore_ascii_case("bearer") {
        return Err(TokenError::Misconfigured {
            code: format!("token_type {:?} is not Bearer", tokens.token_type),
        });
    }
    Ok(tokens)
}

/// A serde_json error's category, without the excerpt of the input (which could hold
/// a token).
trait ClassifyText {
    fn classify_text(&self) -> &'static str;
}

impl ClassifyText for serde_json::Error {
    fn classify_text(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "I/O error",
            serde_json::error::Category::Syntax => "not JSON",
            serde_json::error::Category::Data => "JSON of the wrong shape",
            serde_json::error::Category::Eof => "truncated JSON",
        }
    }
}

/// How a token request failed, in the terms the refresh engine acts on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The grant is dead (`invalid_grant`, or a 400/403 that is not an OAuth error):
    /// the session ends.
    #[error("the IdP refused the grant ({code})")]
    Dead {
        /// The OAuth error, or a description of the non-OAuth answer.
        code: String,
    },
    /// The IdP refused *us* (`invalid_client`, `unauthorized_client`, or another
    /// error about our request): the session is kept, and the operator must act.
    #[error("the IdP refused the client's request ({code}): check the client configuration")]
    Misconfigured {
        /// The OAuth error or status.
        code: String,
    },
    /// A 2xx answer that cannot be read. The IdP may have consumed the refresh token,
    /// so it is never sent again for this request: 503, never a retry.
    #[error("the IdP answered 2xx but the answer is unusable: {why}")]
    Unreadable {
        /// What was wrong with it.
        why: String,
    },
    /// Worth retrying: connect error, time-out, 5xx, 429.
    #[error("transient IdP failure: {why}")]
    Transient {
        /// What happened.
        why: String,
        /// The IdP's `Retry-After`, if it sent one.
        retry_after: Option<Duration>,
    },
}

/// Classifies a non-2xx token-endpoint answer (DESIGN.md "Classifying
/// token-endpoint answers").
#[must_use]
pub fn classify_token_error(
    status: StatusCode,
    body: &[u8],
    retry_after: Option<Duration>,
) -> TokenError {
    let oauth_code = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("error")?.as_str().map(str::to_owned))
        .filter(|c| !c.is_empty() && c.len() <= 64 && c.bytes().all(|b| b.is_ascii_graphic()));
    if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
        return TokenError::Transient {
            why: format!("HTTP {}", status.as_u16()),
            retry_after,
        };
    }
    match oauth_code.as_deref() {
        Some("invalid_grant") => TokenError::Dead {
            code: "invalid_grant".into(),
        },
        Some("temporarily_unavailable") => TokenError::Transient {
            why: "temporarily_unavailable".into(),
            retry_after,
        },
        Some(code) => TokenError::Misconfigured { code: code.into() },
        None if status == StatusCode::BAD_REQUEST || status == StatusCode::FORBIDDEN => {
            TokenError::Dead {
                code: format!("HTTP {} without an OAuth error", status.as_u16()),
            }
        }
        None => TokenError::Misconfigured {
            code: format!("HTTP {}", status.as_u16()),
        },
    }
}

fn retry_after(headers: &http::HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?;
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// Why discovery, JWKS or ID-token validation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OidcError {
    /// The IdP could not be reached.
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// The IdP answered something unusable.
    #[error("unusable answer from the IdP: {0}")]
    BadAnswer(String),
    /// The ID token did not validate.
    #[error("ID token rejected: {0}")]
    IdToken(String),
}

/// How the BFF authenticates at the token and revocation endpoints.
#[derive(Clone)]
enum ClientCredentials {
    Basic { secret: String },
    Post { secret: String },
    PrivateKeyJwt { key: EncodingKey, alg: Algorithm },
    None,
}

impl fmt::Debug for ClientCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Basic { .. } => "client_secret_basic",
            Self::Post { .. } => "client_secret_post",
            Self::PrivateKeyJwt { .. } => "private_key_jwt",
            Self::None => "none",
        })
    }
}

/// The algorithms a JWKS key verifies: the one its `alg` names, or when it names
/// none, those its key type allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyAlgs {
    Exact(Algorithm),
    Rsa,
    Ec(Algorithm),
    Okp,
}

impl KeyAlgs {
    fn allows(self, alg: Algorithm) -> bool {
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
struct JwksKey {
    key: DecodingKey,
    algs: KeyAlgs,
}

/// What the JWKS holds: keys by `kid`, and the keys without one.
#[derive(Default)]
struct KeySet {
    by_kid: HashMap<String, Arc<JwksKey>>,
    anonymous: Vec<Arc<JwksKey>>,
}

impl KeySet {
    fn len(&self) -> usize {
        self.by_kid.len() + self.anonymous.len()
    }

    /// The key for a token's `kid`. A token without `kid` (or one whose `kid` the set
    /// does not list by name) may use the set's only key: OIDC Core 10.1 lets a
    /// provider with a single key leave `kid` out.
    fn find(&self, kid: Option<&str>) -> Option<Arc<JwksKey>> {
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

struct JwksCache {
    keys: KeySet,
    fetched_at: Option<Instant>,
    /// When an unknown kid last caused a refetch.
    unknown_kid_at: Option<Instant>,
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
const BACKCHANNEL_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

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

/// The OIDC client of one BFF: its provider, its client identity.
pub struct Oidc {
    http: IdpHttp,
    issuer: String,
    client_id: String,
    credentials: ClientCredentials,
    /// `oidc.revocation_endpoint`: used when neither discovery names one.
    revocation_fallback: Option<String>,
    discovery: moka::future::Cache<(), Arc<ProviderMetadata>>,
    jwks: Mutex<JwksCache>,
    jwks_refetch: tokio::sync::Mutex<()>,
    metrics: Metrics,
}

impl fmt::Debug for Oidc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Oidc")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("client_auth", &self.credentials)
            .finish_non_exhaustive()
    }
}

/// The claims of a JWT, **unverified**: only for tokens that were verified when
/// they entered (the ID token in our own sealed session) or whose claims decide
/// nothing about trust (an access token's `exp`, as a hint).
pub(crate) fn unverified_claims(token: &str) -> Option<Value> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// A JWT's header, when its algorithm is on the allowlist.
fn checked_header(token: &str) -> Result<jsonwebtoken::Header, OidcError> {
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

fn check_key_fits(header: &jsonwebtoken::Header, key: &JwksKey) -> Result<(), OidcError> {
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
fn verify_logout_token(
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
fn key_set(set: &jsonwebtoken::jwk::JwkSet) -> KeySet {
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

/// Where RFC 8414 authorization-server metadata may be for `issuer`: with the
/// well-known part inserted before the issuer's path (RFC 8414 3.1), and appended
/// after it (as OIDC discovery does, and many servers serve it).
#[must_use]
pub fn rfc8414_urls(issuer: &str) -> Vec<String> {
    const WELL_KNOWN: &str = "/.well-known/oauth-authorization-server";
    let issuer = issuer.trim_end_matches('/');
    let mut urls = vec![format!("{issuer}{WELL_KNOWN}")];
    if let Ok(url) = url::Url::parse(issuer) {
        let path = url.path().trim_end_matches('/');
        if !path.is_empty() {
            let mut inserted = url.clone();
            inserted.set_path(&format!("{WELL_KNOWN}{path}"));
            urls.insert(0, inserted.to_string());
        }
    }
    urls
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Oidc {
    /// Builds the client from a loaded config (no network yet), counting its IdP
    /// requests into `metrics`.
    pub fn new(config: &Config, metrics: Metrics) -> Result<Self, String> {
        let secret = || {
            config
                .resolved
                .client_secret
                .as_ref()
                .map(|s| s.expose().to_owned())
                .unwrap_or_default()
        };
        let credentials = match config.oidc.client_auth {
            ClientAuth::ClientSecretBasic => ClientCredentials::Basic { secret: secret() },
            ClientAuth::ClientSecretPost => ClientCredentials::Post { secret: secret() },
            ClientAuth::PrivateKeyJwt => {
                let pem = config
                    .resolved
                    .private_key
                    .as_ref()
                    .ok_or("oidc.private_key: required by private_key_jwt")?;
                let (key, alg) = parse_private_key(pem.expose())
                    .map_err(|e| format!("oidc.private_key: {e}"))?;
                ClientCredentials::PrivateKeyJwt { key, alg }
            }
            ClientAuth::None => ClientCredentials::None,
        };
        Ok(Self {
            http: IdpHttp::new()?,
            issuer: config.oidc.issuer.trim_end_matches('/').to_owned(),
            client_id: config.oidc.client_id.clone(),
            credentials,
            revocation_fallback: config
                .resolved
                .revocation_endpoint
                .as_ref()
                .map(ToString::to_string),
            discovery: moka::future::Cache::builder()
                .max_capacity(1)
                .time_to_live(DISCOVERY_TTL)
                .build(),
            jwks: Mutex::new(JwksCache {
                keys: KeySet::default(),
                fetched_at: None,
                unknown_kid_at: None,
            }),
            jwks_refetch: tokio::sync::Mutex::new(()),
            metrics,
        })
    }

    /// Counts one IdP request by endpoint and outcome (status code or error).
    fn count(&self, endpoint: &str, result: &Result<IdpResponse, FetchError>) {
        let status = match result {
            Ok(resp) => resp.status.as_str().to_owned(),
            Err(FetchError::Timeout) => "timeout".to_owned(),
            Err(_) => "error".to_owned(),
        };
        self.metrics.idp_request(endpoint, &status);
    }

    /// The configured issuer (no trailing slash).
    #[must_use]
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The client id.
    #[must_use]
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// The provider metadata, from cache or discovery. Concurrent callers share one
    /// fetch.
    pub async fn metadata(&self) -> Result<Arc<ProviderMetadata>, OidcError> {
        self.discovery
            .try_get_with((), self.fetch_metadata())
            .await
            .map_err(|e| (*e).clone())
    }

    async fn fetch_metadata(&self) -> Result<Arc<ProviderMetadata>, OidcError> {
        let url = format!("{}/.well-known/openid-configuration", self.issuer);
        let resp = self.http.get(&url, METADATA_TIMEOUT).await;
        self.count("discovery", &resp);
        let resp = resp?;
        if !resp.status.is_success() {
            return Err(OidcError::BadAnswer(format!(
                "discovery answered HTTP {}",
                resp.status.as_u16()
            )));
        }
        let mut meta: ProviderMetadata = serde_json::from_slice(&resp.body)
            .map_err(|e| OidcError::BadAnswer(format!("discovery document: {e}")))?;
        // OIDC Discovery 4.3: the issuer must be exactly the one configured.
        if meta.issuer.trim_end_matches('/') != self.issuer {
            return Err(OidcError::BadAnswer(format!(
                "discovery names issuer {:?}, configured is {:?}",
                meta.issuer, self.issuer
            )));
        }
        if meta.revocation_endpoint.is_none() {
            meta.revocation_endpoint = match self.rfc8414_revocation_endpoint().await {
                Some(endpoint) => Some(endpoint),
                None => self.revocation_fallback.clone(),
            };
        }
        Ok(Arc::new(meta))
    }

    /// The revocation endpoint of RFC 8414 authorization-server metadata, for IdPs
    /// that list it there and not in OIDC discovery. The metadata must name our
    /// issuer.
    async fn rfc8414_revocation_endpoint(&self) -> Option<String> {
        #[derive(Deserialize)]
        struct AuthServerMetadata {
            issuer: String,
            #[serde(default)]
            revocation_endpoint: Option<String>,
        }
        for url in rfc8414_urls(&self.issuer) {
            let resp = self.http.get(&url, METADATA_TIMEOUT).await;
            self.count("rfc8414", &resp);
            let Ok(resp) = resp else { continue };
            if !resp.status.is_success() {
                continue;
            }
            let Ok(meta) = serde_json::from_slice::<AuthServerMetadata>(&resp.body) else {
                continue;
            };
            if meta.issuer.trim_end_matches('/') != self.issuer {
                tracing::warn!(url = %url, "RFC 8414 metadata names another issuer; ignored");
                continue;
            }
            if let Some(endpoint) = meta
                .revocation_endpoint
                .filter(|e| url::Url::parse(e).is_ok())
            {
                return Some(endpoint);
            }
        }
        None
    }

    /// Loads discovery and the JWKS (readiness). Warns when the IdP has no
    /// revocation endpoint: logout then cannot revoke refresh tokens.
    pub async fn warm_up(&self) -> Result<(), OidcError> {
        let meta = self.metadata().await?;
        self.fetch_jwks().await?;
        if meta.revocation_endpoint.is_none() {
            tracing::warn!(
                "the IdP names no revocation endpoint (OIDC discovery, RFC 8414 metadata) and oidc.revocation_endpoint is not set: logout cannot revoke refresh tokens"
            );
        }
        Ok(())
    }

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
    async fn refetch_jwks(&self, kid: Option<&str>) -> Result<(), OidcError> {
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

    async fn fetch_jwks(&self) -> Result<(), OidcError> {
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

    async fn key_for(&self, kid: Option<&str>) -> Result<Arc<JwksKey>, OidcError> {
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
    async fn token_key(
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

    /// Adds client authentication to a token or revocation request.
    fn authenticate(
        &self,
        form: &mut Vec<(&'static str, String)>,
        audience: &str,
    ) -> Result<Option<HeaderValue>, TokenError> {
        let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
        match &self.credentials {
            ClientCredentials::Basic { secret } => {
                let creds = STANDARD.encode(format!("{}:{}", enc(&self.client_id), enc(secret)));
                HeaderValue::from_str(&format!("Basic {creds}"))
                    .map(Some)
                    .map_err(|_| TokenError::Misconfigured {
                        code: "client credentials are not header-safe".into(),
                    })
            }
            ClientCredentials::Post { secret } => {
                form.push(("client_id", self.client_id.clone()));
                form.push(("client_secret", secret.clone()));
                Ok(None)
            }
            ClientCredentials::PrivateKeyJwt { key, alg } => {
                let now = unix_now();
                let claims = serde_json::json!({
                    "iss": self.client_id, "sub": self.client_id, "aud": audience,
                    "iat": now, "exp": now + 60, "jti": crate::random::random_text(16),
                });
                let assertion =
                    jsonwebtoken::encode(&jsonwebtoken::Header::new(*alg), &claims, key).map_err(
                        |e| TokenError::Misconfigured {
                            code: format!("cannot sign the client assertion: {e}"),
                        },
                    )?;
                form.push(("client_id", self.client_id.clone()));
                form.push((
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".into(),
                ));
                form.push(("client_assertion", assertion));
                Ok(None)
            }
            ClientCredentials::None => {
                form.push(("client_id", self.client_id.clone()));
                Ok(None)
            }
        }
    }

    /// One token request (no retries): `grant` pairs plus client authentication.
    async fn token_request(
        &self,
        mut form: Vec<(&'static str, String)>,
        timeout: Duration,
    ) -> Result<TokenResponse, TokenError> {
        let meta = self.metadata().await.map_err(|e| TokenError::Transient {
            why: e.to_string(),
            retry_after: None,
        })?;
        let auth = self.authenticate(&mut form, &meta.token_endpoint)?;
        let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let resp = self
            .http
            .post_form(&meta.token_endpoint, &pairs, auth, timeout)
            .await;
        self.count("token", &resp);
        let resp = resp.map_err(|e| TokenError::Transient {
            why: e.to_string(),
            retry_after: None,
        })?;
        if !resp.status.is_success() {
            return Err(classify_token_error(
                resp.status,
                &resp.body,
                retry_after(&resp.headers),
            ));
        }
        parse_token_response(&resp.body)
    }

    /// Exchanges an authorization code (with its PKCE verifier).
    pub async fn exchange_code(
        &self,
        code: &str,
        verifier: &str,
        redirect_uri: &str,
        timeout: Duration,
    ) -> Result<TokenResponse, TokenError> {
        self.token_request(
            vec![
                ("grant_type", "authorization_code".into()),
                ("code", code.into()),
                ("redirect_uri", redirect_uri.into()),
                ("code_verifier", verifier.into()),
            ],
            timeout,
        )
        .await
    }

    /// One refresh-token request (the refresh engine retries).
    pub async fn refresh(
        &self,
        refresh_token: &str,
        timeout: Duration,
    ) -> Result<TokenResponse, TokenError> {
        self.token_request(
            vec![
                ("grant_type", "refresh_token".into()),
                ("refresh_token", refresh_token.into()),
            ],
            timeout,
        )
        .await
    }

    /// Revokes a refresh token (RFC 7009). Ok(false) when the IdP has no revocation
    /// endpoint.
    pub async fn revoke(&self, refresh_token: &str, timeout: Duration) -> Result<bool, TokenError> {
        let meta = self.metadata().await.map_err(|e| TokenError::Transient {
            why: e.to_string(),
            retry_after: None,
        })?;
        let Some(endpoint) = meta.revocation_endpoint.clone() else {
            return Ok(false);
        };
        let mut form = vec![
            ("token", refresh_token.to_owned()),
            ("token_type_hint", "refresh_token".to_owned()),
        ];
        let auth = self.authenticate(&mut form, &endpoint)?;
        let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let resp = self.http.post_form(&endpoint, &pairs, auth, timeout).await;
        self.count("revocation", &resp);
        let resp = resp.map_err(|e| TokenError::Transient {
            why: e.to_string(),
            retry_after: None,
        })?;
        if resp.status.is_success() {
            Ok(true)
        } else {
            Err(classify_token_error(
                resp.status,
                &resp.body,
                retry_after(&resp.headers),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_follows_the_design() {
        let c = |status: u16, body: &str| {
            classify_token_error(StatusCode::from_u16(status).unwrap(), body.as_bytes(), None)
        };
        assert!(matches!(
            c(400, r#"{"error":"invalid_grant"}"#),
            TokenError::Dead { .. }
        ));
        assert!(matches!(c(400, ""), TokenError::Dead { .. }));
        assert!(matches!(
            c(400, "<html>bad</html>"),
            TokenError::Dead { .. }
        ));
        assert!(matches!(c(403, ""), TokenError::Dead { .. }));
        assert!(matches!(
            c(401, r#"{"error":"invalid_client"}"#),
            TokenError::Misconfigured { .. }
        ));
        assert!(matches!(
            c(400, r#"{"error":"unauthorized_client"}"#),
            TokenError::Misconfigured { .. }
        ));
        assert!(matches!(c(401, ""), TokenError::Misconfigured { .. }));
        assert!(matches!(
            c(500, r#"{"error":"invalid_grant"}"#),
            TokenError::Transient { .. }
        ));
        assert!(matches!(c(503, ""), TokenError::Transient { .. }));
        assert!(matches!(c(429, ""), TokenError::Transient { .. }));
        assert!(matches!(
            c(400, r#"{"error":"temporarily_unavailable"}"#),
            TokenError::Transient { .. }
        ));
    }

    #[test]
    fn retry_after_seconds_are_read() {
        let mut h = http::HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn token_response_debug_redacts() {
        let t: TokenResponse = serde_json::from_str(
            r#"{"access_token":"AT-SECRET","refresh_token":"RT-SECRET","id_token":"ID-SECRET","token_type":"Bearer"}"#,
        )
        .unwrap();
        let shown = format!("{t:?}");
        assert!(!shown.contains("SECRET"), "{shown}");
    }
}
