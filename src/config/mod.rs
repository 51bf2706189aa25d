//! `config.toml`: the schema of DESIGN.md, loading, environment overrides and
//! validation.
//!
//! Loading never stops at the first mistake: every section is read on its own and
//! every rule is checked, and each [`Problem`] names its TOML path
//! (`session.keys[0]: must decode to 32 bytes of base64, got 12`).
//!
//! ```
//! use bff_proxy::config::{Config, Env};
//!
//! let toml = r#"
//! [oidc]
//! issuer = "https://idp.example.com"
//! client_id = "bff"
//! client_secret = "env:SECRET"
//! [session]
//! keys = ["dGhpcyBpcyBub3QgYSBrZXkgYnV0IGp1c3QgMzIgYnl0ZXM="]
//! "#;
//! let env = Env::from_pairs([("SECRET", "s3cr3t")]);
//! let err = Config::from_toml(toml, ".".as_ref(), &env).unwrap_err();
//! assert!(err.to_string().contains("session.keys[0]"));
//! ```

mod secret;
mod validate;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::cookies::{CookieSettings, SameSite, SessionSealer};
use crate::seal::{KeyError, KeyRing};

pub use secret::{Secret, SecretSource};
pub use validate::{Resolved, TlsFiles};

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

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            public_url: None,
            admin_listen: None,
            engine: Engine::default(),
            prefix: "/bff".into(),
            shutdown_timeout: Duration::from_secs(10),
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
}

fn default_scopes() -> Vec<String> {
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
}

fn default_cookie_name() -> String {
    "__Host-Http-bff".into()
}

fn yes() -> bool {
    true
}

fn default_absolute_lifetime() -> Duration {
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
}

impl RouteConfig {
    /// Whether the CSRF header is required on this route.
    #[must_use]
    pub fn csrf_required(&self) -> bool {
        self.csrf.unwrap_or(self.auth != RouteAuth::None)
    }
}

/// The whole configuration, checked, with its secrets resolved.
#[derive(Debug, Clone)]
pub struct Config {
    /// `[server]`.
    pub server: ServerConfig,
    /// `[oidc]`.
    pub oidc: OidcConfig,
    /// `[session]`.
    pub session: SessionConfig,
    /// `[refresh]`.
    pub refresh: RefreshConfig,
    /// `[csrf]`.
    pub csrf: CsrfConfig,
    /// `[store]`.
    pub store: StoreConfig,
    /// `[dev]`.
    pub dev: DevConfig,
    /// `[[routes]]`, in file order.
    pub routes: Vec<RouteConfig>,
    /// Resolved secrets and parsed URLs.
    pub resolved: Resolved,
    /// Advice that does not stop the proxy (e.g. a public client).
    pub warnings: Vec<Problem>,
}

/// One thing wrong (or worth a warning) in the config, at a TOML path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where: `session.keys[0]`, `routes[2].upstream`, or the env var's name.
    pub path: String,
    /// What and why, never a secret value.
    pub message: String,
}

impl Problem {
    fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Every problem found in a config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The problems, in file order where possible.
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.problems.as_slice() {
            [] => f.write_str("invalid config"),
            [one] => write!(f, "{one}"),
            [first, rest @ ..] => write!(
                f,
                "{first} (and {} more; run `bff-proxy check-config` to see all)",
                rest.len()
            ),
        }
    }
}

impl std::error::Error for ConfigError {}

/// The environment the config reads: `BFF_<SECTION>_<KEY>` overrides and `env:`
/// secrets. Tests build their own instead of touching the process environment.
#[derive(Clone, Default)]
pub struct Env {
    vars: HashMap<String, String>,
}

impl fmt::Debug for Env {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Env")
            .field("vars", &self.vars.len())
            .finish_non_exhaustive()
    }
}

impl Env {
    /// The process environment (variables that are not UTF-8 are skipped).
    #[must_use]
    pub fn from_process() -> Self {
        Self {
            vars: std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
                .collect(),
        }
    }

    /// An environment of the given pairs.
    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        Self {
            vars: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(String::as_str)
    }

    fn bff_vars(&self) -> impl Iterator<Item = (&str, &str)> {
        let mut vars: Vec<(&str, &str)> = self
            .vars
            .iter()
            .filter(|(k, _)| k.starts_with("BFF_"))
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        vars.sort_unstable();
        vars.into_iter()
    }
}

/// The kind of value a setting takes, for turning an environment variable into it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Str,
    Bool,
    Int,
    List,
    Table,
}

