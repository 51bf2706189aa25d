//! The tower front door: [`BffLayer`] puts the BFF in front of any tower/hyper/axum
//! service.
//!
//! - Requests under `server.prefix` (`/bff/login`, `/bff/callback`, `/bff/user`,
//!   `/bff/logout`, `/bff/backchannel-logout`) are answered by the layer.
//! - Requests to a route (only where the app wants rules: `auth`, `csrf`,
//!   `methods`, an `upstream`) are checked as DESIGN.md says (navigation → login,
//!   CSRF, session, refresh); the inner service then receives them with
//!   `Authorization: Bearer …`, the session cookies removed from `Cookie`, and a
//!   [`Session`] request extension. Rejections are responses (401, 403, 302,
//!   503…), never errors of the inner service's type.
//! - Every other path passes to the inner service, with the session cookies
//!   removed and, when the request has a live session, the [`Session`] extension
//!   (for GET/HEAD/OPTIONS, or any method with the CSRF header). No Bearer is added
//!   there: only routes carry the token.
//!
//! When the tokens were refreshed the response gains the rotated session's
//! `Set-Cookie`.
//!
//! ```no_run
//! use bff_proxy::tower::{BffLayer, Session};
//! use tower::ServiceBuilder;
//!
//! # async fn demo() -> Result<(), bff_proxy::StartError> {
//! let bff = bff_proxy::Bff::builder()
//!     .issuer("https://idp.example.com")
//!     .client_id("spa")
//!     .client_secret("env:BFF_CLIENT_SECRET")
//!     .keys(["vUqhFABZp5xGtuGc//zqNm1RE5BdmW8dWI70Hto8GV8="])
//!     .public_url("https://app.example.com")
//!     .build()
//!     .await?;
//! let app = tower::service_fn(|req: http::Request<http_body_util::Full<bytes::Bytes>>| async move {
//!     let who = req.extensions().get::<Session>().map(|s| s.sub().to_owned());
//!     Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(bytes::Bytes::from(format!("{who:?}")))))
//! });
//! let service = ServiceBuilder::new().layer(BffLayer::new(bff)).service(app);
//! # let _ = service;
//! # Ok(())
//! # }
//! ```

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::SET_COOKIE;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use tower::{Layer, Service};
use tracing::Instrument as _;

use crate::bff::{Bff, Unmatched};
use crate::engine::access::{self, RequestLog};
use crate::engine::headers;
use crate::engine::{Door, decide};

mod session;

pub use session::{ClaimsError, Session};

pin_project_lite::pin_project! {
    /// The response body of a [`BffService`]: the inner service's, or the BFF's own
    /// (a JSON answer, a redirect).
    pub struct BffBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project_lite::pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        Inner { #[pin] body: B },
        Bff { #[pin] body: Full<Bytes> },
    }
}

impl<B> BffBody<B> {
    fn inner(body: B) -> Self {
        Self {
            kind: Kind::Inner { body },
        }
    }

    fn bff(body: Bytes) -> Self {
        Self {
            kind: Kind::Bff {
                body: Full::new(body),
            },
        }
    }
}

impl<B: std::fmt::Debug> std::fmt::Debug for BffBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.kind {
            Kind::Inner { body } => f.debug_tuple("BffBody").field(body).finish(),
            Kind::Bff { .. } => f.write_str("BffBody(<bff answer>)"),
        }
    }
}

impl<B> Body for BffBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match self.project().kind.project() {
            KindProj::Inner { body } => body.poll_frame(cx),
            KindProj::Bff { body } => body.poll_frame(cx).map_err(|e| match e {}),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Inner { body } => body.is_end_stream(),
            Kind::Bff { body } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Inner { body } => body.size_hint(),
            Kind::Bff { body } => body.size_hint(),
        }
    }
}

/// Puts the BFF in front of a service.
#[derive(Debug, Clone)]
#[must_use]
pub struct BffLayer {
    bff: Bff,
}

impl BffLayer {
    /// A layer over one BFF core (shared by every service it wraps).
    pub fn new(bff: impl Into<Bff>) -> Self {
        let bff = bff.into();
        bff.metrics().serving_with("tower");
        Self { bff }
    }
}

impl<S> Layer<S> for BffLayer {
    type Service = BffService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        BffService {
            inner,
            bff: self.bff.clone(),
        }
    }
}

/// The service [`BffLayer`] builds.
#[derive(Debug, Clone)]
pub struct BffService<S> {
    inner: S,
    bff: Bff,
}

/// The future of [`BffService`]: the core's decision (which may wait on a refresh),
/// then the inner service.
pub type ResponseFuture<B, E> =
    Pin<Box<dyn Future<Output = Result<Response<BffBody<B>>, E>> + Send + 'static>>;

fn respond<B>(resp: Response<Bytes>) -> Response<BffBody<B>> {
    resp.map(BffBody::bff)
}

/// The client's address, when the server put it in the request (axum's
/// `ConnectInfo`); used only to decide whether its `X-Request-Id` is kept.
fn peer_of(extensions: &http::Extensions) -> Option<std::net::IpAddr> {
    #[cfg(feature = "axum")]
    if let Some(info) = extensions.get::<::axum::extract::ConnectInfo<std::net::SocketAddr>>() {
        return Some(info.0.ip());
    }
    #[cfg(not(feature = "axum"))]
    let _ = extensions;
    None
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for BffService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Body<Data = Bytes> + Send + 'static,
    ReqBody::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    ResBody: Send + 'static,
{
    type Response = Response<BffBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<ResBody, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        // The ready inner service goes into the future; a fresh clone stays behind
        // (tower's usual dance, so poll_ready's promise is kept).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let bff = self.bff.clone();
        let mut log = RequestLog::start(
            &bff,
            req.method(),
            req.uri().path(),
            req.headers(),
            peer_of(req.extensions()),
        );
        let span = log.span.clone();
        Box::pin(
            async move {
                let (mut parts, body) = req.into_parts();
                let (door, note) = decide(&bff, &parts, body, Unmatched::Application).await;
                log.noted(note);
                let (mut forward, body) = match door {
                    Door::Respond(resp) => {
                        let mut resp = respond(resp);
                        access::set_on_response(resp.headers_mut(), &log.id);
                        log.finish(resp.status().as_u16());
                        return Ok(resp);
                    }
                    Door::Forward(forward, body) => (forward, body),
                };
                // In front of an application the hop is not a proxy's: no forwarding
                // headers.
                headers::apply_to_request(
                    &mut parts.headers,
                    &forward,
                    headers::Hop::Layer,
                    log.id.header(),
                );
                // A client cannot hand the application a session of its own making.
                parts.extensions.remove::<Session>();
                if let Some(view) = forward.session.take() {
                    parts.extensions.insert(Session::new(view));
                }
                let resp = inner.call(Request::from_parts(parts, body)).await;
                let (mut head, body) = match resp {
                    Ok(resp) => resp.into_parts(),
                    Err(e) => {
                        log.finish(0);
                        return Err(e);
                    }
                };
                for c in forward.set_cookies() {
                    head.headers.append(SET_COOKIE, c.clone());
                }
                access::set_on_response(&mut head.headers, &log.id);
                log.finish(head.status.as_u16());
                Ok(Response::from_parts(head, BffBody::inner(body)))
            }
            .instrument(span),
        )
    }
}
