//! The proxied-request flow, in DESIGN.md's order on an authenticated route: the
//! method allowlist; a browser navigation without a session is sent to login; a
//! missing CSRF header is refused; the session is opened, checked and refreshed if
//! needed; the Bearer token goes on.

use http::header::{ACCEPT, ALLOW, HeaderMap, HeaderValue};
use http::request::Parts;
use subtle::ConstantTimeEq as _;

use super::Core;
use super::decision::{Forward, Rejection, SessionView, Target, redirect};
use super::routes::Route;
use crate::config::RouteAuth;
use crate::cookies::RequestCookies;
use crate::error::{Error, ErrorKind};
use crate::login::AuthRequirement;
use crate::refresh::Outcome;

/// The outcome of a navigation sent to log in again at the level its route needs.
pub(crate) const STEP_UP_REDIRECT: &str = "step_up_redirect";

impl Core {
    /// A forward with our cookies stripped and no token yet.
    pub(crate) fn plain_forward(
        cookies: &RequestCookies<'_>,
        route: Option<usize>,
        target: Target,
        strip_authorization: bool,
    ) -> Forward {
        Forward {
            route,
            target,
            authorization: None,
            dpop: None,
            strip_authorization,
            cookie: cookies.forwarded(),
            set_cookies: Vec::new(),
            session: None,
            static_file: None,
            sid: None,
            identity: Vec::new(),
            strip_identity: None,
        }
    }

