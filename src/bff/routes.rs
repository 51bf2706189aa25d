//! The route table: the request path checked once (DESIGN.md "Paths"), the endpoint
//! or route it names, and where a route's requests go. Each route's upstream is taken
//! apart once, at start: the doors get its scheme, authority, `Host` value and (for
//! an IP literal) its socket address ready to use.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderValue, Method, Uri};

use super::decision::Target;
use crate::config::{Config, RouteAuth};
use crate::paths::PathCheck;
use crate::error::{Error, ErrorKind, StartError};
use crate::metrics::Metrics;
use crate::paths::check_path;

/// A route's upstream, taken apart once.
#[derive(Debug)]
pub struct Upstream {
    scheme: Scheme,
    authority: Authority,
    host: String,
    port: u16,
    addr: Option<SocketAddr>,
    /// The upstream's path, without a trailing `/` (requests' paths go below it).
    base_path: String,
    host_header: HeaderValue,
}

impl Upstream {
    /// Takes an `http(s)://host[:port][/base]` URL apart.
    pub(crate) fn new(url: &url::Url) -> Result<Self, String> {
        let tls = match url.scheme() {
            "https" => true,
            "http" => false,
            other => return Err(format!("{other}: only http and https upstreams")),
        };
        let host = url.host_str().ok_or("the URL has no host")?.to_owned();
        let port = url.port_or_known_default().unwrap_or(if tls { 443 } else { 80 });
        let authority_text = match url.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.clone(),
        };
        let authority: Authority = authority_text
            .parse()
            .map_err(|_| "the host is not a valid authority".to_owned())?;
        let host_header = HeaderValue::from_str(authority.as_str())
            .map_err(|_| "the host is not header-safe".to_owned())?;
        // An IP literal needs no resolver; `[::1]` loses its brackets to parse.
        let addr = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .ok()
            .map(|ip| SocketAddr::new(ip, port));
        Ok(Self {
            scheme: if tls { Scheme::HTTPS } else { Scheme::HTTP },
            authority,
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port,
            addr,
            base_path: url.path().trim_end_matches('/').to_owned(),
            host_header,
        })
    }

    /// `http` or `https`.
    #[must_use]
    pub fn scheme(&self) -> Scheme {
        self.scheme.clone()
    }

    /// Whether the upstream is reached over TLS.
    #[must_use]
    pub fn tls(&self) -> bool {
        self.scheme == Scheme::HTTPS
    }

    /// `host[:port]` as the URL gave it.
    #[must_use]
    pub fn authority(&self) -> &Authority {
        &self.authority
    }

    /// The host name (or IP, without brackets), for SNI and the resolver.
    #[must_use]
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port, the scheme's default when the URL has none.
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The socket address when the host is an IP literal (no lookup needed).
    #[must_use]
    pub fn addr(&self) -> Option<SocketAddr> {
        self.addr
    }

    /// The `Host` header the upstream is sent.
    #[must_use]
    pub fn host_header(&self) -> &HeaderValue {
        &self.host_header
    }
}

/// Where a route's requests go.
#[derive(Clone)]
enum Destination {
    Application,
    Upstream(Arc<Upstream>),
    Static(Arc<Path>),
}

/// One `[[routes]]` entry, ready for requests.
#[derive(Clone)]
pub(crate) struct Route {
    pub(crate) index: usize,
    pub(crate) path: String,
    pub(crate) auth: RouteAuth,
    pub(crate) csrf: bool,
    strip_prefix: bool,
    methods: Option<Vec<Method>>,
    /// The `Allow` header of a 405.
    allow: Option<HeaderValue>,
    destination: Destination,
    /// `bff_requests_total{route, outcome="forwarded"}`, resolved once.
    pub(crate) forwarded: prometheus::IntCounter,
}

impl Route {
    /// The metric label of the route.
    pub(crate) fn label(&self) -> &str {
        &self.path
    }

    /// Whether the method is allowed; the `Allow` value when it is not.
    pub(crate) fn refuses(&self, method: &Method) -> Option<Option<HeaderValue>> {
        let methods = self.methods.as_ref()?;
        (!methods.contains(method)).then(|| self.allow.clone())
    }

