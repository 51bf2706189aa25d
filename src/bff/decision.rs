//! What the core answers a front door with: a [`Decision`] (respond, or forward as a
//! [`Forward`] describes), and the JSON and redirect responses every endpoint and
//! rejection is made of.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue, LOCATION, RETRY_AFTER, SET_COOKIE};
use http::uri::PathAndQuery;
use http::{Response, StatusCode};
use serde_json::Value;

use super::upstream::Upstream;
use crate::error::Error;

/// What the access log says of a request's way through the core (the labels of
/// `bff_requests_total`, and whose session it was).
#[derive(Debug, Clone, Default)]
pub(crate) struct Note {
    /// The route's label; None: no route (`"none"`).
    #[cfg_attr(not(any(feature = "tower", feature = "pingora")), allow(dead_code))]
    pub(crate) route: Option<std::sync::Arc<str>>,
    /// The outcome label; None: the response's status code (the endpoints).
    pub(crate) outcome: Option<&'static str>,
    /// The session the request came with, when one was opened (the access line
    /// shows a hash of it).
    pub(crate) sid: Option<crate::session::SessionId>,
}

/// What a front door does with a request. `Debug` shows the status or the forward,
/// never a header value (Set-Cookie carries the sealed session).
pub enum Decision {
    /// Answer with this response.
    Respond(Response<Bytes>),
    /// Send it on, changed as described.
    Forward(Box<Forward>),
}

impl std::fmt::Debug for Decision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Respond(r) => f.debug_tuple("Respond").field(&r.status()).finish(),
            Self::Forward(fw) => f.debug_tuple("Forward").field(fw).finish(),
        }
    }
}

/// Where a forwarded request goes.
#[derive(Debug, Clone)]
pub enum Target {
    /// The application behind the tower layer (a route with neither `upstream` nor
    /// `static_dir`, or a path no route matches). The proxy engines have none: they
    /// answer 404 (the binary refuses such routes at start).
    Application,
    /// An upstream, resolved once per route, and the path and query to ask it for.
    Upstream {
        /// The route's upstream.
        upstream: Arc<Upstream>,
        /// The path (the route's prefix stripped if asked, below the upstream's base
        /// path) and the client's query.
        path: PathAndQuery,
    },
}

/// A file of a `static_dir` route, served by the core itself.
#[derive(Debug, Clone)]
pub(crate) struct StaticFile {
    /// The folder.
    pub(crate) dir: Arc<Path>,
    /// The request path below the route's path (not yet resolved on disk).
    pub(crate) path: String,
}

impl Target {
    /// The full URI of an upstream target (`scheme://authority/path?query`).
    #[must_use]
    pub fn upstream_uri(&self) -> Option<http::Uri> {
        match self {
            Self::Upstream { upstream, path } => http::Uri::builder()
                .scheme(upstream.scheme())
                .authority(upstream.authority().clone())
                .path_and_query(path.clone())
                .build()
                .ok(),
            Target::Application => None,
        }
    }
}

/// How to forward a request. `Debug` redacts the token, the cookies and the ID token.
#[derive(Clone)]
pub struct Forward {
    /// Index of the route in `config.routes` (None: no route matched and the request
    /// passes to the application).
    pub(crate) route: Option<usize>,
    pub(crate) target: Target,
    /// `Authorization: Bearer …` (or `DPoP …`) to set, when the route has a session.
    pub(crate) authorization: Option<HeaderValue>,
    /// The `DPoP` proof for the upstream request (RFC 9449, `oidc.dpop`).
    pub(crate) dpop: Option<HeaderValue>,
    /// Drop any client-sent `Authorization` (authenticated routes).
    pub(crate) strip_authorization: bool,
    /// The `Cookie` header to send on, without the BFF's own cookies; None removes it.
    pub(crate) cookie: Option<HeaderValue>,
    /// `Set-Cookie` values to add to the response (a rotated session).
    pub(crate) set_cookies: Vec<HeaderValue>,
    /// The request's session as the application behind the tower layer sees it
    /// (moved out of the opened session, never copied; the engines drop it).
    pub(crate) session: Option<SessionView>,
    /// A `static_dir` route's file: the core serves it and never hands it on.
    pub(crate) static_file: Option<StaticFile>,
    /// The request's session, for the access log.
    pub(crate) sid: Option<crate::session::SessionId>,
    /// The route's identity headers, from the session's claims.
    pub(crate) identity: Vec<(http::HeaderName, HeaderValue)>,
    /// Every configured identity header name: the client's copies are dropped.
    pub(crate) strip_identity: Option<std::sync::Arc<[http::HeaderName]>>,
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
            .field("session", &self.session.is_some())
            .field("identity", &self.identity.len())
            .finish()
    }
}

/// What a handler may know of the session a request came with: who, which session,
/// the access token and until when it holds, and the ID token for its claims.
#[derive(Clone)]
// Read by the tower layer's `Session`; the engines only drop it.
#[cfg_attr(not(feature = "tower"), allow(dead_code))]
pub(crate) struct SessionView {
    pub(crate) sid: crate::session::SessionId,
    pub(crate) sub: String,
    pub(crate) access_token: String,
    pub(crate) access_expires_at: u64,
    pub(crate) id_token: Option<String>,
}

