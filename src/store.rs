//! The shared store: the primitives replicas coordinate through (DESIGN.md "Shared
//! state and scale-out"): owned locks with a time-to-live that their holder renews,
//! and values with a time-to-live. Two implementations: [`MemoryStore`] (one
//! process) and [`RedisStore`] (replicas behind a load balancer).
//!
//! Names are built by callers from hashes and ids, never from tokens, and values that
//! carry tokens are sealed with the key ring before they get here: nothing in the
//! store is a token in clear. Every key has a time-to-live.
//!
//! ```
//! use std::time::Duration;
//! use bff_proxy::store::{MemoryStore, SharedStore};
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let store = MemoryStore::new();
//! assert!(store.try_lock("refresh:abc", "replica-a", Duration::from_secs(5)).await.unwrap());
//! assert!(!store.try_lock("refresh:abc", "replica-b", Duration::from_secs(5)).await.unwrap());
//! # });
//! ```

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;

/// Lower-case hex of bytes: how hashes become store names.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// The hex SHA-256 of an id: store names never carry the id itself.
pub(crate) fn sha256_hex(id: &[u8]) -> String {
    use sha2::Digest as _;
    hex(&sha2::Sha256::digest(id))
}

/// Why the store could not answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The store is unreachable or failed; callers fall back to local behaviour.
    #[error("shared store unavailable: {0}")]
    Unavailable(String),
}

/// What replicas coordinate through.
#[async_trait]
pub trait SharedStore: Send + Sync {
    /// Takes the lock `name` for `owner` if nobody holds it. True when taken.
    async fn try_lock(&self, name: &str, owner: &str, ttl: Duration) -> Result<bool, StoreError>;
    /// Extends the lock if `owner` still holds it. True when extended.
    async fn renew_lock(&self, name: &str, owner: &str, ttl: Duration) -> Result<bool, StoreError>;
    /// Releases the lock if `owner` holds it.
    async fn unlock(&self, name: &str, owner: &str) -> Result<(), StoreError>;
    /// Stores a value for `ttl`.
    async fn put(&self, name: &str, value: &[u8], ttl: Duration) -> Result<(), StoreError>;
    /// Reads a value.
    async fn get(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Deletes a value.
    async fn delete(&self, name: &str) -> Result<(), StoreError>;
    /// Whether the store answers (readiness). The memory store always does.
    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
    /// Reads several values at once (one round trip where the store allows).
    async fn get_many(&self, names: &[String]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            out.push(self.get(name).await?);
        }
        Ok(out)
    }
}

struct Entry {
    value: Vec<u8>,
    expires: Instant,
}

/// The store of a single process. Expired entries are dropped when touched and
/// swept as the map grows.
#[derive(Default)]
pub struct MemoryStore {
    entries: Mutex<HashMap<String, Entry>>,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MemoryStore")
    }
}

/// Past this many entries a write sweeps the expired ones.
const SWEEP_AT: usize = 100_000;

impl MemoryStore {
    /// An empty store.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    fn with<T>(&self, f: impl FnOnce(&mut HashMap<String, Entry>, Instant) -> T) -> T {
        let mut map = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        if map.len() > SWEEP_AT {
            map.retain(|_, e| e.expires > now);
        }
        f(&mut map, now)
    }
}

fn live<'a>(map: &'a HashMap<String, Entry>, name: &str, now: Instant) -> Option<&'a Entry> {
    map.get(name).filter(|e| e.expires > now)
}

#[async_trait]
impl SharedStore for MemoryStore {
    async fn try_lock(&self, name: &str, owner: &str, ttl: Duration) -> Result<bool, StoreError> {
        Ok(self.with(|map, now| {
            if live(map, name, now).is_some() {
                return false;
            }
            map.insert(
                name.to_owned(),
                Entry {
                    value: owner.as_bytes().to_vec(),
                    expires: now + ttl,
                },
            );
            true
        }))
    }

    async fn renew_lock(&self, name: &str, owner: &str, ttl: Duration) -> Result<bool, StoreError> {
        Ok(self.with(|map, now| match map.get_mut(name) {
            Some(e) if e.expires > now && e.value == owner.as_bytes() => {
                e.expires = now + ttl;
                true
            }
            _ => false,
        }))
    }

    async fn unlock(&self, name: &str, owner: &str) -> Result<(), StoreError> {
        self.with(|map, now| {
            if live(map, name, now).is_some_and(|e| e.value == owner.as_bytes()) {
                map.remove(name);
            }
        });
        Ok(())
    }

    async fn put(&self, name: &str, value: &[u8], ttl: Duration) -> Result<(), StoreError> {
        self.with(|map, now| {
            map.insert(
                name.to_owned(),
                Entry {
                    value: value.to_vec(),
                    expires: now + ttl,
                },
            );
        });
        Ok(())
    }

    async fn get(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.with(|map, now| live(map, name, now).map(|e| e.value.clone())))
    }

    async fn delete(&self, name: &str) -> Result<(), StoreError> {
        self.with(|map, _| map.remove(name));
        Ok(())
    }
}

