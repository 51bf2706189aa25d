//! axum integration (feature `axum`): the [`Session`] extractor and
//! [`Bff::admin_router`].
//!
//! ```no_run
//! use axum::{Router, routing::get};
//! use bff_proxy::{Bff, axum::Session, tower::BffLayer};
//!
//! async fn me(session: Session) -> String {
//!     format!("hello, {}", session.sub())
//! }
//!
//! # async fn demo(bff: Bff) {
//! let app: Router = Router::new()
//!     .route("/api/me", get(me))
//!     .layer(BffLayer::new(bff.clone()));
//! let admin: Router = bff.admin_router(); // /metrics, /healthz, /readyz
//! # let _ = (app, admin);
//! # }
//! ```

use ::axum::extract::{FromRequestParts, OptionalFromRequestParts};
use ::axum::response::{IntoResponse, Response};
use ::axum::routing::{delete, get};
use http::request::Parts;

use crate::bff::Bff;
use crate::error::{Error, ErrorKind};

pub use crate::tower::{ClaimsError, Session};

/// What a handler taking [`Session`] answers when the request has no session (a
/// path no route covers, or a route with `auth = "optional"`, reached without one):
/// 401 with the BFF's JSON error, `{"error":"unauthenticated"}`.
#[derive(Debug, Clone, Copy, Default)]
#[non_exhaustive]
pub struct NoSession;

impl IntoResponse for NoSession {
    fn into_response(self) -> Response {
        crate::bff::error_response(&Error::new(ErrorKind::Unauthenticated), Vec::new())
            .map(::axum::body::Body::from)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Session {
    type Rejection = NoSession;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, NoSession> {
        parts.extensions.get::<Session>().cloned().ok_or(NoSession)
    }
}

/// `Option<Session>`: `None` when the request came without a session.
impl<S: Send + Sync> OptionalFromRequestParts<S> for Session {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        Ok(parts.extensions.get::<Session>().cloned())
    }
}

impl Bff {
    /// The admin endpoints as an axum router, to mount where the app wants them
    /// (on a port of their own, usually, never public): `/metrics` (Prometheus
    /// text), `/healthz` (200 while the process runs), `/readyz` (200 once the
    /// IdP's discovery and keys are loaded and the shared store answers, 503
    /// otherwise and while draining: [`Bff::check_ready`]) and
    /// `DELETE /sessions?sub=SUB` (ends every session of a user:
    /// [`Bff::end_sessions_of`]). The same answers as the binary's
    /// `server.admin_listen`.
    pub fn admin_router<S: Clone + Send + Sync + 'static>(&self) -> ::axum::Router<S> {
        let answer = |bff: Bff| {
            move |req: ::axum::extract::Request| {
                let bff = bff.clone();
                async move {
                    crate::engine::admin::answer(&bff, req.method(), req.uri())
                        .await
                        .map(::axum::body::Body::from)
                }
            }
        };
        ::axum::Router::new()
            .route("/metrics", get(answer(self.clone())))
            .route("/healthz", get(answer(self.clone())))
            .route("/readyz", get(answer(self.clone())))
            .route("/sessions", delete(answer(self.clone())))
    }
}
