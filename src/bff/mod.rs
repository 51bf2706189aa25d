//! The core: one request's head in, one [`Decision`] out. Every front door (the
//! tower layer, the hyper and pingora engines) feeds it `http::request::Parts` and
//! applies what it decides; bodies never pass through it, except the small form of a
//! back-channel logout.
//!
//! - `routes`: the path checked once, the endpoint or route it names, each route's
//!   upstream taken apart once;
//! - `flow`: a request on a route, to a [`Forward`] or a rejection;
//! - `sessions`: where sessions live (cookie or store), read once per request;
//! - `decision`: what the doors get back.

mod decision;
mod door;
mod flow;
mod index;
mod routes;
mod sessions;
mod static_files;
mod upstream;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::ArcSwap;

use bytes::Bytes;
use http::HeaderName;
use http::Method;
use http::request::Parts;

#[cfg(feature = "tower")]
pub(crate) use decision::SessionView;
pub use decision::{Decision, Forward, Target};
pub(crate) use decision::{Note, error_response, json_response, redirect};
pub use door::DoorRequest;
pub(crate) use door::MAX_BACKCHANNEL_BODY;
pub(crate) use flow::STEP_UP_REDIRECT;
pub(crate) use sessions::Current;
pub use upstream::Upstream;

use crate::clock::Clock;
use crate::config::{Config, RouteAuth};
use crate::cookies::CookieNames;
use crate::error::Error;
use crate::login::LoginCookies;
use crate::metrics::Metrics;
use crate::oidc::Oidc;
use crate::refresh::{RefreshSettings, TokenRefresher};
use crate::revocation::RevocationList;
use crate::start::StartError;
use crate::store::SharedStore;
use crate::tls::ServerCert;
pub(crate) use index::{IndexEntry, SessionIndex, user_agent};
pub(crate) use routes::Matched;
use routes::RouteTable;
use sessions::SessionStorage;

/// The BFF core: cheap to clone (one `Arc` inside), shared by every door and task.
/// What it holds is swapped whole on a reload ([`Bff::reload`]): a request keeps
/// the core it started with; the next one gets the new one.
#[derive(Clone)]
pub struct Bff {
    shared: Arc<Shared>,
}

/// What outlives a reload: the current core, the metrics, the clock, the drain.
struct Shared {
    core: ArcSwap<Core>,
    metrics: Metrics,
    /// The core's clock, for tests to move ([`Bff::clock`]).
    #[cfg_attr(not(any(test, feature = "test-util")), allow(dead_code))]
    clock: Arc<Clock>,
    /// Set on SIGTERM: `/readyz` answers 503 while requests are still served.
    draining: AtomicBool,
    /// The TLS certificate of `server.tls_cert`/`tls_key` (the engines' listeners
    /// answer with it; a reload replaces it).
    tls: Option<ServerCert>,
}

/// What the core holds.
#[derive(Clone)]
pub(crate) struct Core {
    pub(crate) config: Arc<Config>,
    pub(crate) storage: SessionStorage,
    pub(crate) login_cookies: LoginCookies,
    pub(crate) oidc: Arc<Oidc>,
    pub(crate) refresher: TokenRefresher,
    pub(crate) revocations: Arc<RevocationList>,
    pub(crate) metrics: Metrics,
    pub(crate) clock: Arc<Clock>,
    pub(crate) routes: RouteTable,
    pub(crate) csrf_header: HeaderName,
    pub(crate) csrf_value: Vec<u8>,
    /// `<prefix>/backchannel-logout`, the one endpoint that reads a body.
    pub(crate) backchannel_path: String,
    /// Our cookie names: the one parser of the request's `Cookie` header.
    pub(crate) cookie_names: CookieNames,
    /// The shared store, when there is one (readiness pings it).
    pub(crate) store: Option<Arc<dyn SharedStore>>,
    /// Each user's sessions (the shared store, else one of the process).
    pub(crate) index: SessionIndex,
}

impl std::fmt::Debug for Bff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let core = self.core();
        f.debug_struct("Bff")
            .field("issuer", &core.oidc.issuer())
            .field("routes", &core.routes.len())
            .finish_non_exhaustive()
    }
}

/// Why a reload was refused; the running config stays.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReloadError {
    /// Settings that only a restart can change.
    #[error("needs a restart to change: {}", .0.join(", "))]
    NeedsRestart(Vec<&'static str>),
    /// The new config could not be put to use.
    #[error("{0}")]
    Unusable(String),
}

