//! The rules a config must follow beyond its types, and the resolution of its secrets.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use url::Url;

use super::{
    ClientAuth, Env, Problem, RouteAuth, Secret, SecretSource, Sections, SessionMode, StoreKind,
};
use crate::cookies::check_cookie_name;
use crate::net::IpNet;
use crate::seal::{KEY_LEN, KeyRing};

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
    let rules: [(Duration, &str, Duration, Duration); 11] = [
        (
            c.server.shutdown_timeout,
            "server.shutdown_timeout",
            Duration::from_millis(1),
            HOUR,
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

/// Query parameters the BFF sets itself; `auth_params` may not override them.
const RESERVED_AUTH_PARAMS: &[&str] = &[
    "client_id",
    "redirect_uri",
    "response_type",
    "response_mode",
    "scope",
    "state",
    "nonce",
    "code_challenge",
    "code_challenge_method",
];

fn check_oidc(
    c: &Sections,
    problems: &mut Vec<Problem>,
    warnings: &mut Vec<Problem>,
) -> Option<Url> {
    let o = &c.oidc;
    let issuer = http_url(&o.issuer, "oidc.issuer", problems, UrlRules::ABSOLUTE);
    if let Some(url) = &issuer {
        if url.scheme() == "http" && !is_loopback(url) {
            problems.push(Problem::new(
                "oidc.issuer",
                format!(
                    "{:?} must be https (http is allowed only for loopback development IdPs)",
                    o.issuer
                ),
            ));
        }
    }
    if o.client_id.trim().is_empty() {
        problems.push(Problem::new("oidc.client_id", "must not be empty"));
    }
    match o.client_auth {
        ClientAuth::ClientSecretBasic | ClientAuth::ClientSecretPost => {
            if o.client_secret.is_none() {
                problems.push(Problem::new(
                    "oidc.client_secret",
                    "is required by client_auth = client_secret_basic / client_secret_post",
                ));
            }
            if o.private_key.is_some() {
                problems.push(Problem::new(
                    "oidc.private_key",
                    "is only used with client_auth = \"private_key_jwt\"; remove it or change client_auth",
                ));
            }
        }
        ClientAuth::PrivateKeyJwt => {
            if o.private_key.is_none() {
                problems.push(Problem::new(
                    "oidc.private_key",
                    "is required by client_auth = \"private_key_jwt\"",
                ));
            }
            if o.client_secret.is_some() {
                problems.push(Problem::new(
                    "oidc.client_secret",
                    "is not used with client_auth = \"private_key_jwt\"; remove it",
                ));
            }
        }
        ClientAuth::None => {
            for (set, at) in [
                (o.client_secret.is_some(), "oidc.client_secret"),
                (o.private_key.is_some(), "oidc.private_key"),
            ] {
                if set {
                    problems.push(Problem::new(
                        at,
                        "is not used with client_auth = \"none\"; remove it",
                    ));
                }
            }
            warnings.push(Problem::new(
                "oidc.client_auth",
                "\"none\" makes the BFF a public client; the browser-based-apps BCP requires a BFF to be a confidential client",
            ));
        }
    }
    if !o.scopes.iter().any(|s| s == "openid") {
        problems.push(Problem::new("oidc.scopes", "must include \"openid\""));
    }
    for (i, scope) in o.scopes.iter().enumerate() {
        if scope.is_empty()
            || scope
                .chars()
                .any(|ch| !ch.is_ascii_graphic() || ch == '"' || ch == '\\')
        {
            problems.push(Problem::new(
                format!("oidc.scopes[{i}]"),
                format!("{scope:?} is not a valid scope token"),
            ));
        }
    }
    if !o.scopes.iter().any(|s| s == "offline_access") {
        warnings.push(Problem::new(
            "oidc.scopes",
            "has no \"offline_access\": many IdPs then issue no refresh token, and sessions end when the access token expires",
        ));
    }
    for key in o.auth_params.keys() {
        if RESERVED_AUTH_PARAMS.contains(&key.as_str()) {
            problems.push(Problem::new(
                format!("oidc.auth_params.{key}"),
                "is set by the BFF itself and cannot be overridden",
            ));
        }
    }
    issuer
}

type Secrets = (
    Vec<[u8; KEY_LEN]>,
    Option<Secret>,
    Option<Secret>,
    Option<Secret>,
);

fn resolve_secrets(
    c: &Sections,
    base_dir: &Path,
    env: &Env,
    problems: &mut Vec<Problem>,
) -> Option<Secrets> {
    let before = problems.len();
    let mut resolve = |source: &Option<SecretSource>, at: &str| -> Option<Secret> {
        let source = source.as_ref()?;
        match source.resolve(env, base_dir) {
            Ok(secret) if secret.expose().is_empty() => {
                problems.push(Problem::new(at, "is empty"));
                None
            }
            Ok(secret) => Some(secret),
            Err(why) => {
                problems.push(Problem::new(at, why));
                None
            }
        }
    };
    let client_secret = resolve(&c.oidc.client_secret, "oidc.client_secret");
    let private_key = resolve(&c.oidc.private_key, "oidc.private_key");
    let store_url = resolve(&c.store.url, "store.url");
    // TLS files are read to prove they are there; the engine reads them again.
    resolve(&c.server.tls_cert, "server.tls_cert");
    resolve(&c.server.tls_key, "server.tls_key");

    if let Some(pem) = &private_key {
        if let Err(why) = crate::client_key::parse_private_key(pem.expose()) {
            problems.push(Problem::new("oidc.private_key", why));
        }
    }

    let mut keys = Vec::new();
    if c.session.keys.is_empty() {
        problems.push(Problem::new(
            "session.keys",
            "needs at least one key (generate one with `bff-proxy keygen`)",
        ));
    }
    for (i, source) in c.session.keys.iter().enumerate() {
        let at = format!("session.keys[{i}]");
        match source.resolve(env, base_dir) {
            Ok(secret) => match KeyRing::parse_key(secret.expose()) {
                Ok(key) => {
                    if keys.contains(&key) {
                        problems.push(Problem::new(at, "repeats an earlier key"));
                    } else {
                        keys.push(key);
                    }
                }
                Err(why) => problems.push(Problem::new(at, why.to_string())),
            },
            Err(why) => problems.push(Problem::new(at, why)),
        }
    }
    (problems.len() == before).then_some((keys, client_secret, private_key, store_url))
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
        if url.starts_with("rediss://") {
            problems.push(Problem::new(
                "store.url",
                "rediss:// (Redis over TLS): not supported yet in this build",
            ));
        } else if !url.starts_with("redis://") {
            problems.push(Problem::new("store.url", "must be a redis:// URL"));
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

fn check_dev(c: &Sections, issuer: Option<&Url>, problems: &mut Vec<Problem>) {
    if c.dev.idp {
        if let Some(url) = issuer {
            let loopback_ip = matches!(url.host(), Some(url::Host::Ipv4(ip)) if ip.is_loopback())
                || matches!(url.host(), Some(url::Host::Ipv6(ip)) if ip.is_loopback());
            if url.scheme() != "http" || !loopback_ip || url.port().is_none() {
                problems.push(Problem::new(
                    "oidc.issuer",
                    "with dev.idp = true it must be a loopback http URL with a port, like \"http://127.0.0.1:9000\" (the dev IdP listens there)",
                ));
            }
        }
    }
    if let Some(addr) = c.dev.echo {
        if !addr.ip().is_loopback() {
            problems.push(Problem::new(
                "dev.echo",
                format!("{addr} must be a loopback address: the echo upstream is for local demos and tests"),
            ));
        }
    }
}

fn check_routes(
    c: &Sections,
    base_dir: &Path,
    problems: &mut Vec<Problem>,
    warnings: &mut Vec<Problem>,
) -> (Vec<Option<Url>>, Vec<Option<PathBuf>>) {
    let prefix = c.server.prefix.as_str();
    let mut upstreams = Vec::with_capacity(c.routes.len());
    let mut static_dirs = Vec::with_capacity(c.routes.len());
    for (i, r) in c.routes.iter().enumerate() {
        let at = |field: &str| format!("routes[{i}].{field}");
        if !r.path.starts_with('/') || r.path.contains(['?', '#', ' ']) {
            problems.push(Problem::new(
                at("path"),
                format!(
                    "{:?} must be a path starting with / (no ? # or spaces)",
                    r.path
                ),
            ));
        }
        if r.path == prefix || r.path.starts_with(&format!("{prefix}/")) {
            problems.push(Problem::new(
                at("path"),
                format!(
                    "{:?} is inside the BFF's own prefix {prefix:?} (server.prefix)",
                    r.path
                ),
            ));
        }
        if let Some(j) = c.routes[..i].iter().position(|o| o.path == r.path) {
            problems.push(Problem::new(
                at("path"),
                format!("{:?} is already the path of routes[{j}]", r.path),
            ));
        }
        let upstream = match (&r.upstream, &r.static_dir) {
            (Some(_), Some(_)) => {
                problems.push(Problem::new(
                    at("upstream"),
                    "a route has either upstream or static_dir, not both",
                ));
                None
            }
            // Served by the application behind the tower layer; the proxy binary
            // refuses such routes at start (it has nowhere to send them).
            (None, None) => None,
            (Some(text), None) => http_url(text, &at("upstream"), problems, UrlRules::ABSOLUTE),
            (None, Some(_)) => None,
        };
        let static_dir = r.static_dir.as_ref().and_then(|dir| {
            let full = base_dir.join(dir);
            if full.is_dir() {
                Some(full)
            } else {
                problems.push(Problem::new(
                    at("static_dir"),
                    format!("{} is not a folder", full.display()),
                ));
                None
            }
        });
        if r.static_dir.is_some() {
            if r.strip_prefix {
                problems.push(Problem::new(
                    at("strip_prefix"),
                    "applies to upstream routes only",
                ));
            }
            if r.auth != RouteAuth::None && r.csrf_required() {
                warnings.push(Problem::new(
                    at("csrf"),
                    "a static_dir route with auth and the CSRF check answers 403 to every page load with a session (navigations send no CSRF header): set csrf = false",
                ));
            }
        }
        if let Some(methods) = &r.methods {
            if methods.is_empty() {
                problems.push(Problem::new(
                    at("methods"),
                    "an empty allowlist would refuse everything: remove it or list methods",
                ));
            }
            for (m, method) in methods.iter().enumerate() {
                let valid = http::Method::from_bytes(method.as_bytes()).is_ok()
                    && method.bytes().all(|b| b.is_ascii_uppercase());
                if !valid {
                    problems.push(Problem::new(
                        format!("routes[{i}].methods[{m}]"),
                        format!("{method:?} is not an HTTP method in upper case, like \"GET\""),
                    ));
                } else if methods[..m].contains(method) {
                    problems.push(Problem::new(
                        format!("routes[{i}].methods[{m}]"),
                        format!("{method:?} is listed twice"),
                    ));
                }
            }
        }
        upstreams.push(upstream);
        static_dirs.push(static_dir);
    }
    (upstreams, static_dirs)
}
