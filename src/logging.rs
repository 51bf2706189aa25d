//! Logging: the binary's subscriber, and the rule that keeps tokens out of it at
//! every level.
//!
//! Our own code never logs a token, key, secret or cookie value, at any level. Other
//! crates' debug and trace output is not ours to vouch for (pingora's proxy logs the
//! whole upstream request head, `Authorization` included, at debug), so whatever
//! `RUST_LOG` asks for, events of other crates are kept only at `info` and above,
//! and records that come through the `log` crate are cut at `info` where they enter.
//!
//! ```
//! use bff_proxy::logging::is_allowed;
//! use tracing::Level;
//!
//! assert!(is_allowed("bff_proxy::refresh", &Level::TRACE));
//! assert!(!is_allowed("pingora_proxy::proxy_h1", &Level::DEBUG));
//! assert!(is_allowed("pingora_core::server", &Level::INFO));
//! ```
//!
//! `[log]` picks the format (`text`, or `json`: one object per line) and the level;
//! the level can change while the proxy runs ([`LogHandle::set_level`], on SIGHUP).

use tracing::Level;
use tracing_subscriber::Layer;
use tracing_subscriber::Registry;
use tracing_subscriber::filter::{EnvFilter, FilterExt as _, filter_fn};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::reload;

/// How log lines are written (`log.format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line (tracing-subscriber's JSON formatter).
    Json,
}

/// Our crate's log targets start with this.
const OWN_TARGET: &str = "bff_proxy";

/// The target of the access log lines (one per request).
pub const ACCESS_TARGET: &str = "bff_proxy::access";

/// Whether an event of `target` at `level` may be logged: ours at any level,
/// everyone else's at `info` and above.
#[must_use]
pub fn is_allowed(target: &str, level: &Level) -> bool {
    target.starts_with(OWN_TARGET) || *level <= Level::INFO
}

/// Parses `log.level`: a level (`info`) or `RUST_LOG`-style directives
/// (`warn,bff_proxy=debug`).
pub fn parse_level(text: &str) -> Result<EnvFilter, String> {
    if text.trim().is_empty() {
        return Err(
            "must name a level (error, warn, info, debug, trace) or RUST_LOG-style directives"
                .into(),
        );
    }
    EnvFilter::builder()
        .parse(text)
        .map_err(|e| format!("not a level or RUST_LOG-style directives: {e}"))
}

/// What can change in the installed logger while it runs: the level (on SIGHUP).
pub struct LogHandle {
    filter: reload::Handle<EnvFilter, Registry>,
    /// `RUST_LOG` was set at start: it wins over `log.level`, then and on reload.
    from_env: bool,
}

impl std::fmt::Debug for LogHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogHandle")
            .field("from_env", &self.from_env)
            .finish_non_exhaustive()
    }
}

impl LogHandle {
    /// Applies a new `log.level` (ignored while `RUST_LOG` rules, which is logged).
    pub fn set_level(&self, level: &str) -> Result<(), String> {
        if self.from_env {
            tracing::info!("log.level is not applied: RUST_LOG sets the level");
            return Ok(());
        }
        let filter = parse_level(level)?;
        self.filter
            .reload(filter)
            .map_err(|e| format!("cannot change the log level: {e}"))
    }
}

/// Installs the process-wide subscriber: lines to `writer` as `format` says
/// (`json`: tracing-subscriber's JSON formatter, one object per line with the
/// event's fields flattened and the request's span, so its `request_id`, beside
/// them), filtered by `RUST_LOG` when set, else by `level`; other crates' output
/// capped at `info`; and the bridge for crates that log through `log` (pingora,
/// rustls), capped at `info` too. Fails when a subscriber is installed already.
pub fn install<W>(
    writer: W,
    format: LogFormat,
    level: &str,
    rust_log: Option<&str>,
    ansi: bool,
) -> Result<LogHandle, String>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let rust_log = rust_log.filter(|d| !d.trim().is_empty());
    let from_env = rust_log.is_some_and(|d| EnvFilter::try_new(d).is_ok());
    let env = match rust_log.and_then(|d| EnvFilter::try_new(d).ok()) {
        Some(filter) => filter,
        None => parse_level(level).unwrap_or_else(|_| EnvFilter::new("info")),
    };
    let (env, handle) = reload::Layer::new(env);
    let cap = filter_fn(|meta| is_allowed(meta.target(), meta.level()));
    let layer: Box<dyn Layer<Registry> + Send + Sync> = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(writer)
            .with_ansi(ansi)
            .with_filter(cap.and(env))
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(writer)
            .with_filter(cap.and(env))
            .boxed(),
    };
    let subscriber = tracing_subscriber::registry().with(layer);
    tracing::subscriber::set_global_default(subscriber)
        .map_err(|e| format!("cannot install the logger: {e}"))?;
    tracing_log::LogTracer::builder()
        .with_max_level(tracing_log::log::LevelFilter::Info)
        .init()
        .map_err(|e| format!("cannot install the log bridge: {e}"))?;
    Ok(LogHandle {
        filter: handle,
        from_env,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn other_crates_stop_at_info() {
        for level in [Level::TRACE, Level::DEBUG] {
            for target in [
                "pingora_proxy::proxy_h1",
                "hyper::proto",
                "h2",
                "redis",
                "log",
            ] {
                assert!(!is_allowed(target, &level), "{target} at {level}");
            }
            assert!(is_allowed("bff_proxy::bff", &level));
        }
        for level in [Level::INFO, Level::WARN, Level::ERROR] {
            assert!(is_allowed("pingora_core::server", &level));
        }
    }
}