/// The parts of a core made from its config alone: the rest (store, revocations,
/// refresher state, discovery) a reload carries over.
struct FromConfig {
    sealer: crate::cookies::SessionSealer,
    routes: RouteTable,
    csrf_header: HeaderName,
}

impl FromConfig {
    fn new(config: &Config, metrics: &Metrics) -> Result<Self, StartError> {
        Ok(Self {
            sealer: config
                .session_sealer()
                .map_err(|e| StartError::setting("session.keys", e.to_string()))?,
            routes: RouteTable::new(config, metrics)?,
            csrf_header: HeaderName::from_bytes(config.csrf.header.to_ascii_lowercase().as_bytes())
                .map_err(|_| StartError::setting("csrf.header", "not a header name"))?,
        })
    }
}

impl Core {
    /// The core a new config makes, with `oidc`, `storage`, `refresher` and
    /// `revocations` given.
    #[allow(clippy::too_many_arguments)]
    fn assemble(
        config: Config,
        made: FromConfig,
        storage: SessionStorage,
        oidc: Arc<Oidc>,
        refresher: TokenRefresher,
        revocations: Arc<RevocationList>,
        (store, index): (Option<Arc<dyn SharedStore>>, SessionIndex),
        (metrics, clock): (Metrics, Arc<Clock>),
    ) -> Self {
        Self {
            cookie_names: CookieNames::new(&config.session.cookie_name),
            backchannel_path: format!("{}/backchannel-logout", config.server.prefix),
            login_cookies: LoginCookies::new(&config.session.cookie_name, config.session.secure),
            csrf_value: config.csrf.value.as_bytes().to_vec(),
            config: Arc::new(config),
            storage,
            oidc,
            refresher,
            revocations,
            metrics,
            clock,
            routes: made.routes,
            csrf_header: made.csrf_header,
            store,
            index,
        }
    }

    /// The core of a reloaded config: what is made from the config is new; the
    /// store, the revocations, the refreshes under way and their grace-window
    /// results, the server-mode sessions, the discovery document and the JWKS are
    /// this core's.
    fn reloaded(&self, config: Config) -> Result<Self, StartError> {
        let made = FromConfig::new(&config, &self.metrics)?;
        let oidc = Arc::new(
            self.oidc
                .reloaded(&config)
                .map_err(|why| StartError::setting("oidc", why))?,
        );
        let refresher = self.refresher.reloaded(
            Arc::clone(&oidc),
            RefreshSettings::from_config(&config),
            made.sealer.ring().clone(),
        );
        let storage = self
            .storage
            .reloaded(made.sealer.clone(), config.session.absolute_lifetime)
            .with_idle(config.session.idle_timeout);
        let index = self.index.reloaded(made.sealer.ring().clone());
        Ok(Self::assemble(
            config,
            made,
            storage,
            oidc,
            refresher,
            Arc::clone(&self.revocations),
            (self.store.clone(), index),
            (self.metrics.clone(), Arc::clone(&self.clock)),
        ))
    }
}

impl Bff {
    /// Builds the core from a loaded config. No network until the first request (or
    /// [`Bff::warm_up`]).
    pub fn new(config: Config) -> Result<Self, StartError> {
        let metrics = Metrics::new();
        let clock = Arc::new(Clock::default());
        let made = FromConfig::new(&config, &metrics)?;
        let oidc = Arc::new(
            Oidc::new(&config, metrics.clone()).map_err(|why| StartError::setting("oidc", why))?,
        );
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
        let storage = SessionStorage::new(
            made.sealer.clone(),
            config.session.mode == crate::config::SessionMode::Server,
            Arc::clone(&clock),
            config.session.absolute_lifetime,
        )
        .with_idle(config.session.idle_timeout);
        let tls = match &config.resolved.tls {
            Some(files) => {
                Some(ServerCert::load(files).map_err(|(at, why)| StartError::setting(at, why))?)
            }
            None => None,
        };
        let index = SessionIndex::new(
            Arc::new(crate::store::MemoryStore::new()),
            made.sealer.ring().clone(),
            config.session.absolute_lifetime,
            Arc::clone(&clock),
        );
        let core = Core::assemble(
            config,
            made,
            storage,
            oidc,
            refresher,
            revocations,
            (None, index),
            (metrics.clone(), Arc::clone(&clock)),
        );
        Ok(Self {
            shared: Arc::new(Shared {
                core: ArcSwap::from_pointee(core),
                metrics,
                clock,
                draining: AtomicBool::new(false),
                tls,
            }),
        })
    }

