//! The rules a config must follow beyond its types, and the resolution of its secrets.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use url::Url;

use super::{
    ClientAuth, Env, Problem, RouteAuth, RouteConfig, Secret, SecretSource, Sections, SessionMode,
    StoreKind,
};
use crate::cookies::check_cookie_name;
use crate::net::IpNet;
use crate::seal::{KEY_LEN, KeyRing};

mod oidc;
mod routes;

use oidc::*;
use routes::*;

/// What loading resolved: secrets read, URLs parsed, paths made absolute.
#[derive(Clone)]
pub struct Resolved {
    /// The session keys, first sealing.
    pub session_keys: Vec<[u8; KEY_LEN]>,
    /// `oidc.client_secret`.
    pub client_secret: Option<Secret>,
    /// `oidc.private_key` (PEM).
    pub private_key: Option<Secret>,
    /// `store.url`.
    pub store_url: Option<Secret>,
    /// `oidc.issuer`.
    pub issuer: Url,
    /// `server.public_url` (or `http://` + `server.listen`).
    pub public_url: Url,
    /// The redirect URI: `public_url + prefix + "/callback"`.
    pub redirect_uri: Url,
    /// `oidc.post_logout_redirect_uri`.
    pub post_logout_redirect_uri: Option<Url>,
    /// Per route, in file order: its upstream URL.
    pub upstreams: Vec<Option<Url>>,
    /// Per route, in file order: its static folder, made absolute.
    pub static_dirs: Vec<Option<PathBuf>>,
    /// `server.tls_cert` and `server.tls_key` as file paths, when TLS is on.
    pub tls: Option<TlsFiles>,
    /// `server.trusted_proxies`, parsed.
    pub trusted_proxies: Vec<IpNet>,
    /// `oidc.revocation_endpoint`.
    pub revocation_endpoint: Option<Url>,
}

/// The certificate chain and key files of TLS termination (checked at load).
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

impl fmt::Debug for Resolved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resolved")
            .field("session_keys", &self.session_keys.len())
            .field("client_secret", &self.client_secret)
            .field("private_key", &self.private_key)
            .field("store_url", &self.store_url.as_ref().map(|_| "<redacted>"))
            .field("issuer", &self.issuer.as_str())
            .field("public_url", &self.public_url.as_str())
            .field("redirect_uri", &self.redirect_uri.as_str())
            .field(
                "post_logout_redirect_uri",
                &self.post_logout_redirect_uri.as_ref().map(Url::as_str),
            )
            .field("upstreams", &self.upstreams)
            .field("static_dirs", &self.static_dirs)
            .field("tls", &self.tls)
            .field("trusted_proxies", &self.trusted_proxies)
            .field(
                "revocation_endpoint",
                &self.revocation_endpoint.as_ref().map(Url::as_str),
            )
            .finish()
    }
}

/// Advice on combinations that work but may not be what was meant.
fn advise(c: &Sections, warnings: &mut Vec<Problem>) {
    if c.session.mode == SessionMode::Server && c.store.kind == StoreKind::Memory {
        warnings.push(Problem::new(
            "session.mode",
            "\"server\" with store.kind = \"memory\" keeps sessions in this process: they end when it restarts, and replicas need store.kind = \"redis\"",
        ));
    }
}

