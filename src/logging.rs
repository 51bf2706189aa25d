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

use tracing::Level;
use tracing_subscriber::Layer as _;
use tracing_subscriber::filter::{EnvFilter, FilterExt as _, filter_fn};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt as _;

/// Our crate's log targets start with this.
const OWN_TARGET: &str = "bff_proxy";

/// Whether an event of `target` at `level` may be logged: ours at any level,
/// everyone else's at `info` and above.
#[must_use]
pub fn is_allowed(target: &str, level: &Level) -> bool {
    target.starts_with(OWN_TARGET) || *level <= Level::INFO
}

/// Installs the process-wide subscriber: text lines to `writer`, filtered by
/// `directives` (`RUST_LOG` syntax; `info` when absent or unreadable), other crates'
/// output capped at `info`; and the bridge for crates that log through `log`
/// (pingora, rustls), capped at `info` too. Fails when a subscriber is installed
/// already.
pub fn install<W>(writer: W, directives: Option<&str>, ansi: bool) -> Result<(), String>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let env = directives
        .and_then(|d| EnvFilter::try_new(d).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let cap = filter_fn(|meta| is_allowed(meta.target(), meta.level()));
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .with_ansi(ansi)
        .with_filter(cap.and(env));
    let subscriber = tracing_subscriber::registry().with(layer);
    tracing::subscriber::set_global_default(subscriber)
        .map_err(|e| format!("cannot install the logger: {e}"))?;
    tracing_log::LogTracer::builder()
        .with_max_level(tracing_log::log::LevelFilter::Info)
        .init()
        .map_err(|e| format!("cannot install the log bridge: {e}"))
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
