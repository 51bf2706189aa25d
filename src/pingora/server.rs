//! Running the pingora engine: as the binary's server (pingora's services on
//! runtimes of our own, fed from our config.toml, with SIGINT/SIGTERM mapped to the
//! drain and a bounded graceful shutdown), or in-process on a listener already
//! bound (tests bind port 0).
//!
//! The binary runs one pingora service per worker thread, each on its own
//! single-threaded runtime with its own upstream connection pool, all accepting on
//! the one listening socket. A connection then lives on one thread from accept to
//! close, and so does every upstream connection it reuses: no cross-thread wake-ups,
//! and no race between a pooled connection's idle watcher and the request taking it
//! (with one shared pool across threads, pingora loses that race now and then,
//! drops the connection and logs "failed to acquire reusable stream").

use std::os::fd::IntoRawFd as _;
use std::sync::Arc;

use pingora::server::ListenFds;
use pingora::server::configuration::ServerConf;
use pingora::services::Service as _;
use tokio::net::TcpListener;

use super::{BffPingora, GuardedApp};
use crate::bff::Bff;
use crate::engine::conn::ConnLimits;
use crate::engine::lifecycle::{Running, Starting, drain, signalled};
use crate::start::StartError;
use pingora::services::listening::Service;

/// pingora's server configuration from ours (no second YAML file): threads, the
/// upstream keep-alive pool. (The shutdown is ours: `run_blocking`.)
#[must_use]
pub fn server_conf(bff: &Bff) -> ServerConf {
    let server = &bff.config().server;
    ServerConf {
        threads: server.worker_threads(),
        upstream_keepalive_pool_size: server.upstream_keepalive,
        work_stealing: false,
        ..ServerConf::default()
    }
}

/// The proxy as a pingora service: pingora's HTTP proxy app over the core (with
/// its own upstream connection pool), behind the connection limits
/// (`server.header_timeout`, `idle_timeout`, `max_connections`, shared by every
/// service of the process).
fn proxy_service(
    name: String,
    conf: &Arc<ServerConf>,
    bff: Bff,
    limits: Arc<ConnLimits>,
) -> Service<GuardedApp> {
    let idle = bff.config().server.idle_timeout;
    let mut proxy = pingora::proxy::http_proxy(conf, BffPingora::new(bff));
    proxy.handle_init_modules();
    // HTTP/2 connections (ALPN h2 on TLS) are closed by pingora itself once idle:
    // their streams do not pass through the connection guard's request cycle.
    let mut options = pingora::apps::HttpServerOptions::default();
    options.h2_idle_timeout = Some(idle);
    proxy.server_options = Some(options);
    Service::new(name, GuardedApp::new(proxy, limits))
}

/// Runs the pingora engine as the binary's server until SIGINT/SIGTERM (seen by
/// [`listen_for_signals`](crate::engine::lifecycle::listen_for_signals), started
/// early by the caller), then drains (`server.drain_delay`: `/readyz` 503, requests
/// still served), stops accepting and lets open requests finish within
/// `server.shutdown_timeout`. Blocks.
///
/// One pingora service per worker thread, each on a single-threaded runtime of its
/// own. They share the one listening socket (one accept queue) through duplicates
/// of its descriptor, one per service: pingora takes a listener it finds in a
/// service's descriptor table as its own and closes it when the service stops, so
/// each must own a descriptor of its own (sharing one made every service after the
/// first close an already closed descriptor at shutdown: an abort in debug builds,
/// and in release a close of whatever file had taken that number).
pub fn run_blocking(
    bff: Bff,
    signals: tokio::sync::watch::Receiver<bool>,
) -> Result<(), StartError> {
    let unavailable = |e: std::io::Error| StartError::unavailable("server.listen", e.to_string());
    let config = bff.config();
    let (listen, threads) = (config.server.listen, config.server.worker_threads());
    let listener = std::net::TcpListener::bind(listen)
        .map_err(|e| StartError::unavailable("server.listen", format!("{listen}: {e}")))?;
    listener.set_nonblocking(true).map_err(unavailable)?;
    bff.metrics().serving_with("pingora");
    let conf = Arc::new(server_conf(&bff));
    let limits = Arc::new(ConnLimits::for_bff(&bff));
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let key = listen.to_string();
    let mut workers = Vec::with_capacity(threads);
    for i in 0..threads {
        let name = format!("bff-proxy-{i}");
        let mut service = proxy_service(name.clone(), &conf, bff.clone(), limits.clone());
        add_listener(&mut service, &key, bff.server_cert())?;
        let fds: ListenFds = Arc::new(pingora::server::Fds::new().into());
        let own = listener.try_clone().map_err(unavailable)?;
        fds.lock().add(key.clone(), own.into_raw_fd());
        let stop = stop_rx.clone();
        let limits = limits.clone();
        let bff = bff.clone();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| StartError::unavailable("server.threads", e.to_string()))?;
        let worker = std::thread::Builder::new()
            .name(name)
            .spawn(move || {
                runtime.block_on(async move {
                    // Returns once `stop` fires and the listener is closed.
                    service.start_service(Some(fds), stop, 1).await;
                    // Read now: a reload may have changed it.
                    let shutdown_timeout = bff.config().server.shutdown_timeout;
                    finish_open_requests(&limits, shutdown_timeout).await;
                });
            })
            .map_err(|e| StartError::unavailable("server.threads", e.to_string()))?;
        workers.push(worker);
    }
    drop(listener);
    let waiter = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| StartError::unavailable("server.threads", e.to_string()))?;
    waiter.block_on(async {
        signalled(signals).await;
        drain(&bff).await;
    });
    tracing::info!(
        timeout = ?bff.config().server.shutdown_timeout,
        "shutting down: finishing open requests"
    );
    let _ = stop.send(true);
    for worker in workers {
        let _ = worker.join();
    }
    Ok(())
}