pub(super) fn check(
    c: &Sections,
    base_dir: &Path,
    env: &Env,
    problems: &mut Vec<Problem>,
    warnings: &mut Vec<Problem>,
) -> Option<Resolved> {
    let server = check_server(c, problems);
    check_durations(c, problems);
    let trusted_proxies = check_trusted_proxies(c, problems);
    let issuer = check_oidc(c, problems, warnings);
    let revocation_endpoint = c.oidc.revocation_endpoint.as_ref().and_then(|text| {
        let url = http_url(
            text,
            "oidc.revocation_endpoint",
            problems,
            UrlRules::ABSOLUTE,
        )?;
        if url.scheme() == "http" && !is_loopback(&url) {
            problems.push(Problem::new(
                "oidc.revocation_endpoint",
                format!("{text:?} must be https (http is allowed only on loopback hosts)"),
            ));
        }
        Some(url)
    });
    let secrets = resolve_secrets(c, base_dir, env, problems);
    check_session(c, problems);
    check_refresh(c, problems);
    check_csrf(c, problems);
    check_store(c, problems);
    check_dev(c, issuer.as_ref(), problems);
    check_log(c, problems);
    let (upstreams, static_dirs) = check_routes(c, base_dir, problems, warnings);
    let tls = check_tls(c, base_dir, problems, warnings);
    advise(c, warnings);

    let post_logout_redirect_uri = match &c.oidc.post_logout_redirect_uri {
        None => None,
        Some(text) => {
            match http_url(
                text,
                "oidc.post_logout_redirect_uri",
                problems,
                UrlRules::ABSOLUTE,
            ) {
                Some(url) => Some(url),
                None => return None,
            }
        }
    };
    let (public_url, redirect_uri) = server?;
    let (session_keys, client_secret, private_key, store_url) = secrets?;
    Some(Resolved {
        session_keys,
        client_secret,
        private_key,
        store_url,
        issuer: issuer?,
        public_url,
        redirect_uri,
        post_logout_redirect_uri,
        upstreams,
        static_dirs,
        tls,
        trusted_proxies,
        revocation_endpoint,
    })
}

const SECOND: Duration = Duration::from_secs(1);
const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(24 * 3600);

/// Every duration has a floor and a ceiling: far-off values overflow clocks and
/// caches at run time (`"1001y"` once passed here and panicked at start).
fn check_durations(c: &Sections, problems: &mut Vec<Problem>) {
    let rules: [(Duration, &str, Duration, Duration); 13] = [
        (
            c.server.shutdown_timeout,
            "server.shutdown_timeout",
            Duration::from_millis(1),
            HOUR,
        ),
        (
            c.server.drain_delay,
            "server.drain_delay",
            Duration::ZERO,
            10 * MINUTE,
        ),
        (
            c.server.upstream_connect_timeout,
            "server.upstream_connect_timeout",
            Duration::from_millis(1),
            5 * MINUTE,
        ),
        (
            c.server.upstream_timeout,
            "server.upstream_timeout",
            Duration::from_millis(1),
            DAY,
        ),
        (
            c.server.header_timeout,
            "server.header_timeout",
            Duration::from_millis(1),
            10 * MINUTE,
        ),
        (
            c.server.idle_timeout,
            "server.idle_timeout",
            Duration::from_millis(1),
            DAY,
        ),
        (
            c.session.absolute_lifetime,
            "session.absolute_lifetime",
            SECOND,
            366 * DAY,
        ),
        (
            c.session.idle_timeout,
            "session.idle_timeout",
            Duration::ZERO,
            366 * DAY,
        ),
        (c.refresh.skew, "refresh.skew", Duration::ZERO, DAY),
        (c.refresh.grace, "refresh.grace", Duration::ZERO, DAY),
        (
            c.refresh.timeout,
            "refresh.timeout",
            Duration::from_millis(1),
            5 * MINUTE,
        ),
        (
            c.store.timeout,
            "store.timeout",
            Duration::from_millis(1),
            MINUTE,
        ),
        (
            c.dev.access_token_lifetime,
            "dev.access_token_lifetime",
            SECOND,
            DAY,
        ),
    ];
    for (value, at, min, max) in rules {
        if value < min {
            problems.push(Problem::new(
                at,
                if min <= Duration::from_millis(1) {
                    "must be more than zero".to_owned()
                } else {
                    format!("must be at least {}", humantime::format_duration(min))
                },
            ));
        } else if value > max {
            problems.push(Problem::new(
                at,
                format!("must be at most {}", humantime::format_duration(max)),
            ));
        }
    }
}

fn check_trusted_proxies(c: &Sections, problems: &mut Vec<Problem>) -> Vec<IpNet> {
    let mut nets = Vec::new();
    for (i, text) in c.server.trusted_proxies.iter().enumerate() {
        match IpNet::parse(text) {
            Ok(net) => nets.push(net),
            Err(why) => problems.push(Problem::new(format!("server.trusted_proxies[{i}]"), why)),
        }
    }
    nets
}

