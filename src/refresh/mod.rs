//! The refresh engine: refreshes an access token that is about to expire, exactly
//! once however many requests race with the same refresh token, and never sends a
//! rotated refresh token to the IdP again.
//!
//! - **Single-flight**: the first request for a refresh token starts the token
//!   request in a task of its own; every other request with that token waits for its
//!   result. The task is spawned rather than run inside a caller, so a caller that
//!   goes away (a closed browser tab) cannot cancel a token request half-way, which
//!   would leave the next caller to present a token the IdP may already have rotated.
//! - **Grace**: the result stays for `refresh.grace`; a request still carrying the
//!   old cookie gets the new tokens and a new cookie.
//! - **Reuse**: a tombstone remembers every rotated token for the session lifetime; a
//!   request carrying one after the grace window is a replay: the session is revoked.
//! - **Transient failures** are retried with jittered exponential backoff inside
//!   `refresh.timeout` and never end a session.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};
use tokio::sync::watch;

use crate::clock::Clock;
use crate::config::{Config, OnReuse};
use crate::expiring::ExpiringMap;
use crate::metrics::Metrics;
use crate::oidc::{Oidc, TokenError, TokenResponse, unverified_claims};
use crate::revocation::RevocationList;
use crate::seal::KeyRing;
use crate::session::{AudienceToken, Session};
use crate::store::{SharedStore, StoreError};

mod flight;

use flight::*;

/// Requests that arrive this soon after a rotation are treated as part of the same
/// burst even with `refresh.grace = 0`: they were in flight when it happened.
const BURST_WINDOW_MS: u64 = 2_000;
/// Access-token lifetime assumed when the IdP says nothing (no `expires_in`, no JWT
/// `exp`): five minutes (DESIGN.md "Odd but legal IdP answers").
const DEFAULT_ACCESS_TTL: u64 = 300;
/// First retry delay; doubled each attempt, capped, then jittered by ±50 %.
const BACKOFF_BASE: Duration = Duration::from_millis(100);
const BACKOFF_CAP: Duration = Duration::from_secs(2);
/// How many rotations a grace hit may chain through before refreshing itself.
const MAX_CHAIN: usize = 4;

/// The refresh rules, from the config.
#[derive(Debug, Clone)]
pub struct RefreshSettings {
    /// Refresh when the access token expires within this.
    pub skew: Duration,
    /// Old cookies are served the new tokens this long after a rotation.
    pub grace: Duration,
    /// The whole time a refresh may take, retries included.
    pub timeout: Duration,
    /// What reuse after the grace window does.
    pub on_reuse: OnReuse,
    /// `session.absolute_lifetime`.
    pub absolute_lifetime: Duration,
    /// `session.max_refreshes` (0: no limit).
    pub max_refreshes: u32,
    /// `session.idle_timeout` (zero: off).
    pub idle_timeout: Duration,
}

impl RefreshSettings {
    /// The settings of a loaded config.
    #[must_use]
    pub fn from_config(config: &Config) -> Self {
        Self {
            skew: config.refresh.skew,
            grace: config.refresh.grace,
            timeout: config.refresh.timeout,
            on_reuse: config.refresh.on_reuse,
            absolute_lifetime: config.session.absolute_lifetime,
            max_refreshes: config.session.max_refreshes,
            idle_timeout: config.session.idle_timeout,
        }
    }
}

/// Tokens from one refresh, with the access token's absolute expiry.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub struct NewTokens {
    access_token: String,
    access_expires_at: u64,
    refresh_token: Option<String>,
    id_token: Option<String>,
    idp_sid: Option<String>,
    scope: Option<String>,
    /// `iss` and `sub` of the new ID token (validated), which must be the session's.
    id_iss: Option<String>,
    id_sub: Option<String>,
    /// The access token is for this audience key (a route's `resource` or
    /// `token_exchange`), not the session's own.
    audience: Option<String>,
    /// It came from a token exchange: the session's refresh token was not used.
    exchanged: bool,
}

impl fmt::Debug for NewTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewTokens")
            .field("access_expires_at", &self.access_expires_at)
            .field("rotated_refresh_token", &self.refresh_token.is_some())
            .field("id_token", &self.id_token.is_some())
            .field("scope", &self.scope)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