    /// Whether the request carries the configured CSRF header and value (compared in
    /// constant time).
    pub(crate) fn csrf_ok(&self, headers: &HeaderMap) -> bool {
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

    /// A redirect to `/login` that comes back to this request's URL, with the
    /// step-up parameters of `required`.
    fn login_redirect(
        &self,
        parts: &Parts,
        required: &AuthRequirement,
        clear: Vec<HeaderValue>,
    ) -> Rejection {
        let original = parts
            .uri
            .path_and_query()
            .map_or("/", http::uri::PathAndQuery::as_str);
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        if let Some(acr) = required.acr_values() {
            query.append_pair("acr_values", &acr);
        }
        if let Some(m) = required.max_age {
            query.append_pair("max_age", &m.to_string());
        }
        let target = query.append_pair("returnUrl", original).finish();
        Rejection {
            outcome: "login_redirect",
            response: redirect(&format!("{}/login?{target}", self.routes.prefix()), clear),
            sid: None,
        }
    }

    fn method_not_allowed(allow: Option<HeaderValue>) -> Rejection {
        let mut rejection = Rejection::from(ErrorKind::MethodNotAllowed);
        if let Some(v) = allow {
            rejection.response.headers_mut().insert(ALLOW, v);
        }
        rejection
    }

    /// A request on a configured route: forwarded as the returned [`Forward`] says,
    /// or refused.
    pub(crate) async fn proxied(
        &self,
        route: &Route,
        parts: &Parts,
        cookies: &RequestCookies<'_>,
    ) -> Result<Forward, Rejection> {
        if let Some(allow) = route.refuses(&parts.method) {
            return Err(Self::method_not_allowed(allow));
        }
        let (target, static_file) = route.target(&parts.uri).ok_or(ErrorKind::BadRequest(
            "the request path cannot be forwarded",
        ))?;
        let mut forward = Self::plain_forward(
            cookies,
            Some(route.index),
            target,
            route.auth != RouteAuth::None,
        );
        forward.static_file = static_file;
        forward
            .strip_identity
            .clone_from(&self.routes.identity_names);
        if route.auth == RouteAuth::None {
            if route.csrf && !self.csrf_ok(&parts.headers) {
                return Err(ErrorKind::Csrf.into());
            }
            return Ok(forward);
        }
        let read = self
            .storage
            .load(cookies)
            .await
            .map_err(|e| Rejection::error(&e, Vec::new()))?;
        // An unreadable cookie is no session (401 unauthenticated); a readable one
        // that was revoked is an ended session (401 session_expired). Either way a
        // cookie that is there gets cleared.
        let revoked = match read.session.as_ref() {
            Some(s) => self.is_revoked(s).await,
            None => false,
        };
        let session = read.session.filter(|_| !revoked);
        let Some(session) = session else {
            let clear = if read.present.is_empty() {
                Vec::new()
            } else {
                self.storage.clear(&read.present)
            };
            if route.auth == RouteAuth::Required && self.is_navigation(&parts.headers) {
                return Err(self.login_redirect(parts, &AuthRequirement::default(), clear));
            }
            if route.csrf && !self.csrf_ok(&parts.headers) {
                return Err(Rejection::error(&Error::new(ErrorKind::Csrf), clear));
            }
            if route.auth == RouteAuth::Optional {
                forward.set_cookies = clear;
                return Ok(forward);
            }
            let kind = if revoked {
                ErrorKind::SessionExpired
            } else {
                ErrorKind::Unauthenticated
            };
            return Err(Rejection::error(&Error::new(kind), clear));
        };
        let sid = session.sid;
        forward.sid = Some(sid);
        if route.csrf && !self.csrf_ok(&parts.headers) {
            return Err(Rejection::from(ErrorKind::Csrf).of_session(sid));
        }
        let (mut session, set_cookies) =
            match self.refresher.refresh_for(&session, &route.audience).await {
                Outcome::Fresh | Outcome::KeepCurrent => {
                    self.index.seen(&session.sub, session.sid, None);
                    let mut session = session;
                    let cookies = self
                        .touch(&mut session, &read.present, read.handle)
                        .await
                        .map_err(|e| Rejection::error(&e, Vec::new()).of_session(sid))?;
                    (session, cookies)
                }
                Outcome::Updated {
                    session: next,
                    kind,
                } => {
                    self.index
                        .seen(&next.sub, next.sid, Some(next.refresh_token.clone()));
                    tracing::debug!(sid = %next.sid.short_hash(), ?kind, "session tokens updated");
                    // Older cookies of this session are replays once the grace window
                    // is over, whether or not the IdP rotated the refresh token.
                    self.revocations
                        .record_generation(next.sid, next.refresh_count)
                        .await;
                    let cookies = self
                        .storage
                        .save(&next, &read.present, read.handle)
                        .await
                        .map_err(|e| Rejection::error(&e, Vec::new()).of_session(sid))?;
                    (*next, cookies)
                }
                Outcome::Unavailable { retry_after } => {
                    return Err(
                        Rejection::from(ErrorKind::IdpUnavailable { retry_after }).of_session(sid)
                    );
                }
                Outcome::Misconfigured => {
                    return Err(Rejection::from(ErrorKind::Misconfigured(
                        "the IdP refused the client's credentials",
                    ))
                    .of_session(sid));
                }
                Outcome::Ended(reason) => {
                    self.end_session(&session, reason).await;
                    self.storage.forget(read.handle).await;
                    let clear = self.storage.clear(&read.present);
                    if route.auth == RouteAuth::Optional {
                        forward.set_cookies = clear;
                        return Ok(forward);
                    }
                    return Err(
                        Rejection::error(&Error::new(ErrorKind::SessionExpired), clear)
                            .of_session(sid),
                    );
                }
            };
        // The session's own access token, or the one of the route's audience.
        let token = match route.audience.key() {
            None => session.access_token.as_str(),
            Some(key) => session
                .audience_token(key)
                .map(|t| t.access_token.as_str())
                .ok_or(ErrorKind::Internal("the route's audience token is missing"))?,
        };
        // RFC 9449: a DPoP-bound token goes with a proof for this request.
        let dpop_key = session
            .dpop_key
            .as_deref()
            .and_then(crate::dpop::DpopKey::from_pkcs8);
        let scheme: &[u8] = if dpop_key.is_some() {
            b"DPoP "
        } else {
            b"Bearer "
        };
        let mut bearer = Vec::with_capacity(scheme.len() + token.len());
        bearer.extend_from_slice(scheme);
        bearer.extend_from_slice(token.as_bytes());
        if let Some(key) = dpop_key {
            let htu = match forward.target.upstream_uri() {
                Some(uri) => uri.to_string(),
                None => {
                    let base = &self.config.resolved.public_url;
                    format!(
                        "{}://{}{}",
                        base.scheme(),
                        base.host_str().unwrap_or_default(),
                        base.port().map(|p| format!(":{p}")).unwrap_or_default()
                    ) + parts.uri.path()
                }
            };
            let proof = key
                .proof(
                    parts.method.as_str(),
                    &htu,
                    Some(token),
                    None,
                    crate::dpop::now(),
                )
                .map_err(|_| ErrorKind::Internal("cannot make the DPoP proof"))?;
            forward.dpop = Some(
                HeaderValue::from_str(&proof)
                    .map_err(|_| ErrorKind::Internal("the DPoP proof is not header-safe"))?,
            );
        }
        let bearer = HeaderValue::from_maybe_shared(bytes::Bytes::from(bearer))
            .map_err(|_| ErrorKind::Internal("the access token is not header-safe"))?;
        if route.rules.any() {
            // The ID token was verified at login (or at its refresh).
            let claims = session
                .id_token
                .as_deref()
                .and_then(crate::oidc::unverified_claims);
            if !route.rules.allow(claims.as_ref()) {
                // A rotated session still reaches the browser.
                return Err(
                    Rejection::error(&Error::new(ErrorKind::Forbidden), set_cookies)
                        .of_session(sid),
                );
            }
            forward.identity = route.rules.headers(claims.as_ref());
        }
        if route.step_up.any() {
            let claims = session
                .id_token
                .as_deref()
                .and_then(crate::oidc::unverified_claims);
            if !route.step_up.is_met(claims.as_ref(), self.clock.now_secs()) {
                // A navigation goes to log in again at the level the route needs;
                // an API call gets the RFC 9470 answer for the SPA to act on.
                if self.is_navigation(&parts.headers) {
                    let mut rejection = self
                        .login_redirect(parts, &route.step_up, set_cookies)
                        .of_session(sid);
                    rejection.outcome = STEP_UP_REDIRECT;
                    return Err(rejection);
                }
                let kind = ErrorKind::StepUpRequired {
                    acr_values: route.step_up.acr_values(),
                    max_age: route.step_up.max_age,
                };
                return Err(Rejection::error(&Error::new(kind), set_cookies).of_session(sid));
            }
        }
        forward.authorization = Some(bearer);
        forward.set_cookies = set_cookies;
        // Moved, not copied: the session is this request's own.
        forward.session = Some(SessionView::take(&mut session));
        Ok(forward)
    }

    /// Seals the session's time of use again when `session.idle_timeout` asks (a
    /// quarter of it passed since the last seal): the cookies that carry it, or
    /// none.
    async fn touch(
        &self,
        session: &mut crate::session::Session,
        present: &crate::cookies::Present,
        handle: Option<[u8; 16]>,
    ) -> Result<Vec<HeaderValue>, Error> {
        let now = self.clock.now_secs();
        if !crate::refresh::needs_touch(session, self.config.session.idle_timeout, now) {
            return Ok(Vec::new());
        }
        session.last_used = now;
        self.storage.save(session, present, handle).await
    }

    /// A path no route matches, in front of an application (the tower layer): it
    /// goes on with our cookies stripped and no token, and with the user's session
    /// for the application's handlers when the request has one, opened and
    /// refreshed as on a route. A safe method (GET, HEAD, OPTIONS, TRACE) gets it
    /// always; any other method only with the CSRF header, so a cross-site form post
    /// never acts as the user. Never refused: what would refuse a route's request
    /// (no session, an ended one, the IdP or the store unavailable) makes it
    /// anonymous here, the application's own pages being public.
    pub(crate) async fn passed(&self, parts: &Parts, cookies: &RequestCookies<'_>) -> Forward {
        let mut forward = Self::plain_forward(cookies, None, Target::Application, false);
        forward
            .strip_identity
            .clone_from(&self.routes.identity_names);
        if !parts.method.is_safe() && !self.csrf_ok(&parts.headers) {
            return forward;
        }
        let read = match self.storage.load(cookies).await {
            Ok(read) => read,
            Err(e) => {
                tracing::warn!(error = %e, "session store unavailable: request passed without its session");
                return forward;
            }
        };
        let revoked = match read.session.as_ref() {
            Some(s) => self.is_revoked(s).await,
            None => false,
        };
        let Some(session) = read.session.filter(|_| !revoked) else {
            if !read.present.is_empty() {
                forward.set_cookies = self.storage.clear(&read.present);
            }
            return forward;
        };
        forward.sid = Some(session.sid);
        let mut session = match self.refresher.refresh(&session).await {
            Outcome::Updated { session: next, .. } => {
                self.index
                    .seen(&next.sub, next.sid, Some(next.refresh_token.clone()));
                self.revocations
                    .record_generation(next.sid, next.refresh_count)
                    .await;
                match self.storage.save(&next, &read.present, read.handle).await {
                    Ok(cookies) => forward.set_cookies = cookies,
                    Err(e) => {
                        tracing::warn!(error = %e, "a refreshed session could not be saved: request passed without it");
                        return forward;
                    }
                }
                *next
            }
            Outcome::Ended(reason) => {
                self.end_session(&session, reason).await;
                self.storage.forget(read.handle).await;
                forward.set_cookies = self.storage.clear(&read.present);
                return forward;
            }
            // Fresh, or kept as it is (the IdP unavailable, the grace window): the
            // handler sees when its access token expires.
            Outcome::Fresh
            | Outcome::KeepCurrent
            | Outcome::Unavailable { .. }
            | Outcome::Misconfigured => {
                let mut session = session;
                if let Ok(cookies) = self.touch(&mut session, &read.present, read.handle).await {
                    forward.set_cookies = cookies;
                }
                session
            }
        };
        forward.session = Some(SessionView::take(&mut session));
        forward
    }
}
