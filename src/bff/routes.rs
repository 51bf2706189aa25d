//! The route table: the request path checked once (DESIGN.md "Paths"), the endpoint
//! or route it names, and where a route's requests go. Each route's upstream is taken
//! apart once, at start: the doors get its scheme, authority, `Host` value and (for
//! an IP literal) its socket address ready to use.

use std::path::Path;
use std::sync::Arc;

use http::uri::PathAndQuery;
use http::{HeaderName, HeaderValue, Method, Uri};

use super::decision::{StaticFile, Target};
use super::upstream::Upstream;
use crate::config::{Config, RouteAuth};
use crate::error::{Error, ErrorKind};
use crate::metrics::Metrics;
use crate::paths::PathCheck;
use crate::paths::check_path;
use crate::refresh::Audience;
use crate::start::StartError;

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
    /// The path again, shared: the access log's route label.
    pub(crate) label: Arc<str>,
    pub(crate) auth: RouteAuth,
    pub(crate) csrf: bool,
    strip_prefix: bool,
    methods: Option<Vec<Method>>,
    /// The `Allow` header of a 405.
    allow: Option<HeaderValue>,
    destination: Destination,
    /// `bff_requests_total{route, outcome="forwarded"}`, resolved once.
    pub(crate) forwarded: prometheus::IntCounter,
    /// `bff_upstream_duration_seconds{route}`, resolved once.
    pub(crate) upstream_duration: prometheus::Histogram,
    /// `require_claims` and `identity_headers`.
    pub(crate) rules: ClaimRules,
    /// `acr` and `max_age`.
    pub(crate) step_up: crate::login::AuthRequirement,
    /// Whose access token goes upstream (`resource`, `token_exchange`), and the
    /// session's key for it.
    pub(crate) audience: Audience,
}

/// A route's rules on the session's claims: which claims must hold which values,
/// and which claims go upstream as headers.
#[derive(Clone, Default)]
pub(crate) struct ClaimRules {
    required: Vec<(String, Vec<serde_json::Value>)>,
    headers: Vec<(HeaderName, String)>,
}

impl ClaimRules {
    fn new(r: &crate::config::RouteConfig) -> Self {
        Self {
            required: r
                .require_claims
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            headers: r
                .identity_headers
                .iter()
                .filter_map(|(h, claim)| {
                    Some((
                        HeaderName::from_bytes(h.to_ascii_lowercase().as_bytes()).ok()?,
                        claim.clone(),
                    ))
                })
                .collect(),
        }
    }

    /// Whether the route has any rule (the claims are read only then).
    pub(crate) fn any(&self) -> bool {
        !self.required.is_empty() || !self.headers.is_empty()
    }

    /// Whether `claims` meet every requirement: each named claim equals one of its
    /// values, or (an array claim) holds one of them. A missing claim fails.
    pub(crate) fn allow(&self, claims: Option<&serde_json::Value>) -> bool {
        self.required
            .iter()
            .all(|(name, allowed)| match claims.and_then(|c| c.get(name)) {
                Some(serde_json::Value::Array(held)) => held.iter().any(|v| allowed.contains(v)),
                Some(value) => allowed.contains(value),
                None => false,
            })
    }

    /// The identity headers for `claims`: strings as they are, other values as
    /// compact JSON; a claim that is missing, or not a valid header value (a
    /// control character), sends no header.
    pub(crate) fn headers(
        &self,
        claims: Option<&serde_json::Value>,
    ) -> Vec<(HeaderName, HeaderValue)> {
        self.headers
            .iter()
            .filter_map(|(name, claim)| {
                let value = claims?.get(claim)?;
                let text = match value {
                    serde_json::Value::String(s) => s.clone(),
                    serde_json::Value::Null => return None,
                    other => other.to_string(),
                };
                Some((name.clone(), HeaderValue::from_bytes(text.as_bytes()).ok()?))
            })
            .collect()
    }
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

