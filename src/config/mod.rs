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

mod env;
mod validate;

use std::fmt;
use std::path::Path;

use serde::Deserialize;

use crate::cookies::{CookieSettings, SameSite, SessionSealer};
use crate::seal::{KeyError, KeyRing};

pub use crate::schema::*;
use env::*;
pub use validate::{Resolved, TlsFiles};

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
    /// `[forward_auth]`.
    pub forward_auth: ForwardAuthConfig,
    /// `[log]`.
    pub log: LogConfig,
    /// `[[routes]]`, in file order.
    pub routes: Vec<RouteConfig>,
    /// Resolved secrets and parsed URLs.
    pub resolved: Resolved,
    /// Advice that does not stop the proxy (e.g. a public client).
    pub warnings: Vec<Problem>,
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
        let forward_auth = section::<ForwardAuthConfig>(&table, "forward_auth", &mut problems);
        let log = section::<LogConfig>(&table, "log", &mut problems);
        let routes = routes(&table, &mut problems);

        let (
            Some(server),
            Some(oidc),
            Some(session),
            Some(refresh),
            Some(csrf),
            Some(store),
            Some(dev),
            Some(forward_auth),
            Some(log),
            Some(routes),
        ) = (
            server,
            oidc,
            session,
            refresh,
            csrf,
            store,
            dev,
            forward_auth,
            log,
            routes,
        )
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
            forward_auth,
            log,
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
                forward_auth: sections.forward_auth,
                log: sections.log,
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

    /// The settings that differ in `next` but only a restart can change (listen
    /// addresses, engine, threads, store, session mode and cookie name, the
    /// issuer, log format, dev services…), by TOML path. Empty: `next` can be
    /// reloaded.
    #[must_use]
    pub fn restart_only_changes(&self, next: &Self) -> Vec<&'static str> {
        let (a, b) = (&self.server, &next.server);
        let store_url = |c: &Self| c.resolved.store_url.as_ref().map(|u| u.expose().to_owned());
        let checks = [
            ("server.listen", a.listen != b.listen),
            ("server.admin_listen", a.admin_listen != b.admin_listen),
            ("server.engine", a.engine != b.engine),
            ("server.threads", a.worker_threads() != b.worker_threads()),
            ("server.prefix", a.prefix != b.prefix),
            (
                "server.max_connections",
                a.max_connections != b.max_connections,
            ),
            (
                "server.upstream_keepalive",
                a.upstream_keepalive != b.upstream_keepalive,
            ),
            (
                "server.upstream_connect_timeout",
                a.upstream_connect_timeout != b.upstream_connect_timeout,
            ),
            (
                "server.tls_cert",
                self.resolved.tls.is_some() != next.resolved.tls.is_some(),
            ),
            ("oidc.issuer", self.oidc.issuer != next.oidc.issuer),
            (
                "session.cookie_name",
                self.session.cookie_name != next.session.cookie_name,
            ),
            ("session.mode", self.session.mode != next.session.mode),
            (
                "session.absolute_lifetime",
                self.session.absolute_lifetime != next.session.absolute_lifetime,
            ),
            ("store.kind", self.store.kind != next.store.kind),
            ("store.url", store_url(self) != store_url(next)),
            (
                "store.key_prefix",
                self.store.key_prefix != next.store.key_prefix,
            ),
            ("store.timeout", self.store.timeout != next.store.timeout),
            ("log.format", self.log.format != next.log.format),
            ("dev.idp", self.dev.idp != next.dev.idp),
            ("dev.echo", self.dev.echo != next.dev.echo),
            (
                "dev.access_token_lifetime",
                self.dev.access_token_lifetime != next.dev.access_token_lifetime,
            ),
            ("dev.login_form", self.dev.login_form != next.dev.login_form),
        ];
        checks
            .into_iter()
            .filter(|(_, changed)| *changed)
            .map(|(path, _)| path)
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
    forward_auth: ForwardAuthConfig,
    log: LogConfig,
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

#[cfg(test)]
mod tests;