/// TLS files must be `file:` paths (the engines load them from disk) holding a PEM
/// certificate chain and a PEM private key.
fn check_tls(
    c: &Sections,
    base_dir: &Path,
    problems: &mut Vec<Problem>,
    warnings: &mut Vec<Problem>,
) -> Option<TlsFiles> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let (Some(cert), Some(key)) = (&c.server.tls_cert, &c.server.tls_key) else {
        return None;
    };
    let path_of = |source: &SecretSource, at: &str, problems: &mut Vec<Problem>| match source {
        SecretSource::File(p) => Some(base_dir.join(p)),
        _ => {
            problems.push(Problem::new(
                at,
                "must be a file:/path (the engines read PEM files from disk)",
            ));
            None
        }
    };
    let cert_path = path_of(cert, "server.tls_cert", problems)?;
    let key_path = path_of(key, "server.tls_key", problems)?;
    let certs = CertificateDer::pem_file_iter(&cert_path)
        .map(|it| it.filter_map(Result::ok).count())
        .unwrap_or(0);
    if certs == 0 {
        problems.push(Problem::new(
            "server.tls_cert",
            format!("{} holds no PEM certificate", cert_path.display()),
        ));
    }
    if PrivateKeyDer::from_pem_file(&key_path).is_err() {
        problems.push(Problem::new(
            "server.tls_key",
            format!("{} holds no PEM private key", key_path.display()),
        ));
    }
    if let Some(public) = &c.server.public_url {
        if public.starts_with("http://") {
            warnings.push(Problem::new(
                "server.public_url",
                "is http:// while the proxy terminates TLS: redirects and cookies will name the wrong scheme",
            ));
        }
    }
    (certs > 0).then_some(TlsFiles {
        cert: cert_path,
        key: key_path,
    })
}

#[derive(Clone, Copy)]
struct UrlRules {
    /// A path other than `/` is allowed.
    path: bool,
}

impl UrlRules {
    const ABSOLUTE: Self = Self { path: true };
    const ORIGIN: Self = Self { path: false };
}

