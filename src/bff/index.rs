//! The per-user session index: which sessions a user has (sid, created, last seen,
//! user agent) and, sealed, each one's refresh token, so that a user or an admin
//! can end a session the BFF is not holding in a request — its refresh token
//! revoked at the IdP first, then its sid.
//!
//! One value per user in the store (Redis across replicas, else a store of the
//! process), under `sessions:<sha256(sub)>`, sealed with the session key ring, kept
//! no longer than a session can live. Every change is read-modify-write under the
//! store's lock for that user, so two replicas never lose each other's entries.
//! Last seen is written at most once a minute per session.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::clock::Clock;
use crate::expiring::ExpiringMap;
use crate::seal::KeyRing;
use crate::session::SessionId;
use crate::store::{SharedStore, sha256_hex};

/// The seal name of an index value.
const SEAL_NAME: &str = "session-index";
/// How often last seen is written, at most.
const TOUCH_EVERY_MS: u64 = 60_000;
/// A user agent is kept up to this many bytes.
const MAX_USER_AGENT: usize = 256;
/// How long an index change waits for the user's lock, at most.
const LOCK_WAIT: Duration = Duration::from_secs(2);

/// One session of a user.
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct IndexEntry {
    pub(crate) sid: SessionId,
    /// Unix seconds.
    pub(crate) created: u64,
    /// Unix seconds.
    pub(crate) last_seen: u64,
    pub(crate) user_agent: String,
    /// The session's current refresh token (the value is sealed as a whole).
    pub(crate) refresh_token: Option<String>,
}

impl std::fmt::Debug for IndexEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IndexEntry")
            .field("sid", &self.sid.short_hash())
            .field("created", &self.created)
            .field("last_seen", &self.last_seen)
            .finish_non_exhaustive()
    }
}

