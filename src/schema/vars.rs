//! The environment a config reads: `BFF_<SECTION>_<KEY>` overrides and `env:`
//! secrets.

use std::collections::HashMap;
use std::fmt;

/// The environment the config reads: `BFF_<SECTION>_<KEY>` overrides and `env:`
/// secrets. Tests build their own instead of touching the process environment.
#[derive(Clone, Default)]
pub struct Env {
    vars: HashMap<String, String>,
}

impl fmt::Debug for Env {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Env")
            .field("vars", &self.vars.len())
            .finish_non_exhaustive()
    }
}

impl Env {
    /// The process environment (variables that are not UTF-8 are skipped).
    #[must_use]
    pub fn from_process() -> Self {
        Self {
            vars: std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
                .collect(),
        }
    }

    /// An environment of the given pairs.
    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        Self {
            vars: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(String::as_str)
    }

    pub(crate) fn bff_vars(&self) -> impl Iterator<Item = (&str, &str)> {
        let mut vars: Vec<(&str, &str)> = self
            .vars
            .iter()
            .filter(|(k, _)| k.starts_with("BFF_"))
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        vars.sort_unstable();
        vars.into_iter()
    }
}