    /// Where a request for `uri` on this route goes (a static file is served by the
    /// core, with `Target::Application` as its placeholder); None when its path
    /// cannot be forwarded.
    pub(crate) fn target(&self, uri: &Uri) -> Option<(Target, Option<StaticFile>)> {
        let path = uri.path();
        match &self.destination {
            Destination::Application => Some((Target::Application, None)),
            Destination::Static(dir) => Some((
                Target::Application,
                Some(StaticFile {
                    dir: Arc::clone(dir),
                    path: path
                        .strip_prefix(self.path.as_str())
                        .unwrap_or(path)
                        .to_owned(),
                }),
            )),
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
                Some((
                    Target::Upstream {
                        upstream: Arc::clone(upstream),
                        path,
                    },
                    None,
                ))
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
    /// Every configured identity header: a client's copies are dropped on every
    /// route. None when no route has one.
    pub(crate) identity_names: Option<Arc<[HeaderName]>>,
    prefix: String,
    /// The prefix again, shared: the endpoints' route label in the access log.
    prefix_label: Arc<str>,
    path_check: PathCheck,
}

impl RouteTable {
    /// A route's audience.
    fn audience(r: &crate::config::RouteConfig) -> Audience {
        match (&r.resource, &r.token_exchange) {
            (Some(resource), _) => Audience::resource(resource),
            (None, Some(x)) => Audience::exchange(&x.audience, x.scope.as_deref()),
            (None, None) => Audience::Own,
        }
    }

    pub(crate) fn new(config: &Config, metrics: &Metrics) -> Result<Self, StartError> {
        let mut routes = Vec::with_capacity(config.routes.len());
        for (index, r) in config.routes.iter().enumerate() {
            let destination = match (
                config
                    .resolved
                    .upstreams
                    .get(index)
                    .and_then(Option::as_ref),
                config
                    .resolved
                    .static_dirs
                    .get(index)
                    .and_then(Option::as_ref),
            ) {
                (Some(url), _) => {
                    Destination::Upstream(Arc::new(Upstream::new(url).map_err(|why| {
                        StartError::setting(format!("routes[{index}].upstream"), why)
                    })?))
                }
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
                label: Arc::from(r.path.as_str()),
                auth: r.auth,
                csrf: r.csrf_required(),
                strip_prefix: r.strip_prefix,
                methods,
                allow,
                destination,
                forwarded: metrics.request_counter(&r.path, "forwarded"),
                upstream_duration: metrics.upstream_histogram(&r.path),
                rules: ClaimRules::new(r),
                step_up: crate::login::AuthRequirement {
                    acr: r.acr.clone(),
                    max_age: r.max_age.map(|d| d.as_secs()),
                },
                audience: Self::audience(r),
            });
        }
        routes.sort_by_key(|r| std::cmp::Reverse(r.path.len()));
        let mut identity_names: Vec<HeaderName> = routes
            .iter()
            .flat_map(|r| r.rules.headers.iter().map(|(n, _)| n.clone()))
            .collect();
        identity_names.sort_unstable_by(|a, b| a.as_str().cmp(b.as_str()));
        identity_names.dedup();
        Ok(Self {
            identity_names: (!identity_names.is_empty()).then(|| Arc::from(identity_names)),
            routes,
            prefix: config.server.prefix.clone(),
            prefix_label: Arc::from(config.server.prefix.as_str()),
            path_check: config.server.path_check,
        })
    }

    /// The endpoint prefix (`/bff`).
    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The endpoint prefix, shared (the endpoints' route label in the access log).
    pub(crate) fn prefix_label(&self) -> &Arc<str> {
        &self.prefix_label
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

    /// The route of `config.routes[index]`.
    pub(crate) fn by_index(&self, index: usize) -> Option<&Route> {
        self.routes.iter().find(|r| r.index == index)
    }

    /// How many routes there are.
    pub(crate) fn len(&self) -> usize {
        self.routes.len()
    }
}
