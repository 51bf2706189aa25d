//! Session storage: where a session lives between requests. In cookie mode the
//! sealed session is the cookie; in server mode (`session.mode = "server"`) the
//! cookie holds a sealed 16-byte handle and the sealed session sits in the store
//! under a hash of it. A request's session is read once, by [`SessionStorage::load`].

use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;

use super::Core;
use crate::clock::Clock;
use crate::cookies::{Present, RequestCookies, SessionSealer};
use crate::error::{Error, ErrorKind};
use crate::refresh::EndReason;
use crate::revocation::Standing;
use crate::session::Session;
use crate::store::SharedStore;

/// The first byte of a server-mode cookie's plaintext (then a 16-byte handle); a
/// session payload never starts with it.
const SERVER_HANDLE_TAG: u8 = 0xA5;
/// The name server-mode sessions are sealed under in the store.
const SERVER_SESSION_SEAL: &str = "bff-server-session";

fn server_key(handle: &[u8; 16]) -> String {
    format!("session:{}", crate::store::sha256_hex(handle))
}

/// A session as read from a request.
pub(crate) struct Loaded {
    pub(crate) session: Option<Session>,
    /// Which of our session cookies the request carried (to clear stale ones).
    pub(crate) present: Present,
    /// Server mode: the handle the cookie holds.
    pub(crate) handle: Option<[u8; 16]>,
}

/// The current session of an endpoint request: `ended` says one opened but was over
/// its lifetime or revoked.
pub(crate) struct Current {
    pub(crate) session: Option<Session>,
    pub(crate) present: Present,
    pub(crate) handle: Option<[u8; 16]>,
    pub(crate) ended: bool,
}

/// Seals sessions into cookies, or into the store in server mode.
#[derive(Clone)]
pub(crate) struct SessionStorage {
    pub(crate) sealer: SessionSealer,
    /// Server mode: where sessions live.
    server: Option<Arc<dyn SharedStore>>,
    clock: Arc<Clock>,
    lifetime: Duration,
    /// `session.idle_timeout`: a stored session's TTL is twice it at most, so an
    /// idle one leaves the store (before then its next request is told it ended).
    idle: Duration,
}

impl SessionStorage {
    pub(crate) fn new(
        sealer: SessionSealer,
        server_mode: bool,
        clock: Arc<Clock>,
        lifetime: Duration,
    ) -> Self {
        Self {
            sealer,
            server: server_mode
                .then(|| Arc::new(crate::store::MemoryStore::new()) as Arc<dyn SharedStore>),
            clock,
            lifetime,
            idle: Duration::ZERO,
        }
    }

    /// With `session.idle_timeout`.
    pub(crate) fn with_idle(mut self, idle: Duration) -> Self {
        self.idle = idle;
        self
    }

    /// The storage of a reloaded config: a new sealer (session keys), lifetime and
    /// idle timeout; the server-mode store is this one's, so no stored session is
    /// lost.
    pub(crate) fn reloaded(&self, sealer: SessionSealer, lifetime: Duration) -> Self {
        Self {
            sealer,
            server: self.server.clone(),
            clock: Arc::clone(&self.clock),
            lifetime,
            idle: Duration::ZERO,
        }
    }

    /// Server mode keeps its sessions in the shared store from now on.
    pub(crate) fn use_store(&mut self, store: &Arc<dyn SharedStore>) {
        if self.server.is_some() {
            self.server = Some(Arc::clone(store));
        }
    }

