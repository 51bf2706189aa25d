//! The core: one request's head in, one [`Decision`] out. Both front doors (tower and
//! pingora) feed it `http::request::Parts` and apply what it decides; bodies never
//! pass through it, except the small form of a back-channel logout.
//!
//! Checks run in DESIGN.md's order on an authenticated route: a browser navigation
//! without a session is sent to login; then a missing CSRF header is refused; then
//! the session is opened, checked and refreshed if needed.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{
    ACCEPT, ALLOW, CACHE_CONTROL, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, LOCATION,
    RETRY_AFTER, SET_COOKIE,
};
use http::request::Parts;
use http::{Method, Response, StatusCode, Uri};
use serde_json::{Value, json};
use subtle::ConstantTimeEq as _;

use crate::clock::Clock;
use crate::config::{Config, RouteAuth};
use crate::cookies::{CookieNames, Present, RequestCookies, SessionSealer};
use crate::error::{Error, ErrorKind};
use crate::login::{LoginCookies, LoginState, check_return_url};
use crate::metrics::Metrics;
use crate::oidc::{Oidc, TokenError};
use crate::paths::check_path;
use crate::refresh::{EndReason, Outcome, RefreshSettings, TokenRefresher};
use crate::revocation::{RevocationList, Standing};
use crate::session::{Session, SessionId};

/// The largest back-channel logout body read.
pub const MAX_BACKCHANNEL_BODY: usize = 64 * 1024;
/// Time allowed for the code exchange at the IdP.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(10);

/// What a front door does with a request. `Debug` shows the status or the forward,
/// never a header value (Set-Cookie carries the sealed session).
pub enum Decision {
    /// Answer with this response.
    Respond(Response<Bytes>),
    /// Send it on, changed as described.
    Forward(Box<Forward>),
}

/// Where a forwarded request goes.
#[derive(Debug, Clone)]
pub enum Target {
    /// The application behind the tower layer (a route with neither `upstream` nor
    /// `static_dir`, or a path no route matches when unmatched paths pass).
    Application,
    /// An upstream: the full URI to request.
    Upstream(Uri),
    /// A static folder and the path inside it (not yet resolved on disk).
    Static {
        /// The folder.
        dir: std::path::PathBuf,
        /// The request path below the route's path.
        path: String,
    },
}

/// How to forward a request. `Debug` redacts the token, the cookies and the ID token.
#[derive(Clone)]
pub struct Forward {
    /// Index of the route in `config.routes` (None: no route matched and the layer
    /// passes the request to the application).
    pub route: Option<usize>,
    /// Where it goes.
    pub target: Target,
    /// `Authorization: Bearer …` to set, when the route has a session.
    pub authorization: Option<HeaderValue>,
    /// Drop any client-sent `Authorization` (authenticated routes).
    pub strip_authorization: bool,
    /// The `Cookie` header to send upstream, without the BFF's own cookies; None
    /// removes it.
    pub cookie: Option<HeaderValue>,
    /// `Set-Cookie` values to add to the response (a rotated session).
    pub set_cookies: Vec<HeaderValue>,
    /// The session's ID token (verified at login), for the front doors that hand
    /// its claims to the application; see [`Forward::claims`]. Parsed only on
    /// demand, to keep it off the hot path.
    pub id_token: Option<Arc<str>>,
}

impl std::fmt::Debug for Decision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Respond(r) => f.debug_tuple("Respond").field(&r.status()).finish(),
            Self::Forward(fw) => f.debug_tuple("Forward").field(fw).finish(),
        }
    }
}

impl std::fmt::Debug for Forward {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forward")
            .field("route", &self.route)
            .field("target", &self.target)
            .field(
                "authorization",
                &self.authorization.as_ref().map(|_| "<redacted>"),
            )
            .field("strip_authorization", &self.strip_authorization)
            .field("cookie", &self.cookie.as_ref().map(|_| "<redacted>"))
            .field("set_cookies", &self.set_cookies.len())
            .field("id_token", &self.id_token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl Forward {
    /// The session's ID-token claims, if it has a session with an ID token.
    #[must_use]
    pub fn claims(&self) -> Option<Value> {
        self.id_token
            .as_deref()
            .and_then(crate::oidc::unverified_claims)
    }
}

/// The first byte of a server-mode cookie's plaintext (then a 16-byte handle); a
/// session payload never starts with it.
const SERVER_HANDLE_TAG: u8 = 0xA5;
/// The name server-mode sessions are sealed under in the store.
const SERVER_SESSION_SEAL: &str = "bff-server-session";

fn server_key(handle: &[u8; 16]) -> String {
    use sha2::Digest as _;
    let h = sha2::Sha256::digest(handle);
    let hex: String = h.iter().map(|b| format!("{b:02x}")).collect();
    format!("session:{hex}")
}

/// The current session of an endpoint request.
struct Current {
    session: Option<Session>,
    present: Present,
    handle: Option<[u8; 16]>,
    ended: bool,
}

/// A session as read from a request.
struct Loaded {
    session: Option<Session>,
    present: Present,
    /// Server mode: the handle the cookie holds.
    handle: Option<[u8; 16]>,
}

struct Route {
    index: usize,
    path: String,
    label: String,
    auth: RouteAuth,
    csrf: bool,
    strip_prefix: bool,
    methods: Option<Vec<Method>>,
    upstream: Option<url::Url>,
    static_dir: Option<std::path::PathBuf>,
    /// `bff_requests_total{route, outcome="forwarded"}`, resolved once.
    forwarded: prometheus::IntCounter,
}

/// The BFF core.
pub struct Bff {
    config: Arc<Config>,
    sealer: SessionSealer,
    login_cookies: LoginCookies,
    oidc: Arc<Oidc>,
    refresher: TokenRefresher,
    revocations: Arc<RevocationList>,
    metrics: Metrics,
    clock: Arc<Clock>,
    /// Routes, longest path first.
    routes: Vec<Route>,
    csrf_header: HeaderName,
    csrf_value: Vec<u8>,
    prefix: String,
    /// `<prefix>/backchannel-logout`, the one endpoint that reads a body.
    backchannel_path: String,
    /// A path no route matches goes to the application (tower layer) instead of 404.
    pass_unmatched: bool,
    /// `session.mode = "server"`: where sessions live (the cookie holds a handle).
    server_sessions: Option<Arc<dyn crate::store::SharedStore>>,
    /// Our cookie names: the one parser of the request's `Cookie` header.
    cookie_names: CookieNames,
}

impl std::fmt::Debug for Bff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bff")
            .field("issuer", &self.oidc.issuer())
            .field("routes", &self.routes.len())
            .finish_non_exhaustive()
    }
}

