//! The tower front door: [`BffLayer`] puts the BFF in front of any tower/hyper/axum
//! service.
//!
//! Requests under `server.prefix` (`/bff/login`, `/bff/callback`, `/bff/user`,
//! `/bff/logout`, `/bff/backchannel-logout`) are answered by the layer. Requests to
//! a configured route are checked as DESIGN.md says (navigation → login, CSRF,
//! session, refresh); the inner service then receives them with
//! `Authorization: Bearer …`, the session cookies removed from `Cookie`, and a
//! [`BffSession`] request extension carrying the ID-token claims. When the tokens
//! were refreshed the response gains the new session `Set-Cookie`. Rejections are
//! responses (401, 403, 302, 503…), never errors of the inner service's type. Paths
//! that no route matches pass to the inner service untouched but for the cookies.
//!
//! ```no_run
//! use std::sync::Arc;
//! use bff_proxy::config::{Config, Env};
//! use bff_proxy::tower::BffLayer;
//! use tower::ServiceBuilder;
//!
//! # fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let config = Config::load("config.toml".as_ref(), &Env::from_process())?;
//! let bff = Arc::new(bff_proxy::Bff::new(config)?.pass_unmatched());
//! let app = tower::service_fn(|req: http::Request<http_body_util::Full<bytes::Bytes>>| async move {
//!     let who = req.extensions().get::<bff_proxy::tower::BffSession>().and_then(|s| s.claims());
//!     Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(bytes::Bytes::from(format!("{who:?}")))))
//! });
//! let service = ServiceBuilder::new().layer(BffLayer::new(bff)).service(app);
//! # let _ = service;
//! # Ok(())
//! # }
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::SET_COOKIE;
use http::{Request, Response};
use http_body_util::{BodyExt as _, Either, Full, Limited};
use serde_json::Value;
use tower::{Layer, Service};

use crate::bff::{Bff, Decision, MAX_BACKCHANNEL_BODY};
use crate::error::{Error, ErrorKind};
use crate::headers;

/// The response body of a [`BffService`]: the inner service's, or the BFF's own.
pub type BffBody<B> = Either<B, Full<Bytes>>;

/// The session of a request that passed the BFF, as a request extension. `Debug`
/// does not show the ID token.
#[derive(Clone)]
pub struct BffSession {
    id_token: Option<Arc<str>>,
}

impl std::fmt::Debug for BffSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BffSession")
            .field("id_token", &self.id_token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl BffSession {
    /// The ID-token claims (verified at login), parsed on demand.
    #[must_use]
    pub fn claims(&self) -> Option<Value> {
        crate::oidc::unverified_claims(self.id_token.as_deref()?)
    }
}

/// The client's address and scheme, which a server in front of the layer (the hyper
/// engine) puts into each request's extensions: then the layer's hop is the
/// proxy's, with the forwarding headers.
#[derive(Debug, Clone, Copy)]
pub struct ClientInfo {
    /// The peer address.
    pub peer: std::net::SocketAddr,
    /// Whether the client connected over TLS.
    pub https: bool,
}

/// Puts the BFF in front of a service.
#[derive(Debug, Clone)]
#[must_use]
pub struct BffLayer {
    bff: Arc<Bff>,
}

impl BffLayer {
    /// A layer over one BFF core (shared by every service it wraps).
    pub fn new(bff: Arc<Bff>) -> Self {
        Self { bff }
    }
}

impl<S> Layer<S> for BffLayer {
    type Service = BffService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        BffService {
            inner,
            bff: Arc::clone(&self.bff),
        }
    }
}

/// The service [`BffLayer`] builds.
#[derive(Debug, Clone)]
pub struct BffService<S> {
    inner: S,
    bff: Arc<Bff>,
}

/// The future of [`BffService`]: the core's decision (which may wait on a refresh),
/// then the inner service.
pub type ResponseFuture<B, E> =
    Pin<Box<dyn Future<Output = Result<Response<BffBody<B>>, E>> + Send + 'static>>;

fn respond<B>(resp: Response<Bytes>) -> Response<BffBody<B>> {
    resp.map(|b| Either::Right(Full::new(b)))
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for BffService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: http_body::Body<Data = Bytes> + Send + 'static,
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
        let bff = Arc::clone(&self.bff);
        Box::pin(async move {
            let (mut parts, body) = req.into_parts();
            if bff.wants_body(&parts) {
                let bytes = match Limited::new(body, MAX_BACKCHANNEL_BODY).collect().await {
                    Ok(c) => c.to_bytes(),
                    Err(_) => {
                        let e = Error::new(ErrorKind::BadRequest("body too large or unreadable"));
                        return Ok(respond(crate::bff::error_response(&e, Vec::new())));
                    }
                };
                return Ok(match bff.handle(&parts, Some(bytes)).await {
                    Decision::Respond(resp) => respond(resp),
                    Decision::Forward(_) => respond(crate::bff::error_response(
                        &Error::new(ErrorKind::Internal("a body-reading endpoint forwarded")),
                        Vec::new(),
                    )),
                });
            }
            let forward = match bff.handle(&parts, None).await {
                Decision::Respond(resp) => return Ok(respond(resp)),
                Decision::Forward(f) => f,
            };
            // The hyper engine tells the layer who the client is: then this hop is the
            // proxy's, with the forwarding headers; in front of an app it is not.
            let client = parts.extensions.get::<ClientInfo>().copied();
            let hop = match client {
                Some(info) => headers::Hop::Proxy {
                    peer: info.peer.ip(),
                    https: info.https,
                    trusted: &bff.config().resolved.trusted_proxies,
                },
                None => headers::Hop::Layer,
            };
            headers::apply_to_request(&mut parts.headers, &forward, hop);
            parts.extensions.insert(BffSession {
                id_token: forward.id_token.clone(),
            });
            parts.extensions.insert(forward.target.clone());
            let resp = inner.call(Request::from_parts(parts, body)).await?;
            let (mut head, body) = resp.into_parts();
            for c in &forward.set_cookies {
                head.headers.append(SET_COOKIE, c.clone());
            }
            Ok(Response::from_parts(head, Either::Left(body)))
        })
    }
}