/// Every setting an environment variable can override: `BFF_<SECTION>_<KEY>`.
/// `[[routes]]` cannot be overridden this way (it is a list of tables).
const SETTINGS: &[(&str, &[(&str, Kind)])] = &[
    (
        "server",
        &[
            ("listen", Kind::Str),
            ("public_url", Kind::Str),
            ("admin_listen", Kind::Str),
            ("engine", Kind::Str),
            ("prefix", Kind::Str),
            ("shutdown_timeout", Kind::Str),
            ("tls_cert", Kind::Str),
            ("tls_key", Kind::Str),
            ("threads", Kind::Int),
            ("upstream_connect_timeout", Kind::Str),
            ("upstream_timeout", Kind::Str),
            ("upstream_keepalive", Kind::Int),
            ("header_timeout", Kind::Str),
            ("idle_timeout", Kind::Str),
            ("max_connections", Kind::Int),
            ("trusted_proxies", Kind::List),
            ("path_check", Kind::Str),
        ],
    ),
    (
        "oidc",
        &[
            ("issuer", Kind::Str),
            ("client_id", Kind::Str),
            ("client_secret", Kind::Str),
            ("client_auth", Kind::Str),
            ("private_key", Kind::Str),
            ("scopes", Kind::List),
            ("auth_params", Kind::Table),
            ("post_logout_redirect_uri", Kind::Str),
            ("revocation_endpoint", Kind::Str),
        ],
    ),
    (
        "session",
        &[
            ("cookie_name", Kind::Str),
            ("secure", Kind::Bool),
            ("same_site", Kind::Str),
            ("keys", Kind::List),
            ("absolute_lifetime", Kind::Str),
            ("max_refreshes", Kind::Int),
            ("mode", Kind::Str),
        ],
    ),
    (
        "refresh",
        &[
            ("skew", Kind::Str),
            ("grace", Kind::Str),
            ("timeout", Kind::Str),
            ("on_reuse", Kind::Str),
        ],
    ),
    ("csrf", &[("header", Kind::Str), ("value", Kind::Str)]),
    (
        "store",
        &[
            ("kind", Kind::Str),
            ("url", Kind::Str),
            ("key_prefix", Kind::Str),
            ("timeout", Kind::Str),
        ],
    ),
    (
        "dev",
        &[
            ("idp", Kind::Bool),
            ("echo", Kind::Str),
            ("access_token_lifetime", Kind::Str),
            ("login_form", Kind::Bool),
        ],
    ),
];

