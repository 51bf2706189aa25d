//! Secret-bearing settings: a literal, `env:NAME` or `file:/path`.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer};
use subtle::ConstantTimeEq as _;

use super::Env;

/// The most bytes read from a `file:` secret (a PEM key or certificate chain fits
/// many times over); a larger file is refused rather than read.
const MAX_SECRET_FILE_BYTES: u64 = 1024 * 1024;

/// Where a secret comes from, as written in the config. The literal form is redacted
/// in `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// The value itself.
    Literal(String),
    /// `env:NAME`: the value of an environment variable.
    Env(String),
    /// `file:/path`: the contents of a file (one trailing newline removed). A relative
    /// path is relative to the config file's folder.
    File(PathBuf),
}

impl SecretSource {
    /// Parses the config text form.
    #[must_use]
    pub fn parse(text: &str) -> Self {
        if let Some(name) = text.strip_prefix("env:") {
            Self::Env(name.to_owned())
        } else if let Some(path) = text.strip_prefix("file:") {
            Self::File(PathBuf::from(path))
        } else {
            Self::Literal(text.to_owned())
        }
    }

    /// Reads the secret. The error says where it looked, never what it found.
    pub fn resolve(&self, env: &Env, base_dir: &Path) -> Result<Secret, String> {
        match self {
            Self::Literal(text) => Ok(Secret(text.clone())),
            Self::Env(name) => {
                if name.is_empty() {
                    return Err("env: needs a variable name, like env:BFF_SESSION_KEY".into());
                }
                env.get(name)
                    .map(|v| Secret(v.to_owned()))
                    .ok_or_else(|| format!("environment variable {name} is not set"))
            }
            Self::File(path) => {
                let full = base_dir.join(path);
                let meta = std::fs::metadata(&full)
                    .map_err(|e| format!("cannot read {}: {e}", full.display()))?;
                // A device or a pipe (file:/dev/zero) would be read without end.
                if !meta.is_file() {
                    return Err(format!("{} is not a regular file", full.display()));
                }
                let too_large = || {
                    format!(
                        "{} is larger than {MAX_SECRET_FILE_BYTES} bytes, the most a secret file may hold",
                        full.display()
                    )
                };
                if meta.len() > MAX_SECRET_FILE_BYTES {
                    return Err(too_large());
                }
                let mut bytes = Vec::new();
                std::io::Read::read_to_end(
                    &mut std::io::Read::take(
                        std::fs::File::open(&full)
                            .map_err(|e| format!("cannot read {}: {e}", full.display()))?,
                        MAX_SECRET_FILE_BYTES + 1,
                    ),
                    &mut bytes,
                )
                .map_err(|e| format!("cannot read {}: {e}", full.display()))?;
                if bytes.len() as u64 > MAX_SECRET_FILE_BYTES {
                    return Err(too_large());
                }
                let mut text = String::from_utf8(bytes)
                    .map_err(|_| format!("{} is not UTF-8 text", full.display()))?;
                if text.ends_with('\n') {
                    text.pop();
                    if text.ends_with('\r') {
                        text.pop();
                    }
                }
                Ok(Secret(text))
            }
        }
    }

    /// The environment variable this source names, if it is `env:`.
    #[must_use]
    pub fn env_name(&self) -> Option<&str> {
        match self {
            Self::Env(name) => Some(name),
            _ => None,
        }
    }
}

impl fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Literal(_) => f.write_str("Literal(<redacted>)"),
            Self::Env(name) => write!(f, "Env({name:?})"),
            Self::File(path) => write!(f, "File({path:?})"),
        }
    }
}

impl<'de> Deserialize<'de> for SecretSource {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Ok(Self::parse(&text))
    }
}

/// A resolved secret. `Debug` shows only its length; comparison is constant-time.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    #[must_use]
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value, for the one place that needs it (sealing, client authentication).
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Constant-time comparison with a candidate value.
    #[must_use]
    pub fn matches(&self, candidate: &str) -> bool {
        self.0.as_bytes().ct_eq(candidate.as_bytes()).into()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret(<redacted {} bytes>)", self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_and_pipes_are_not_secret_files() {
        let env = Env::default();
        for device in ["/dev/zero", "/dev/urandom", "/dev/null", "/"] {
            let e = SecretSource::File(device.into())
                .resolve(&env, Path::new("."))
                .unwrap_err();
            assert!(e.contains("not a regular file"), "{device}: {e}");
        }
    }

    #[test]
    fn forms_parse() {
        assert_eq!(SecretSource::parse("env:X"), SecretSource::Env("X".into()));
        assert_eq!(
            SecretSource::parse("file:/a/b"),
            SecretSource::File("/a/b".into())
        );
        assert_eq!(
            SecretSource::parse("plain"),
            SecretSource::Literal("plain".into())
        );
    }

    #[test]
    fn resolution_and_its_errors() {
        let env = Env::from_pairs([("SET", "from-env")]);
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("s.txt"), "from-file\n").unwrap();
        let base = dir.path();
        let get = |s: &str| SecretSource::parse(s).resolve(&env, base);
        assert_eq!(get("lit").unwrap().expose(), "lit");
        assert_eq!(get("env:SET").unwrap().expose(), "from-env");
        assert_eq!(get("file:s.txt").unwrap().expose(), "from-file");
        assert!(get("env:UNSET").unwrap_err().contains("UNSET is not set"));
        assert!(get("env:").is_err());
        assert!(get("file:missing.txt").unwrap_err().contains("missing.txt"));
    }

    #[test]
    fn debug_redacts_and_comparison_works() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret:?}"), "Secret(<redacted 7 bytes>)");
        assert!(secret.matches("hunter2"));
        assert!(!secret.matches("hunter3"));
        assert!(!secret.matches("hunter"));
        assert!(!format!("{:?}", SecretSource::parse("hunter2")).contains("hunter2"));
    }
}
