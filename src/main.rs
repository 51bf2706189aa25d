//! The `bff-proxy` binary: runs the proxy, checks a config, or makes a key.
//!
//! ```text
//! bff-proxy --config config.toml [--engine pingora|hyper]
//! bff-proxy check-config --config config.toml
//! bff-proxy keygen
//! ```

#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;
use std::process::ExitCode;

use bff_proxy::Bff;
use bff_proxy::StartError;
use bff_proxy::config::{Config, Engine, Env, LogFormat};
#[cfg(feature = "dev")]
use bff_proxy::dev::DevServices;
use bff_proxy::engine::lifecycle::{
    bind, drain, listen_for_hangups, listen_for_signals, reload_on_hangup, side_tasks, signalled,
};
use bff_proxy::seal::KeyRing;
use clap::{Parser, Subcommand, ValueEnum};
use tokio::net::TcpListener;

/// Exit code for a configuration the proxy cannot start with (EX_CONFIG-like usage
/// error, as linkerd2-proxy does).
const EXIT_BAD_CONFIG: u8 = 64;
/// Exit code when something the config names could not be used (a taken port, a
/// store that does not answer): EX_UNAVAILABLE.
const EXIT_UNAVAILABLE: u8 = 69;
/// Exit code of `check-config` when it found problems.
const EXIT_CHECK_FAILED: u8 = 2;

#[derive(Parser)]
#[command(
    name = "bff-proxy",
    version,
    about = "A backend-for-frontend for OAuth 2.0 / OpenID Connect"
)]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// The config file.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Overrides server.engine.
    #[arg(long, value_enum)]
    engine: Option<EngineArg>,
}

#[derive(Subcommand)]
enum Command {
    /// Checks a config file, prints every problem with its TOML path; exit 2 if any.
    CheckConfig {
        /// The config file.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Prints a fresh random key for session.keys.
    Keygen,
}

#[derive(Clone, Copy, ValueEnum)]
enum EngineArg {
    Pingora,
    Hyper,
}

impl From<EngineArg> for Engine {
    fn from(arg: EngineArg) -> Self {
        match arg {
            EngineArg::Pingora => Self::Pingora,
            EngineArg::Hyper => Self::Hyper,
        }
    }
}

/// What a SIGHUP needs: the config file read as at start (`--engine` applied),
/// and the logger whose level it may change.
struct Reload {
    path: PathBuf,
    engine: Option<EngineArg>,
    log: Option<std::sync::Arc<bff_proxy::logging::LogHandle>>,
}

impl Reload {
    /// Reads and checks the config file again, as at start.
    fn load(&self) -> Result<Config, String> {
        let mut config = Config::load(&self.path, &Env::from_process())
            .map_err(|e| format!("{}: {e}", self.path.display()))?;
        if let Some(first) = config.proxy_problems().first() {
            return Err(format!("{}: {first}", self.path.display()));
        }
        if let Some(engine) = self.engine {
            config.server.engine = engine.into();
        }
        Ok(config)
    }

    /// Reloads on every SIGHUP (see `lifecycle::reload_on_hangup`).
    fn spawn(self, hangups: Option<tokio::signal::unix::Signal>, bff: &Bff) {
        if let Some(hangups) = hangups {
            let log = self.log.clone();
            tokio::spawn(reload_on_hangup(
                hangups,
                bff.clone(),
                move || self.load(),
                log,
            ));
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Keygen) => {
            println!("{}", KeyRing::generate_key_base64());
            ExitCode::SUCCESS
        }
        Some(Command::CheckConfig { config }) => check_config(&config),
        None => {
            let Some(path) = cli.config else {
                eprintln!("bff-proxy: --config FILE is required (see bff-proxy --help)");
                return ExitCode::from(EXIT_BAD_CONFIG);
            };
            run(&path, cli.engine)
        }
    }
}

fn check_config(path: &std::path::Path) -> ExitCode {
    match Config::load(path, &Env::from_process()) {
        Ok(config) if config.proxy_problems().is_empty() => {
            for w in &config.warnings {
                eprintln!("warning: {w}");
            }
            println!("{}: ok", path.display());
            ExitCode::SUCCESS
        }
        Ok(config) => check_failed(path, &config.proxy_problems()),
        Err(err) => check_failed(path, &err.problems),
    }
}

fn check_failed(path: &std::path::Path, problems: &[bff_proxy::config::Problem]) -> ExitCode {
    for p in problems {
        eprintln!("{}: {p}", path.display());
    }
    eprintln!(
        "{}: {} problem{}",
        path.display(),
        problems.len(),
        if problems.len() == 1 { "" } else { "s" }
    );
    ExitCode::from(EXIT_CHECK_FAILED)
}

fn run(path: &std::path::Path, engine: Option<EngineArg>) -> ExitCode {
    let mut config = match Config::load(path, &Env::from_process()) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("bff-proxy: {}: {err}", path.display());
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    if let Some(first) = config.proxy_problems().first() {
        eprintln!("bff-proxy: {}: {first}", path.display());
        return ExitCode::from(EXIT_BAD_CONFIG);
    }
    // `[log]` picks the format and level (RUST_LOG overrides the level); no level
    // lets another crate log a token.
    let log = match bff_proxy::logging::install(
        std::io::stderr,
        config.log.format,
        &config.log.level,
        std::env::var("RUST_LOG").ok().as_deref(),
        config.log.format == LogFormat::Text
            && std::io::IsTerminal::is_terminal(&std::io::stderr()),
    ) {
        Ok(handle) => Some(std::sync::Arc::new(handle)),
        Err(e) => {
            eprintln!("bff-proxy: {e}");
            None
        }
    };
    if let Some(engine) = engine {
        config.server.engine = engine.into();
    }
    for w in &config.warnings {
        tracing::warn!(setting = %w.path, "{}", w.message);
    }
    let reload = Reload {
        path: path.to_owned(),
        engine,
        log,
    };
    let result = match config.server.engine {
        Engine::Hyper => run_hyper(config, reload),
        Engine::Pingora => run_pingora(config, reload),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bff-proxy: {}: {e}", path.display());
            ExitCode::from(if e.is_bad_setting() {
                EXIT_BAD_CONFIG
            } else {
                EXIT_UNAVAILABLE
            })
        }
    }
}