impl Config {
    /// Reads, overrides from the environment, checks and resolves `path`.
    pub fn load(path: &Path, env: &Env) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            problems: vec![Problem::new(
                path.display().to_string(),
                format!("cannot read the config file: {e}"),
            )],
        })?;
        let base_dir = path.parent().unwrap_or_else(|| Path::new("."));
        let base_dir = if base_dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            base_dir
        };
        Self::from_toml(&text, base_dir, env)
    }

    /// Like [`Config::load`] for config text; relative paths are taken from
    /// `base_dir`.
    pub fn from_toml(text: &str, base_dir: &Path, env: &Env) -> Result<Self, ConfigError> {
        let mut problems = Vec::new();
        let mut warnings = Vec::new();
        let mut table: toml::Table = text.parse().map_err(|e: toml::de::Error| ConfigError {
            problems: vec![Problem::new("(syntax)", one_line(&e.to_string()))],
        })?;
        apply_env_overrides(&mut table, env, &mut problems, &mut warnings);

        for key in table.keys() {
            if key != "routes" && !SETTINGS.iter().any(|(s, _)| s == key) {
                problems.push(Problem::new(
                    key.clone(),
                    format!(
                        "unknown section (known: {}, routes)",
                        SETTINGS
                            .iter()
                            .map(|(s, _)| *s)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            }
        }

        let server = section::<ServerConfig>(&table, "server", &mut problems);
        let oidc = section::<OidcConfig>(&table, "oidc", &mut problems);
        let session = section::<SessionConfig>(&table, "session", &mut problems);
        let refresh = section::<RefreshConfig>(&table, "refresh", &mut problems);
        let csrf = section::<CsrfConfig>(&table, "csrf", &mut problems);
        let store = section::<StoreConfig>(&table, "store", &mut problems);
        let dev = section::<DevConfig>(&table, "dev", &mut problems);
        let routes = routes(&table, &mut problems);

        let (
            Some(server),
            Some(oidc),
            Some(session),
            Some(refresh),
            Some(csrf),
            Some(store),
            Some(dev),
            Some(routes),
        ) = (server, oidc, session, refresh, csrf, store, dev, routes)
        else {
            return Err(ConfigError { problems });
        };
        let sections = Sections {
            server,
            oidc,
            session,
            refresh,
            csrf,
            store,
            dev,
            routes,
        };
        let resolved = validate::check(&sections, base_dir, env, &mut problems, &mut warnings);
        match resolved {
            Some(resolved) if problems.is_empty() => Ok(Self {
                server: sections.server,
                oidc: sections.oidc,
                session: sections.session,
                refresh: sections.refresh,
                csrf: sections.csrf,
                store: sections.store,
                dev: sections.dev,
                routes: sections.routes,
                resolved,
                warnings,
            }),
            _ => Err(ConfigError { problems }),
        }
    }

    /// Problems that matter only when this config runs the proxy binary rather than
    /// the tower layer: a route with neither `upstream` nor `static_dir` has nowhere to
    /// go in a proxy.
    #[must_use]
    pub fn proxy_problems(&self) -> Vec<Problem> {
        self.routes
            .iter()
            .enumerate()
            .filter(|(_, r)| r.upstream.is_none() && r.static_dir.is_none())
            .map(|(i, _)| {
                Problem::new(
                    format!("routes[{i}].upstream"),
                    "the proxy needs an upstream URL or a static_dir for every route (routes without either are for the tower layer)",
                )
            })
            .collect()
    }

    /// The session key ring (first key seals, all open).
    pub fn key_ring(&self) -> Result<KeyRing, KeyError> {
        KeyRing::new(self.resolved.session_keys.clone())
    }

    /// The session cookie's name and attributes.
    #[must_use]
    pub fn cookie_settings(&self) -> CookieSettings {
        CookieSettings::new(
            self.session.cookie_name.clone(),
            self.session.secure,
            match self.session.same_site {
                SameSiteSetting::Strict => SameSite::Strict,
                SameSiteSetting::Lax => SameSite::Lax,
            },
        )
    }

    /// The sealer of session cookies.
    pub fn session_sealer(&self) -> Result<SessionSealer, KeyError> {
        Ok(SessionSealer::new(self.key_ring()?, self.cookie_settings()))
    }
}

/// The sections as read, before the cross-field checks.
struct Sections {
    server: ServerConfig,
    oidc: OidcConfig,
    session: SessionConfig,
    refresh: RefreshConfig,
    csrf: CsrfConfig,
    store: StoreConfig,
    dev: DevConfig,
    routes: Vec<RouteConfig>,
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Deserializes one section, naming the path of the first problem in it. A missing
/// section is an empty one, so its defaults (or its "missing field") apply.
fn section<T: for<'de> Deserialize<'de>>(
    table: &toml::Table,
    name: &str,
    problems: &mut Vec<Problem>,
) -> Option<T> {
    let value = table
        .get(name)
        .cloned()
        .unwrap_or_else(|| toml::Value::Table(toml::Table::new()));
    if !value.is_table() {
        problems.push(Problem::new(name, "must be a table, like [section]"));
        return None;
    }
    deserialize_at(value, name, problems)
}

fn deserialize_at<T: for<'de> Deserialize<'de>>(
    value: toml::Value,
    at: &str,
    problems: &mut Vec<Problem>,
) -> Option<T> {
    match serde_path_to_error::deserialize::<_, T>(value) {
        Ok(v) => Some(v),
        Err(e) => {
            let inner = e.path().to_string();
            let mut path = if inner == "." {
                at.to_owned()
            } else {
                format!("{at}.{inner}")
            };
            let message = one_line(&e.into_inner().to_string());
            // serde names a missing field in the message; the path should name it too.
            if let Some(field) = message
                .strip_prefix("missing field `")
                .and_then(|m| m.split('`').next())
            {
                path = format!("{path}.{field}");
            }
            problems.push(Problem::new(path, message));
            None
        }
    }
}

fn routes(table: &toml::Table, problems: &mut Vec<Problem>) -> Option<Vec<RouteConfig>> {
    let Some(value) = table.get("routes") else {
        return Some(Vec::new());
    };
    let Some(items) = value.as_array() else {
        problems.push(Problem::new(
            "routes",
            "must be an array of tables, like [[routes]]",
        ));
        return None;
    };
    let before = problems.len();
    let routes: Vec<RouteConfig> = items
        .iter()
        .enumerate()
        .filter_map(|(i, item)| deserialize_at(item.clone(), &format!("routes[{i}]"), problems))
        .collect();
    (problems.len() == before).then_some(routes)
}

/// Applies `BFF_<SECTION>_<KEY>` variables to the parsed table.
fn apply_env_overrides(
    table: &mut toml::Table,
    env: &Env,
    problems: &mut Vec<Problem>,
    warnings: &mut Vec<Problem>,
) {
    let referenced = env_references(table);
    for (var, raw) in env.bff_vars() {
        let rest = var["BFF_".len()..].to_ascii_lowercase();
        let Some((section, key)) = rest.split_once('_') else {
            continue;
        };
        let Some((_, keys)) = SETTINGS.iter().find(|(s, _)| *s == section) else {
            continue;
        };
        let Some(&(_, kind)) = keys.iter().find(|(k, _)| *k == key) else {
            // Variables like BFF_SESSION_KEY are often secrets named by `env:`; only
            // one that nothing uses is worth a word (it may be a typo).
            if !referenced.iter().any(|r| r == var) {
                warnings.push(Problem::new(
                    var,
                    format!(
                        "is set but {section}.{key} is no setting, and no env: reference uses it"
                    ),
                ));
            }
            continue;
        };
        match env_value(raw, kind) {
            Ok(value) => {
                let entry = table
                    .entry(section.to_owned())
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()));
                if let Some(t) = entry.as_table_mut() {
                    t.insert(key.to_owned(), value);
                }
            }
            Err(why) => problems.push(Problem::new(var, why)),
        }
    }
}

fn env_value(raw: &str, kind: Kind) -> Result<toml::Value, String> {
    match kind {
        Kind::Str => Ok(toml::Value::String(raw.to_owned())),
        Kind::Bool => match raw.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(toml::Value::Boolean(true)),
            "false" | "0" | "no" | "off" => Ok(toml::Value::Boolean(false)),
            _ => Err(format!("expected true or false, got {raw:?}")),
        },
        Kind::Int => raw
            .trim()
            .parse::<i64>()
            .map(toml::Value::Integer)
            .map_err(|_| format!("expected a whole number, got {raw:?}")),
        Kind::List => {
            let trimmed = raw.trim();
            if trimmed.starts_with('[') {
                parse_toml_value(trimmed).and_then(|v| {
                    if v.is_array() {
                        Ok(v)
                    } else {
                        Err("expected a TOML array".into())
                    }
                })
            } else {
                Ok(toml::Value::Array(
                    trimmed
                        .split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(|s| toml::Value::String(s.to_owned()))
                        .collect(),
                ))
            }
        }
        Kind::Table => parse_toml_value(raw.trim()).and_then(|v| {
            if v.is_table() {
                Ok(v)
            } else {
                Err("expected a TOML inline table, like { prompt = \"consent\" }".into())
            }
        }),
    }
}

