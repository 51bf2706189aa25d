//! The pingora front door: a [`ProxyHttp`] over the core.
//!
//! - `request_filter` hands the request head to [`Bff::handle`]; a decision to
//!   respond (the `/bff/*` endpoints, 401/403/302/503, static files) is written here
//!   and ends the request (`Ok(true)`); a forward is kept in the per-request `CTX`.
//! - `upstream_peer` picks the route's upstream.
//! - `upstream_request_filter` applies the shared header rules and the Bearer token.
//! - `response_filter` cleans the upstream's headers and adds the session
//!   `Set-Cookie`.
//!
//! The difference from the hyper engine is only this adapter: routes, outcomes and
//! header rules come from the core.

mod conn;
mod respond;
mod server;

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::{HttpPeer, ProxyHttp, Session};
use pingora::proxy::FailToProxy;
use pingora::{Error as PingoraError, ErrorType, Result};

pub use conn::GuardedApp;
pub use server::{PingoraServer, run_blocking, server_conf};

use crate::bff::{Bff, Decision, DoorRequest, Forward, Unmatched};
use crate::engine::access::{self, RequestId, RequestLog};
use crate::engine::error_answer;
use crate::engine::headers;
use crate::error::ErrorKind;
use respond::write;
use tracing::Instrument as _;

/// Runs `log` in the request's span (so its line carries the request id).
fn in_request(ctx: &Ctx, log: impl FnOnce()) {
    match &ctx.log {
        Some(request) => request.span.in_scope(log),
        None => log(),
    }
}

/// The client's address (None for a Unix socket).
fn peer_ip(session: &Session) -> Option<std::net::IpAddr> {
    session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(std::net::SocketAddr::ip)
}

/// The per-request state.
#[derive(Debug, Default)]
pub struct Ctx {
    forward: Option<Box<Forward>>,
    /// The request's id, span and access line (set at the first hook).
    log: Option<Box<RequestLog>>,
    upstream_started: Option<Instant>,
    /// The client connection's request cycle (header and idle deadlines).
    conn: Option<Arc<crate::engine::conn::ConnState>>,
}

/// The BFF as a pingora proxy.
#[derive(Debug)]
pub struct BffPingora {
    bff: Bff,
    connect_timeout: Duration,
    https: bool,
}

impl BffPingora {
    /// The proxy over one core.
    #[must_use]
    pub fn new(bff: impl Into<Bff>) -> Self {
        let bff = bff.into();
        let config = bff.config();
        Self {
            connect_timeout: config.server.upstream_connect_timeout,
            https: config.resolved.tls.is_some(),
            bff,
        }
    }
}

/// A pingora request handed to the core: the head, and the body when it asks.
struct PingoraRequest<'a>(&'a mut Session);

impl DoorRequest for PingoraRequest<'_> {
    fn head(&self) -> &http::request::Parts {
        self.0.req_header()
    }

    async fn next_chunk(&mut self) -> std::result::Result<Option<Bytes>, ()> {
        self.0.read_request_body().await.map_err(|_| ())
    }
}

/// pingora's request head keeps a case-preserving map beside the `HeaderMap`: edits
/// go through its own methods.
impl headers::HeaderEdit for RequestHeader {
    fn get(&self, name: &http::HeaderName) -> Option<&http::HeaderValue> {
        self.headers.get(name)
    }

    fn get_all(&self, name: &http::HeaderName) -> http::header::GetAll<'_, http::HeaderValue> {
        self.headers.get_all(name)
    }

    fn set(&mut self, name: http::HeaderName, value: http::HeaderValue) {
        // Fails only for invalid names or values, which typed ones are not.
        let _ = self.insert_header(name, value);
    }

    fn append(&mut self, name: http::HeaderName, value: http::HeaderValue) {
        let _ = self.append_header(name, value);
    }

    fn remove(&mut self, name: &http::HeaderName) {
        self.remove_header(name);
    }

    fn names(&self) -> http::header::Keys<'_, http::HeaderValue> {
        self.headers.keys()
    }
}