    /// The core now (a reload swaps it).
    pub(crate) fn core(&self) -> Arc<Core> {
        self.shared.core.load_full()
    }

    /// Puts a new config to use at once, without dropping a session or a
    /// connection: new session keys (the old ones still open cookies if the new
    /// config lists them), client credentials, the TLS certificate (for new
    /// handshakes), routes and their rules, CSRF settings, refresh timing,
    /// connection and upstream timeouts. A request under way finishes with the core
    /// it started with. Settings that only a restart can change
    /// ([`Config::restart_only_changes`]) refuse the reload; on any error nothing
    /// changes. The binary calls this on SIGHUP.
    pub fn reload(&self, config: Config) -> Result<(), ReloadError> {
        let core = self.core();
        let refused = core.config.restart_only_changes(&config);
        if !refused.is_empty() {
            return Err(ReloadError::NeedsRestart(refused));
        }
        let next = core
            .reloaded(config)
            .map_err(|e| ReloadError::Unusable(e.to_string()))?;
        if let (Some(cert), Some(files)) = (&self.shared.tls, &next.config.resolved.tls) {
            cert.reload(files)
                .map_err(|(at, why)| ReloadError::Unusable(format!("{at}: {why}")))?;
        }
        self.shared.core.store(Arc::new(next));
        Ok(())
    }

    /// Ends every session of the user `sub` (the admin listener's
    /// `DELETE /sessions?sub=`): each indexed session's refresh token is revoked at
    /// the IdP, then its sid, on every replica; sessions the index does not know
    /// (made before it, or lost with a store outage) end by the user's revocation
    /// up to now. The number of indexed sessions ended.
    pub async fn end_sessions_of(&self, sub: &str) -> Result<usize, String> {
        let core = self.core();
        let entries = core.index.take_all(sub).await.map_err(|e| e.to_string())?;
        for entry in &entries {
            core.end_indexed(entry).await;
        }
        core.revocations
            .revoke_sub_everywhere(sub, core.clock.now_ms())
            .await;
        tracing::info!(
            sessions = entries.len(),
            "all sessions of a user ended (admin)"
        );
        Ok(entries.len())
    }

    /// The TLS certificate the listeners answer with, when `server.tls_cert` is
    /// set.
    #[must_use]
    pub fn server_cert(&self) -> Option<&ServerCert> {
        self.shared.tls.as_ref()
    }

    /// Connects the store `[store]` names (Redis) and shares state through it; a
    /// no-op for the memory store.
    pub async fn connect_store(self) -> Result<Self, StartError> {
        let config = self.config();
        let store = &config.store;
        if store.kind != crate::config::StoreKind::Redis {
            return Ok(self);
        }
        let url = config.resolved.store_url.as_ref().ok_or_else(|| {
            StartError::setting("store.url", "required by store.kind = \"redis\"")
        })?;
        let redis = crate::store::RedisStore::connect(
            url.expose(),
            &store.key_prefix,
            store.timeout.max(std::time::Duration::from_secs(1)),
        )
        .await
        .map_err(|e| StartError::unavailable("store.url", e.to_string()))?
        .with_command_timeout(store.timeout);
        Ok(self.with_store(Arc::new(redis)))
    }

    /// Coordinates refreshes with other replicas through a shared store (one token
    /// request per rotation across all of them). Call it before the core is shared.
    #[must_use]
    pub fn with_store(self, store: Arc<dyn SharedStore>) -> Self {
        let mut core = (*self.core()).clone();
        // Every store operation's failure is counted (`bff_store_errors_total{op}`).
        let store: Arc<dyn SharedStore> =
            Arc::new(crate::store::Counted::new(store, core.metrics.clone()));
        core.store = Some(Arc::clone(&store));
        core.index = core.index.with_store(Arc::clone(&store));
        core.revocations.set_store(Arc::clone(&store));
        core.storage.use_store(&store);
        core.refresher = core
            .refresher
            .clone()
            .with_store(store, core.storage.sealer.ring().clone());
        self.shared.core.store(Arc::new(core));
        self
    }

    /// The config now (a reload replaces it).
    #[must_use]
    pub fn config(&self) -> Arc<Config> {
        Arc::clone(&self.shared.core.load().config)
    }

    /// The metrics.
    #[must_use]
    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// Records how long the upstream of a forwarded request took to answer
    /// (`bff_upstream_duration_seconds{route}`).
    pub fn observe_upstream(&self, forward: &Forward, seconds: f64) {
        let core = self.shared.core.load();
        if let Some(route) = forward.route.and_then(|i| core.routes.by_index(i)) {
            route.upstream_duration.observe(seconds);
        }
    }