/// Waits until no client connection is open (pingora closes idle keep-alive ones
/// when its service stops), at most `limit`; what is left is then closed.
async fn finish_open_requests(limits: &ConnLimits, limit: std::time::Duration) {
    let deadline = tokio::time::Instant::now() + limit;
    while limits.open() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Adds the proxy's listener: TLS when `server.tls_cert`/`tls_key` are set, with
/// the core's certificate (a reload changes it for new handshakes) and h2 offered
/// by ALPN beside http/1.1.
fn add_listener<A: pingora::apps::ServerApp + Send + Sync + 'static>(
    service: &mut pingora::services::listening::Service<A>,
    addr: &str,
    cert: Option<&crate::tls::ServerCert>,
) -> Result<(), StartError> {
    match cert {
        Some(cert) => {
            let mut settings =
                pingora::listeners::tls::TlsSettings::intermediate("", "").map_err(|e| {
                    StartError::setting("server.tls_cert", format!("TLS setup failed: {e}"))
                })?;
            settings.set_cert_resolver(Arc::new(cert.clone()));
            settings.enable_h2();
            service.add_tls_with_settings(addr, None, settings);
            Ok(())
        }
        None => {
            service.add_tcp(addr);
            Ok(())
        }
    }
}

/// The pingora engine running in-process.
#[derive(Debug)]
pub struct PingoraServer;

impl PingoraServer {
    /// Serves on a listener already bound, within the current tokio runtime, with
    /// the admin listener when given.
    pub fn start_with(
        bff: impl Into<Bff>,
        listener: std::net::TcpListener,
        admin: Option<TcpListener>,
    ) -> Result<Running, StartError> {
        let bff = bff.into();
        let unavailable =
            |e: std::io::Error| StartError::unavailable("server.listen", e.to_string());
        let addr = listener.local_addr().map_err(unavailable)?;
        bff.metrics().serving_with("pingora");
        let conf = Arc::new(server_conf(&bff));
        let limits = Arc::new(ConnLimits::for_bff(&bff));
        let mut service = proxy_service("bff-proxy".to_owned(), &conf, bff.clone(), limits);
        let key = addr.to_string();
        add_listener(&mut service, &key, bff.server_cert())?;
        // pingora takes listeners it finds in its fd table (made for graceful
        // upgrades) instead of binding: that is how it gets our port-0 listener.
        listener.set_nonblocking(true).map_err(unavailable)?;
        let fds: ListenFds = Arc::new(pingora::server::Fds::new().into());
        fds.lock().add(key, listener.into_raw_fd());
        let starting = Starting::new(&bff, admin)
            .map_err(|e| StartError::unavailable("server.admin_listen", e.to_string()))?;
        let stop = starting.stop_signal();
        let engine = tokio::spawn(async move {
            service.start_service(Some(fds), stop, 1).await;
        });
        Ok(starting.running(&bff, addr, engine))
    }
}
