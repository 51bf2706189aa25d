//! The hyper engine's listener: HTTP/1.1 with upgrades, TLS when configured (with
//! HTTP/2 when the client picks `h2` by ALPN), the
//! connection limits, graceful shutdown; the admin listener and warm-up come from
//! the shared lifecycle.
//!
//! The binary serves on `server.threads` worker threads, each a single-threaded
//! runtime with its own door (and so its own upstream connection pool), all
//! accepting on the one listening socket: a connection and the upstream
//! connections it reuses stay on one thread, with no cross-thread wake-ups.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use http::Request;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::{HyperDoor, ProxyBody};
use crate::bff::Bff;
use crate::engine::conn::{ConnLimits, ConnState};
use crate::engine::lifecycle::{Running, Starting, bind};
use crate::start::StartError;

/// The hyper engine.
#[derive(Debug)]
pub struct ProxyServer;

impl ProxyServer {
    /// Binds `server.listen` (and `server.admin_listen`) and serves.
    pub async fn start(bff: impl Into<Bff>) -> Result<Running, StartError> {
        let bff = bff.into();
        let server = &bff.config().server;
        let listener = bind("server.listen", server.listen).await?;
        let admin = match server.admin_listen {
            Some(addr) => Some(bind("server.admin_listen", addr).await?),
            None => None,
        };
        Self::start_with(bff, listener, admin)
    }

    /// Serves on `threads` worker threads of their own (see the module's doc), on
    /// a listener already bound; the admin listener and warm-up run on the current
    /// runtime. The binary's way to run the engine.
    pub fn start_on_threads(
        bff: impl Into<Bff>,
        listener: TcpListener,
        admin: Option<TcpListener>,
        threads: usize,
    ) -> Result<Running, StartError> {
        let bff = bff.into();
        let unavailable =
            |e: std::io::Error| StartError::unavailable("server.listen", e.to_string());
        let listener = listener.into_std().map_err(unavailable)?;
        let (addr, starting, setup) = Setup::new(&bff, &listener, admin)?;
        let mut done = Vec::new();
        for i in 0..threads.max(1) {
            let listener = listener.try_clone().map_err(unavailable)?;
            let door = HyperDoor::new(bff.clone())?;
            let (setup, stop) = (setup.clone(), starting.stop_signal());
            let (finished, wait) = tokio::sync::oneshot::channel::<()>();
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| StartError::unavailable("server.threads", e.to_string()))?;
            std::thread::Builder::new()
                .name(format!("bff-hyper-{i}"))
                .spawn(move || {
                    runtime.block_on(async move {
                        match TcpListener::from_std(listener) {
                            Ok(listener) => serve(listener, door, setup, stop).await,
                            Err(e) => tracing::error!(error = %e, "worker cannot listen"),
                        }
                    });
                    let _ = finished.send(());
                })
                .map_err(|e| StartError::unavailable("server.threads", e.to_string()))?;
            done.push(wait);
        }
        let engine = tokio::spawn(async move {
            for wait in done {
                let _ = wait.await;
            }
        });
        Ok(starting.running(&bff, addr, engine))
    }

    /// Serves on listeners already bound (tests bind port 0), within the current
    /// runtime.
    pub fn start_with(
        bff: impl Into<Bff>,
        listener: TcpListener,
        admin: Option<TcpListener>,
    ) -> Result<Running, StartError> {
        let bff = bff.into();
        let (addr, starting, setup) = Setup::new(&bff, &listener, admin)?;
        let door = HyperDoor::new(bff.clone())?;
        let stop = starting.stop_signal();
        let engine = tokio::spawn(async move {
            serve(listener, door, setup, stop).await;
        });
        Ok(starting.running(&bff, addr, engine))
    }
}

/// What every serving loop of one engine shares: TLS, the connection limits, the
/// shutdown bound.
#[derive(Clone)]
struct Setup {
    tls: Option<tokio_rustls::TlsAcceptor>,
    limits: Arc<ConnLimits>,
    /// `server.shutdown_timeout` is read from its config at shutdown.
    bff: Bff,
}

impl Setup {
    /// The listener's address, the lifecycle started (admin listener, warm-up), and
    /// what the serving loops share.
    fn new(
        bff: &Bff,
        listener: &impl LocalAddr,
        admin: Option<TcpListener>,
    ) -> Result<(SocketAddr, Starting, Self), StartError> {
        bff.metrics().serving_with("hyper");
        let addr = listener
            .local_addr()
            .map_err(|e| StartError::unavailable("server.listen", e.to_string()))?;
        // The certificate is the core's, so a reload changes it for new handshakes;
        // h2 and http/1.1 are offered by ALPN.
        let tls = match bff.server_cert() {
            Some(cert) => Some(tokio_rustls::TlsAcceptor::from(Arc::new(
                cert.server_config()
                    .map_err(|why| StartError::setting("server.tls_cert", why))?,
            ))),
            None => None,
        };
        let starting = Starting::new(bff, admin)
            .map_err(|e| StartError::unavailable("server.admin_listen", e.to_string()))?;
        let setup = Self {
            tls,
            limits: Arc::new(ConnLimits::for_bff(bff)),
            bff: bff.clone(),
        };
        Ok((addr, starting, setup))
    }
}

/// A listener's local address, tokio's or std's.
trait LocalAddr {
    fn local_addr(&self) -> std::io::Result<SocketAddr>;
}

impl LocalAddr for TcpListener {
    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        TcpListener::local_addr(self)
    }
}

impl LocalAddr for std::net::TcpListener {
    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        std::net::TcpListener::local_addr(self)
    }
}

/// How long a client may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

async fn serve(
    listener: TcpListener,
    door: HyperDoor,
    setup: Setup,
    mut stop: watch::Receiver<bool>,
) {
    let Setup { tls, limits, bff } = setup;
    // Shared by reference count: each request takes a handle to the door (cloning
    // the door itself cost ~550 instructions a request: its clients' handles).
    let door = Arc::new(door);
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
                let door = Arc::clone(&door);
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
                            let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
                            serve_connection(stream, peer, door, limits, watcher, h2).await;
                        }
                        None => serve_connection(stream, peer, door, limits, watcher, false).await,
                    }
                });
            }
            _ = stop.changed() => break,
        }
    }
    drop(listener);
    let shutdown_timeout = bff.config().server.shutdown_timeout;
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
    door: Arc<HyperDoor>,
    limits: Arc<ConnLimits>,
    watcher: hyper_util::server::graceful::Watcher,
    h2: bool,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (io, state) = limits.guard(io);
    if h2 {
        state.multiplexed();
    }
    let cycle = Arc::clone(&state);
    let hyper_service = service_fn(move |req: Request<Incoming>| {
        cycle.request_started();
        let door = Arc::clone(&door);
        let cycle = Arc::clone(&cycle);
        async move {
            let resp = door.serve(req, peer).await;
            if resp.status() == http::StatusCode::SWITCHING_PROTOCOLS {
                cycle.upgraded();
            }
            Ok::<_, std::convert::Infallible>(resp.map(|body| CycleBody {
                inner: body,
                state: cycle,
            }))
        }
    });
    // HTTP/2 only where ALPN chose it (never h2c on a plain listener).
    let builder = if h2 {
        auto::Builder::new(TokioExecutor::new()).http2_only()
    } else {
        auto::Builder::new(TokioExecutor::new()).http1_only()
    };
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
    inner: ProxyBody,
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