    /// Where a request for `uri` on this route goes; None when its path cannot be
    /// forwarded.
    pub(crate) fn target(&self, uri: &Uri) -> Option<Target> {
        let path = uri.path();
        match &self.destination {
            Destination::Application => Some(Target::Application),
            Destination::Static(dir) => Some(Target::Static {
                dir: Arc::clone(dir),
                path: path.strip_prefix(self.path.as_str()).unwrap_or(path).to_owned(),
            }),
            Destination::Upstream(upstream) => {
                let rest = if self.strip_prefix {
                    path.strip_prefix(self.path.as_str()).unwrap_or(path)
                } else {
                    path
                };
                let query = uri.query();
                let mut text = String::with_capacity(
                    upstream.base_path.len() + rest.len() + 2 + query.map_or(0, str::len),
                );
                text.push_str(&upstream.base_path);
                if !rest.starts_with('/') {
                    text.push('/');
                }
                text.push_str(rest);
                if let Some(q) = query {
                    text.push('?');
                    text.push_str(q);
                }
                let path = PathAndQuery::from_maybe_shared(bytes::Bytes::from(text)).ok()?;
                Some(Target::Upstream {
                    upstream: Arc::clone(upstream),
                    path,
                })
            }
        }
    }
}

/// What a request path names.
pub(crate) enum Matched<'a> {
    /// `{prefix}/<name>`: one of the BFF's endpoints.
    Endpoint(&'a str),
    /// A configured route.
    Route(&'a Route),
    /// Nothing.
    Unmatched,
}

/// The routes, longest path first, and the endpoint prefix.
#[derive(Clone)]
pub(crate) struct RouteTable {
    routes: Vec<Route>,
    prefix: String,
    path_check: PathCheck,
}

impl RouteTable {
    pub(crate) fn new(config: &Config, metrics: &Metrics) -> Result<Self, StartError> {
        let mut routes = Vec::with_capacity(config.routes.len());
        for (index, r) in config.routes.iter().enumerate() {
            let destination = match (
                config.resolved.upstreams.get(index).and_then(Option::as_ref),
                config.resolved.static_dirs.get(index).and_then(Option::as_ref),
            ) {
                (Some(url), _) => Destination::Upstream(Arc::new(Upstream::new(url).map_err(
                    |why| StartError::setting(format!("routes[{index}].upstream"), why),
                )?)),
                (None, Some(dir)) => Destination::Static(Arc::from(dir.as_path())),
                (None, None) => Destination::Application,
            };
            let methods: Option<Vec<Method>> = r.methods.as_ref().map(|m| {
                m.iter()
                    .filter_map(|m| Method::from_bytes(m.as_bytes()).ok())
                    .collect()
            });
            let allow = methods.as_ref().and_then(|m| {
                let names: Vec<&str> = m.iter().map(Method::as_str).collect();
                HeaderValue::from_str(&names.join(", ")).ok()
            });
            routes.push(Route {
                index,
                path: r.path.clone(),
                auth: r.auth,
                csrf: r.csrf_required(),
                strip_prefix: r.strip_prefix,
                methods,
                allow,
                destination,
                forwarded: metrics.request_counter(&r.path, "forwarded"),
            });
        }
        routes.sort_by_key(|r| std::cmp::Reverse(r.path.len()));
        Ok(Self {
            routes,
            prefix: config.server.prefix.clone(),
            path_check: config.server.path_check,
        })
    }

    /// The endpoint prefix (`/bff`).
    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Checks the request path and finds what it names. A path another parser could
    /// read differently is refused here, before any route is chosen.
    pub(crate) fn find<'a>(&'a self, path: &'a str) -> Result<Matched<'a>, Error> {
        check_path(path, self.path_check).map_err(|why| Error::new(ErrorKind::BadRequest(why)))?;
        if let Some(name) = path
            .strip_prefix(self.prefix.as_str())
            .and_then(|rest| rest.strip_prefix('/'))
        {
            return Ok(Matched::Endpoint(name));
        }
        Ok(self
            .routes
            .iter()
            .find(|r| path.starts_with(&r.path))
            .map_or(Matched::Unmatched, Matched::Route))
    }

    /// How many routes there are.
    pub(crate) fn len(&self) -> usize {
        self.routes.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstreams_are_taken_apart_once() {
        let u = Upstream::new(&url::Url::parse("http://127.0.0.1:9/base/").unwrap()).unwrap();
        assert_eq!(u.addr(), Some("127.0.0.1:9".parse().unwrap()));
        assert_eq!(u.host_header(), "127.0.0.1:9");
        assert_eq!(u.base_path, "/base");
        let u = Upstream::new(&url::Url::parse("https://[::1]/").unwrap()).unwrap();
        assert_eq!(u.addr(), Some("[::1]:443".parse().unwrap()));
        assert_eq!(u.host(), "::1");
        assert_eq!(u.authority().as_str(), "[::1]");
        let u = Upstream::new(&url::Url::parse("https://api.example.com").unwrap()).unwrap();
        assert_eq!(u.addr(), None);
        assert_eq!((u.host(), u.port(), u.tls()), ("api.example.com", 443, true));
    }
}
