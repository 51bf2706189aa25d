//! What `config.toml` can say: its sections and their defaults, secret sources
//! (`file:`, `env:`), the environment it reads, and the [`Problem`] a wrong setting
//! is reported as. Loading and checking a file is `config`'s job; this is the
//! vocabulary both it and the rest of the crate speak.

mod secret;
mod sections;
mod vars;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

pub use secret::{Secret, SecretSource};
pub use sections::*;
pub use vars::Env;

/// One thing wrong (or worth a warning) in the config, at a TOML path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where: `session.keys[0]`, `routes[2].upstream`, or the env var's name.
    pub path: String,
    /// What and why, never a secret value.
    pub message: String,
}

impl Problem {
    pub(crate) fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// An optional duration (see [`duration`]).
mod opt_duration {
    use std::time::Duration;

    use serde::Deserializer;

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        super::duration::deserialize(d).map(Some)
    }
}

/// Durations as humantime strings: "30s", "12h", "1h 30m".
mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    /// No setting means anything near this; past it, adding a duration to a clock
    /// reading could overflow. Each setting has its own, lower bound in validation.
    pub(super) const MAX: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        let parsed = humantime::parse_duration(&text).map_err(|_| {
            serde::de::Error::custom(format!(
                "invalid duration {text:?}: expected a number and a unit, like \"30s\" or \"12h\""
            ))
        })?;
        if parsed > MAX {
            return Err(serde::de::Error::custom(format!(
                "duration {text:?} is far too long"
            )));
        }
        Ok(parsed)
    }
}