/// A user agent as kept: at most 256 bytes, on a character boundary.
pub(crate) fn user_agent(headers: &http::HeaderMap) -> String {
    let ua = headers
        .get(http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mut end = ua.len().min(MAX_USER_AGENT);
    while !ua.is_char_boundary(end) {
        end -= 1;
    }
    ua[..end].to_owned()
}

/// The index. Cheap to clone.
#[derive(Clone)]
pub(crate) struct SessionIndex {
    store: Arc<dyn SharedStore>,
    ring: KeyRing,
    lifetime: Duration,
    clock: Arc<Clock>,
    /// When each session's last seen was last written (ms), in this process.
    touched: Arc<ExpiringMap<SessionId, u64>>,
}

impl SessionIndex {
    pub(crate) fn new(
        store: Arc<dyn SharedStore>,
        ring: KeyRing,
        lifetime: Duration,
        clock: Arc<Clock>,
    ) -> Self {
        Self {
            store,
            ring,
            lifetime,
            clock,
            touched: Arc::new(ExpiringMap::new()),
        }
    }

    /// The index of a reloaded config: a new key ring, the same store and state.
    pub(crate) fn reloaded(&self, ring: KeyRing) -> Self {
        Self {
            ring,
            ..self.clone()
        }
    }

    /// The index on another store (the shared one, when it is connected).
    pub(crate) fn with_store(&self, store: Arc<dyn SharedStore>) -> Self {
        Self {
            store,
            ..self.clone()
        }
    }

    fn key(sub: &str) -> String {
        format!("sessions:{}", sha256_hex(sub.as_bytes()))
    }

    fn now(&self) -> u64 {
        self.clock.now_ms() / 1000
    }

    /// The user's sessions that can still be alive.
    pub(crate) async fn list(
        &self,
        sub: &str,
    ) -> Result<Vec<IndexEntry>, crate::store::StoreError> {
        let raw = self.store.get(&Self::key(sub)).await?;
        Ok(self.decode(raw.as_deref()))
    }

    fn decode(&self, raw: Option<&[u8]>) -> Vec<IndexEntry> {
        let oldest = self.now().saturating_sub(self.lifetime.as_secs());
        raw.and_then(|raw| std::str::from_utf8(raw).ok())
            .and_then(|sealed| self.ring.open(SEAL_NAME, sealed).ok())
            .and_then(|json| serde_json::from_slice::<Vec<IndexEntry>>(&json).ok())
            .unwrap_or_default()
            .into_iter()
            .filter(|e| e.created >= oldest)
            .collect()
    }

    /// Changes the user's entries under the user's lock; what `change` returns is
    /// handed back. With no lock within 2 s, or a store error, nothing changes.
    async fn update<T>(
        &self,
        sub: &str,
        change: impl FnOnce(&mut Vec<IndexEntry>) -> T,
    ) -> Result<T, crate::store::StoreError> {
        let key = Self::key(sub);
        let lock = format!("{key}:lock");
        let owner = crate::random::random_text(12);
        let started = std::time::Instant::now();
        while !self.store.try_lock(&lock, &owner, LOCK_WAIT).await? {
            if started.elapsed() > LOCK_WAIT {
                return Err(crate::store::StoreError::Unavailable(
                    "the session index is locked".into(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let result = async {
            let raw = self.store.get(&key).await?;
            let mut entries = self.decode(raw.as_deref());
            let out = change(&mut entries);
            if entries.is_empty() {
                self.store.delete(&key).await?;
            } else {
                let json = serde_json::to_vec(&entries).unwrap_or_default();
                let sealed = self.ring.seal(SEAL_NAME, &json);
                self.store
                    .put(&key, sealed.as_bytes(), self.lifetime)
                    .await?;
            }
            Ok(out)
        }
        .await;
        let _ = self.store.unlock(&lock, &owner).await;
        result
    }

    /// A new session (at login).
    pub(crate) async fn add(&self, sub: &str, entry: IndexEntry) {
        let sid = entry.sid;
        let now_ms = self.clock.now_ms();
        if let Err(e) = self.update(sub, |entries| entries.push(entry)).await {
            tracing::warn!(error = %e, sid = %sid.short_hash(), "the session could not be added to the user's index");
        }
        self.touched
            .insert(sid, now_ms, now_ms + TOUCH_EVERY_MS, now_ms);
    }

    /// A request of the session: last seen written when the last write is a
    /// minute old, and the refresh token when it rotated. In the background.
    pub(crate) fn seen(&self, sub: &str, sid: SessionId, rotated: Option<Option<String>>) {
        let now_ms = self.clock.now_ms();
        if rotated.is_none() && self.touched.get(&sid, now_ms).is_some() {
            return;
        }
        self.touched
            .insert(sid, now_ms, now_ms + TOUCH_EVERY_MS, now_ms);
        let (index, sub) = (self.clone(), sub.to_owned());
        let now = now_ms / 1000;
        tokio::spawn(async move {
            let updated = index
                .update(&sub, |entries| {
                    if let Some(e) = entries.iter_mut().find(|e| e.sid == sid) {
                        e.last_seen = now;
                        if let Some(rt) = rotated {
                            e.refresh_token = rt;
                        }
                    }
                })
                .await;
            if let Err(e) = updated {
                tracing::debug!(error = %e, "the session's last seen was not written");
            }
        });
    }

    /// Removes one session of the user; the entry it was.
    pub(crate) async fn remove(
        &self,
        sub: &str,
        sid: SessionId,
    ) -> Result<Option<IndexEntry>, crate::store::StoreError> {
        self.touched.remove(&sid);
        self.update(sub, |entries| {
            let at = entries.iter().position(|e| e.sid == sid)?;
            Some(entries.remove(at))
        })
        .await
    }

    /// Removes every session of the user; the entries they were.
    pub(crate) async fn take_all(
        &self,
        sub: &str,
    ) -> Result<Vec<IndexEntry>, crate::store::StoreError> {
        self.update(sub, std::mem::take).await
    }
}
