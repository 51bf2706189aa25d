//! The sections of `config.toml` as DESIGN.md names them, with their defaults.

#![allow(clippy::wildcard_imports)]

use super::*;

/// Which proxy engine the binary runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// Cloudflare's pingora.
    #[default]
    Pingora,
    /// hyper 1 with the tower layer.
    Hyper,
}

/// `[server]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Where the proxy listens.
    pub listen: SocketAddr,
    /// The external base URL; the redirect URI is `public_url + prefix + "/callback"`.
    /// Defaults to `http://` + `listen`.
    pub public_url: Option<String>,
    /// Where `/metrics`, `/healthz` and `/readyz` are served; none when unset.
    pub admin_listen: Option<SocketAddr>,
    /// The proxy engine.
    pub engine: Engine,
    /// Path prefix of the BFF endpoints.
    pub prefix: String,
    /// How long a graceful shutdown may take before connections are closed.
    #[serde(with = "duration")]
    pub shutdown_timeout: Duration,
    /// On SIGTERM: how long `/readyz` answers 503 while requests are still served,
    /// so a load balancer stops sending before the listener closes. `"0s"`: none.
    #[serde(with = "duration")]
    pub drain_delay: Duration,
    /// TLS certificate chain (PEM), for TLS termination.
    pub tls_cert: Option<SecretSource>,
    /// TLS private key (PEM).
    pub tls_key: Option<SecretSource>,
    /// Worker threads (default: the number of cores).
    pub threads: Option<usize>,
    /// Time allowed to connect to an upstream (then 502).
    #[serde(with = "duration")]
    pub upstream_connect_timeout: Duration,
    /// Time allowed for an upstream's response head (then 504). Bodies stream
    /// without a limit.
    #[serde(with = "duration")]
    pub upstream_timeout: Duration,
    /// Idle upstream connections kept for reuse (pingora's keep-alive pool; the hyper
    /// engine's idle connections per upstream).
    pub upstream_keepalive: usize,
    /// A request head must have fully arrived this long after its first byte, else
    /// 408 and the connection is closed.
    #[serde(with = "duration")]
    pub header_timeout: Duration,
    /// Keep-alive connections idle this long are closed.
    #[serde(with = "duration")]
    pub idle_timeout: Duration,
    /// Open client connections at most; new ones past it are refused.
    pub max_connections: usize,
    /// Peers (CIDRs) whose `X-Forwarded-For/Proto/Host` are kept.
    pub trusted_proxies: Vec<String>,
    /// How strictly request paths are checked.
    pub path_check: crate::paths::PathCheck,
}

impl ServerConfig {
    /// How many worker threads an engine runs: `threads`, else the number of cores.
    #[must_use]
    pub fn worker_threads(&self) -> usize {
        self.threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from))
            .max(1)
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            public_url: None,
            admin_listen: None,
            engine: Engine::default(),
            prefix: "/bff".into(),
            shutdown_timeout: Duration::from_secs(10),
            drain_delay: Duration::from_secs(5),
            tls_cert: None,
            tls_key: None,
            threads: None,
            upstream_connect_timeout: Duration::from_secs(5),
            upstream_timeout: Duration::from_secs(60),
            upstream_keepalive: 1024,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 10_000,
            trusted_proxies: Vec::new(),
            path_check: crate::paths::PathCheck::default(),
        }
    }
}

/// How the BFF authenticates to the token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    /// HTTP Basic with client id and secret.
    #[default]
    ClientSecretBasic,
    /// Client id and secret in the form body.
    ClientSecretPost,
    /// A JWT signed with the client's private key (RFC 7523).
    PrivateKeyJwt,
    /// A public client (no authentication): allowed, but warned about.
    None,
}