impl SessionView {
    /// Takes the parts a handler may see out of an opened session.
    pub(crate) fn take(session: &mut crate::session::Session) -> Self {
        Self {
            sid: session.sid,
            sub: std::mem::take(&mut session.sub),
            access_token: std::mem::take(&mut session.access_token),
            access_expires_at: session.access_expires_at,
            id_token: session.id_token.take(),
        }
    }
}

impl Forward {
    /// Index of the matched route in `config.routes`; None when no route matched.
    #[must_use]
    pub fn route(&self) -> Option<usize> {
        self.route
    }

    /// Where the request goes.
    #[must_use]
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// The `Authorization` value the request goes on with, if the route has a session.
    #[must_use]
    pub fn authorization(&self) -> Option<&HeaderValue> {
        self.authorization.as_ref()
    }

    /// Whether a client-sent `Authorization` is dropped (authenticated routes).
    #[must_use]
    pub fn strips_authorization(&self) -> bool {
        self.strip_authorization
    }

    /// The `Cookie` header sent on (the BFF's own cookies removed); None: no header.
    #[must_use]
    pub fn cookie(&self) -> Option<&HeaderValue> {
        self.cookie.as_ref()
    }

    /// The upstream and the path to ask it for, when the request goes to one.
    #[must_use]
    pub fn upstream(&self) -> Option<(&Arc<Upstream>, &PathAndQuery)> {
        match &self.target {
            Target::Upstream { upstream, path } => Some((upstream, path)),
            Target::Application => None,
        }
    }

    /// The `Set-Cookie` values the response gains (a refreshed session).
    #[must_use]
    pub fn set_cookies(&self) -> &[HeaderValue] {
        &self.set_cookies
    }

    /// The session's ID-token claims, if it has a session with an ID token.
    #[must_use]
    pub fn claims(&self) -> Option<Value> {
        self.session
            .as_ref()
            .and_then(|s| s.id_token.as_deref())
            .and_then(crate::oidc::unverified_claims)
    }
}

/// Why the core did not forward a request: the response, and the outcome label of
/// `bff_requests_total`, which is the error's own code.
pub(crate) struct Rejection {
    pub(crate) outcome: &'static str,
    pub(crate) response: Response<Bytes>,
    /// The request's session, when one was opened (for the access log).
    pub(crate) sid: Option<crate::session::SessionId>,
}

impl Rejection {
    /// The same rejection, of a request whose session was opened.
    pub(crate) fn of_session(mut self, sid: crate::session::SessionId) -> Self {
        self.sid = Some(sid);
        self
    }

    /// An error answer with `Set-Cookie` values (a cleared session).
    pub(crate) fn error(error: &Error, set_cookies: Vec<HeaderValue>) -> Self {
        Self {
            outcome: error.code(),
            response: error_response(error, set_cookies),
            sid: None,
        }
    }
}

impl From<crate::error::ErrorKind> for Rejection {
    fn from(kind: crate::error::ErrorKind) -> Self {
        Self::error(&Error::new(kind), Vec::new())
    }
}

/// A JSON answer that no cache keeps.
pub(crate) fn json_response(status: StatusCode, body: &str) -> Response<Bytes> {
    let mut resp = Response::new(Bytes::from(body.to_owned()));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// The JSON answer for an error: status, `{"error": code}`, `Retry-After` when it
/// applies, and any `Set-Cookie` values (a cleared session).
pub(crate) fn error_response(err: &Error, set_cookies: Vec<HeaderValue>) -> Response<Bytes> {
    let mut resp = json_response(err.status(), &err.json_body());
    if let Some(secs) = err.retry_after_secs() {
        resp.headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(secs));
    }
    if let Some(v) = err
        .www_authenticate()
        .and_then(|v| HeaderValue::from_str(&v).ok())
    {
        resp.headers_mut().insert(http::header::WWW_AUTHENTICATE, v);
    }
    for c in set_cookies {
        resp.headers_mut().append(SET_COOKIE, c);
    }
    resp
}

/// A 302 to `location`, with `Set-Cookie` values.
pub(crate) fn redirect(location: &str, set_cookies: Vec<HeaderValue>) -> Response<Bytes> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_no_token_or_cookie() {
        let forward = Forward {
            route: Some(0),
            target: Target::Application,
            authorization: Some(HeaderValue::from_static("Bearer SECRET-AT")),
            dpop: Some(HeaderValue::from_static("SECRET-PROOF")),
            strip_authorization: true,
            cookie: Some(HeaderValue::from_static("other=SECRET-COOKIE")),
            set_cookies: vec![HeaderValue::from_static("__Host-Http-bff=SECRET-SEALED")],
            session: Some(SessionView {
                sid: crate::session::SessionId([7; 16]),
                sub: "user-1".to_owned(),
                access_token: "SECRET-AT".to_owned(),
                access_expires_at: 0,
                id_token: Some("SECRET-ID".to_owned()),
            }),
            static_file: None,
            sid: None,
            identity: Vec::new(),
            strip_identity: None,
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
