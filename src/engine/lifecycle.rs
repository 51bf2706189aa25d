//! One server lifecycle for both engines: the readiness warm-up and the admin
//! listener beside the proxy, a stop signal every task watches, SIGINT/SIGTERM, and
//! a shutdown bounded by `server.shutdown_timeout`.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::bff::Bff;
use crate::start::StartError;

/// A running engine: its addresses, and the tasks that stop when it does.
pub struct Running {
    addr: SocketAddr,
    admin_addr: Option<SocketAddr>,
    stop: watch::Sender<bool>,
    /// Its config's `server.shutdown_timeout` is read at shutdown (a reload may
    /// change it).
    bff: Bff,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running")
            .field("addr", &self.addr)
            .field("admin_addr", &self.admin_addr)
            .finish_non_exhaustive()
    }
}

/// The start of a lifecycle: the stop signal, and the warm-up and admin tasks
/// already running beside the engine about to start.
pub(crate) struct Starting {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    admin_addr: Option<SocketAddr>,
}

impl Starting {
    /// Spawns the readiness warm-up and, when given, the admin listener.
    pub(crate) fn new(bff: &Bff, admin: Option<TcpListener>) -> std::io::Result<Self> {
        let admin_addr = admin.as_ref().map(TcpListener::local_addr).transpose()?;
        let (stop, stop_rx) = watch::channel(false);
        Ok(Self {
            tasks: side_tasks(bff, admin, &stop_rx),
            stop,
            admin_addr,
        })
    }

    /// What the engine's own tasks watch to stop.
    pub(crate) fn stop_signal(&self) -> watch::Receiver<bool> {
        self.stop.subscribe()
    }

    /// The engine is serving at `addr` with its task.
    pub(crate) fn running(
        mut self,
        bff: &Bff,
        addr: SocketAddr,
        engine: JoinHandle<()>,
    ) -> Running {
        self.tasks.push(engine);
        Running {
            addr,
            admin_addr: self.admin_addr,
            stop: self.stop,
            bff: bff.clone(),
            tasks: Mutex::new(self.tasks),
        }
    }
}

/// The readiness warm-up and the admin listener, stopping when `stop` changes.
pub fn side_tasks(
    bff: &Bff,
    admin: Option<TcpListener>,
    stop: &watch::Receiver<bool>,
) -> Vec<JoinHandle<()>> {
    let mut tasks = vec![tokio::spawn(super::admin::warm_up(
        bff.clone(),
        stop.clone(),
    ))];
    if let Some(admin) = admin {
        tasks.push(tokio::spawn(super::admin::serve_admin(
            bff.clone(),
            admin,
            stop.clone(),
        )));
    }
    tasks
}

impl Running {
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
        let shutdown_timeout = self.bff.config().server.shutdown_timeout;
        for task in tasks {
            let abort = task.abort_handle();
            // A little beyond the engine's own bound, which closes what is left.
            let bound = shutdown_timeout + Duration::from_secs(1);
            if tokio::time::timeout(bound, task).await.is_err() {
                abort.abort();
            }
        }
    }
}

/// Binds the listener a setting names; a taken or foreign address is an error that
/// names the setting.
pub async fn bind(setting: &str, addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| StartError::unavailable(setting, format!("{addr}: {e}")))
}

/// The drain before a shutdown: `/readyz` answers 503 at once, requests are still
/// served for `server.drain_delay` (so a load balancer stops sending before the
/// listener closes), then this returns and the shutdown proper starts.
pub async fn drain(bff: &Bff) {
    bff.start_draining();
    let delay = bff.config().server.drain_delay;
    tracing::info!(
        ?delay,
        "draining: /readyz answers 503, requests are still served"
    );
    tokio::time::sleep(delay).await;
}

/// Starts listening for SIGINT and SIGTERM now, on the current runtime: a signal
/// that arrived before the handlers were installed would end the process at once,
/// without the drain. The receiver turns `true` when one arrives; [`signalled`]
/// waits for that (from any runtime: pingora's own awaits it).
#[must_use]
pub fn listen_for_signals() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        let _ = tx.send(true);
    });
    rx
}

/// Waits until [`listen_for_signals`] saw SIGINT or SIGTERM.
pub async fn signalled(mut signals: watch::Receiver<bool>) {
    let _ = signals.wait_for(|got| *got).await;
}

/// Waits for SIGINT or SIGTERM.
pub async fn wait_for_signal() {
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
}

/// Starts listening for SIGHUP now (its default action would end the process):
/// call it at start, before anything can send one.
pub fn listen_for_hangups() -> Option<tokio::signal::unix::Signal> {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(signal) => Some(signal),
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP: no config reloads");
            None
        }
    }
}

/// Reloads the config on every SIGHUP: `load` reads and checks the file again,
/// [`Bff::reload`] puts it to use (session keys, client secret, TLS certificate,
/// routes, timeouts), and `log` takes its `log.level`. A config that does not load,
/// or changes what needs a restart, is refused with a log line saying why, and the
/// running one stays. Each reload counts in `bff_config_reloads_total{result}`.
pub async fn reload_on_hangup<L>(
    mut hangups: tokio::signal::unix::Signal,
    bff: Bff,
    load: L,
    log: Option<std::sync::Arc<crate::logging::LogHandle>>,
) where
    L: Fn() -> Result<crate::config::Config, String> + Send,
{
    while hangups.recv().await.is_some() {
        tracing::info!("SIGHUP: reloading the config");
        let result = load().and_then(|config| {
            let level = config.log.level.clone();
            bff.reload(config).map_err(|e| e.to_string())?;
            Ok(level)
        });
        match result {
            Ok(level) => {
                if let Some(log) = &log {
                    if let Err(e) = log.set_level(&level) {
                        tracing::warn!(setting = "log.level", "{e}");
                    }
                }
                bff.metrics().config_reload(true);
                tracing::info!("config reloaded");
            }
            Err(why) => {
                bff.metrics().config_reload(false);
                tracing::error!("config reload refused, the running config stays: {why}");
            }
        }
    }
}