    /// The Prometheus registry of this instance's metrics (DESIGN.md "Metrics"),
    /// for an app that exports its own: register them with yours
    /// (`for m in bff.metrics_registry().gather()` …), or serve
    /// [`Bff::admin_router`]'s `/metrics` beside your own. The `prometheus` crate's
    /// `Registry`, version 0.14.
    #[must_use]
    pub fn metrics_registry(&self) -> &prometheus::Registry {
        self.shared.metrics.registry()
    }

    /// The clock (tests move it forward).
    #[cfg(any(test, feature = "test-util"))]
    #[must_use]
    pub fn clock(&self) -> &Clock {
        &self.shared.clock
    }

    /// The session sealer (tests forge or inspect cookies with it).
    #[cfg(any(test, feature = "test-util"))]
    #[must_use]
    pub fn sealer(&self) -> crate::cookies::SessionSealer {
        self.core().storage.sealer.clone()
    }

    /// Loads discovery and the JWKS; readiness.
    pub async fn warm_up(&self) -> Result<(), String> {
        let core = self.core();
        core.oidc.warm_up().await.map_err(|e| e.to_string())
    }

    /// True once discovery and the JWKS are loaded (and not draining); see
    /// [`Bff::check_ready`] for the whole readiness check.
    #[must_use]
    pub fn ready(&self) -> bool {
        self.shared.core.load().oidc.jwks_loaded() && !self.draining()
    }

    /// Readiness as `/readyz` answers it: discovery and the JWKS loaded, the shared
    /// store answering a ping within `store.timeout`, and not draining after
    /// SIGTERM. The error says which one is missing (no secret in it).
    pub async fn check_ready(&self) -> Result<(), String> {
        if self.draining() {
            return Err("draining: shutting down".into());
        }
        let core = self.core();
        if !core.oidc.jwks_loaded() {
            return Err("discovery and JWKS not loaded yet".into());
        }
        if let Some(store) = &core.store {
            let limit = core.config.store.timeout;
            match tokio::time::timeout(limit, store.ping()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(format!("store: {e}")),
                Err(_) => return Err(format!("store: no answer within {limit:?}")),
            }
        }
        Ok(())
    }

    /// Starts the drain before a shutdown: `/readyz` answers 503 from now on, while
    /// requests are still served (`server.drain_delay`).
    pub fn start_draining(&self) {
        self.shared.draining.store(true, Ordering::Relaxed);
    }

    /// Whether [`Bff::start_draining`] was called.
    #[must_use]
    pub fn draining(&self) -> bool {
        self.shared.draining.load(Ordering::Relaxed)
    }

    /// Whether this request needs its body read (up to 64 KiB) and passed to
    /// [`Bff::handle`]: only the back-channel logout.
    #[must_use]
    pub fn wants_body(&self, parts: &Parts) -> bool {
        self.shared.core.load().wants_body(parts)
    }

    /// Decides what to do with a request: the one call of a front door. The body
    /// is read (bounded) only when the core needs it.
    pub async fn decide<R: DoorRequest>(&self, req: &mut R) -> Decision {
        self.decide_for(req, Unmatched::NotFound).await.0
    }

    /// [`Bff::decide`], with what a path no route matches gets, and what the
    /// access log says of the request.
    pub(crate) async fn decide_for<R: DoorRequest>(
        &self,
        req: &mut R,
        unmatched: Unmatched,
    ) -> (Decision, Note) {
        let core = self.core();
        if !core.wants_body(req.head()) {
            return core.handle(req.head(), None, unmatched).await;
        }
        let body = match door::read_bounded(req).await {
            Ok(body) => body,
            Err(resp) => return (Decision::Respond(resp), Note::default()),
        };
        match core.handle(req.head(), Some(body), unmatched).await {
            (Decision::Respond(resp), note) => (Decision::Respond(resp), note),
            // The body-reading endpoint always answers itself.
            (Decision::Forward(_), note) => (
                Decision::Respond(error_response(
                    &Error::new(crate::error::ErrorKind::Internal(
                        "a body-reading endpoint forwarded",
                    )),
                    Vec::new(),
                )),
                note,
            ),
        }
    }

    /// Decides what to do with a request whose body (if the core wants one, see
    /// [`Bff::wants_body`]) the caller read already. A path no route matches gets
    /// 404, as in the proxy.
    pub async fn handle(&self, parts: &Parts, body: Option<Bytes>) -> Decision {
        self.core().handle(parts, body, Unmatched::NotFound).await.0
    }

