//! The hyper proxy engine: the tower [`BffLayer`](crate::tower::BffLayer) in front
//! of [`UpstreamProxy`], which sends each request where the core decided: an
//! upstream (hyper-util's pooled client, bodies streamed both ways, WebSocket
//! upgrades tunnelled) or a static folder.

mod server;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, Uri};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Empty, Full};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};

pub use server::ProxyServer;

pub use crate::tower::ClientInfo;

use crate::bff::{Target, error_response};
use crate::error::{Error, ErrorKind};
use crate::headers;
use crate::metrics::Metrics;

/// The body type the engine answers with.
pub type ProxyBody = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

fn full(bytes: Bytes) -> ProxyBody {
    Full::new(bytes).map_err(|e| match e {}).boxed()
}

fn error(kind: ErrorKind) -> Response<ProxyBody> {
    error_response(&Error::new(kind), Vec::new()).map(full)
}

/// Sends requests to their upstream or static folder (the inner service of the
/// hyper engine).
#[derive(Clone)]
pub struct UpstreamProxy {
    client: Client<HttpsConnector<HttpConnector>, Incoming>,
    upgrade_client: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
    response_timeout: Duration,
    metrics: Metrics,
}

impl std::fmt::Debug for UpstreamProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamProxy").finish_non_exhaustive()
    }
}

impl UpstreamProxy {
    /// A proxy with these time limits (connect → 502, response head → 504).
    pub fn new(
        connect_timeout: Duration,
        response_timeout: Duration,
        keepalive: usize,
        metrics: Metrics,
    ) -> Result<Self, String> {
        let tls = crate::oidc::client_tls_config()?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(connect_timeout));
        http.set_nodelay(true);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(keepalive)
            .build(connector.clone());
        let upgrade_client = Client::builder(TokioExecutor::new()).build(connector);
        Ok(Self {
            client,
            upgrade_client,
            response_timeout,
            metrics,
        })
    }

    async fn forward(self, mut req: Request<Incoming>) -> Response<ProxyBody> {
        let target = req.extensions().get::<Target>().cloned();
        match target {
            // The layer in front applied every header rule, in the core's order.
            Some(Target::Upstream(uri)) => {
                if headers::is_upgrade(req.headers()) {
                    return self.upgrade(req, uri).await;
                }
                *req.uri_mut() = uri;
                let started = Instant::now();
                let sent =
                    tokio::time::timeout(self.response_timeout, self.client.request(req)).await;
                self.metrics
                    .upstream_duration(started.elapsed().as_secs_f64());
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
            Some(Target::Static { dir, path }) => {
                crate::static_files::serve(&dir, &path, req.method(), req.headers())
                    .await
                    .map(full)
            }
            // The hyper engine has no application behind it; the binary refuses
            // routes without a destination at start.
            Some(Target::Application) | None => error(ErrorKind::NotFound),
        }
    }

    /// A protocol switch (WebSocket): the handshake goes upstream; on 101 both
    /// upgraded connections are joined byte for byte.
    async fn upgrade(self, mut req: Request<Incoming>, uri: Uri) -> Response<ProxyBody> {
        let client_upgrade = hyper::upgrade::on(&mut req);
        let (mut head, _body) = req.into_parts();
        head.uri = uri;
        let upstream_req = Request::from_parts(head, Empty::<Bytes>::new());
        let resp = match tokio::time::timeout(
            self.response_timeout,
            self.upgrade_client.request(upstream_req),
        )
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

impl Service<Request<Incoming>> for UpstreamProxy {
    type Response = Response<ProxyBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Incoming>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { Ok(this.forward(req).await) })
    }
}

use tower::Service;