/// A build without the `dev` feature has no dev services; config load refuses
/// `[dev]` settings in such a build.
#[cfg(not(feature = "dev"))]
struct DevServices;

#[cfg(not(feature = "dev"))]
impl DevServices {
    #[allow(clippy::unused_async)]
    async fn start(_config: &Config) -> Result<Self, StartError> {
        Ok(Self)
    }

    #[allow(clippy::unused_async)]
    async fn shutdown(&self) {}
}

/// The small runtime beside the engine's worker threads: dev services, the admin
/// listener, the readiness warm-up, signals.
fn side_runtime() -> Result<tokio::runtime::Runtime, StartError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| {
            StartError::unavailable("server.threads", format!("cannot start the runtime: {e}"))
        })
}

/// What both engines start with: the dev services `[dev]` asks for, the core with
/// its store, and the admin listener bound.
async fn prepare(config: Config) -> Result<(DevServices, Bff, Option<TcpListener>), StartError> {
    let dev = DevServices::start(&config).await?;
    let admin = match config.server.admin_listen {
        Some(addr) => Some(bind("server.admin_listen", addr).await?),
        None => None,
    };
    let bff = Bff::new(config)?.connect_store().await?;
    Ok((dev, bff, admin))
}

fn serving(bff: &Bff, engine: &str) {
    tracing::info!(
        listen = %bff.config().server.listen,
        admin = ?bff.config().server.admin_listen,
        public_url = %bff.config().resolved.public_url,
        engine,
        "bff-proxy serving"
    );
}

/// The hyper engine on `server.threads` worker threads of its own, until SIGINT or
/// SIGTERM; the dev services, the admin listener and the readiness warm-up run on a
/// small runtime beside them.
fn run_hyper(config: Config, reload: Reload) -> Result<(), StartError> {
    let threads = config.server.worker_threads();
    side_runtime()?.block_on(async {
        let signals = listen_for_signals();
        let hangups = listen_for_hangups();
        let (dev, bff, admin) = prepare(config).await?;
        reload.spawn(hangups, &bff);
        let listen = bff.config().server.listen;
        let listener = bind("server.listen", listen).await?;
        let server =
            bff_proxy::proxy::ProxyServer::start_on_threads(bff.clone(), listener, admin, threads)?;
        serving(&bff, "hyper");
        signalled(signals).await;
        drain(&bff).await;
        tracing::info!(
            timeout = ?bff.config().server.shutdown_timeout,
            "shutting down: finishing open requests"
        );
        server.shutdown().await;
        dev.shutdown().await;
        Ok(())
    })
}

/// pingora runs its own runtimes; the dev services, the admin listener and the
/// readiness warm-up run on a small runtime of their own beside it.
fn run_pingora(config: Config, reload: Reload) -> Result<(), StartError> {
    let side = side_runtime()?;
    let (signals, hangups) = {
        let _guard = side.enter();
        (listen_for_signals(), listen_for_hangups())
    };
    let (dev, bff, admin) = side.block_on(prepare(config))?;
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let _side_tasks = {
        let _guard = side.enter();
        reload.spawn(hangups, &bff);
        side_tasks(&bff, admin, &stop_rx)
    };
    serving(&bff, "pingora");
    let result = bff_proxy::pingora::run_blocking(bff, signals);
    let _ = stop.send(true);
    side.block_on(dev.shutdown());
    result
}
