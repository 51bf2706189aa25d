//! The dev IdP apart from HTTP: its settings (clients, users, the refresh-token
//! behaviours of real providers, quirks) and the grants it keeps (`grants`: codes,
//! refresh-token families, sessions, signing keys). `devidp` serves them.

pub(crate) mod grants;

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use crate::config::{ClientAuth, Config};

pub use grants::DevIdpStats;

/// How the provider treats refresh tokens. Each field is a behaviour some real
/// provider has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshPolicy {
    /// Issue a new refresh token on every refresh (rotation).
    pub rotate: bool,
    /// Without rotation: return the same refresh token (true) or none at all (false).
    pub return_unrotated: bool,
    /// After a rotation, the previous token still works for this long (Kinde's
    /// overlap window). Zero: it fails at once.
    pub grace: Duration,
    /// Presenting an already-rotated token after the grace window revokes the whole
    /// token family, so the newest token stops working too (Curity, Kinde,
    /// oidc-provider).
    pub reuse_detection: bool,
    /// Each refresh token's own lifetime from its issue.
    pub token_lifetime: Option<Duration>,
    /// Maximum rolling lifetime of the family from the login, after which no refresh
    /// works (Curity).
    pub max_lifetime: Option<Duration>,
    /// Maximum number of refreshes of the family (Kinde).
    pub max_refreshes: Option<u32>,
}

impl Default for RefreshPolicy {
    fn default() -> Self {
        Self {
            rotate: true,
            return_unrotated: true,
            grace: Duration::ZERO,
            reuse_detection: true,
            token_lifetime: None,
            max_lifetime: None,
            max_refreshes: None,
        }
    }
}

/// How a client authenticates at the token and revocation endpoints.
#[derive(Clone, PartialEq, Eq)]
pub enum DevClientAuth {
    /// `client_secret_basic` with this secret.
    SecretBasic(String),
    /// `client_secret_post` with this secret.
    SecretPost(String),
    /// `private_key_jwt`: assertions are checked with this PEM public key (RSA or
    /// EC P-256).
    PrivateKeyJwt {
        /// The client's public key, PEM.
        public_key_pem: String,
    },
    /// A public client.
    None,
}

impl fmt::Debug for DevClientAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::SecretBasic(_) => f.write_str("SecretBasic(<redacted>)"),
            Self::SecretPost(_) => f.write_str("SecretPost(<redacted>)"),
            Self::PrivateKeyJwt { .. } => f.write_str("PrivateKeyJwt"),
            Self::None => f.write_str("None"),
        }
    }
}

/// A registered client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevClient {
    /// Its id.
    pub client_id: String,
    /// How it authenticates.
    pub auth: DevClientAuth,
    /// Allowed redirect URIs (exact match).
    pub redirect_uris: Vec<String>,
    /// Allowed post-logout redirect URIs (exact match).
    pub post_logout_redirect_uris: Vec<String>,
    /// Where back-channel logout tokens are sent.
    pub backchannel_logout_uri: Option<String>,
}

impl DevClient {
    /// A client with one redirect URI and nothing else registered.
    #[must_use]
    pub fn new(client_id: &str, auth: DevClientAuth, redirect_uri: &str) -> Self {
        Self {
            client_id: client_id.into(),
            auth,
            redirect_uris: vec![redirect_uri.into()],
            post_logout_redirect_uris: Vec::new(),
            backchannel_logout_uri: None,
        }
    }
}

/// The test user that logs in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevUser {
    /// `sub`.
    pub sub: String,
    /// `name`.
    pub name: String,
    /// `email`.
    pub email: String,
    /// `preferred_username`.
    pub preferred_username: String,
    /// More claims for the ID token (`groups`, `email_verified`…).
    pub claims: serde_json::Map<String, serde_json::Value>,
}

impl Default for DevUser {
    fn default() -> Self {
        Self {
            sub: "dev-user-1".into(),
            name: "Dev User".into(),
            email: "dev.user@example.test".into(),
            preferred_username: "dev".into(),
            claims: serde_json::Map::new(),
        }
    }
}