    /// Reads the request's session: from the cookie, or in server mode from the
    /// store under the handle the cookie holds. Only the store can fail.
    pub(crate) async fn load(&self, cookies: &RequestCookies<'_>) -> Result<Loaded, Error> {
        let cookie = cookies.session();
        let Some(store) = &self.server else {
            return Ok(Loaded {
                session: self.sealer.open(&cookie),
                present: cookie.present,
                handle: None,
            });
        };
        let name = self.sealer.cookie().name();
        let handle = cookie.candidates().find_map(|sealed| {
            self.sealer
                .ring()
                .open_map(name, sealed, |plain| match plain {
                    [SERVER_HANDLE_TAG, rest @ ..] => <[u8; 16]>::try_from(rest).ok(),
                    _ => None,
                })
                .ok()
                .flatten()
        });
        let session = match handle {
            None => None,
            Some(h) => {
                let stored = store.get(&server_key(&h)).await.map_err(|e| {
                    tracing::warn!(error = %e, "session store unavailable");
                    Error::new(ErrorKind::StoreUnavailable)
                })?;
                stored.and_then(|bytes| {
                    self.sealer
                        .ring()
                        .open_map(SERVER_SESSION_SEAL, &bytes, |p| Session::decode(p).ok())
                        .ok()
                        .flatten()
                })
            }
        };
        Ok(Loaded {
            session,
            present: cookie.present,
            handle,
        })
    }

    /// How long the session has left of its absolute lifetime (at least a second).
    fn remaining(&self, session: &Session) -> Duration {
        let end = session.created_at.saturating_add(self.lifetime.as_secs());
        Duration::from_secs(end.saturating_sub(self.clock.now_secs()).max(1))
    }

    /// Stores a session: sealed into the cookie, or in server mode sealed into the
    /// store (the cookie, a handle, is only set when the handle is new).
    pub(crate) async fn save(
        &self,
        session: &Session,
        present: &Present,
        handle: Option<[u8; 16]>,
    ) -> Result<Vec<HeaderValue>, Error> {
        let ttl = self.remaining(session);
        let Some(store) = &self.server else {
            return self.sealer.set_cookies(session, Some(ttl), present);
        };
        let (h, new) = match handle {
            Some(h) => (h, false),
            None => {
                use rand::RngCore as _;
                let mut h = [0u8; 16];
                rand::rngs::OsRng.fill_bytes(&mut h);
                (h, true)
            }
        };
        let sealed = self
            .sealer
            .ring()
            .seal(SERVER_SESSION_SEAL, &session.encode());
        // An idle session's entry goes too (its use re-saves it every idle/4).
        let store_ttl = if self.idle.is_zero() {
            ttl
        } else {
            ttl.min(self.idle.saturating_mul(2))
        };
        store
            .put(&server_key(&h), sealed.as_bytes(), store_ttl)
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "session store unavailable");
                Error::new(ErrorKind::StoreUnavailable)
            })?;
        if !new {
            return Ok(Vec::new());
        }
        let mut payload = vec![SERVER_HANDLE_TAG];
        payload.extend_from_slice(&h);
        let cookie = self
            .sealer
            .ring()
            .seal(self.sealer.cookie().name(), &payload);
        self.sealer.cookie().write(&cookie, Some(ttl), present)
    }

    /// Drops a server-side session from the store (logout, ended sessions).
    pub(crate) async fn forget(&self, handle: Option<[u8; 16]>) {
        if let (Some(store), Some(h)) = (&self.server, handle) {
            let _ = store.delete(&server_key(&h)).await;
        }
    }

    /// `Set-Cookie` values that expire the session cookies the request carried.
    pub(crate) fn clear(&self, present: &Present) -> Vec<HeaderValue> {
        self.sealer.clear_cookies(present)
    }
}

impl Core {
    /// Whether the session is over: revoked (logout, back-channel, an earlier
    /// replay), or itself a replay of an older generation, which is acted on here.
    pub(crate) async fn is_revoked(&self, s: &Session) -> bool {
        match self
            .revocations
            .standing(s, self.refresher.window_ms())
            .await
        {
            Standing::Live => false,
            Standing::Revoked => true,
            Standing::Replay => {
                self.refresher.replay_detected(s).await;
                true
            }
        }
    }

