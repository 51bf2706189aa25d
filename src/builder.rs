//! Building a [`Bff`] in code: the settings of `config.toml` by their TOML paths,
//! validated by the same code as the file (every problem names its setting).

use std::sync::Arc;

use crate::bff::Bff;
use crate::config::{Config, Env};
use crate::start::StartError;
use crate::store::SharedStore;

/// Builds a [`Bff`] without a config file. `Debug` shows which settings are set,
/// never their values (a client secret, the session keys).
///
/// ```no_run
/// # async fn demo() -> Result<(), bff_proxy::StartError> {
/// let bff = bff_proxy::Bff::builder()
///     .issuer("https://idp.example.com")
///     .client_id("spa")
///     .client_secret("env:BFF_CLIENT_SECRET")
///     .keys(["vUqhFABZp5xGtuGc//zqNm1RE5BdmW8dWI70Hto8GV8="])
///     .public_url("https://app.example.com")
///     .route(bff_proxy::RouteSpec::new("/api/").upstream("http://127.0.0.1:3000"))
///     .build()
///     .await?;
/// # let _ = bff;
/// # Ok(())
/// # }
/// ```
///
/// Like the binary, the builder reads the process environment: `env:NAME` values
/// (secrets kept out of code) and `BFF_<SECTION>_<KEY>` variables, which override
/// what the code sets (`BFF_OIDC_ISSUER`, `BFF_SESSION_KEYS`…: the same names as
/// for `config.toml`). [`BffBuilder::env`] gives it another environment.
#[must_use]
pub struct BffBuilder {
    table: toml::Table,
    routes: Vec<toml::Value>,
    env: Env,
    store: Option<Arc<dyn SharedStore>>,
}

impl Default for BffBuilder {
    fn default() -> Self {
        Self {
            table: toml::Table::new(),
            routes: Vec::new(),
            env: Env::from_process(),
            store: None,
        }
    }
}

impl std::fmt::Debug for BffBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sections: Vec<String> = self
            .table
            .iter()
            .flat_map(|(section, v)| {
                v.as_table()
                    .into_iter()
                    .flat_map(move |t| t.keys().map(move |k| format!("{section}.{k}")))
            })
            .collect();
        f.debug_struct("BffBuilder")
            .field("settings", &sections)
            .field("routes", &self.routes.len())
            .finish_non_exhaustive()
    }
}

/// One `[[routes]]` entry for [`BffBuilder::route`].
#[must_use]
#[derive(Debug, Clone)]
pub struct RouteSpec {
    table: toml::Table,
}

impl RouteSpec {
    /// A route for requests whose path starts with `path` (`auth = "required"`
    /// unless set otherwise).
    pub fn new(path: impl Into<String>) -> Self {
        let mut table = toml::Table::new();
        table.insert("path".into(), toml::Value::String(path.into()));
        Self { table }
    }

    /// `upstream`: where the route's requests go (else the application behind the
    /// tower layer gets them).
    pub fn upstream(self, url: impl Into<String>) -> Self {
        self.set("upstream", url.into())
    }

    /// Any other route setting by its name (`auth`, `csrf`, `methods`,
    /// `strip_prefix`, `static_dir`), as the config file spells it.
    pub fn set(mut self, key: &str, value: impl Into<toml::Value>) -> Self {
        self.table.insert(key.to_owned(), value.into());
        self
    }
}

impl Bff {
    /// A builder for a `Bff` configured in code.
    pub fn builder() -> BffBuilder {
        BffBuilder::default()
    }
}

impl BffBuilder {
    /// Any setting by its TOML path (`"refresh.skew"`, `"session.mode"`), with the
    /// value the file would hold (`"30s"`, `"server"`).
    pub fn set(mut self, path: &str, value: impl Into<toml::Value>) -> Self {
        let (section, key) = path.split_once('.').unwrap_or(("", path));
        let entry = self
            .table
            .entry(section.to_owned())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if let toml::Value::Table(t) = entry {
            t.insert(key.to_owned(), value.into());
        }
        self
    }

    /// `oidc.issuer`.
    pub fn issuer(self, url: impl Into<String>) -> Self {
        self.set("oidc.issuer", url.into())
    }

    /// `oidc.client_id`.
    pub fn client_id(self, id: impl Into<String>) -> Self {
        self.set("oidc.client_id", id.into())
    }

    /// `oidc.client_secret`: the secret itself, or `env:NAME` / `file:PATH` as in
    /// the file.
    pub fn client_secret(self, secret: impl Into<String>) -> Self {
        self.set("oidc.client_secret", secret.into())
    }

    /// `session.keys`: base64 keys, the first seals (`bff-proxy keygen` makes one).
    pub fn keys<I, S>(self, keys: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let keys: Vec<toml::Value> = keys
            .into_iter()
            .map(|k| toml::Value::String(k.into()))
            .collect();
        self.set("session.keys", keys)
    }

    /// `server.public_url`: the URL the browser reaches the BFF at (the
    /// `redirect_uri` is made from it). Required when building in code.
    pub fn public_url(self, url: impl Into<String>) -> Self {
        self.set("server.public_url", url.into())
    }

    /// `store.kind = "redis"` and `store.url`: state shared with other replicas
    /// (refresh coordination, revocations, server-mode sessions) lives in Redis.
    /// `build` connects it and fails, naming `store.url`, when Redis does not
    /// answer. The URL may be `env:NAME` or `file:PATH`, as in the file; other
    /// `store.*` settings (`key_prefix`, `timeout`) go through [`BffBuilder::set`].
    pub fn redis(self, url: impl Into<String>) -> Self {
        self.set("store.kind", "redis").set("store.url", url.into())
    }

    /// Adds a route: rules for the requests whose path starts with its `path`.
    /// In front of an app (the tower layer) a route is needed only where the app
    /// wants rules; other paths pass to the app.
    pub fn route(mut self, route: RouteSpec) -> Self {
        self.routes.push(toml::Value::Table(route.table));
        self
    }

    /// Where `env:NAME` secrets and `BFF_<SECTION>_<KEY>` overrides are read (the
    /// process environment unless given: tests pass their own).
    pub fn env(mut self, env: Env) -> Self {
        self.env = env;
        self
    }

    /// Shares state through this store instead of the one `[store]` names.
    pub fn store(mut self, store: Arc<dyn SharedStore>) -> Self {
        self.store = Some(store);
        self
    }

    /// Validates the settings (every problem named by its TOML path), builds the
    /// core and connects the store.
    pub async fn build(self) -> Result<Bff, StartError> {
        let has_public_url = self
            .table
            .get("server")
            .and_then(toml::Value::as_table)
            .is_some_and(|s| s.contains_key("public_url"))
            || self.env.get("BFF_SERVER_PUBLIC_URL").is_some();
        if !has_public_url {
            return Err(StartError::setting(
                "server.public_url",
                "required when the BFF is built in code: the redirect_uri is made from it",
            ));
        }
        let mut table = self.table;
        if !self.routes.is_empty() {
            table.insert("routes".into(), toml::Value::Array(self.routes));
        }
        let text =
            toml::to_string(&table).map_err(|e| StartError::setting("(builder)", e.to_string()))?;
        let config = Config::from_toml(&text, ".".as_ref(), &self.env)?;
        let bff = Bff::new(config)?;
        match self.store {
            Some(store) => Ok(bff.with_store(store)),
            None => bff.connect_store().await,
        }
    }
}
