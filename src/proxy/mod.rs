//! The hyper proxy engine: each request goes to the core, then where it decided: an
//! upstream (HTTP/1.1 connections pooled per worker thread, bodies streamed both
//! ways, WebSocket upgrades tunnelled) or a static folder.

mod pool;
mod server;

use std::net::SocketAddr;

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Empty, Full};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tracing::Instrument as _;

pub use server::ProxyServer;

use crate::bff::Bff;
use crate::engine::access::{self, RequestLog};
use crate::engine::headers;
use crate::engine::{Door, decide, error_answer};
use crate::error::ErrorKind;
use crate::start::StartError;

/// How long an idle upstream connection is kept.
const UPSTREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// The body type the engine answers with.
pub type ProxyBody = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

fn full(bytes: Bytes) -> ProxyBody {
    Full::new(bytes).map_err(|e| match e {}).boxed()
}

fn error(kind: ErrorKind) -> Response<ProxyBody> {
    error_answer(kind).map(full)
}

/// The hyper engine's door: the core, then the upstream or a static folder.
#[derive(Clone)]
pub(crate) struct HyperDoor {
    bff: Bff,
    upstreams: pool::Pool,
    upgrade_client: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
    https: bool,
}

impl HyperDoor {
    /// The door over one core, with its upstream time limits (connect → 502,
    /// response head → 504: `server.upstream_timeout` as the config says at each
    /// request) and keep-alive pool.
    pub(crate) fn new(bff: Bff) -> Result<Self, StartError> {
        let config = bff.config();
        let server = &config.server;
        let tls = crate::oidc::client_tls_config()
            .map_err(|why| StartError::unavailable("server.upstream", why))?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(server.upstream_connect_timeout));
        http.set_nodelay(true);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let upstreams = pool::Pool::new(
            connector.clone(),
            server.upstream_keepalive,
            UPSTREAM_IDLE_TIMEOUT,
            server.upstream_connect_timeout,
        );
        let upgrade_client = Client::builder(TokioExecutor::new()).build(connector);
        Ok(Self {
            https: config.resolved.tls.is_some(),
            bff,
            upstreams,
            upgrade_client,
        })
    }

    /// Answers one request from a client at `peer`: inside the request's span, with
    /// its id on the response and its access line written.
    pub(crate) async fn serve(
        &self,
        req: Request<Incoming>,
        peer: SocketAddr,
    ) -> Response<ProxyBody> {
        let mut log = RequestLog::start(
            &self.bff,
            req.method(),
            req.uri().path(),
            req.headers(),
            Some(peer.ip()),
        );
        let span = log.span.clone();
        let mut resp = self.answer(req, peer, &mut log).instrument(span).await;
        access::set_on_response(resp.headers_mut(), &log.id);
        log.finish(resp.status().as_u16());
        resp
    }

    async fn answer(
        &self,
        req: Request<Incoming>,
        peer: SocketAddr,
        log: &mut RequestLog,
    ) -> Response<ProxyBody> {
        let (mut parts, body) = req.into_parts();
        headers::host_from_authority(&mut parts.headers, parts.version, &parts.uri);
        let (door, note) = decide(&self.bff, &parts, body, crate::bff::Unmatched::NotFound).await;
        log.noted(note);
        let (forward, body) = match door {
            Door::Respond(resp) => return resp.map(full),
            Door::Forward(forward, body) => (forward, body),
        };
        // Routes for an application behind the tower layer have none here: the
        // binary refuses them at start.
        let Some((upstream, path)) = forward.upstream() else {
            return error(ErrorKind::NotFound);
        };
        let config = &log.config;
        let hop = headers::Hop::Proxy {
            peer: peer.ip(),
            https: self.https,
            trusted: &config.resolved.trusted_proxies,
        };
        headers::apply_to_request(&mut parts.headers, &forward, hop, log.id.header());
        let req = Request::from_parts(parts, body);
        let started = Instant::now();
        let response_timeout = config.server.upstream_timeout;
        let mut resp = if headers::is_upgrade(req.headers()) {
            // Boxed: rare, and its state would otherwise ride in every request's
            // future.
            Box::pin(self.upgrade(req, &forward, response_timeout)).await
        } else {
            self.forward(req, upstream, path, response_timeout).await
        };
        let took = started.elapsed();
        self.bff.observe_upstream(&forward, took.as_secs_f64());
        log.upstream_took(took);
        headers::add_set_cookies(resp.headers_mut(), &forward);
        resp
    }

    /// The request to its upstream (always over HTTP/1.1, whatever the client
    /// spoke).
    async fn forward(
        &self,
        req: Request<Incoming>,
        upstream: &crate::bff::Upstream,
        path: &http::uri::PathAndQuery,
        response_timeout: Duration,
    ) -> Response<ProxyBody> {
        let sent =
            tokio::time::timeout(response_timeout, self.upstreams.send(req, upstream, path)).await;
        match sent {
            Ok(Ok(resp)) => {
                let (mut head, body) = resp.into_parts();
                headers::clean_response(&mut head.headers, false);
                Response::from_parts(head, body.map_err(Into::into).boxed())
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "upstream request failed");
                error(ErrorKind::BadGateway)
            }
            Err(_) => error(ErrorKind::GatewayTimeout),
        }
    }

    /// A protocol switch (WebSocket): the handshake goes upstream; on 101 both
    /// upgraded connections are joined byte for byte.
    async fn upgrade(
        &self,
        mut req: Request<Incoming>,
        forward: &crate::bff::Forward,
        response_timeout: Duration,
    ) -> Response<ProxyBody> {
        let Some(uri) = forward.target().upstream_uri() else {
            return error(ErrorKind::NotFound);
        };
        let client_upgrade = hyper::upgrade::on(&mut req);
        let (mut head, _body) = req.into_parts();
        head.uri = uri;
        let upstream_req = Request::from_parts(head, Empty::<Bytes>::new());
        let resp =
            match tokio::time::timeout(response_timeout, self.upgrade_client.request(upstream_req))
                .await
            {
                Ok(Ok(resp)) => resp,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "upstream upgrade request failed");
                    return error(ErrorKind::BadGateway);
                }
                Err(_) => return error(ErrorKind::GatewayTimeout),
            };
        if resp.status() != http::StatusCode::SWITCHING_PROTOCOLS {
            let (mut head, body) = resp.into_parts();
            headers::clean_response(&mut head.headers, false);
            return Response::from_parts(head, body.map_err(Into::into).boxed());
        }
        let (mut head, body) = resp.into_parts();
        let mut upstream_resp = Response::from_parts(head.clone(), body);
        let upstream_upgrade = hyper::upgrade::on(&mut upstream_resp);
        tokio::spawn(async move {
            if let (Ok(client), Ok(upstream)) = (client_upgrade.await, upstream_upgrade.await) {
                let mut client = TokioIo::new(client);
                let mut upstream = TokioIo::new(upstream);
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            }
        });
        headers::clean_response(&mut head.headers, true);
        Response::from_parts(head, full(Bytes::new()))
    }
}

impl std::fmt::Debug for HyperDoor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HyperDoor").finish_non_exhaustive()
    }
}
