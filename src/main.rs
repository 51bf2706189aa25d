//! The `bff-proxy` binary: runs the proxy, checks a config, or makes a key.
//!
//! ```text
//! bff-proxy --config config.toml [--engine pingora|hyper]
//! bff-proxy check-config --config config.toml
//! bff-proxy keygen
//! ```

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use bff_proxy::config::{Config, Engine, Env};
use bff_proxy::seal::KeyRing;
use clap::{Parser, Subcommand, ValueEnum};

/// Exit code for a configuration the proxy cannot start with (EX_CONFIG-like usage
/// error, as linkerd2-proxy does).
const EXIT_BAD_CONFIG: u8 = 64;
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
    // RUST_LOG picks the level; no level lets another crate log a token.
    let directives = std::env::var("RUST_LOG").ok();
    if let Err(e) = bff_proxy::logging::install(
        std::io::stderr,
        directives.as_deref(),
        std::io::IsTerminal::is_terminal(&std::io::stderr()),
    ) {
        eprintln!("bff-proxy: {e}");
    }
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
    if let Some(engine) = engine {
        config.server.engine = match engine {
            EngineArg::Pingora => Engine::Pingora,
            EngineArg::Hyper => Engine::Hyper,
        };
    }
    for w in &config.warnings {
        tracing::warn!(setting = %w.path, "{}", w.message);
    }
    match config.server.engine {
        Engine::Hyper => run_hyper(config),
        Engine::Pingora => run_pingora(config),
    }
}

fn run_hyper(config: Config) -> ExitCode {
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if let Some(threads) = config.server.threads {
        runtime.worker_threads(threads);
    }
    let runtime = match runtime.build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bff-proxy: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bff-proxy: {e}");
            ExitCode::FAILURE
        }
    }
}

/// pingora runs its own runtimes; the dev services, the admin listener and the
/// readiness warm-up run on a small runtime of their own beside it.
fn run_pingora(config: Config) -> ExitCode {
    let side = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bff-proxy: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let started = side.block_on(async {
        let dev = bff_proxy::dev::DevServices::start(&config).await?;
        let admin = match config.server.admin_listen {
            Some(addr) => Some(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|e| format!("server.admin_listen {addr}: {e}"))?,
            ),
            None => None,
        };
        // Bound here, so a taken port is one clear line rather than pingora's panic.
        let probe = std::net::TcpListener::bind(config.server.listen)
            .map_err(|e| format!("server.listen {}: {e}", config.server.listen))?;
        drop(probe);
        Ok::<_, String>((dev, admin))
    });
    let (dev, admin) = match started {
        Ok(s) => s,
        Err(e) => {
            eprintln!("bff-proxy: {e}");
            return ExitCode::FAILURE;
        }
    };
    let bff = match bff_proxy::Bff::new(config) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("bff-proxy: {e}");
            return ExitCode::FAILURE;
        }
    };
    let bff = match side.block_on(bff.connect_store()) {
        Ok(b) => Arc::new(b),
        Err(e) => {
            eprintln!("bff-proxy: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    side.spawn(bff_proxy::admin::warm_up(Arc::clone(&bff), stop_rx.clone()));
    if let Some(admin) = admin {
        side.spawn(bff_proxy::admin::serve_admin(
            Arc::clone(&bff),
            admin,
            stop_rx,
        ));
    }
    tracing::info!(
        listen = %bff.config().server.listen,
        admin = ?bff.config().server.admin_listen,
        public_url = %bff.config().resolved.public_url,
        engine = "pingora",
        "bff-proxy serving"
    );
    bff_proxy::pingora::run_blocking(bff);
    let _ = stop.send(true);
    side.block_on(dev.shutdown());
    ExitCode::SUCCESS
}

/// Starts the dev services the config asks for, the core and the hyper engine, and
/// runs until SIGINT or SIGTERM.
async fn serve(config: Config) -> Result<(), String> {
    let dev = bff_proxy::dev::DevServices::start(&config).await?;
    let bff = Arc::new(bff_proxy::Bff::new(config)?.connect_store().await?);
    let server = bff_proxy::proxy::ProxyServer::start(Arc::clone(&bff))
        .await
        .map_err(|e| format!("server.listen {}: {e}", bff.config().server.listen))?;
    tracing::info!(
        listen = %server.addr(),
        admin = ?server.admin_addr(),
        public_url = %bff.config().resolved.public_url,
        engine = "hyper",
        "bff-proxy serving"
    );
    wait_for_signal().await;
    tracing::info!(
        timeout = ?bff.config().server.shutdown_timeout,
        "shutting down: finishing open requests"
    );
    server.shutdown().await;
    dev.shutdown().await;
    Ok(())
}

async fn wait_for_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