    /// [`Bff::handle`], with what a path no route matches gets, and what the
    /// access log says of the request.
    #[cfg(feature = "tower")]
    pub(crate) async fn handle_with(
        &self,
        parts: &Parts,
        body: Option<Bytes>,
        unmatched: Unmatched,
    ) -> (Decision, Note) {
        self.core().handle(parts, body, unmatched).await
    }
}

/// What a path that no route matches gets from the core.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unmatched {
    /// 404 `not_found`: the proxy engines, which have nothing else to send it to.
    NotFound,
    /// It goes on to the application behind the tower layer.
    Application,
}

impl Core {
    fn wants_body(&self, parts: &Parts) -> bool {
        parts.method == Method::POST && parts.uri.path() == self.backchannel_path
    }

    async fn handle(
        &self,
        parts: &Parts,
        body: Option<Bytes>,
        unmatched: Unmatched,
    ) -> (Decision, Note) {
        // DESIGN.md "Paths": the route is chosen on the path the upstream acts on, so
        // a path another parser could read differently is refused before routing.
        let matched = match self.routes.find(parts.uri.path()) {
            Ok(m) => m,
            Err(e) => return self.refuse("none", None, &e),
        };
        let (label, route_label) = match &matched {
            Matched::Endpoint(_) => (self.routes.prefix(), Some(self.routes.prefix_label())),
            Matched::Route(r) => (r.label(), Some(&r.label)),
            Matched::Unmatched => ("none", None),
        };
        let mut note = Note {
            route: route_label.cloned(),
            outcome: None,
            sid: None,
        };
        // The Cookie header is parsed once, here, for everything below.
        let cookies = match self.cookie_names.parse(&parts.headers) {
            Ok(cookies) => cookies,
            Err(e) => {
                self.metrics.request(label, e.code());
                note.outcome = Some(e.code());
                // Our own login cookies may be what filled the header: expire them, so
                // the browser is never locked out.
                let names = self.cookie_names.login_names(&parts.headers);
                let resp = error_response(&e, self.login_cookies.expire(&names));
                return (Decision::Respond(resp), note);
            }
        };
        let decision = match matched {
            Matched::Endpoint(name) => {
                // Boxed: an endpoint's state (calls to the IdP) would otherwise sit
                // inline in every request's future.
                let resp = Box::pin(self.endpoint(name, parts, &cookies, body)).await;
                self.metrics.request(label, resp.status().as_str());
                Decision::Respond(resp)
            }
            Matched::Unmatched if unmatched == Unmatched::Application => {
                self.metrics.request(label, "passed");
                note.outcome = Some("passed");
                let forward = self.passed(parts, &cookies).await;
                note.sid = forward.sid;
                Decision::Forward(Box::new(forward))
            }
            Matched::Unmatched => {
                return self.refuse(label, None, &Error::new(crate::error::ErrorKind::NotFound));
            }
            Matched::Route(route) => match self.proxied(route, parts, &cookies).await {
                Ok(mut forward) => {
                    note.sid = forward.sid;
                    if route.auth == RouteAuth::Optional && forward.authorization.is_none() {
                        self.metrics.request(label, "forwarded_anonymous");
                        note.outcome = Some("forwarded_anonymous");
                    } else {
                        route.forwarded.inc();
                        note.outcome = Some("forwarded");
                    }
                    // A static folder is served here, by the core, for every door.
                    if let Some(file) = forward.static_file.take() {
                        let mut resp = static_files::serve(
                            &file.dir,
                            &file.path,
                            &parts.method,
                            &parts.headers,
                        )
                        .await;
                        for c in forward.set_cookies {
                            resp.headers_mut().append(http::header::SET_COOKIE, c);
                        }
                        return (Decision::Respond(resp), note);
                    }
                    Decision::Forward(Box::new(forward))
                }
                Err(rejection) => {
                    self.metrics.request(label, rejection.outcome);
                    note.outcome = Some(rejection.outcome);
                    note.sid = rejection.sid;
                    Decision::Respond(rejection.response)
                }
            },
        };
        (decision, note)
    }

    fn refuse(&self, label: &str, route: Option<Arc<str>>, error: &Error) -> (Decision, Note) {
        self.metrics.request(label, error.code());
        let note = Note {
            route,
            outcome: Some(error.code()),
            sid: None,
        };
        (Decision::Respond(error_response(error, Vec::new())), note)
    }
}

impl From<Arc<Bff>> for Bff {
    fn from(bff: Arc<Bff>) -> Self {
        (*bff).clone()
    }
}
