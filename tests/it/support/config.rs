//! The one config builder of the tests: what every suite shares (the one key, the
//! `bff` client, a public URL) and what each adds, as `config.toml` lines.

use std::path::Path;

use bff_proxy::config::{Config, Env};

use super::KEY;

/// A `config.toml` under construction.
#[derive(Debug, Clone)]
pub struct TestConfig {
    sections: Vec<(&'static str, Vec<String>)>,
    routes: Vec<Vec<String>>,
}

impl TestConfig {
    /// The `bff` client at `issuer`, reached at `public_url`, sealed with the test
    /// key; no client secret, no routes yet.
    pub fn new(issuer: &str, public_url: &str) -> Self {
        Self {
            sections: vec![
                ("server", vec![format!("public_url = \"{public_url}\"")]),
                (
                    "oidc",
                    vec![
                        format!("issuer = \"{issuer}\""),
                        "client_id = \"bff\"".into(),
                    ],
                ),
                ("session", vec![format!("keys = [\"{KEY}\"]")]),
            ],
            routes: Vec::new(),
        }
    }

    /// Adds a line (`key = value`, as the file spells it) to a section.
    pub fn set(mut self, section: &'static str, line: impl Into<String>) -> Self {
        let line = line.into();
        match self.sections.iter_mut().find(|(name, _)| *name == section) {
            Some((_, lines)) => lines.push(line),
            None => self.sections.push((section, vec![line])),
        }
        self
    }

    /// `oidc.client_secret`.
    pub fn secret(self, secret: &str) -> Self {
        self.set("oidc", format!("client_secret = \"{secret}\""))
    }

    /// A `[[routes]]` entry at `path` with these lines.
    pub fn route(mut self, path: &str, lines: &[&str]) -> Self {
        let mut route = vec![format!("path = \"{path}\"")];
        route.extend(lines.iter().map(|l| (*l).to_owned()));
        self.routes.push(route);
        self
    }

    /// A `[[routes]]` entry to an upstream.
    pub fn upstream(self, path: &str, upstream: &str, lines: &[&str]) -> Self {
        let target = format!("upstream = \"{upstream}\"");
        let mut all = vec![target.as_str()];
        all.extend_from_slice(lines);
        self.route(path, &all)
    }

    /// The file.
    pub fn toml(&self) -> String {
        let mut text = String::new();
        for (name, lines) in &self.sections {
            text.push_str(&format!("[{name}]\n"));
            for line in lines {
                text.push_str(line);
                text.push('\n');
            }
        }
        for route in &self.routes {
            text.push_str("[[routes]]\n");
            for line in route {
                text.push_str(line);
                text.push('\n');
            }
        }
        text
    }

    /// Loaded as the binary would load it from a file in `dir`.
    pub fn load_in(&self, dir: &Path, env: &Env) -> Config {
        let text = self.toml();
        Config::from_toml(&text, dir, env).unwrap_or_else(|e| panic!("{e}\n{text}"))
    }

    /// Loaded with no environment, problems and all.
    pub fn try_load(&self) -> Result<Config, bff_proxy::config::ConfigError> {
        Config::from_toml(&self.toml(), ".".as_ref(), &Env::default())
    }

    /// Loaded with no environment.
    pub fn load(&self) -> Config {
        self.load_in(".".as_ref(), &Env::default())
    }
}