/// Which access token a request needs: the session's own, or one for a route's
/// audience (DESIGN.md "Per-route rules").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Audience {
    /// The session's own access token.
    Own,
    /// RFC 8707: obtained with the session's refresh token and `resource`.
    Resource {
        /// `resource`.
        resource: String,
        /// The session's key for its token (made once, with the route).
        key: String,
    },
    /// RFC 8693: the session's access token exchanged for one for `audience`.
    Exchange {
        /// `audience`.
        audience: String,
        /// `scope`, if any.
        scope: Option<String>,
        /// The session's key for its token.
        key: String,
    },
}

impl Audience {
    /// A route's `resource`.
    #[must_use]
    pub fn resource(resource: &str) -> Self {
        Self::Resource {
            resource: resource.to_owned(),
            key: format!("r:{resource}"),
        }
    }

    /// A route's `token_exchange`.
    #[must_use]
    pub fn exchange(audience: &str, scope: Option<&str>) -> Self {
        Self::Exchange {
            audience: audience.to_owned(),
            scope: scope.map(str::to_owned),
            key: format!("x:{audience} {}", scope.unwrap_or_default()),
        }
    }

    /// Under which key the session keeps its token (none for the session's own).
    #[must_use]
    pub fn key(&self) -> Option<&str> {
        match self {
            Self::Own => None,
            Self::Resource { key, .. } | Self::Exchange { key, .. } => Some(key),
        }
    }
}

/// The result of one refresh, shared by every request that waited for it and kept
/// for the grace window.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Rotation {
    /// What each grant returned, in order (several when one flight refreshed
    /// several of the session's tokens).
    tokens: Vec<NewTokens>,
    at_ms: u64,
    /// The IdP returned a different refresh token.
    rotated: bool,
}

impl Rotation {
    /// Whether it holds the token `want` names (an audience key; none: the
    /// session's own).
    fn gives(&self, want: Option<&str>) -> bool {
        self.tokens.iter().any(|t| t.audience.as_deref() == want)
    }
}

/// How a session came to be updated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshKind {
    /// This request's refresh reached the IdP.
    Refreshed,
    /// This request waited for another's refresh.
    Coalesced,
    /// This request carried an already-rotated token within the grace window.
    GraceHit,
}

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// The IdP refused the refresh token.
    InvalidGrant,
    /// A rotated refresh token came back after the grace window.
    Reuse,
    /// `session.absolute_lifetime` is over.
    Lifetime,
    /// `session.max_refreshes` reached.
    MaxRefreshes,
    /// The access token expired and there is no refresh token.
    NoRefreshToken,
    /// A refreshed ID token named another `iss` or `sub` (OIDC Core 12.2).
    SubChanged,
    /// A cookie of an older generation came back after the grace window.
    Replay,
    /// Unused for `session.idle_timeout`.
    Idle,
}

impl EndReason {
    /// The `reason` label of `bff_sessions_ended_total`.
    #[must_use]
    pub fn label(self) -> &'static str {
        match self {
            Self::InvalidGrant => "invalid_grant",
            Self::Reuse => "reuse",
            Self::Lifetime => "absolute_lifetime",
            Self::MaxRefreshes => "max_refreshes",
            Self::NoRefreshToken => "no_refresh_token",
            Self::SubChanged => "sub_changed",
            Self::Replay => "replay",
            Self::Idle => "idle",
        }
    }
}

/// What the refresh engine decided for one request's session.
#[derive(Debug)]
pub enum Outcome {
    /// The access token is fresh: use it.
    Fresh,
    /// New tokens: use them and send the new cookie.
    Updated {
        /// The updated session.
        session: Box<Session>,
        /// How.
        kind: RefreshKind,
    },
    /// The refresh failed transiently but the current access token is still valid:
    /// use it, leave the cookie alone.
    KeepCurrent,
    /// The refresh failed transiently and the access token has expired: 503, the
    /// session is kept.
    Unavailable {
        /// When to retry.
        retry_after: Duration,
    },
    /// The IdP refused our client: 503, the session is kept, the operator must act.
    Misconfigured,
    /// The session is over: 401, cookie cleared.
    Ended(EndReason),
}

