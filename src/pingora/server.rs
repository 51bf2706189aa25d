//! Running the pingora engine: as the binary's server (pingora's `Server`, fed from
//! our config.toml, with SIGINT/SIGTERM mapped to a bounded graceful shutdown), or
//! in-process on a listener already bound (tests bind port 0).

use std::os::fd::IntoRawFd as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::configuration::ServerConf;
use pingora::server::{ListenFds, RunArgs, Server, ShutdownSignal, ShutdownSignalWatch};
use pingora::services::Service as _;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{BffPingora, GuardedApp};
use crate::bff::Bff;
use crate::conn::ConnLimits;
use pingora::services::listening::Service;

/// pingora's server configuration from ours (no second YAML file): threads, a
/// graceful shutdown bounded by `server.shutdown_timeout` (pingora's own default
/// waits 5 minutes), the upstream keep-alive pool.
#[must_use]
pub fn server_conf(bff: &Bff) -> ServerConf {
    let server = &bff.config().server;
    ServerConf {
        threads: server
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from)),
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(server.shutdown_timeout.as_secs().max(1)),
        upstream_keepalive_pool_size: server.upstream_keepalive,
        work_stealing: false,
        ..ServerConf::default()
    }
}

/// The proxy as a pingora service: pingora's HTTP proxy app over the core, behind
/// the connection limits (`server.header_timeout`, `idle_timeout`,
/// `max_connections`).
pub fn proxy_service(conf: &Arc<ServerConf>, bff: Arc<Bff>) -> Service<GuardedApp> {
    let limits = Arc::new(ConnLimits::from_config(bff.config()));
    let mut proxy = pingora::proxy::http_proxy(conf, BffPingora::new(bff));
    proxy.handle_init_modules();
    Service::new("bff-proxy".to_owned(), GuardedApp::new(proxy, limits))
}

/// SIGINT and SIGTERM both ask for a graceful shutdown (bounded by
/// `server.shutdown_timeout`).
struct Signals;

#[async_trait]
impl ShutdownSignalWatch for Signals {
    async fn recv(&self) -> ShutdownSignal {
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            () = term => {}
        }
        tracing::info!("shutting down: finishing open requests");
        ShutdownSignal::GracefulTerminate
    }
}

/// Runs the pingora engine as the binary's server until SIGINT/SIGTERM. Blocks.
pub fn run_blocking(bff: Arc<Bff>) {
    let conf = server_conf(&bff);
    let listen = bff.config().server.listen.to_string();
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let tls = bff.config().resolved.tls.clone();
    let mut service = proxy_service(&server.configuration, bff);
    if let Err(e) = add_listener(&mut service, &listen, tls.as_ref()) {
        tracing::error!(error = %e, "cannot listen");
        return;
    }
    server.add_service(service);
    server.run(RunArgs {
        shutdown_signal: Box::new(Signals),
    });
}

/// Adds the proxy's listener: TLS when `server.tls_cert`/`tls_key` are set.
fn add_listener<A: pingora::apps::ServerApp + Send + Sync + 'static>(
    service: &mut pingora::services::listening::Service<A>,
    addr: &str,
    tls: Option<&crate::config::TlsFiles>,
) -> Result<(), String> {
    match tls {
        Some(files) => service
            .add_tls(
                addr,
                &files.cert.to_string_lossy(),
                &files.key.to_string_lossy(),
            )
            .map_err(|e| format!("server.tls_cert / server.tls_key: {e}")),
        None => {
            service.add_tcp(addr);
            Ok(())
        }
    }
}

/// A pingora engine running in-process.
pub struct PingoraServer {
    addr: std::net::SocketAddr,
    admin_addr: Option<std::net::SocketAddr>,
    shutdown: watch::Sender<bool>,
    shutdown_timeout: Duration,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for PingoraServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PingoraServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl PingoraServer {
    /// Serves on a listener already bound, within the current tokio runtime, with
    /// the admin listener when given.
    pub fn start_with(
        bff: Arc<Bff>,
        listener: std::net::TcpListener,
        admin: Option<TcpListener>,
    ) -> std::io::Result<Self> {
        let addr = listener.local_addr()?;
        let admin_addr = admin.as_ref().map(TcpListener::local_addr).transpose()?;
        let shutdown_timeout = bff.config().server.shutdown_timeout;
        let conf = Arc::new(server_conf(&bff));
        let mut service = proxy_service(&conf, Arc::clone(&bff));
        let key = addr.to_string();
        let tls = bff.config().resolved.tls.clone();
        add_listener(&mut service, &key, tls.as_ref()).map_err(std::io::Error::other)?;
        // pingora takes listeners it finds in its fd table (made for graceful
        // upgrades) instead of binding: that is how it gets our port-0 listener.
        listener.set_nonblocking(true)?;
        let fds: ListenFds = Arc::new(pingora::server::Fds::new().into());
        fds.lock().add(key, listener.into_raw_fd());
        let (shutdown, shutdown_rx) = watch::channel(false);
        let mut tasks = vec![tokio::spawn(crate::admin::warm_up(
            Arc::clone(&bff),
            shutdown_rx.clone(),
        ))];
        if let Some(admin) = admin {
            tasks.push(tokio::spawn(crate::admin::serve_admin(
                Arc::clone(&bff),
                admin,
                shutdown_rx.clone(),
            )));
        }
        tasks.push(tokio::spawn(async move {
            service.start_service(Some(fds), shutdown_rx, 1).await;
        }));
        Ok(Self {
            addr,
            admin_addr,
            shutdown,
            shutdown_timeout,
            tasks: Mutex::new(tasks),
        })
    }

    /// The proxy's address.
    #[must_use]
    pub fn addr(&self) -> std::net::SocketAddr {
        self.addr
    }

    /// The admin listener's address.
    #[must_use]
    pub fn admin_addr(&self) -> Option<std::net::SocketAddr> {
        self.admin_addr
    }

    /// Stops accepting and waits, at most `server.shutdown_timeout`, for the engine.
    pub async fn shutdown(&self) {
        let _ = self.shutdown.send(true);
        let tasks: Vec<JoinHandle<()>> = self
            .tasks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .drain(..)
            .collect();
        for task in tasks {
            let abort = task.abort_handle();
            if tokio::time::timeout(self.shutdown_timeout, task)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
    }
}
