//! The OpenID Connect client: discovery and JWKS (cached), ID-token validation, and
//! token-endpoint requests with every client authentication method, whose answers
//! are classified the way the refresh engine needs (dead session, our own
//! misconfiguration, or a transient failure).

mod client;
mod jwt;
mod tokens;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http::StatusCode;
use http::header::{AUTHORIZATION, HeaderValue, RETRY_AFTER};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Validation};
use serde::Deserialize;
use serde_json::Value;

pub use crate::client_key::parse_private_key;
#[cfg(feature = "tower")]
pub use client::client_tls_config;
pub use client::{FetchError, IdpHttp, IdpResponse};

use crate::config::{ClientAuth, Config};
use crate::metrics::Metrics;

pub use jwt::*;
pub use tokens::*;

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
    /// `pushed_authorization_request_endpoint` (RFC 9126), if any.
    #[serde(default)]
    pub pushed_authorization_request_endpoint: Option<String>,
    /// `require_pushed_authorization_requests`: the IdP takes no other.
    #[serde(default)]
    pub require_pushed_authorization_requests: bool,
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
    /// The latest `DPoP-Nonce` the token endpoint gave (RFC 9449 section 8).
    dpop_nonce: Arc<Mutex<Option<String>>>,
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
            dpop_nonce: Arc::new(Mutex::new(None)),
        })
    }

    /// The client of a reloaded config: new credentials and revocation fallback;
    /// the discovery document and the JWKS already loaded are kept (the issuer
    /// cannot change without a restart), so readiness holds through a reload.
    pub fn reloaded(&self, config: &Config) -> Result<Self, String> {
        let mut next = Self::new(config, self.metrics.clone())?;
        next.http = self.http.clone();
        next.discovery = self.discovery.clone();
        next.dpop_nonce = Arc::clone(&self.dpop_nonce);
        let jwks = self
            .jwks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        next.jwks = Mutex::new(JwksCache {
            keys: jwks.keys.clone(),
            fetched_at: jwks.fetched_at,
            unknown_kid_at: jwks.unknown_kid_at,
        });
        Ok(next)
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
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod example {
    /// What the module does, in a few lines.
    #[test]
    fn module_example() {
        use crate::oidc::{TokenError, classify_token_error};
        use http::StatusCode;

        // IdPs differ: a bare 400 with an empty body means the refresh token is dead...
        assert!(matches!(
            classify_token_error(StatusCode::BAD_REQUEST, b"", None),
            TokenError::Dead { .. }
        ));
        // ...while invalid_client means our own configuration is wrong.
        let e = classify_token_error(
            StatusCode::UNAUTHORIZED,
            br#"{"error":"invalid_client"}"#,
            None,
        );
        assert!(matches!(e, TokenError::Misconfigured { .. }));
    }
}