    /// Records an ended session so copies of its cookie are refused too.
    pub(crate) async fn end_session(&self, session: &Session, reason: EndReason) {
        match reason {
            // Counted where they are detected.
            EndReason::Reuse | EndReason::InvalidGrant | EndReason::Replay => {}
            other => self.metrics.session_ended(other.label()),
        }
        self.revocations.revoke_sid_everywhere(session.sid).await;
    }

    /// The request's session if it opens and is neither revoked nor over its
    /// lifetime, with what it was read from.
    pub(crate) async fn current_session(
        &self,
        cookies: &RequestCookies<'_>,
    ) -> Result<Current, Error> {
        let read = self.storage.load(cookies).await?;
        let now = self.clock.now_secs();
        let lifetime = self.config.session.absolute_lifetime.as_secs();
        let ended = match read.session.as_ref() {
            Some(s) => {
                now >= s.created_at.saturating_add(lifetime)
                    || crate::refresh::is_idle(s, self.config.session.idle_timeout, now)
                    || self.is_revoked(s).await
            }
            None => false,
        };
        Ok(Current {
            session: read.session.filter(|_| !ended),
            present: read.present,
            handle: read.handle,
            ended,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cookies::{CookieSettings, SameSite};
    use crate::seal::KeyRing;
    use crate::session::SessionId;
    use crate::store::{MemoryStore, StoreError};
    use std::sync::Mutex;

    /// A memory store that records the TTL of every `put`.
    #[derive(Default)]
    struct Ttls {
        inner: MemoryStore,
        seen: Mutex<Vec<Duration>>,
    }

    #[async_trait::async_trait]
    impl SharedStore for Ttls {
        async fn try_lock(&self, n: &str, o: &str, t: Duration) -> Result<bool, StoreError> {
            self.inner.try_lock(n, o, t).await
        }
        async fn renew_lock(&self, n: &str, o: &str, t: Duration) -> Result<bool, StoreError> {
            self.inner.renew_lock(n, o, t).await
        }
        async fn unlock(&self, n: &str, o: &str) -> Result<(), StoreError> {
            self.inner.unlock(n, o).await
        }
        async fn put(&self, n: &str, v: &[u8], t: Duration) -> Result<(), StoreError> {
            self.seen.lock().unwrap().push(t);
            self.inner.put(n, v, t).await
        }
        async fn get(&self, n: &str) -> Result<Option<Vec<u8>>, StoreError> {
            self.inner.get(n).await
        }
        async fn delete(&self, n: &str) -> Result<(), StoreError> {
            self.inner.delete(n).await
        }
    }

    /// With `session.idle_timeout`, a stored session lives at most twice it in the
    /// store (its uses re-save it every quarter); without, its whole lifetime.
    #[tokio::test]
    async fn an_idle_server_session_leaves_the_store() {
        let clock = Arc::new(Clock::default());
        let sealer = SessionSealer::new(
            KeyRing::new(vec![KeyRing::generate_key()]).unwrap(),
            CookieSettings::new("s", true, SameSite::Strict),
        );
        let store = Arc::new(Ttls::default());
        let session = Session::new(
            SessionId::random(),
            "alice".into(),
            "at".into(),
            clock.now_secs() + 300,
            clock.now_secs(),
        );
        for (idle, expected) in [
            (Duration::from_secs(60), Duration::from_secs(120)),
            (Duration::ZERO, Duration::from_secs(3600)),
        ] {
            let mut storage = SessionStorage::new(
                sealer.clone(),
                true,
                Arc::clone(&clock),
                Duration::from_secs(3600),
            )
            .with_idle(idle);
            let shared: Arc<dyn SharedStore> = store.clone();
            storage.use_store(&shared);
            storage
                .save(&session, &Present::default(), None)
                .await
                .unwrap();
            assert_eq!(store.seen.lock().unwrap().pop(), Some(expected), "{idle:?}");
        }
    }
}