type Shared = Result<Arc<Rotation>, TokenError>;

/// Refreshes under way: the result channel by hash of the refresh token.
type Inflight = HashMap<[u8; 32], watch::Receiver<Option<Shared>>>;

struct Inner {
    oidc: Arc<Oidc>,
    settings: RefreshSettings,
    metrics: Metrics,
    revocations: Arc<RevocationList>,
    clock: Arc<Clock>,
    /// Refresh results by hash of the refresh token they replaced (grace window).
    /// Never evicted early: a lost result would send a rotated token again.
    results: Arc<ExpiringMap<[u8; 32], Arc<Rotation>>>,
    /// Rotated refresh tokens (hash → rotation time in ms), for reuse detection,
    /// kept for the session lifetime.
    tombstones: Arc<ExpiringMap<[u8; 32], u64>>,
    /// Refreshes under way, by hash of the refresh token.
    /// Shared with the refresher a reload makes, so a refresh under way when the
    /// config changes is joined, not repeated.
    inflight: Arc<Mutex<Inflight>>,
    /// The store replicas coordinate through, with the ring that seals what goes in.
    shared: Option<(Arc<dyn SharedStore>, KeyRing)>,
}

/// The refresh engine. Cheap to clone.
#[derive(Clone)]
pub struct TokenRefresher {
    inner: Arc<Inner>,
}

impl fmt::Debug for TokenRefresher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenRefresher")
            .field("settings", &self.inner.settings)
            .finish_non_exhaustive()
    }
}