/// `[oidc]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// The issuer; discovery is at `issuer + /.well-known/openid-configuration`.
    pub issuer: String,
    /// The client id.
    pub client_id: String,
    /// The client secret (`client_secret_basic` / `client_secret_post`).
    #[serde(default)]
    pub client_secret: Option<SecretSource>,
    /// Token endpoint client authentication.
    #[serde(default)]
    pub client_auth: ClientAuth,
    /// PEM private key for `private_key_jwt` (RSA or EC P-256).
    #[serde(default)]
    pub private_key: Option<SecretSource>,
    /// Requested scopes.
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    /// Extra authorization request parameters (e.g. `prompt = "consent"`).
    #[serde(default)]
    pub auth_params: BTreeMap<String, String>,
    /// Where the IdP sends the browser after RP-initiated logout.
    #[serde(default)]
    pub post_logout_redirect_uri: Option<String>,
    /// The RFC 7009 revocation endpoint, when neither OIDC discovery nor RFC 8414
    /// metadata names one.
    #[serde(default)]
    pub revocation_endpoint: Option<String>,
    /// Pushed authorization requests (RFC 9126): the login's parameters go to the
    /// IdP's PAR endpoint and only `client_id` and `request_uri` travel in the
    /// browser. Used as well when discovery says
    /// `require_pushed_authorization_requests`.
    #[serde(default)]
    pub par: bool,
    /// Sender-constrained tokens (RFC 9449): a DPoP key per session, proofs on
    /// the code exchange, every refresh and every upstream request.
    #[serde(default)]
    pub dpop: bool,
}

pub(super) fn default_scopes() -> Vec<String> {
    ["openid", "profile", "email", "offline_access"]
        .map(String::from)
        .to_vec()
}

/// The `SameSite` cookie attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SameSiteSetting {
    /// `SameSite=Strict`.
    #[default]
    Strict,
    /// `SameSite=Lax`.
    Lax,
}

/// Where sessions live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SessionMode {
    /// Tokens sealed in the cookie.
    #[default]
    Cookie,
    /// Tokens in the store; the cookie holds a sealed session id.
    Server,
}

/// `[session]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionConfig {
    /// The session cookie name.
    #[serde(default = "default_cookie_name")]
    pub cookie_name: String,
    /// The `Secure` attribute.
    #[serde(default = "yes")]
    pub secure: bool,
    /// The `SameSite` attribute.
    #[serde(default)]
    pub same_site: SameSiteSetting,
    /// Base64 32-byte keys: the first seals, all open.
    pub keys: Vec<SecretSource>,
    /// The longest a session lives, however often it is refreshed.
    #[serde(with = "duration", default = "default_absolute_lifetime")]
    pub absolute_lifetime: Duration,
    /// The most refreshes a session may have; 0 means no limit.
    #[serde(default)]
    pub max_refreshes: u32,
    /// Where sessions live.
    #[serde(default)]
    pub mode: SessionMode,
    /// A session unused this long ends (`"0s"`: never). Its cookie (or stored
    /// session) is re-sealed with the time of use at most every quarter of it.
    #[serde(with = "duration", default)]
    pub idle_timeout: Duration,
}

pub(super) fn default_cookie_name() -> String {
    "__Host-Http-bff".into()
}

pub(super) fn yes() -> bool {
    true
}

pub(super) fn default_absolute_lifetime() -> Duration {
    Duration::from_secs(12 * 3600)
}

/// What to do when a rotated refresh token comes back after the grace window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum OnReuse {
    /// Revoke the session locally.
    #[default]
    Revoke,
    /// Also present the stale token to the IdP so it revokes the token family.
    RevokeAtIdp,
}

/// `[refresh]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RefreshConfig {
    /// Refresh when the access token expires within this.
    #[serde(with = "duration")]
    pub skew: Duration,
    /// How long after a rotation the old cookie is still served the new tokens.
    #[serde(with = "duration")]
    pub grace: Duration,
    /// The whole time a refresh may take, retries included.
    #[serde(with = "duration")]
    pub timeout: Duration,
    /// What reuse after the grace window does.
    pub on_reuse: OnReuse,
}

impl Default for RefreshConfig {
    fn default() -> Self {
        Self {
            skew: Duration::from_secs(30),
            grace: Duration::from_secs(60),
            timeout: Duration::from_secs(5),
            on_reuse: OnReuse::default(),
        }
    }
}

/// `[csrf]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CsrfConfig {
    /// The header every request to a `csrf = true` route must carry.
    pub header: String,
    /// Its required value.
    pub value: String,
}

impl Default for CsrfConfig {
    fn default() -> Self {
        Self {
            header: "X-CSRF".into(),
            value: "1".into(),
        }
    }
}

/// The kind of shared store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// In-process (moka).
    #[default]
    Memory,
    /// Redis, shared between replicas.
    Redis,
}