// The proxied request and response are edited as plain `http` parts. pingora keeps a
// case-preserving name map beside its `HeaderMap`, and each header set through it
// copies the name, parses it again and hashes it into both maps (callgrind: ~2,000
// instructions a header, ~14,000 per proxied request for the forwarding, session
// and request-id headers). Without the map, pingora writes standard names in their
// usual capitals and others in lower case, as the hyper engine does (names are
// case-insensitive: RFC 9110 5.1).

/// Takes the headers out of pingora's request head, without its case map.
fn plain_request(req: &mut RequestHeader) -> http::request::Parts {
    let empty = RequestHeader::from(http::Request::new(()).into_parts().0);
    std::mem::replace(req, empty).into()
}

/// Takes the headers out of pingora's response head, without its case map (the
/// reason phrase becomes the status code's own).
fn plain_response(resp: &mut ResponseHeader) -> http::response::Parts {
    let empty = ResponseHeader::from(http::Response::new(()).into_parts().0);
    std::mem::replace(resp, empty).into()
}

#[async_trait]
impl ProxyHttp for BffPingora {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx::default()
    }

    /// What pingora's own error lines say of a request: method and path, never the
    /// query (it could carry a code or a token) or other headers.
    fn request_summary(&self, session: &Session, _ctx: &Ctx) -> String {
        let req = session.req_header();
        format!("{} {}", req.method, req.uri.path())
    }

    /// No modules: the BFF never compresses (pingora's default adds a disabled
    /// compression module, a cost on every request).
    fn init_downstream_modules(&self, _modules: &mut pingora::modules::http::HttpModules) {}

    async fn early_request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<()> {
        let req = session.req_header_mut();
        if req.version == http::Version::HTTP_2 {
            let uri = req.uri.clone();
            headers::host_from_authority(req, http::Version::HTTP_2, &uri);
        }
        let req = session.req_header();
        ctx.log = Some(RequestLog::start(
            &self.bff,
            &req.method,
            req.uri.path(),
            req,
            peer_ip(session),
        ));
        // The head is complete: its deadline is over until the response is done.
        ctx.conn = conn::conn_state(session);
        if let Some(state) = &ctx.conn {
            state.request_started();
        }
        // pingora's own keep-alive timeout (per read), in whole seconds: never
        // sooner than `server.idle_timeout`, which the connection guard enforces
        // exactly.
        if let Some(log) = &ctx.log {
            let idle = log.config.server.idle_timeout;
            session.set_keepalive(Some(idle.as_secs().saturating_add(1)));
        }
        Ok(())
    }

    async fn logging(&self, session: &mut Session, _e: Option<&PingoraError>, ctx: &mut Ctx) {
        if let Some(state) = &ctx.conn {
            state.request_finished();
        }
        if let Some(log) = ctx.log.as_mut() {
            let status = session.response_written().map_or(0, |r| r.status.as_u16());
            log.finish(status);
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        let Some(log) = ctx.log.as_mut() else {
            return Err(PingoraError::explain(
                ErrorType::InternalError,
                "the request was not started",
            ));
        };
        let span = log.span.clone();
        let (decision, note) = self
            .bff
            .decide_for(&mut PingoraRequest(session), Unmatched::NotFound)
            .instrument(span)
            .await;
        log.noted(note);
        let id = log.id.clone();
        match decision {
            Decision::Respond(resp) => {
                write(session, resp, &id).await?;
                Ok(true)
            }
            // Routes for an application behind the tower layer have none here: the
            // binary refuses them at start.
            Decision::Forward(forward) if forward.upstream().is_none() => {
                write(session, error_answer(ErrorKind::NotFound), &id).await?;
                Ok(true)
            }
            Decision::Forward(forward) => {
                ctx.forward = Some(forward);
                Ok(false)
            }
        }
    }

    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let Some((upstream, _)) = ctx.forward.as_ref().and_then(|f| f.upstream()) else {
            return Err(PingoraError::explain(
                ErrorType::InternalError,
                "no upstream chosen for this request",
            ));
        };
        let addr = match upstream.addr() {
            Some(addr) => addr,
            // A name is resolved here, asynchronously: HttpPeer::new would block (and
            // panic) on DNS.
            None => tokio::net::lookup_host((upstream.host(), upstream.port()))
                .await
                .ok()
                .and_then(|mut addrs| addrs.next())
                .ok_or_else(|| {
                    PingoraError::explain(ErrorType::ConnectNoRoute, "cannot resolve the upstream")
                })?,
        };
        let mut peer = HttpPeer::new(addr, upstream.tls(), upstream.host().to_owned());
        peer.options.connection_timeout = Some(self.connect_timeout);
        // The core's header rules are the one parser of Connection and hop-by-hop
        // headers (DESIGN.md "Headers the client may not choose"); pingora's own
        // sanitiser would be a second one, and it drops the connection when
        // Connection names X-Forwarded-*.
        peer.options.http_upstream_request_policy =
            pingora::upstreams::peer::HttpUpstreamRequestPolicy::preserve();
        peer.options.read_timeout = ctx.log.as_ref().map(|l| l.config.server.upstream_timeout);
        ctx.upstream_started = Some(Instant::now());
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let Some(forward) = ctx.forward.as_ref() else {
            return Ok(());
        };
        let Some((upstream, path)) = forward.upstream() else {
            return Ok(());
        };
        let Some(log) = ctx.log.as_ref() else {
            return Ok(());
        };
        let peer = peer_ip(session).unwrap_or(std::net::IpAddr::from([127, 0, 0, 1]));
        let hop = headers::Hop::Proxy {
            peer,
            https: self.https,
            trusted: &log.config.resolved.trusted_proxies,
        };
        let mut parts = plain_request(upstream_request);
        headers::apply_to_request(&mut parts.headers, forward, hop, log.id.header());
        parts
            .headers
            .insert(http::header::HOST, upstream.host_header().clone());
        parts.uri = http::Uri::from(path.clone());
        // The upstream hop is HTTP/1.1 whatever the client spoke.
        parts.version = http::Version::HTTP_11;
        *upstream_request = RequestHeader::from(parts);
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let Some(forward) = ctx.forward.as_ref() else {
            return Ok(());
        };
        if let Some(started) = ctx.upstream_started.take() {
            let took = started.elapsed();
            self.bff.observe_upstream(forward, took.as_secs_f64());
            if let Some(log) = ctx.log.as_mut() {
                log.upstream_took(took);
            }
        }
        let mut parts = plain_response(upstream_response);
        if let Some(log) = ctx.log.as_ref() {
            access::set_on_response(&mut parts.headers, &log.id);
        }
        let switching = parts.status == http::StatusCode::SWITCHING_PROTOCOLS;
        if switching {
            if let Some(state) = &ctx.conn {
                state.upgraded();
            }
        }
        headers::clean_response(&mut parts.headers, switching);
        headers::add_set_cookies(&mut parts.headers, forward);
        *upstream_response = ResponseHeader::from(parts);
        Ok(())
    }

    /// pingora's own ERROR line for a failed request is left out: an upstream
    /// failure is logged by `fail_to_proxy` (a warning with the status sent), and a
    /// client that closes its connection before its answer (a load generator that
    /// stops, a tab that closes) is not an error of the proxy: a debug line.
    fn suppress_error_log(&self, _session: &Session, ctx: &Ctx, e: &PingoraError) -> bool {
        if e.esource() == &pingora::ErrorSource::Downstream {
            in_request(ctx, || {
                tracing::debug!(error = %e, "the client went away before its answer");
            });
        }
        true
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &PingoraError,
        ctx: &mut Ctx,
    ) -> FailToProxy
    where
        Self::CTX: Send + Sync,
    {
        let kind = match e.etype() {
            ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout => {
                Some(ErrorKind::GatewayTimeout)
            }
            _ => match e.esource() {
                pingora::ErrorSource::Upstream => Some(ErrorKind::BadGateway),
                pingora::ErrorSource::Downstream => None,
                _ => Some(ErrorKind::Internal("proxy failure")),
            },
        };
        let code = match kind {
            Some(kind) => {
                let resp = error_answer(kind);
                let status = resp.status().as_u16();
                let id = ctx
                    .log
                    .as_ref()
                    .map_or_else(RequestId::random, |log| log.id.clone());
                if write(session, resp, &id).await.is_err() {
                    0
                } else {
                    status
                }
            }
            None => 0,
        };
        if code >= 500 {
            in_request(ctx, || {
                tracing::warn!(error = %e, status = code, "upstream request failed");
            });
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }
}