fn token_key(refresh_token: &str) -> [u8; 32] {
    Sha256::digest(refresh_token.as_bytes()).into()
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The access token's absolute expiry: `expires_in`, else the JWT's `exp`, else a
/// short default.
pub(crate) fn access_expiry(tokens: &TokenResponse, now: u64) -> u64 {
    if let Some(secs) = tokens.expires_in {
        return now.saturating_add(secs);
    }
    unverified_claims(&tokens.access_token)
        .and_then(|c| c.get("exp")?.as_u64())
        .unwrap_or(now + DEFAULT_ACCESS_TTL)
}

/// The `iss` of the session's ID token (verified at login).
fn session_issuer(session: &Session) -> Option<String> {
    let claims = unverified_claims(session.id_token.as_deref()?)?;
    claims.get("iss")?.as_str().map(str::to_owned)
}

/// Builds the session after a refresh: each grant's tokens in order.
fn apply(session: &Session, grants: &[NewTokens], now: u64) -> Result<Session, EndReason> {
    let mut next = session.clone();
    for tokens in grants {
        next = apply_one(&next, tokens, now)?;
    }
    Ok(next)
}

/// Builds the session after one grant. A refresh token that did not rotate (same or
/// none returned) keeps the old one. A new ID token must name the session's `iss` and
/// `sub` (OIDC Core 12.2), else the session ends.
fn apply_one(session: &Session, tokens: &NewTokens, now: u64) -> Result<Session, EndReason> {
    if let Some(sub) = &tokens.id_sub {
        if *sub != session.sub {
            return Err(EndReason::SubChanged);
        }
    }
    if let (Some(new_iss), Some(old_iss)) = (&tokens.id_iss, session_issuer(session)) {
        if *new_iss != old_iss {
            return Err(EndReason::SubChanged);
        }
    }
    let mut next = session.clone();
    if let Some(key) = &tokens.audience {
        next.keep_audience_token(AudienceToken {
            key: key.clone(),
            access_token: tokens.access_token.clone(),
            expires_at: tokens.access_expires_at,
        });
        if tokens.exchanged {
            // The refresh token was not used: the same generation.
            return Ok(next);
        }
    } else {
        next.access_token.clone_from(&tokens.access_token);
        next.access_expires_at = tokens.access_expires_at;
    }
    if let Some(rt) = &tokens.refresh_token {
        next.refresh_token = Some(rt.clone());
    }
    if let Some(id) = &tokens.id_token {
        next.id_token = Some(id.clone());
        if tokens.idp_sid.is_some() {
            next.idp_sid.clone_from(&tokens.idp_sid);
        }
    }
    if let Some(scope) = &tokens.scope {
        next.scope.clone_from(scope);
    }
    next.refreshed_at = now;
    next.last_used = now;
    next.refresh_count = session.refresh_count.saturating_add(1);
    Ok(next)
}

/// Whether a session went unused for longer than `idle` (zero: never).
pub(crate) fn is_idle(session: &Session, idle: Duration, now: u64) -> bool {
    !idle.is_zero() && now > session.last_used.saturating_add(idle.as_secs())
}

/// Whether a session's time of use is worth sealing again: a quarter of `idle`
/// has passed since it was last sealed (never when `idle` is zero).
pub(crate) fn needs_touch(session: &Session, idle: Duration, now: u64) -> bool {
    !idle.is_zero() && now >= session.last_used.saturating_add(idle.as_secs() / 4)
}

/// Logs and returns the end of a session whose refreshed ID token named someone
/// else.
fn identity_changed(session: &Session) -> Outcome {
    tracing::warn!(sid = %session.sid.short_hash(), "the refreshed ID token names another iss or sub: session ended");
    Outcome::Ended(EndReason::SubChanged)
}

impl TokenRefresher {
    /// A refresher using `oidc`, counting into `metrics`, revoking into
    /// `revocations`.
    #[must_use]
    pub fn new(
        oidc: Arc<Oidc>,
        settings: RefreshSettings,
        metrics: Metrics,
        revocations: Arc<RevocationList>,
        clock: Arc<Clock>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                oidc,
                metrics,
                revocations,
                clock,
                results: Arc::new(ExpiringMap::new()),
                tombstones: Arc::new(ExpiringMap::new()),
                inflight: Arc::new(Mutex::new(HashMap::new())),
                shared: None,
                settings,
            }),
        }
    }

    /// Coordinates refreshes with other replicas through `store`: one token request
    /// per rotation across all of them. Results go into the store sealed with `ring`.
    #[must_use]
    pub fn with_store(self, store: Arc<dyn SharedStore>, ring: KeyRing) -> Self {
        let inner = &self.inner;
        Self {
            inner: Arc::new(Inner {
                oidc: Arc::clone(&inner.oidc),
                settings: inner.settings.clone(),
                metrics: inner.metrics.clone(),
                revocations: Arc::clone(&inner.revocations),
                clock: Arc::clone(&inner.clock),
                results: Arc::clone(&inner.results),
                tombstones: Arc::clone(&inner.tombstones),
                inflight: Arc::new(Mutex::new(HashMap::new())),
                shared: Some((store, ring)),
            }),
        }
    }

    /// The refresher of a reloaded config: its client (`oidc`), settings and key
    /// ring are new; the refreshes under way, the grace-window results and the
    /// rotated-token tombstones are this one's, so a session refreshing while the
    /// config changes never presents a rotated token.
    #[must_use]
    pub fn reloaded(&self, oidc: Arc<Oidc>, settings: RefreshSettings, ring: KeyRing) -> Self {
        let inner = &self.inner;
        Self {
            inner: Arc::new(Inner {
                oidc,
                settings,
                metrics: inner.metrics.clone(),
                revocations: Arc::clone(&inner.revocations),
                clock: Arc::clone(&inner.clock),
                results: Arc::clone(&inner.results),
                tombstones: Arc::clone(&inner.tombstones),
                inflight: Arc::clone(&inner.inflight),
                shared: inner
                    .shared
                    .as_ref()
                    .map(|(store, _)| (Arc::clone(store), ring)),
            }),
        }
    }

    fn needs_refresh(&self, session: &Session, now: u64) -> bool {
        session.access_expires_at <= now.saturating_add(self.inner.settings.skew.as_secs())
    }

    /// Whether the session holds a token for the audience `key` that does not
    /// need a refresh yet.
    fn audience_fresh(&self, session: &Session, key: &str, now: u64) -> bool {
        session
            .audience_token(key)
            .is_some_and(|t| t.expires_at > now.saturating_add(self.inner.settings.skew.as_secs()))
    }

    /// The grants a flight for `want` makes: `want` first, then the session's
    /// other tokens that need a refresh too (its own, its resources'), so every
    /// request of a burst after an expiry ends with the same session.
    fn steps(
        &self,
        session: &Session,
        want: Option<(&str, &str)>,
        now: u64,
    ) -> Vec<Option<(String, String)>> {
        let mut steps = vec![want.map(|(r, k)| (r.to_owned(), k.to_owned()))];
        if want.is_some() && self.needs_refresh(session, now) {
            steps.push(None);
        }
        for t in &session.audience_tokens {
            let Some(resource) = t.key.strip_prefix("r:") else {
                continue;
            };
            if want.is_none_or(|(_, k)| k != t.key) && !self.audience_fresh(session, &t.key, now) {
                steps.push(Some((resource.to_owned(), t.key.clone())));
            }
        }
        steps
    }

    /// Whether `session` has what a request for `want` (the audience key of a
    /// resource, or none for the session's own token) needs.
    fn has(&self, session: &Session, want: Option<&str>, now: u64) -> bool {
        match want {
            None => !self.needs_refresh(session, now),
            Some(key) => self.audience_fresh(session, key, now),
        }
    }

    /// Decides what to do with a session's tokens on this request. The caller has
    /// already checked revocation.
    pub async fn refresh(&self, session: &Session) -> Outcome {
        self.refresh_for(session, &Audience::Own).await
    }

    /// As [`refresh`](Self::refresh), for the access token of `audience`: a
    /// fresh kept one, or one obtained now (the updated session keeps it). Every
    /// refresh grant goes through the one single flight of the session's refresh
    /// token, so a refresh token is presented once whichever audience asked.
    pub async fn refresh_for(&self, session: &Session, audience: &Audience) -> Outcome {
        let s = &self.inner.settings;
        let now = self.inner.clock.now_secs();
        if now
            >= session
                .created_at
                .saturating_add(s.absolute_lifetime.as_secs())
        {
            return Outcome::Ended(EndReason::Lifetime);
        }
        if is_idle(session, s.idle_timeout, now) {
            return Outcome::Ended(EndReason::Idle);
        }
        match audience {
            Audience::Own => self.refresh_own(session, now).await,
            Audience::Resource { resource, key } => {
                if self.audience_fresh(session, key, now) {
                    return Outcome::Fresh;
                }
                let Some(first_token) = session.refresh_token.as_deref() else {
                    tracing::error!(sid = %session.sid.short_hash(), "a route's resource needs the session's refresh token, and the IdP issued none (offline_access?)");
                    return Outcome::Misconfigured;
                };
                Box::pin(self.rotate(session, first_token, Some((resource, key)))).await
            }
            Audience::Exchange {
                audience: aud,
                scope,
                key,
            } => {
                if self.audience_fresh(session, key, now) {
                    return Outcome::Fresh;
                }
                Box::pin(self.exchange(session, aud, scope.as_deref(), key.clone())).await
            }
        }
    }

    /// The session's own access token, refreshed if it needs to be.
    async fn refresh_own(&self, session: &Session, now: u64) -> Outcome {
        if !self.needs_refresh(session, now) {
            return Outcome::Fresh;
        }
        let Some(first_token) = session.refresh_token.as_deref() else {
            return if session.access_expires_at > now {
                Outcome::Fresh
            } else {
                Outcome::Ended(EndReason::NoRefreshToken)
            };
        };
        // Boxed: the rotation's state (token requests, the store, retries) is
        // large, and a request whose tokens are fresh (nearly all of them) would
        // otherwise carry it inline and copy it at every move of its future.
        Box::pin(self.rotate(session, first_token, None)).await
    }

    /// A token exchange (RFC 8693) for `audience`, the session's own access token
    /// refreshed first if it needs to be; one exchange per access token and
    /// audience however many requests race.
    async fn exchange(
        &self,
        session: &Session,
        audience: &str,
        scope: Option<&str>,
        key: String,
    ) -> Outcome {
        let now = self.inner.clock.now_secs();
        let (current, kind) = match self.refresh_own(session, now).await {
            Outcome::Fresh | Outcome::KeepCurrent => (session.clone(), None),
            Outcome::Updated { session, kind } => (*session, Some(kind)),
            other => return other,
        };
        if current.access_expires_at <= now {
            return Outcome::Unavailable {
                retry_after: Duration::from_secs(5),
            };
        }
        let flight = token_key(&format!("{}\n{key}", current.access_token));
        let grant = Grant::Exchange {
            subject: current.access_token.clone(),
            audience: audience.to_owned(),
            scope: scope.map(str::to_owned),
            key: key.clone(),
            dpop: current.dpop_key.clone(),
        };
        let (mut rx, leader) = match self.join_or_start(flight, grant.clone()) {
            Joined::Hit(rotation) => {
                let Ok(next) = apply(&current, &rotation.tokens, now) else {
                    return identity_changed(&current);
                };
                if self.audience_fresh(&next, &key, now) {
                    return Outcome::Updated {
                        session: Box::new(next),
                        kind: kind.unwrap_or(RefreshKind::GraceHit),
                    };
                }
                // A kept exchange near expiry: exchange again.
                self.inner.results.remove(&flight);
                let Joined::Wait(rx, leader) = self.join_or_start(flight, grant) else {
                    return Outcome::Unavailable {
                        retry_after: Duration::from_secs(1),
                    };
                };
                (rx, leader)
            }
            Joined::Wait(rx, leader) => (rx, leader),
        };
        let waited = tokio::time::timeout(
            self.inner.settings.timeout + Duration::from_secs(1),
            rx.wait_for(Option::is_some),
        )
        .await;
        let result = match waited {
            Ok(Ok(value)) => value.clone(),
            _ => None,
        };
        match result {
            Some(Ok(rotation)) => match apply(&current, &rotation.tokens, now) {
                Ok(next) => Outcome::Updated {
                    session: Box::new(next),
                    kind: kind.unwrap_or(if leader {
                        RefreshKind::Refreshed
                    } else {
                        RefreshKind::Coalesced
                    }),
                },
                Err(_) => identity_changed(&current),
            },
            Some(Err(TokenError::Dead { .. } | TokenError::Misconfigured { .. })) => {
                Outcome::Misconfigured
            }
            Some(Err(TokenError::Transient { retry_after, .. })) => Outcome::Unavailable {
                retry_after: retry_after.unwrap_or(Duration::from_secs(5)),
            },
            Some(Err(TokenError::Unreadable { .. })) | None => Outcome::Unavailable {
                retry_after: Duration::from_secs(5),
            },
        }
    }

    /// The tokens need a refresh: single flight, grace, the shared store. `want`:
    /// the resource (RFC 8707) and its audience key when the request needs a
    /// resource's access token, none for the session's own. Whatever grant of the
    /// same refresh token is under way is joined; when its result is not what this
    /// request needs, the request goes on from the session it produced.
    async fn rotate(
        &self,
        session: &Session,
        first_token: &str,
        want: Option<(&str, &str)>,
    ) -> Outcome {
        let s = &self.inner.settings;
        let want_key = want.map(|(_, key)| key);
        let mut current = session.clone();
        let mut key = token_key(first_token);
        let mut chained = false;
        for _ in 0..MAX_CHAIN {
            if s.max_refreshes > 0 && current.refresh_count >= s.max_refreshes {
                return Outcome::Ended(EndReason::MaxRefreshes);
            }
            let now_ms = self.inner.clock.now_ms();
            match self.grace_hit(&key, &current, now_ms, want_key) {
                Some(Grace::Use(next)) => {
                    self.inner.metrics.refresh("grace_hit");
                    return Outcome::Updated {
                        session: Box::new(next),
                        kind: RefreshKind::GraceHit,
                    };
                }
                // The grace result is itself near expiry: go on from it.
                Some(Grace::Chain(next)) => {
                    current = next;
                    key = current.refresh_token.as_deref().map_or(key, token_key);
                    chained = true;
                    continue;
                }
                Some(Grace::Ended) => return identity_changed(&current),
                None => {}
            }
            let rotated_at = match self.inner.tombstones.get(&key, now_ms) {
                Some(at) => Some(at),
                None => self.shared_tombstone(&key).await,
            };
            if let Some(rotated_at) = rotated_at {
                if now_ms.saturating_sub(rotated_at) > self.window_ms() {
                    return self.reuse_detected(&current).await;
                }
            }
            let Some(token) = current.refresh_token.clone() else {
                break;
            };
            let grant = Grant::Refresh {
                token,
                steps: self.steps(&current, want, now_ms / 1000),
                dpop: current.dpop_key.clone(),
            };
            let (mut rx, leader) = match self.join_or_start(key, grant) {
                Joined::Hit(rotation) => {
                    let Ok(next) = apply(&current, &rotation.tokens, self.inner.clock.now_secs())
                    else {
                        return identity_changed(&current);
                    };
                    if !rotation.gives(want_key) {
                        self.go_on(&mut key, &mut current, next, rotation.rotated);
                        chained = true;
                        continue;
                    }
                    self.inner.metrics.refresh("grace_hit");
                    return Outcome::Updated {
                        session: Box::new(next),
                        kind: RefreshKind::GraceHit,
                    };
                }
                Joined::Wait(rx, leader) => (rx, leader),
            };
            let waited = tokio::time::timeout(
                s.timeout + Duration::from_secs(1),
                rx.wait_for(Option::is_some),
            )
            .await;
            let result = match waited {
                Ok(Ok(value)) => value.clone(),
                _ => None,
            };
            let now = self.inner.clock.now_secs();
            return match result {
                Some(Ok(rotation)) => {
                    let Ok(next) = apply(&current, &rotation.tokens, now) else {
                        return identity_changed(&current);
                    };
                    if !rotation.gives(want_key) {
                        self.go_on(&mut key, &mut current, next, rotation.rotated);
                        chained = true;
                        continue;
                    }
                    if !leader {
                        self.inner.metrics.refresh("coalesced");
                    }
                    Outcome::Updated {
                        session: Box::new(next),
                        kind: if leader {
                            RefreshKind::Refreshed
                        } else {
                            RefreshKind::Coalesced
                        },
                    }
                }
                Some(Err(TokenError::Dead { .. })) => Outcome::Ended(EndReason::InvalidGrant),
                // The IdP may have consumed the token: never sent again for this
                // request (DESIGN.md "Odd but legal IdP answers").
                Some(Err(TokenError::Unreadable { .. })) => Outcome::Unavailable {
                    retry_after: Duration::from_secs(5),
                },
                Some(Err(TokenError::Misconfigured { .. })) => {
                    if self.usable(&current, want_key, now) {
                        self.keep(chained, current)
                    } else {
                        Outcome::Misconfigured
                    }
                }
                Some(Err(TokenError::Transient { retry_after, .. })) => {
                    self.transient(chained, current, (now, want_key), retry_after)
                }
                None => self.transient(chained, current, (now, want_key), None),
            };
        }
        // Chained through more rotations than a real burst makes: refuse to guess.
        let now = self.inner.clock.now_secs();
        self.transient(chained, current, (now, want_key), None)
    }

    /// Whether the token a request needs (`want`: an audience key, or none for the
    /// session's own) is there and not expired: a failed refresh can leave it in use.
    fn usable(&self, session: &Session, want: Option<&str>, now: u64) -> bool {
        match want {
            None => session.access_expires_at > now,
            Some(key) => session
                .audience_token(key)
                .is_some_and(|t| t.expires_at > now),
        }
    }

    /// A grant of this refresh token that did not give what the request needs
    /// (another audience's, joined or kept): the request goes on from the session
    /// it made, whose refresh token is the current one now. A kept result that did
    /// not rotate is dropped, so the next grant is not answered by it again.
    fn go_on(&self, key: &mut [u8; 32], current: &mut Session, next: Session, rotated: bool) {
        if !rotated {
            self.inner.results.remove(key);
        }
        *key = next.refresh_token.as_deref().map_or(*key, token_key);
        *current = next;
    }

    /// How long after a rotation an older cookie is still served (the grace window,
    /// at least the burst window).
    #[must_use]
    pub fn window_ms(&self) -> u64 {
        millis(self.inner.settings.grace).max(BURST_WINDOW_MS)
    }

    /// A kept rotation for this token: the session to use, or one that needs a
    /// refresh of its own.
    fn grace_hit(
        &self,
        key: &[u8; 32],
        current: &Session,
        now_ms: u64,
        want: Option<&str>,
    ) -> Option<Grace> {
        let rotation = self.inner.results.get(key, now_ms)?;
        if rotation.rotated && now_ms.saturating_sub(rotation.at_ms) > self.window_ms() {
            return None;
        }
        let Ok(next) = apply(current, &rotation.tokens, now_ms / 1000) else {
            return Some(Grace::Ended);
        };
        if self.has(&next, want, now_ms / 1000) {
            return Some(Grace::Use(next));
        }
        if rotation.rotated {
            Some(Grace::Chain(next))
        } else {
            // Same refresh token, stale access token: refresh again with it.
            self.inner.results.remove(key);
            None
        }
    }

    fn keep(&self, chained: bool, current: Session) -> Outcome {
        if chained {
            Outcome::Updated {
                session: Box::new(current),
                kind: RefreshKind::GraceHit,
            }
        } else {
            Outcome::KeepCurrent
        }
    }

    fn transient(
        &self,
        chained: bool,
        current: Session,
        (now, want): (u64, Option<&str>),
        retry_after: Option<Duration>,
    ) -> Outcome {
        if self.usable(&current, want, now) {
            self.keep(chained, current)
        } else {
            Outcome::Unavailable {
                retry_after: retry_after
                    .unwrap_or(Duration::from_secs(5))
                    .clamp(Duration::from_secs(1), Duration::from_secs(60)),
            }
        }
    }

    /// A cookie of an older generation came back after the grace window (DESIGN.md
    /// "Replay detection does not depend on the IdP rotating"): the session is
    /// revoked everywhere. When its refresh token was rotated this is refresh-token
    /// reuse, counted and answered as such (`on_reuse`); otherwise, with
    /// `revoke_at_idp`, the token is revoked at the IdP (RFC 7009).
    pub async fn replay_detected(&self, session: &Session) {
        let inner = &self.inner;
        if let Some(rt) = session.refresh_token.as_deref() {
            let key = token_key(rt);
            let now = inner.clock.now_ms();
            let rotated = inner.tombstones.get(&key, now).is_some()
                || self.shared_tombstone(&key).await.is_some();
            if rotated {
                self.reuse_detected(session).await;
                return;
            }
        }
        inner.metrics.session_ended(EndReason::Replay.label());
        inner.revocations.revoke_sid_everywhere(session.sid).await;
        tracing::warn!(sid = %session.sid.short_hash(), "a cookie of an older session generation came back after the grace window: session revoked");
        if inner.settings.on_reuse == OnReuse::RevokeAtIdp {
            if let Some(rt) = session.refresh_token.clone() {
                let oidc = Arc::clone(&inner.oidc);
                let timeout = inner.settings.timeout;
                tokio::spawn(async move {
                    let _ = oidc.revoke(&rt, timeout).await;
                });
            }
        }
    }

    async fn reuse_detected(&self, session: &Session) -> Outcome {
        let inner = &self.inner;
        inner.metrics.reuse_detected();
        inner.metrics.session_ended(EndReason::Reuse.label());
        inner.revocations.revoke_sid_everywhere(session.sid).await;
        tracing::warn!(sid = %session.sid.short_hash(), "rotated refresh token presented after the grace window: session revoked");
        if inner.settings.on_reuse == OnReuse::RevokeAtIdp {
            if let Some(stale) = session.refresh_token.clone() {
                // Presenting the stale token makes the IdP's own reuse detection
                // revoke the whole family. Its answer does not matter.
                let oidc = Arc::clone(&inner.oidc);
                let timeout = inner.settings.timeout;
                tokio::spawn(async move {
                    let _ = oidc.refresh(&stale, timeout).await;
                });
            }
        }
        Outcome::Ended(EndReason::Reuse)
    }
}

#[cfg(test)]
mod tests;