/// `[store]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// The kind of store.
    pub kind: StoreKind,
    /// The Redis URL (may hold a password, so it is secret-bearing).
    pub url: Option<SecretSource>,
    /// Prefix of every key the BFF writes.
    pub key_prefix: String,
    /// Time allowed for one store command; past it the store counts as down for
    /// that request (sessions keep working, refreshes go local).
    #[serde(with = "duration")]
    pub timeout: Duration,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            kind: StoreKind::default(),
            url: None,
            key_prefix: "bff:".into(),
            timeout: Duration::from_millis(250),
        }
    }
}

/// `[forward_auth]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ForwardAuthConfig {
    /// Answer `GET {prefix}/auth` for gateways (nginx `auth_request`, Envoy
    /// `ext_authz`, Traefik `forwardAuth`).
    pub enabled: bool,
}

// How log lines are written: the logger's own vocabulary.
pub use crate::logging::LogFormat;

/// `[log]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` or `json`.
    pub format: LogFormat,
    /// The level or `RUST_LOG`-style directives (`info`, `bff_proxy=debug,warn`);
    /// the `RUST_LOG` environment variable overrides it.
    pub level: String,
    /// One access line per request (target `bff_proxy::access`).
    pub access: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".into(),
            access: true,
        }
    }
}

/// `[dev]`: the local demo and tests only.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DevConfig {
    /// Run the embedded development IdP at `oidc.issuer` (a loopback http URL).
    pub idp: bool,
    /// Run an echo upstream at this loopback address.
    pub echo: Option<SocketAddr>,
    /// Access-token lifetime the dev IdP issues (short, so refresh is visible).
    #[serde(with = "duration")]
    pub access_token_lifetime: Duration,
    /// The dev IdP shows a login form instead of logging the test user in at once.
    pub login_form: bool,
}

impl Default for DevConfig {
    fn default() -> Self {
        Self {
            idp: false,
            echo: None,
            access_token_lifetime: Duration::from_secs(300),
            login_form: false,
        }
    }
}

/// Who may use a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum RouteAuth {
    /// A session is needed; the Bearer token is injected.
    #[default]
    Required,
    /// With a session the token is injected; without one the request passes as is.
    Optional,
    /// No session handling at all.
    None,
}

/// One `[[routes]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Path prefix the route serves; the longest matching prefix wins.
    pub path: String,
    /// Upstream base URL (either this or `static_dir`).
    #[serde(default)]
    pub upstream: Option<String>,
    /// A folder of static files (either this or `upstream`); relative to the config
    /// file's folder.
    #[serde(default)]
    pub static_dir: Option<PathBuf>,
    /// Who may use the route.
    #[serde(default)]
    pub auth: RouteAuth,
    /// Require the CSRF header (default: true unless `auth = "none"`).
    #[serde(default)]
    pub csrf: Option<bool>,
    /// Remove `path` from the request path before forwarding.
    #[serde(default)]
    pub strip_prefix: bool,
    /// Allowed methods; others get 405. Unset: all.
    #[serde(default)]
    pub methods: Option<Vec<String>>,
    /// Claims the session's ID token must have: each named claim must equal one of
    /// the listed values (an array claim: hold one of them); else 403 `forbidden`.
    #[serde(default)]
    pub require_claims: BTreeMap<String, Vec<serde_json::Value>>,
    /// Claims sent upstream as headers: header name → claim name (strings as they
    /// are, other values as compact JSON).
    #[serde(default)]
    pub identity_headers: BTreeMap<String, String>,
    /// Step-up (RFC 9470): the session's ID token must have one of these `acr`
    /// values, else 401 `insufficient_user_authentication`.
    #[serde(default)]
    pub acr: Vec<String>,
    /// Step-up: the session's `auth_time` may be at most this old.
    #[serde(default, with = "opt_duration")]
    pub max_age: Option<Duration>,
    /// RFC 8707: the upstream gets an access token for this resource, obtained with
    /// the session's refresh token.
    #[serde(default)]
    pub resource: Option<String>,
    /// RFC 8693: the upstream gets the session's access token exchanged for one
    /// for this audience.
    #[serde(default)]
    pub token_exchange: Option<TokenExchangeConfig>,
}

/// A route's `token_exchange = { audience = "…", scope = "…" }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenExchangeConfig {
    /// The `audience` asked for.
    pub audience: String,
    /// The `scope` asked for, if any.
    #[serde(default)]
    pub scope: Option<String>,
}

impl RouteConfig {
    /// Whether the CSRF header is required on this route.
    #[must_use]
    pub fn csrf_required(&self) -> bool {
        self.csrf.unwrap_or(self.auth != RouteAuth::None)
    }
}