fn json_response(status: StatusCode, body: &str) -> Response<Bytes> {
    let mut resp = Response::new(Bytes::from(body.to_owned()));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// The JSON answer for an error: status, `{"error": code}`, `Retry-After` when it
/// applies, and any `Set-Cookie` values (a cleared session).
pub fn error_response(err: &Error, set_cookies: Vec<HeaderValue>) -> Response<Bytes> {
    let mut resp = json_response(err.status(), &err.json_body());
    if let Some(secs) = err.retry_after_secs() {
        resp.headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(secs));
    }
    for c in set_cookies {
        resp.headers_mut().append(SET_COOKIE, c);
    }
    resp
}

fn redirect(location: &str, set_cookies: Vec<HeaderValue>) -> Response<Bytes> {
    let mut resp = Response::new(Bytes::new());
    *resp.status_mut() = StatusCode::FOUND;
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(location) {
        h.insert(LOCATION, v);
    }
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    for c in set_cookies {
        h.append(SET_COOKIE, c);
    }
    resp
}

fn query_params(uri: &Uri) -> Vec<(String, String)> {
    uri.query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default()
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

impl Bff {
    /// Builds the core from a loaded config. No network until the first request (or
    /// [`Bff::warm_up`]).
    pub fn new(config: Config) -> Result<Self, String> {
        let metrics = Metrics::new();
        let clock = Arc::new(Clock::default());
        let sealer = config
            .session_sealer()
            .map_err(|e| format!("session.keys: {e}"))?;
        let oidc = Arc::new(Oidc::new(&config, metrics.clone())?);
        let revocations = Arc::new(RevocationList::with_clock(
            config.session.absolute_lifetime,
            Arc::clone(&clock),
        ));
        let refresher = TokenRefresher::new(
            Arc::clone(&oidc),
            RefreshSettings::from_config(&config),
            metrics.clone(),
            Arc::clone(&revocations),
            Arc::clone(&clock),
        );
        let mut routes: Vec<Route> = config
            .routes
            .iter()
            .enumerate()
            .map(|(index, r)| Route {
                index,
                path: r.path.clone(),
                label: r.path.clone(),
                auth: r.auth,
                csrf: r.csrf_required(),
                strip_prefix: r.strip_prefix,
                methods: r.methods.as_ref().map(|m| {
                    m.iter()
                        .filter_map(|m| Method::from_bytes(m.as_bytes()).ok())
                        .collect()
                }),
                upstream: config.resolved.upstreams.get(index).cloned().flatten(),
                static_dir: config.resolved.static_dirs.get(index).cloned().flatten(),
                forwarded: metrics.request_counter(&r.path, "forwarded"),
            })
            .collect();
        routes.sort_by_key(|r| std::cmp::Reverse(r.path.len()));
        let csrf_header =
            HeaderName::from_bytes(config.csrf.header.to_ascii_lowercase().as_bytes())
                .map_err(|_| "csrf.header: not a header name".to_owned())?;
        let login_cookies = LoginCookies::new(&config.session.cookie_name, config.session.secure);
        Ok(Self {
            cookie_names: CookieNames::new(&config.session.cookie_name),
            backchannel_path: format!("{}/backchannel-logout", config.server.prefix),
            pass_unmatched: false,
            server_sessions: (config.session.mode == crate::config::SessionMode::Server).then(
                || Arc::new(crate::store::MemoryStore::new()) as Arc<dyn crate::store::SharedStore>,
            ),
            login_cookies,
            csrf_value: config.csrf.value.as_bytes().to_vec(),
            prefix: config.server.prefix.clone(),
            config: Arc::new(config),
            sealer,
            oidc,
            refresher,
            revocations,
            metrics,
            clock,
            routes,
            csrf_header,
        })
    }

    /// Connects the store `[store]` names (Redis) and shares state through it; a
    /// no-op for the memory store.
    pub async fn connect_store(self) -> Result<Self, String> {
        if self.config.store.kind != crate::config::StoreKind::Redis {
            return Ok(self);
        }
        let url = self
            .config
            .resolved
            .store_url
            .as_ref()
            .ok_or("store.url: required by store.kind = \"redis\"")?;
        let store = crate::store::RedisStore::connect(
            url.expose(),
            &self.config.store.key_prefix,
            self.config
                .store
                .timeout
                .max(std::time::Duration::from_secs(1)),
        )
        .await
        .map_err(|e| format!("store.url: {e}"))?;
        let store = store.with_command_timeout(self.config.store.timeout);
        Ok(self.with_store(Arc::new(store)))
    }

    /// Coordinates refreshes with other replicas through a shared store (one token
    /// request per rotation across all of them).
    #[must_use]
    pub fn with_store(mut self, store: Arc<dyn crate::store::SharedStore>) -> Self {
        self.revocations.set_store(Arc::clone(&store));
        if self.server_sessions.is_some() {
            self.server_sessions = Some(Arc::clone(&store));
        }
        self.refresher = self.refresher.with_store(store, self.sealer.ring().clone());
        self
    }

    /// Paths no route matches pass to the application, with the BFF's cookies
    /// stripped and no token, instead of getting 404: how the tower layer protects
    /// some paths of an app and leaves the rest alone.
    #[must_use]
    pub fn pass_unmatched(mut self) -> Self {
        self.pass_unmatched = true;
        self
    }

    /// The config.
    #[must_use]
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The metrics.
    #[must_use]
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The clock (tests move it forward).
    #[must_use]
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// The session sealer (tests and tools forge or inspect cookies with it).
    #[must_use]
    pub fn sealer(&self) -> &SessionSealer {
        &self.sealer
    }

    /// Loads discovery and the JWKS; readiness.
    pub async fn warm_up(&self) -> Result<(), String> {
        self.oidc.warm_up().await.map_err(|e| e.to_string())
    }

    /// True once discovery and the JWKS are loaded.
    #[must_use]
    pub fn ready(&self) -> bool {
        self.oidc.jwks_loaded()
    }

    /// Whether this request needs its body read (up to [`MAX_BACKCHANNEL_BODY`]) and
    /// passed to [`Bff::handle`]: only the back-channel logout.
    #[must_use]
    pub fn wants_body(&self, parts: &Parts) -> bool {
        parts.method == Method::POST && parts.uri.path() == self.backchannel_path
    }

    /// Decides what to do with a request.
    pub async fn handle(&self, parts: &Parts, body: Option<Bytes>) -> Decision {
        let path = parts.uri.path();
        // DESIGN.md "Paths": the route is chosen on the path the upstream acts on, so
        // a path another parser could read differently is refused before routing.
        if let Err(why) = check_path(path, self.config.server.path_check) {
            self.metrics.request("none", "bad_request");
            return Decision::Respond(error_response(
                &Error::new(ErrorKind::BadRequest(why)),
                Vec::new(),
            ));
        }
        let endpoint = path
            .strip_prefix(self.prefix.as_str())
            .and_then(|rest| rest.strip_prefix('/'));
        let route = match endpoint {
            Some(_) => None,
            None => self.routes.iter().find(|r| path.starts_with(&r.path)),
        };
        let label = match (endpoint, route) {
            (Some(_), _) => self.prefix.as_str(),
            (None, Some(r)) => r.label.as_str(),
            (None, None) => "none",
        };
        // The Cookie header is parsed once, here, for everything below.
        let cookies = match self.cookie_names.parse(&parts.headers) {
            Ok(cookies) => cookies,
            Err(e) => {
                self.metrics.request(label, "cookie_header_too_large");
                // Our own login cookies may be what filled the header: expire them, so
                // the browser is never locked out.
                let names = self.cookie_names.login_names(&parts.headers);
                return Decision::Respond(error_response(&e, self.login_cookies.expire(&names)));
            }
        };
        if let Some(endpoint) = endpoint {
            let resp = self.endpoint(endpoint, parts, &cookies, body).await;
            let outcome = resp.status().as_u16().to_string();
            self.metrics.request(&self.prefix, &outcome);
            return Decision::Respond(resp);
        }
        let Some(route) = route else {
            if self.pass_unmatched {
                self.metrics.request("none", "passed");
                return Decision::Forward(Box::new(self.plain_forward(
                    &cookies,
                    None,
                    Target::Application,
                    false,
                )));
            }
            self.metrics.request("none", "not_found");
            return Decision::Respond(error_response(&Error::new(ErrorKind::NotFound), Vec::new()));
        };
        let (decision, outcome) = self.proxied(route, parts, &cookies).await;
        if outcome == "forwarded" {
            route.forwarded.inc();
        } else {
            self.metrics.request(&route.label, outcome);
        }
        decision
    }

    /// A forward with our cookies stripped and no token yet.
    fn plain_forward(
        &self,
        cookies: &RequestCookies<'_>,
        route: Option<usize>,
        target: Target,
        strip_authorization: bool,
    ) -> Forward {
        Forward {
            route,
            target,
            authorization: None,
            strip_authorization,
            cookie: cookies.forwarded(),
            set_cookies: Vec::new(),
            id_token: None,
        }
    }

    fn csrf_ok(&self, headers: &HeaderMap) -> bool {
        headers
            .get(&self.csrf_header)
            .is_some_and(|v| bool::from(v.as_bytes().ct_eq(&self.csrf_value)))
    }

    fn is_navigation(&self, headers: &HeaderMap) -> bool {
        if headers
            .get("sec-fetch-mode")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"navigate"))
        {
            return true;
        }
        headers
            .get(ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("text/html"))
            && !headers.contains_key(&self.csrf_header)
    }

    fn login_redirect(&self, parts: &Parts) -> Response<Bytes> {
        let original = parts
            .uri
            .path_and_query()
            .map_or("/", http::uri::PathAndQuery::as_str);
        let target: String = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("returnUrl", original)
            .finish();
        redirect(&format!("{}/login?{target}", self.prefix), Vec::new())
    }

    fn target(&self, route: &Route, parts: &Parts) -> Option<Target> {
        let path = parts.uri.path();
        if let Some(dir) = &route.static_dir {
            let rest = path.strip_prefix(route.path.as_str()).unwrap_or(path);
            return Some(Target::Static {
                dir: dir.clone(),
                path: rest.to_owned(),
            });
        }
        let Some(base) = route.upstream.as_ref() else {
            return Some(Target::Application);
        };
        let mut rest = if route.strip_prefix {
            path.strip_prefix(route.path.as_str())
                .unwrap_or(path)
                .to_owned()
        } else {
            path.to_owned()
        };
        if !rest.starts_with('/') {
            rest.insert(0, '/');
        }
        let base_path = base.path().trim_end_matches('/');
        let mut uri = format!(
            "{}://{}{}{}",
            base.scheme(),
            base.host_str().unwrap_or_default(),
            base.port().map(|p| format!(":{p}")).unwrap_or_default(),
            base_path
        );
        uri.push_str(&rest);
        if let Some(q) = parts.uri.query() {
            uri.push('?');
            uri.push_str(q);
        }
        uri.parse().ok().map(Target::Upstream)
    }

    async fn proxied(
        &self,
        route: &Route,
        parts: &Parts,
        cookies: &RequestCookies<'_>,
    ) -> (Decision, &'static str) {
        let respond = |e: ErrorKind, cookies: Vec<HeaderValue>| {
            Decision::Respond(error_response(&Error::new(e), cookies))
        };
        if let Some(methods) = &route.methods {
            if !methods.contains(&parts.method) {
                let mut resp = error_response(&Error::new(ErrorKind::MethodNotAllowed), Vec::new());
                let allow: Vec<&str> = methods.iter().map(Method::as_str).collect();
                if let Ok(v) = HeaderValue::from_str(&allow.join(", ")) {
                    resp.headers_mut().insert(ALLOW, v);
                }
                return (Decision::Respond(resp), "method_not_allowed");
            }
        }
        let Some(target) = self.target(route, parts) else {
            return (
                respond(
                    ErrorKind::BadRequest("the request path cannot be forwarded"),
                    Vec::new(),
                ),
                "bad_request",
            );
        };
        let mut forward = self.plain_forward(
            cookies,
            Some(route.index),
            target,
            route.auth != RouteAuth::None,
        );
        if route.auth == RouteAuth::None {
            if route.csrf && !self.csrf_ok(&parts.headers) {
                return (respond(ErrorKind::Csrf, Vec::new()), "csrf");
            }
            return (Decision::Forward(Box::new(forward)), "forwarded");
        }
        let read = match self.load(cookies).await {
            Ok(read) => read,
            Err(e) => {
                return (
                    Decision::Respond(error_response(&e, Vec::new())),
                    "store_unavailable",
                );
            }
        };
        let handle = read.handle;
        let present = read.present;
        // An unreadable cookie is no session (401 unauthenticated); a readable one
        // that was revoked is an ended session (401 session_expired). Either way a
        // cookie that is there gets cleared.
        let revoked = match read.session.as_ref() {
            Some(s) => self.is_revoked(s).await,
            None => false,
        };
        let session = read.session.filter(|_| !revoked);
        let clear = if session.is_none() && !present.is_empty() {
            self.sealer.clear_cookies(&present)
        } else {
            Vec::new()
        };
        let Some(session) = session else {
            if route.auth == RouteAuth::Required && self.is_navigation(&parts.headers) {
                let mut resp = self.login_redirect(parts);
                for c in clear {
                    resp.headers_mut().append(SET_COOKIE, c);
                }
                return (Decision::Respond(resp), "login_redirect");
            }
            if route.csrf && !self.csrf_ok(&parts.headers) {
                return (respond(ErrorKind::Csrf, clear), "csrf");
            }
            if route.auth == RouteAuth::Optional {
                forward.set_cookies = clear;
                return (Decision::Forward(Box::new(forward)), "forwarded_anonymous");
            }
            return if revoked {
                (respond(ErrorKind::SessionExpired, clear), "session_expired")
            } else {
                (
                    respond(ErrorKind::Unauthenticated, clear),
                    "unauthenticated",
                )
            };
        };
        if route.csrf && !self.csrf_ok(&parts.headers) {
            return (respond(ErrorKind::Csrf, Vec::new()), "csrf");
        }
        let (session, set_cookies) = match self.refresher.refresh(&session).await {
            Outcome::Fresh | Outcome::KeepCurrent => (session, Vec::new()),
            Outcome::Updated { session: next, .. } => {
                // Older cookies of this session are replays once the grace window
                // is over, whether or not the IdP rotated the refresh token.
                self.revocations
                    .record_generation(next.sid, next.refresh_count)
                    .await;
                let cookies = match self.save(&next, &present, handle).await {
                    Ok(c) => c,
                    Err(e) => {
                        return (
                            Decision::Respond(error_response(&e, Vec::new())),
                            "internal",
                        );
                    }
                };
                (*next, cookies)
            }
            Outcome::Unavailable { retry_after } => {
                return (
                    respond(ErrorKind::IdpUnavailable { retry_after }, Vec::new()),
                    "idp_unavailable",
                );
            }
            Outcome::Misconfigured => {
                return (
                    respond(
                        ErrorKind::Misconfigured("the IdP refused the client's credentials"),
                        Vec::new(),
                    ),
                    "misconfigured",
                );
            }
            Outcome::Ended(reason) => {
                self.end_session(&session, reason).await;
                self.forget(handle).await;
                let clear = self.sealer.clear_cookies(&present);
                if route.auth == RouteAuth::Optional {
                    forward.set_cookies = clear;
                    return (Decision::Forward(Box::new(forward)), "forwarded_anonymous");
                }
                return (respond(ErrorKind::SessionExpired, clear), "session_expired");
            }
        };
        forward.authorization =
            HeaderValue::from_str(&format!("Bearer {}", session.access_token)).ok();
        if forward.authorization.is_none() {
            return (
                respond(
                    ErrorKind::Internal("the access token is not header-safe"),
                    Vec::new(),
                ),
                "internal",
            );
        }
        forward.set_cookies = set_cookies;
        forward.id_token = session.id_token.as_deref().map(Arc::from);
        (Decision::Forward(Box::new(forward)), "forwarded")
    }

    /// Reads the request's session: from the cookie, or in server mode from the
    /// store under the handle the cookie holds. Only the store can fail.
    async fn load(&self, cookies: &RequestCookies<'_>) -> Result<Loaded, Error> {
        let cookie = cookies.session();
        let Some(store) = &self.server_sessions else {
            return Ok(Loaded {
                session: self.sealer.open(&cookie),
                present: cookie.present,
                handle: None,
            });
        };
        let name = self.sealer.cookie().name();
        let handle = cookie.candidates().find_map(|sealed| {
            self.sealer
                .ring()
                .open_map(name, sealed, |plain| match plain {
                    [SERVER_HANDLE_TAG, rest @ ..] => <[u8; 16]>::try_from(rest).ok(),
                    _ => None,
                })
                .ok()
                .flatten()
        });
        let session = match handle {
            None => None,
            Some(h) => {
                let stored = store.get(&server_key(&h)).await.map_err(|e| {
                    tracing::warn!(error = %e, "session store unavailable");
                    Error::new(ErrorKind::StoreUnavailable)
                })?;
                stored.and_then(|bytes| {
                    let text = String::from_utf8(bytes).ok()?;
                    self.sealer
                        .ring()
                        .open_map(SERVER_SESSION_SEAL, &text, |p| Session::decode(p).ok())
                        .ok()
                        .flatten()
                })
            }
        };
        Ok(Loaded {
            session,
            present: cookie.present,
            handle,
        })
    }

    /// Stores a session: sealed into the cookie, or in server mode sealed into the
    /// store (the cookie, a handle, is only set when the handle is new).
    async fn save(
        &self,
        session: &Session,
        present: &Present,
        handle: Option<[u8; 16]>,
    ) -> Result<Vec<HeaderValue>, Error> {
        let Some(store) = &self.server_sessions else {
            return self.session_cookies(session, present);
        };
        let now = self.clock.now_secs();
        let end = session
            .created_at
            .saturating_add(self.config.session.absolute_lifetime.as_secs());
        let ttl = Duration::from_secs(end.saturating_sub(now).max(1));
        let (h, new) = match handle {
            Some(h) => (h, false),
            None => {
                use rand::RngCore as _;
                let mut h = [0u8; 16];
                rand::rngs::OsRng.fill_bytes(&mut h);
                (h, true)
            }
        };
        let sealed = self
            .sealer
            .ring()
            .seal(SERVER_SESSION_SEAL, &session.encode());
        store
            .put(&server_key(&h), sealed.as_bytes(), ttl)
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "session store unavailable");
                Error::new(ErrorKind::StoreUnavailable)
            })?;
        if !new {
            return Ok(Vec::new());
        }
        let mut payload = vec![SERVER_HANDLE_TAG];
        payload.extend_from_slice(&h);
        let cookie = self
            .sealer
            .ring()
            .seal(self.sealer.cookie().name(), &payload);
        self.sealer.cookie().write(&cookie, Some(ttl), present)
    }

    /// Drops a server-side session from the store (logout, ended sessions).
    async fn forget(&self, handle: Option<[u8; 16]>) {
        if let (Some(store), Some(h)) = (&self.server_sessions, handle) {
            let _ = store.delete(&server_key(&h)).await;
        }
    }

    /// Whether the session is over: revoked (logout, back-channel, an earlier
    /// replay), or itself a replay of an older generation, which is acted on here.
    async fn is_revoked(&self, s: &Session) -> bool {
        match self
            .revocations
            .standing(s, self.refresher.window_ms())
            .await
        {
            Standing::Live => false,
            Standing::Revoked => true,
            Standing::Replay => {
                self.refresher.replay_detected(s).await;
                true
            }
        }
    }

    /// Records an ended session so copies of its cookie are refused too.
    async fn end_session(&self, session: &Session, reason: EndReason) {
        match reason {
            // Counted where they are detected.
            EndReason::Reuse | EndReason::InvalidGrant | EndReason::Replay => {}
            other => self.metrics.session_ended(other.label()),
        }
        self.revocations.revoke_sid_everywhere(session.sid).await;
    }

    fn session_cookies(
        &self,
        session: &Session,
        present: &Present,
    ) -> Result<Vec<HeaderValue>, Error> {
        let now = self.clock.now_secs();
        let end = session
            .created_at
            .saturating_add(self.config.session.absolute_lifetime.as_secs());
        let max_age = Duration::from_secs(end.saturating_sub(now).max(1));
        self.sealer.set_cookies(session, Some(max_age), present)
    }

    async fn endpoint(
        &self,
        name: &str,
        parts: &Parts,
        cookies: &RequestCookies<'_>,
        body: Option<Bytes>,
    ) -> Response<Bytes> {
        let method = &parts.method;
        let result = match (name, method) {
            ("login", &Method::GET) => self.login(parts, cookies).await,
            ("callback", &Method::GET) => self.callback(parts, cookies).await,
            ("user", &Method::GET) => self.user(parts, cookies).await,
            ("logout", &Method::GET | &Method::POST) => self.logout(parts, cookies).await,
            ("backchannel-logout", &Method::POST) => self.backchannel_logout(body).await,
            ("login" | "callback" | "user" | "logout" | "backchannel-logout", _) => {
                Err(Error::new(ErrorKind::MethodNotAllowed))
            }
            _ => Err(Error::new(ErrorKind::NotFound)),
        };
        result.unwrap_or_else(|e| {
            if matches!(
                e.kind(),
                ErrorKind::Internal(_) | ErrorKind::Misconfigured(_)
            ) {
                tracing::error!(error = %e, endpoint = name, "BFF endpoint failed");
            }
            error_response(&e, Vec::new())
        })
    }

    async fn login(
        &self,
        parts: &Parts,
        cookies: &RequestCookies<'_>,
    ) -> Result<Response<Bytes>, Error> {
        let params = query_params(&parts.uri);
        let return_url = check_return_url(param(&params, "returnUrl").unwrap_or(""))
            .map_err(|why| Error::new(ErrorKind::BadRequest(why)))?;
        let meta = self.oidc.metadata().await.map_err(|e| {
            tracing::warn!(error = %e, "discovery failed; login unavailable");
            Error::new(ErrorKind::IdpUnavailable {
                retry_after: Duration::from_secs(5),
            })
        })?;
        let login = LoginState {
            state: crate::random::random_text(32),
            nonce: crate::random::random_text(32),
            verifier: crate::random::random_text(48),
            return_url,
            created_at: self.clock.now_secs(),
        };
        let challenge = {
            use base64::Engine as _;
            use sha2::Digest as _;
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(sha2::Sha256::digest(login.verifier.as_bytes()))
        };
        let cookie = self
            .login_cookies
            .set(self.sealer.ring(), &login)
            .ok_or_else(|| Error::new(ErrorKind::Internal("cannot seal the login state")))?;
        // At most MAX_PENDING_LOGINS attempts per browser: the oldest make room.
        let mut set_cookies =
            self.login_cookies
                .evict_for_new(self.sealer.ring(), cookies, login.created_at);
        set_cookies.push(cookie);
        let mut url = url::Url::parse(&meta.authorization_endpoint).map_err(|_| {
            Error::new(ErrorKind::Misconfigured(
                "the IdP's authorization_endpoint is not a URL",
            ))
        })?;
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("response_type", "code")
                .append_pair("client_id", self.oidc.client_id())
                .append_pair("redirect_uri", self.config.resolved.redirect_uri.as_str())
                .append_pair("scope", &self.config.oidc.scopes.join(" "))
                .append_pair("state", &login.state)
                .append_pair("nonce", &login.nonce)
                .append_pair("code_challenge", &challenge)
                .append_pair("code_challenge_method", "S256");
            for (k, v) in &self.config.oidc.auth_params {
                q.append_pair(k, v);
            }
        }
        Ok(redirect(url.as_str(), set_cookies))
    }

    async fn callback(
        &self,
        parts: &Parts,
        cookies: &RequestCookies<'_>,
    ) -> Result<Response<Bytes>, Error> {
        let params = query_params(&parts.uri);
        let state =
            param(&params, "state").ok_or(Error::new(ErrorKind::BadRequest("state is missing")))?;
        let login =
            self.login_cookies
                .take(self.sealer.ring(), cookies, state, self.clock.now_secs());
        // A failed attempt clears its own cookie; a finished login clears them all.
        let clear_login = self.login_cookies.clear_one(state);
        let fail = |kind: ErrorKind| {
            let e = Error::new(kind);
            Ok(error_response(&e, clear_login.clone()))
        };
        let Some(login) = login else {
            // Another tab's login finished first and cleared every pending attempt:
            // this browser is logged in already, so this tab goes to the app.
            if let Ok(Current {
                session: Some(_), ..
            }) = self.current_session(cookies).await
            {
                return Ok(redirect("/", clear_login));
            }
            return fail(ErrorKind::BadRequest(
                "the login expired or was started in another browser: start it again",
            ));
        };
        if let Some(error) = param(&params, "error") {
            let code: String = error
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
                .take(64)
                .collect();
            return fail(ErrorKind::LoginRefused { code });
        }
        if let Some(iss) = param(&params, "iss") {
            // RFC 9207: the answer must come from our issuer (mix-up defence).
            if iss.trim_end_matches('/') != self.oidc.issuer() {
                return fail(ErrorKind::BadRequest("the iss parameter is not our issuer"));
            }
        }
        let Some(code) = param(&params, "code").filter(|c| !c.is_empty()) else {
            return fail(ErrorKind::BadRequest("code is missing"));
        };
        let tokens = match self
            .oidc
            .exchange_code(
                code,
                &login.verifier,
                self.config.resolved.redirect_uri.as_str(),
                EXCHANGE_TIMEOUT,
            )
            .await
        {
            Ok(t) => t,
            Err(TokenError::Transient { .. }) => {
                return fail(ErrorKind::IdpUnavailable {
                    retry_after: Duration::from_secs(5),
                });
            }
            Err(TokenError::Unreadable { why }) => {
                tracing::error!(reason = %why, "the IdP answered the code exchange with a 2xx the BFF cannot read");
                return fail(ErrorKind::IdpUnavailable {
                    retry_after: Duration::from_secs(5),
                });
            }
            Err(TokenError::Dead { .. }) => {
                return fail(ErrorKind::BadRequest(
                    "the IdP refused the authorization code: log in again",
                ));
            }
            Err(TokenError::Misconfigured { code }) => {
                tracing::error!(reason = %code, "the IdP refused the code exchange: check [oidc]");
                return fail(ErrorKind::Misconfigured(
                    "the IdP refused the client's credentials",
                ));
            }
        };
        let Some(id_token) = tokens.id_token.clone() else {
            return fail(ErrorKind::BadRequest("the IdP returned no ID token"));
        };
        let claims = match self
            .oidc
            .validate_id_token(&id_token, Some(&login.nonce))
            .await
        {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "ID token rejected at login");
                return fail(ErrorKind::BadRequest("the ID token did not validate"));
            }
        };
        let now_ms = self.clock.now_ms();
        let now = now_ms / 1000;
        let mut session = Session::new(
            SessionId::random(),
            claims.sub,
            tokens.access_token.clone(),
            crate::refresh::access_expiry(&tokens, now),
            now,
        );
        session.created_ms = now_ms;
        session.refresh_token = tokens.refresh_token.clone().filter(|t| !t.is_empty());
        session.id_token = Some(id_token);
        session.idp_sid = claims.sid;
        session.scope = tokens
            .scope
            .clone()
            .unwrap_or_else(|| self.config.oidc.scopes.join(" "));
        let present = cookies.session().present;
        let mut set_cookies = self.save(&session, &present, None).await?;
        set_cookies.extend(self.login_cookies.clear_all(cookies));
        tracing::info!(sid = %session.sid, "login");
        Ok(redirect(&login.return_url, set_cookies))
    }

    /// The request's session if it opens and is neither revoked nor over its
    /// lifetime, with what it was read from; `ended` says one opened but was over.
    async fn current_session(&self, cookies: &RequestCookies<'_>) -> Result<Current, Error> {
        let read = self.load(cookies).await?;
        let now = self.clock.now_secs();
        let lifetime = self.config.session.absolute_lifetime.as_secs();
        let ended = match read.session.as_ref() {
            Some(s) => now >= s.created_at.saturating_add(lifetime) || self.is_revoked(s).await,
            None => false,
        };
        Ok(Current {
            session: read.session.filter(|_| !ended),
            present: read.present,
            handle: read.handle,
            ended,
        })
    }

    async fn user(
        &self,
        parts: &Parts,
        cookies: &RequestCookies<'_>,
    ) -> Result<Response<Bytes>, Error> {
        if !self.csrf_ok(&parts.headers) {
            return Err(Error::new(ErrorKind::Csrf));
        }
        let Current {
            session,
            present,
            ended,
            ..
        } = self.current_session(cookies).await?;
        let Some(session) = session else {
            let kind = if ended {
                ErrorKind::SessionExpired
            } else {
                ErrorKind::Unauthenticated
            };
            return Ok(error_response(
                &Error::new(kind),
                self.sealer.clear_cookies(&present),
            ));
        };
        let claims = session
            .id_token
            .as_deref()
            .and_then(crate::oidc::unverified_claims)
            .unwrap_or_else(|| json!({ "sub": session.sub }));
        let body = json!({
            "claims": claims,
            "session": {
                "sid": session.sid.to_string(),
                "expires_at": session.created_at + self.config.session.absolute_lifetime.as_secs(),
                "logout_url": format!("{}/logout?sid={}", self.prefix, session.sid),
            }
        });
        Ok(json_response(StatusCode::OK, &body.to_string()))
    }

    async fn logout(
        &self,
        parts: &Parts,
        cookies: &RequestCookies<'_>,
    ) -> Result<Response<Bytes>, Error> {
        let params = query_params(&parts.uri);
        if parts.method == Method::POST && !self.csrf_ok(&parts.headers) {
            return Err(Error::new(ErrorKind::Csrf));
        }
        // A bad returnUrl is refused only after the logout itself has happened: a
        // user who asked to log out is logged out.
        let return_url = check_return_url(param(&params, "returnUrl").unwrap_or(""));
        let Current {
            session,
            present,
            handle,
            ..
        } = self.current_session(cookies).await?;
        let clear = self.sealer.clear_cookies(&present);
        let Some(session) = session else {
            return Ok(match return_url {
                Ok(url) => redirect(&url, clear),
                Err(why) => error_response(&Error::new(ErrorKind::BadRequest(why)), clear),
            });
        };
        if parts.method == Method::GET {
            // The sid in the link is what makes a GET logout safe from cross-site
            // requests: only the page that read /bff/user knows it.
            let given = param(&params, "sid").unwrap_or("");
            let expected = session.sid.to_string();
            if !bool::from(given.as_bytes().ct_eq(expected.as_bytes())) {
                return Err(Error::new(ErrorKind::BadRequest(
                    "sid does not match the session",
                )));
            }
        }
        self.revocations.revoke_sid_everywhere(session.sid).await;
        self.forget(handle).await;
        self.metrics.session_ended("logout");
        if let Some(rt) = &session.refresh_token {
            // Never rely on end-session to revoke refresh tokens.
            match self.oidc.revoke(rt, self.config.refresh.timeout).await {
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, sid = %session.sid, "refresh token revocation failed at logout")
                }
            }
        }
        tracing::info!(sid = %session.sid, "logout");
        let end_session = self
            .oidc
            .metadata()
            .await
            .ok()
            .and_then(|m| m.end_session_endpoint.clone());
        let return_url = match return_url {
            Ok(url) => url,
            Err(why) => {
                tracing::info!(sid = %session.sid, "logout with an unusable returnUrl: logged out, answered 400");
                return Ok(error_response(
                    &Error::new(ErrorKind::BadRequest(why)),
                    clear,
                ));
            }
        };
        let location = match end_session.and_then(|e| url::Url::parse(&e).ok()) {
            Some(mut url) => {
                {
                    let mut q = url.query_pairs_mut();
                    if let Some(id) = &session.id_token {
                        q.append_pair("id_token_hint", id);
                    }
                    q.append_pair("client_id", self.oidc.client_id());
                    if let Some(uri) = &self.config.resolved.post_logout_redirect_uri {
                        q.append_pair("post_logout_redirect_uri", uri.as_str());
                    }
                }
                url.to_string()
            }
            None => return_url,
        };
        Ok(redirect(&location, clear))
    }

    async fn backchannel_logout(&self, body: Option<Bytes>) -> Result<Response<Bytes>, Error> {
        let body = body.ok_or(Error::new(ErrorKind::BadRequest("logout_token is missing")))?;
        if body.len() > MAX_BACKCHANNEL_BODY {
            return Err(Error::new(ErrorKind::BadRequest("body too large")));
        }
        let token = url::form_urlencoded::parse(&body)
            .find(|(k, _)| k == "logout_token")
            .map(|(_, v)| v.into_owned())
            .ok_or(Error::new(ErrorKind::BadRequest("logout_token is missing")))?;
        // The token's iat is the IdP's wall-clock time.
        let now_ms = crate::clock::wall_ms();
        let claims = self
            .oidc
            .validate_logout_token(&token, now_ms / 1000)
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "back-channel logout token rejected");
                Error::new(ErrorKind::BadRequest("invalid logout_token"))
            })?;
        // Remembered for as long as the token could be valid: its iat window plus
        // the clock skew.
        let valid_until = claims
            .iat
            .saturating_add(crate::oidc::LOGOUT_TOKEN_MAX_AGE.as_secs() + 60);
        let ttl = Duration::from_secs(valid_until.saturating_sub(now_ms / 1000).max(1));
        if !self
            .revocations
            .first_use_of_logout_token(&claims.iss, &claims.jti, ttl)
            .await
        {
            tracing::warn!("back-channel logout token replayed: refused");
            return Err(Error::new(ErrorKind::BadRequest(
                "logout_token already used",
            )));
        }
        match &claims.sid {
            Some(sid) => self.revocations.revoke_idp_sid_everywhere(sid).await,
            None => {
                // Sessions created up to the token's iat, not up to our clock: a
                // login after the logout survives it. iat has whole seconds, so the
                // cutoff is the end of that second, or now if that comes first.
                let cutoff = claims
                    .iat
                    .saturating_mul(1000)
                    .saturating_add(999)
                    .min(now_ms);
                self.revocations
                    .revoke_sub_everywhere(&claims.sub, cutoff)
                    .await;
            }
        }
        self.metrics.session_ended("backchannel_logout");
        tracing::info!(idp_sid = ?claims.sid, "back-channel logout");
        Ok(json_response(StatusCode::OK, "{}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_no_token_or_cookie() {
        let forward = Forward {
            route: Some(0),
            target: Target::Application,
            authorization: Some(HeaderValue::from_static("Bearer SECRET-AT")),
            strip_authorization: true,
            cookie: Some(HeaderValue::from_static("other=SECRET-COOKIE")),
            set_cookies: vec![HeaderValue::from_static("__Host-Http-bff=SECRET-SEALED")],
            id_token: Some(Arc::from("SECRET-ID")),
        };
        let mut resp = Response::new(Bytes::new());
        resp.headers_mut().insert(
            SET_COOKIE,
            HeaderValue::from_static("__Host-Http-bff=SECRET-SEALED"),
        );
        for shown in [
            format!("{forward:?}"),
            format!("{:?}", Decision::Forward(Box::new(forward.clone()))),
            format!("{:?}", Decision::Respond(resp)),
        ] {
            assert!(!shown.contains("SECRET"), "{shown}");
        }
    }
}