/// Parses an absolute http(s) URL without credentials, query or fragment.
fn http_url(text: &str, at: &str, problems: &mut Vec<Problem>, rules: UrlRules) -> Option<Url> {
    let url = match Url::parse(text) {
        Ok(url) => url,
        Err(e) => {
            problems.push(Problem::new(
                at,
                format!("{text:?} is not an absolute URL ({e})"),
            ));
            return None;
        }
    };
    let why = if !matches!(url.scheme(), "http" | "https") {
        Some("must be an http:// or https:// URL")
    } else if url.host().is_none() {
        Some("must name a host")
    } else if !url.username().is_empty() || url.password().is_some() {
        Some("must not contain credentials")
    } else if url.query().is_some() || url.fragment().is_some() {
        Some("must not have a query or fragment")
    } else if !rules.path && url.path() != "/" {
        Some("must be an origin only (scheme, host and port), with no path")
    } else {
        None
    };
    match why {
        Some(why) => {
            problems.push(Problem::new(at, format!("{text:?} {why}")));
            None
        }
        None => Some(url),
    }
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d == "localhost" || d.ends_with(".localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

fn check_server(c: &Sections, problems: &mut Vec<Problem>) -> Option<(Url, Url)> {
    let s = &c.server;
    if s.admin_listen == Some(s.listen) {
        problems.push(Problem::new(
            "server.admin_listen",
            "must differ from server.listen",
        ));
    }
    let prefix = &s.prefix;
    if !prefix.starts_with('/')
        || prefix.len() < 2
        || prefix.ends_with('/')
        || prefix.contains(['?', '#', ' ', '%'])
        || prefix.contains("//")
    {
        problems.push(Problem::new(
            "server.prefix",
            format!("{prefix:?} must be a path like \"/bff\": a leading /, no trailing /, no ? # % or spaces"),
        ));
    }
    if s.max_connections == 0 {
        problems.push(Problem::new("server.max_connections", "must be at least 1"));
    }
    if s.threads == Some(0) {
        problems.push(Problem::new("server.threads", "must be at least 1"));
    }
    if s.tls_cert.is_some() != s.tls_key.is_some() {
        problems.push(Problem::new(
            "server.tls_cert",
            "tls_cert and tls_key go together: set both or neither",
        ));
    }
    let public_text = match &s.public_url {
        Some(text) => text.clone(),
        None => format!("http://{}", s.listen),
    };
    let public = http_url(
        &public_text,
        "server.public_url",
        problems,
        UrlRules::ORIGIN,
    )?;
    if c.session.secure && public.scheme() == "http" && !is_loopback(&public) {
        problems.push(Problem::new(
            "server.public_url",
            format!(
                "{public_text:?} is http:// on a non-loopback host, where browsers drop Secure cookies: serve it over https"
            ),
        ));
    }
    let mut redirect = public.clone();
    redirect.set_path(&format!("{prefix}/callback"));
    Some((public, redirect))
}

fn check_session(c: &Sections, problems: &mut Vec<Problem>) {
    let s = &c.session;
    if let Err(why) = check_cookie_name(&s.cookie_name) {
        problems.push(Problem::new("session.cookie_name", why));
    }
    for prefix in ["__Host-", "__Secure-"] {
        if s.cookie_name.starts_with(prefix) && !s.secure {
            problems.push(Problem::new(
                "session.secure",
                format!(
                    "is false, but session.cookie_name {:?} starts with {prefix}, which browsers only accept on Secure cookies (they would drop it silently); browsers accept Secure cookies on http://127.0.0.1 and http://localhost, so keep secure = true or pick another name",
                    s.cookie_name
                ),
            ));
        }
    }
}

fn check_refresh(c: &Sections, problems: &mut Vec<Problem>) {
    let r = &c.refresh;
    if r.skew >= c.session.absolute_lifetime {
        problems.push(Problem::new(
            "refresh.skew",
            "must be shorter than session.absolute_lifetime",
        ));
    }
}

/// Request headers a browser may send cross-site without a CORS preflight; a CSRF
/// header must not be one of them, or it protects nothing.
const SAFELISTED_HEADERS: &[&str] = &[
    "accept",
    "accept-language",
    "content-language",
    "content-type",
    "range",
];

fn check_csrf(c: &Sections, problems: &mut Vec<Problem>) {
    let header = c.csrf.header.to_ascii_lowercase();
    match http::HeaderName::from_bytes(header.as_bytes()) {
        Err(_) => problems.push(Problem::new(
            "csrf.header",
            format!("{:?} is not a valid header name", c.csrf.header),
        )),
        Ok(_) if SAFELISTED_HEADERS.contains(&header.as_str()) => problems.push(Problem::new(
            "csrf.header",
            format!(
                "{:?} is CORS-safelisted, so it forces no preflight and protects nothing: use a custom header like X-CSRF",
                c.csrf.header
            ),
        )),
        Ok(_) if ["cookie", "authorization", "host", "origin"].contains(&header.as_str()) => {
            problems.push(Problem::new(
                "csrf.header",
                format!("{:?} has another meaning: use a custom header like X-CSRF", c.csrf.header),
            ));
        }
        Ok(_) => {}
    }
    if c.csrf.value.is_empty() || http::HeaderValue::from_str(&c.csrf.value).is_err() {
        problems.push(Problem::new(
            "csrf.value",
            "must be a non-empty, visible-ASCII header value",
        ));
    }
}

fn check_store(c: &Sections, problems: &mut Vec<Problem>) {
    if let Some(SecretSource::Literal(url)) = &c.store.url {
        if !url.starts_with("redis://") && !url.starts_with("rediss://") {
            problems.push(Problem::new(
                "store.url",
                "must be a redis:// or rediss:// (TLS) URL",
            ));
        }
    }
    match (c.store.kind, &c.store.url) {
        (StoreKind::Redis, None) => problems.push(Problem::new(
            "store.url",
            "is required by store.kind = \"redis\"",
        )),
        (StoreKind::Memory, Some(_)) => problems.push(Problem::new(
            "store.url",
            "is only used with store.kind = \"redis\"; remove it or change the kind",
        )),
        _ => {}
    }
    if c.store.key_prefix.contains(char::is_whitespace) {
        problems.push(Problem::new(
            "store.key_prefix",
            "must not contain white space",
        ));
    }
}

/// `log.level` must be a level or `RUST_LOG`-style directives.
fn check_log(c: &Sections, problems: &mut Vec<Problem>) {
    if let Err(e) = crate::logging::parse_level(&c.log.level) {
        problems.push(Problem::new("log.level", e));
    }
}