fn parse_toml_value(text: &str) -> Result<toml::Value, String> {
    let doc: toml::Table = format!("v = {text}")
        .parse()
        .map_err(|e: toml::de::Error| format!("not a TOML value: {}", one_line(e.message())))?;
    doc.get("v")
        .cloned()
        .ok_or_else(|| "not a TOML value".to_owned())
}

/// The names of every `env:NAME` the table refers to.
fn env_references(table: &toml::Table) -> Vec<String> {
    fn walk(v: &toml::Value, out: &mut Vec<String>) {
        match v {
            toml::Value::String(s) => {
                if let Some(name) = s.strip_prefix("env:") {
                    out.push(name.to_owned());
                }
            }
            toml::Value::Array(items) => items.iter().for_each(|i| walk(i, out)),
            toml::Value::Table(t) => t.values().for_each(|i| walk(i, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    table.values().for_each(|v| walk(v, &mut out));
    out
}

/// Durations as humantime strings: "30s", "12h", "1h 30m".
mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    /// No setting means anything near this; past it, adding a duration to a clock
    /// reading could overflow. Each setting has its own, lower bound in validation.
    pub(super) const MAX: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        let parsed = humantime::parse_duration(&text).map_err(|_| {
            serde::de::Error::custom(format!(
                "invalid duration {text:?}: expected a number and a unit, like \"30s\" or \"12h\""
            ))
        })?;
        if parsed > MAX {
            return Err(serde::de::Error::custom(format!(
                "duration {text:?} is far too long"
            )));
        }
        Ok(parsed)
    }
}

#[cfg(test)]
mod tests;
