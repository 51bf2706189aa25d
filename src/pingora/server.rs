//! Running the pingora engine: as the binary's server (pingora's `Server`, fed from
//! our config.toml, with SIGINT/SIGTERM mapped to a bounded graceful shutdown), or
//! in-process on a listener already bound (tests bind port 0).
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

use async_trait::async_trait;
use pingora::server::configuration::ServerConf;
use pingora::server::{ListenFds, RunArgs, Server, ShutdownSignal, ShutdownSignalWatch};
use pingora::services::Service as _;
use tokio::net::TcpListener;

use super::{BffPingora, GuardedApp};
use crate::bff::Bff;
use crate::engine::conn::ConnLimits;
use crate::engine::lifecycle::{Running, Starting, wait_for_signal};
use crate::start::StartError;
use pingora::services::listening::Service;

/// pingora's server configuration from ours (no second YAML file): threads, a
/// graceful shutdown bounded by `server.shutdown_timeout` (pingora's own default
/// waits 5 minutes), the upstream keep-alive pool.
#[must_use]
pub fn server_conf(bff: &Bff) -> ServerConf {
    let server = &bff.config().server;
    ServerConf {
        threads: server.worker_threads(),
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(server.shutdown_timeout.as_secs().max(1)),
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
    let mut proxy = pingora::proxy::http_proxy(conf, BffPingora::new(bff));
    proxy.handle_init_modules();
    Service::new(name, GuardedApp::new(proxy, limits))
}

/// SIGINT and SIGTERM both ask for a graceful shutdown (bounded by
/// `server.shutdown_timeout`).
struct Signals;

#[async_trait]
impl ShutdownSignalWatch for Signals {
    async fn recv(&self) -> ShutdownSignal {
        wait_for_signal().await;
        tracing::info!("shutting down: finishing open requests");
        ShutdownSignal::GracefulTerminate
    }
}

/// Runs the pingora engine as the binary's server until SIGINT/SIGTERM. Blocks.
pub fn run_blocking(bff: Bff) -> Result<(), StartError> {
    let conf = server_conf(&bff);
    let threads = conf.threads;
    let listen = bff.config().server.listen.to_string();
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let tls = bff.config().resolved.tls.clone();
    let limits = Arc::new(ConnLimits::from_config(bff.config()));
    // pingora binds an address once and hands the same socket to every service
    // that names it (its fd table), so the services share one accept queue.
    for i in 0..threads {
        let name = format!("bff-proxy-{i}");
        let mut service = proxy_service(name, &server.configuration, bff.clone(), limits.clone());
        service.threads = Some(1);
        add_listener(&mut service, &listen, tls.as_ref())?;
        server.add_service(service);
    }
    server.run(RunArgs {
        shutdown_signal: Box::new(Signals),
    });
    Ok(())
}

/// Adds the proxy's listener: TLS when `server.tls_cert`/`tls_key` are set.
fn add_listener<A: pingora::apps::ServerApp + Send + Sync + 'static>(
    service: &mut pingora::services::listening::Service<A>,
    addr: &str,
    tls: Option<&crate::config::TlsFiles>,
) -> Result<(), StartError> {
    match tls {
        Some(files) => service
            .add_tls(
                addr,
                &files.cert.to_string_lossy(),
                &files.key.to_string_lossy(),
            )
            .map_err(|e| StartError::setting("server.tls_cert / server.tls_key", e.to_string())),
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
        let conf = Arc::new(server_conf(&bff));
        let limits = Arc::new(ConnLimits::from_config(bff.config()));
        let mut service = proxy_service("bff-proxy".to_owned(), &conf, bff.clone(), limits);
        let key = addr.to_string();
        let tls = bff.config().resolved.tls.clone();
        add_listener(&mut service, &key, tls.as_ref())?;
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
