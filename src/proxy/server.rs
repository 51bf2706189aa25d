//! The hyper engine's listeners: the proxy itself (the tower layer over the upstream
//! proxy, HTTP/1.1 with upgrades, graceful shutdown) and the admin listener
//! (`/metrics`, `/healthz`, `/readyz`).

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::Request;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tower::ServiceExt as _;

use super::{ClientInfo, UpstreamProxy};
use crate::bff::Bff;
use crate::conn::{ConnLimits, ConnState};
use crate::tower::BffLayer;

/// A running hyper engine.
pub struct ProxyServer {
    addr: SocketAddr,
    admin_addr: Option<SocketAddr>,
    stop: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for ProxyServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyServer")
            .field("addr", &self.addr)
            .field("admin_addr", &self.admin_addr)
            .finish_non_exhaustive()
    }
}

impl ProxyServer {
    /// Binds `server.listen` (and `server.admin_listen`) and serves.
    pub async fn start(bff: Arc<Bff>) -> std::io::Result<Self> {
        let listener = TcpListener::bind(bff.config().server.listen).await?;
        let admin = match bff.config().server.admin_listen {
            Some(addr) => Some(TcpListener::bind(addr).await?),
            None => None,
        };
        Self::start_with(bff, listener, admin)
    }

    /// Serves on listeners already bound (tests bind port 0).
    pub fn start_with(
        bff: Arc<Bff>,
        listener: TcpListener,
        admin: Option<TcpListener>,
    ) -> std::io::Result<Self> {
        let addr = listener.local_addr()?;
        let admin_addr = admin.as_ref().map(TcpListener::local_addr).transpose()?;
        let server = &bff.config().server;
        let upstream = UpstreamProxy::new(
            server.upstream_connect_timeout,
            server.upstream_timeout,
            server.upstream_keepalive,
            bff.metrics().clone(),
        )
        .map_err(std::io::Error::other)?;
        let shutdown_timeout = server.shutdown_timeout;
        let (stop, stop_rx) = watch::channel(false);
        let mut tasks = vec![tokio::spawn(crate::admin::warm_up(
            Arc::clone(&bff),
            stop_rx.clone(),
        ))];
        if let Some(admin) = admin {
            tasks.push(tokio::spawn(crate::admin::serve_admin(
                Arc::clone(&bff),
                admin,
                stop_rx.clone(),
            )));
        }
        let tls = match &bff.config().resolved.tls {
            Some(files) => Some(tls_acceptor(files).map_err(std::io::Error::other)?),
            None => None,
        };
        let limits = Arc::new(ConnLimits::from_config(bff.config()));
        let service = tower::ServiceBuilder::new()
            .layer(BffLayer::new(bff))
            .service(upstream);
        tasks.push(tokio::spawn(async move {
            serve(listener, service, tls, limits, stop_rx, shutdown_timeout).await;
        }));
        Ok(Self {
            addr,
            admin_addr,
            stop,
            tasks: Mutex::new(tasks),
        })
    }

    /// The proxy's address.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The admin listener's address.
    #[must_use]
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// Stops accepting, lets open requests finish within `server.shutdown_timeout`,
    /// then closes what is left.
    pub async fn shutdown(&self) {
        let _ = self.stop.send(true);
        let tasks: Vec<JoinHandle<()>> = self
            .tasks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .drain(..)
            .collect();
        for task in tasks {
            let _ = task.await;
        }
    }
}

type Service = crate::tower::BffService<UpstreamProxy>;

/// A TLS acceptor for the certificate chain and key of `server.tls_cert`/`tls_key`.
pub fn tls_acceptor(files: &crate::config::TlsFiles) -> Result<tokio_rustls::TlsAcceptor, String> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| format!("server.tls_cert: {e}"))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("server.tls_cert: {e}"))?;
    let key =
        PrivateKeyDer::from_pem_file(&files.key).map_err(|e| format!("server.tls_key: {e}"))?;
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup failed: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("server.tls_cert / server.tls_key: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config)))
}

/// How long a client may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

async fn serve(
    listener: TcpListener,
    service: Service,
    tls: Option<tokio_rustls::TlsAcceptor>,
    limits: Arc<ConnLimits>,
    mut stop: watch::Receiver<bool>,
    shutdown_timeout: Duration,
) {
    let graceful = GracefulShutdown::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: wait a moment.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                // Past server.max_connections the connection is closed at once.
                let Some(permit) = limits.admit() else {
                    drop(stream);
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let service = service.clone();
                let https = tls.is_some();
                let watcher = graceful.watcher();
                let tls = tls.clone();
                let limits = Arc::clone(&limits);
                tokio::spawn(async move {
                    let _permit = permit;
                    match tls {
                        Some(acceptor) => {
                            let Ok(Ok(stream)) =
                                tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await
                            else {
                                return;
                            };
                            serve_connection(stream, peer, https, service, limits, watcher).await;
                        }
                        None => serve_connection(stream, peer, https, service, limits, watcher).await,
                    }
                });
            }
            _ = stop.changed() => break,
        }
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(shutdown_timeout) => {
            tracing::warn!("shutdown_timeout reached: closing the connections still open");
        }
    }
}

/// Serves one client connection under the connection limits: the request cycle is
/// reported to its [`ConnState`], and a head over its deadline ends it (after 408).
async fn serve_connection<I>(
    io: I,
    peer: SocketAddr,
    https: bool,
    service: Service,
    limits: Arc<ConnLimits>,
    watcher: hyper_util::server::graceful::Watcher,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (io, state) = limits.guard(io);
    let cycle = Arc::clone(&state);
    let hyper_service = service_fn(move |mut req: Request<Incoming>| {
        cycle.request_started();
        req.extensions_mut().insert(ClientInfo { peer, https });
        let answer = service.clone().oneshot(req);
        let cycle = Arc::clone(&cycle);
        async move {
            let Ok(resp) = answer.await;
            if resp.status() == http::StatusCode::SWITCHING_PROTOCOLS {
                cycle.upgraded();
            }
            Ok::<_, std::convert::Infallible>(resp.map(|body| CycleBody {
                inner: body,
                state: cycle,
            }))
        }
    });
    let builder = auto::Builder::new(TokioExecutor::new()).http1_only();
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), hyper_service);
    let conn = watcher.watch(conn.into_owned());
    tokio::select! {
        _ = conn => {}
        () = state.timed_out() => {}
    }
}

/// A response body that tells the connection when the response is done (sent to
/// the end, or dropped), so the idle deadline starts then.
struct CycleBody {
    inner: crate::tower::BffBody<super::ProxyBody>,
    state: Arc<ConnState>,
}

impl Drop for CycleBody {
    fn drop(&mut self) {
        self.state.request_finished();
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

impl http_body::Body for CycleBody {
    type Data = bytes::Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