/// Everything the dev IdP can be asked to do.
#[derive(Debug, Clone)]
pub struct DevIdpSettings {
    /// Where to listen (loopback; port 0 picks a free one).
    pub listen: SocketAddr,
    /// Registered clients.
    pub clients: Vec<DevClient>,
    /// The user that logs in.
    pub user: DevUser,
    /// Show a minimal login form instead of logging the user in at once.
    pub login_form: bool,
    /// Access-token lifetime (`expires_in`).
    pub access_token_ttl: Duration,
    /// ID-token lifetime.
    pub id_token_ttl: Duration,
    /// Authorization-code lifetime.
    pub code_ttl: Duration,
    /// Return a fresh ID token on refresh.
    pub id_token_on_refresh: bool,
    /// Refresh-token behaviour.
    pub refresh: RefreshPolicy,
    /// RSA modulus size of the signing keys.
    pub key_bits: usize,
    /// Publish JWKS keys without `kid` and `alg` and sign without a `kid` header, as
    /// some single-key providers do.
    pub anonymous_keys: bool,
    /// Leave `revocation_endpoint` out of OIDC discovery and list it only in RFC 8414
    /// authorization-server metadata (`/.well-known/oauth-authorization-server`), as
    /// django-oauth-toolkit and others do.
    pub revocation_in_rfc8414_only: bool,
    /// Say `require_pushed_authorization_requests` in discovery and refuse
    /// authorization requests that do not come through PAR (RFC 9126).
    pub require_par: bool,
    /// DPoP (RFC 9449): token requests with a proof must carry the IdP's current
    /// nonce; without it they are answered `use_dpop_nonce` with a `DPoP-Nonce`.
    pub dpop_nonce: bool,
}

impl Default for DevIdpSettings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            clients: Vec::new(),
            user: DevUser::default(),
            login_form: false,
            access_token_ttl: Duration::from_secs(300),
            id_token_ttl: Duration::from_secs(300),
            code_ttl: Duration::from_secs(60),
            id_token_on_refresh: true,
            refresh: RefreshPolicy::default(),
            key_bits: 2048,
            anonymous_keys: false,
            revocation_in_rfc8414_only: false,
            require_par: false,
            dpop_nonce: false,
        }
    }
}

/// Odd but real answers a token endpoint gives; see
/// [`DevIdp::quirk_next_token_responses`](crate::devidp::DevIdp::quirk_next_token_responses).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenQuirk {
    /// `"refresh_token": ""` in place of the token (the grant itself goes on as the
    /// policy says).
    EmptyRefreshToken,
    /// `expires_in` as a string, as Azure AD v1 and ADFS send it.
    ExpiresInString,
    /// The grant is processed (a refresh token is consumed and rotated) but the body
    /// is replaced by this text: a 200 the client cannot read.
    Unreadable(String),
    /// The ID token names this other subject.
    OtherSub(String),
}

impl DevIdpSettings {
    /// The settings the binary uses for `[dev] idp = true`: listen at the issuer's
    /// address and register the configured client with its redirect, post-logout and
    /// back-channel logout URIs.
    #[must_use]
    pub fn for_config(config: &Config) -> Option<Self> {
        let issuer = &config.resolved.issuer;
        let port = issuer.port()?;
        let ip = match issuer.host()? {
            url::Host::Ipv4(ip) => std::net::IpAddr::V4(ip),
            url::Host::Ipv6(ip) => std::net::IpAddr::V6(ip),
            url::Host::Domain(_) => return None,
        };
        let secret = config
            .resolved
            .client_secret
            .as_ref()
            .map(|s| s.expose().to_owned())
            .unwrap_or_default();
        let auth = match config.oidc.client_auth {
            ClientAuth::ClientSecretBasic => DevClientAuth::SecretBasic(secret),
            ClientAuth::ClientSecretPost => DevClientAuth::SecretPost(secret),
            // Refused at config load until the BFF signs assertions.
            ClientAuth::PrivateKeyJwt | ClientAuth::None => DevClientAuth::None,
        };
        let mut client = DevClient::new(
            &config.oidc.client_id,
            auth,
            config.resolved.redirect_uri.as_str(),
        );
        if let Some(uri) = &config.resolved.post_logout_redirect_uri {
            client.post_logout_redirect_uris.push(uri.to_string());
        }
        let mut backchannel = config.resolved.public_url.clone();
        backchannel.set_path(&format!("{}/backchannel-logout", config.server.prefix));
        client.backchannel_logout_uri = Some(backchannel.to_string());
        Some(Self {
            listen: SocketAddr::new(ip, port),
            clients: vec![client],
            login_form: config.dev.login_form,
            access_token_ttl: config.dev.access_token_lifetime,
            ..Self::default()
        })
    }
}