/// Redis, shared by replicas: a connection manager (reconnects by itself), every
/// key under a prefix, every command bounded in time.
#[derive(Clone)]
pub struct RedisStore {
    conn: redis::aio::ConnectionManager,
    prefix: String,
    timeout: Duration,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// Extends a lock only for its owner.
const RENEW: &str = r"if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) else return 0 end";
/// Deletes a lock only for its owner.
const UNLOCK: &str = r"if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end";

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

impl RedisStore {
    /// Connects to `url` (the URL is a secret: it never reaches a log or an error).
    /// `rediss://` is Redis over TLS, verified against the system's roots (or the
    /// file `SSL_CERT_FILE` names); a password and a database number go in the URL
    /// (`rediss://:PASSWORD@host:6380/3`).
    pub async fn connect(url: &str, prefix: &str, timeout: Duration) -> Result<Self, StoreError> {
        if url.starts_with("rediss://") {
            // The redis client builds its TLS config from the process's default
            // provider: ours is ring (already installed is fine).
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let client = redis::Client::open(url)
            .map_err(|_| StoreError::Unavailable("store.url is not a Redis URL".into()))?;
        let conn = tokio::time::timeout(timeout, redis::aio::ConnectionManager::new(client))
            .await
            .map_err(|_| StoreError::Unavailable("Redis did not answer in time".into()))?
            .map_err(unavailable)?;
        Ok(Self {
            conn,
            prefix: prefix.to_owned(),
            timeout,
        })
    }

    /// The same store with another time limit per command (the connection itself
    /// was made within the limit given to [`RedisStore::connect`]).
    #[must_use]
    pub fn with_command_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    async fn run<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, StoreError> {
        let mut conn = self.conn.clone();
        tokio::time::timeout(self.timeout, cmd.query_async(&mut conn))
            .await
            .map_err(|_| StoreError::Unavailable("Redis did not answer in time".into()))?
            .map_err(unavailable)
    }

    async fn script(&self, script: &str, key: &str, args: &[String]) -> Result<i64, StoreError> {
        let mut conn = self.conn.clone();
        let script = redis::Script::new(script);
        let mut invocation = script.key(key);
        for a in args {
            invocation.arg(a);
        }
        tokio::time::timeout(self.timeout, invocation.invoke_async(&mut conn))
            .await
            .map_err(|_| StoreError::Unavailable("Redis did not answer in time".into()))?
            .map_err(unavailable)
    }
}

#[async_trait]
impl SharedStore for RedisStore {
    async fn ping(&self) -> Result<(), StoreError> {
        self.run::<String>(&redis::cmd("PING")).await.map(|_| ())
    }

    async fn try_lock(&self, name: &str, owner: &str, ttl: Duration) -> Result<bool, StoreError> {
        let reply: Option<String> = self
            .run(
                redis::cmd("SET")
                    .arg(self.key(name))
                    .arg(owner)
                    .arg("NX")
                    .arg("PX")
                    .arg(millis(ttl)),
            )
            .await?;
        Ok(reply.is_some())
    }

    async fn renew_lock(&self, name: &str, owner: &str, ttl: Duration) -> Result<bool, StoreError> {
        let n = self
            .script(
                RENEW,
                &self.key(name),
                &[owner.to_owned(), millis(ttl).to_string()],
            )
            .await?;
        Ok(n == 1)
    }

    async fn unlock(&self, name: &str, owner: &str) -> Result<(), StoreError> {
        self.script(UNLOCK, &self.key(name), &[owner.to_owned()])
            .await
            .map(|_| ())
    }

    async fn put(&self, name: &str, value: &[u8], ttl: Duration) -> Result<(), StoreError> {
        self.run::<()>(
            redis::cmd("SET")
                .arg(self.key(name))
                .arg(value)
                .arg("PX")
                .arg(millis(ttl)),
        )
        .await
    }

    async fn get(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.run(redis::cmd("GET").arg(self.key(name))).await
    }

    async fn delete(&self, name: &str) -> Result<(), StoreError> {
        self.run::<i64>(redis::cmd("DEL").arg(self.key(name)))
            .await
            .map(|_| ())
    }

    async fn get_many(&self, names: &[String]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        let mut cmd = redis::cmd("MGET");
        for name in names {
            cmd.arg(self.key(name));
        }
        self.run(&cmd).await
    }
}

/// A store that counts its failures in `bff_store_errors_total{op}`: how every
/// store reaches the core (`Bff::with_store`).
pub(crate) struct Counted {
    inner: Arc<dyn SharedStore>,
    metrics: crate::metrics::Metrics,
}

impl Counted {
    pub(crate) fn new(inner: Arc<dyn SharedStore>, metrics: crate::metrics::Metrics) -> Self {
        Self { inner, metrics }
    }

    fn count<T>(&self, op: &str, result: Result<T, StoreError>) -> Result<T, StoreError> {
        if result.is_err() {
            self.metrics.store_error(op);
        }
        result
    }
}

#[async_trait]
impl SharedStore for Counted {
    async fn try_lock(&self, name: &str, owner: &str, ttl: Duration) -> Result<bool, StoreError> {
        self.count("lock", self.inner.try_lock(name, owner, ttl).await)
    }

    async fn renew_lock(&self, name: &str, owner: &str, ttl: Duration) -> Result<bool, StoreError> {
        self.count("renew", self.inner.renew_lock(name, owner, ttl).await)
    }

    async fn unlock(&self, name: &str, owner: &str) -> Result<(), StoreError> {
        self.count("unlock", self.inner.unlock(name, owner).await)
    }

    async fn put(&self, name: &str, value: &[u8], ttl: Duration) -> Result<(), StoreError> {
        self.count("put", self.inner.put(name, value, ttl).await)
    }

    async fn get(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.count("get", self.inner.get(name).await)
    }

    async fn delete(&self, name: &str) -> Result<(), StoreError> {
        self.count("delete", self.inner.delete(name).await)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.count("ping", self.inner.ping().await)
    }

    async fn get_many(&self, names: &[String]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        self.count("get_many", self.inner.get_many(names).await)
    }
}
