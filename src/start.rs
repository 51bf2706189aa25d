//! Why the BFF could not start: a wrong setting (named by its TOML path; the binary
//! exits 64) or something the config names that could not be used (exit 69).

use std::fmt;

/// Why the BFF could not start. A bad setting names it (the binary exits 64 for
/// those); a service that did not answer or a port that is taken is the machine's
/// state, not the config's (exit 69).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StartError {
    /// A setting is wrong: its TOML path and why.
    Setting {
        /// The setting's TOML path, like `session.keys`.
        setting: String,
        /// What is wrong with it.
        why: String,
    },
    /// The config has problems, each named by its TOML path.
    Config(crate::config::ConfigError),
    /// Something the config names could not be reached or opened (the store, a
    /// listener's address): which setting, and what happened.
    Unavailable {
        /// The setting naming the service or address.
        setting: String,
        /// What happened.
        why: String,
    },
}

impl StartError {
    /// A wrong setting.
    pub fn setting(setting: impl Into<String>, why: impl Into<String>) -> Self {
        Self::Setting {
            setting: setting.into(),
            why: why.into(),
        }
    }

    /// A service or address that could not be used.
    pub fn unavailable(setting: impl Into<String>, why: impl Into<String>) -> Self {
        Self::Unavailable {
            setting: setting.into(),
            why: why.into(),
        }
    }

    /// Whether the config itself is wrong (exit 64) rather than the machine's state.
    #[must_use]
    pub fn is_bad_setting(&self) -> bool {
        matches!(self, Self::Setting { .. } | Self::Config(_))
    }
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Setting { setting, why } | Self::Unavailable { setting, why } => {
                write!(f, "{setting}: {why}")
            }
            Self::Config(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for StartError {}

impl From<crate::config::ConfigError> for StartError {
    fn from(e: crate::config::ConfigError) -> Self {
        Self::Config(e)
    }
}
