//! Sessions ended before their cookies expire (logout, back-channel logout, reuse and
//! replay detection), the generation each session has reached, and the logout tokens
//! already used.
//!
//! Revocations are **never forgotten early**: entries live in plain maps until the
//! session they name could no longer be valid (its absolute lifetime), never in an
//! evicting cache that could refuse or drop one when full. With replicas they are
//! also written to the shared store and read from it, so a logout on one replica
//! holds on all of them at once.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::clock::Clock;
use crate::expiring::ExpiringMap;
use crate::session::{Session, SessionId};
use crate::store::SharedStore;

/// How far a session has been refreshed: its newest generation (the refresh count),
/// when that generation began, and when the one before it began.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Generation {
    latest: u32,
    latest_at_ms: u64,
    previous_at_ms: u64,
}

impl Generation {
    fn encode(self) -> [u8; 20] {
        let mut out = [0u8; 20];
        out[..4].copy_from_slice(&self.latest.to_be_bytes());
        out[4..12].copy_from_slice(&self.latest_at_ms.to_be_bytes());
        out[12..].copy_from_slice(&self.previous_at_ms.to_be_bytes());
        out
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        let bytes: &[u8; 20] = bytes.try_into().ok()?;
        let (latest, rest) = bytes.split_at(4);
        let (latest_at, previous_at) = rest.split_at(8);
        Some(Self {
            latest: u32::from_be_bytes(latest.try_into().ok()?),
            latest_at_ms: u64::from_be_bytes(latest_at.try_into().ok()?),
            previous_at_ms: u64::from_be_bytes(previous_at.try_into().ok()?),
        })
    }

    /// This record after generation `gen` began at `now_ms`.
    fn advanced(old: Option<Self>, generation: u32, now_ms: u64) -> Self {
        match old {
            Some(old) if old.latest >= generation => old,
            Some(old) if old.latest + 1 == generation => Self {
                latest: generation,
                latest_at_ms: now_ms,
                previous_at_ms: old.latest_at_ms,
            },
            _ => Self {
                latest: generation,
                latest_at_ms: now_ms,
                previous_at_ms: now_ms,
            },
        }
    }

    /// Whether a cookie of generation `generation`, seen at `now_ms`, is a replay:
    /// a newer generation began more than `window_ms` ago.
    fn is_replay(self, generation: u32, now_ms: u64, window_ms: u64) -> bool {
        if generation >= self.latest {
            return false;
        }
        // When this generation stopped being the newest: at the latest one's start
        // if it is the one before; otherwise no later than the previous one's start.
        let superseded_at = if generation + 1 == self.latest {
            self.latest_at_ms
        } else {
            self.previous_at_ms
        };
        now_ms.saturating_sub(superseded_at) > window_ms
    }
}

/// What the revocation state says of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// Neither revoked nor replayed.
    Live,
    /// Logged out, logged out by the IdP, or revoked earlier.
    Revoked,
    /// A cookie of an older generation, presented after the grace window.
    Replay,
}

/// Revoked session ids, IdP session ids and subjects; session generations; used
/// logout-token ids.
pub struct RevocationList {
    sids: ExpiringMap<[u8; 16], ()>,
    idp_sids: ExpiringMap<String, ()>,
    /// `sub` → Unix ms: sessions of that user created up to then are over.
    subs: ExpiringMap<String, u64>,
    generations: ExpiringMap<[u8; 16], Generation>,
    /// Store names (hashes of issuer and jti) of the logout tokens already used.
    logout_jtis: ExpiringMap<String, ()>,
    shared: OnceLock<Arc<dyn SharedStore>>,
    lifetime: Duration,
    clock: Arc<Clock>,
}

impl std::fmt::Debug for RevocationList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RevocationList")
            .field("sids", &self.sids.len())
            .field("idp_sids", &self.idp_sids.len())
            .field("subs", &self.subs.len())
            .field("generations", &self.generations.len())
            .finish_non_exhaustive()
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn hashed(kind: &str, id: &str) -> String {
    format!("revoked:{kind}:{}", crate::store::sha256_hex(id.as_bytes()))
}

impl RevocationList {
    /// Entries live for `lifetime` (the session's absolute lifetime), on the wall
    /// clock.
    #[cfg(any(test, feature = "fuzzing"))]
    #[must_use]
    pub fn new(lifetime: Duration) -> Self {
        Self::with_clock(lifetime, Arc::new(Clock::default()))
    }

    /// Like [`RevocationList::new`] on the BFF's clock (which tests move).
    #[must_use]
    pub fn with_clock(lifetime: Duration, clock: Arc<Clock>) -> Self {
        Self {
            sids: ExpiringMap::new(),
            idp_sids: ExpiringMap::new(),
            subs: ExpiringMap::new(),
            generations: ExpiringMap::new(),
            logout_jtis: ExpiringMap::new(),
            shared: OnceLock::new(),
            lifetime: lifetime.max(Duration::from_secs(1)),
            clock,
        }
    }

    /// Shares revocations with other replicas through `store` (set once).
    pub fn set_store(&self, store: Arc<dyn SharedStore>) {
        let _ = self.shared.set(store);
    }

    fn until(&self, now_ms: u64) -> u64 {
        now_ms.saturating_add(millis(self.lifetime))
    }

    /// Ends one BFF session here and, with a store, on every replica.
    pub async fn revoke_sid_everywhere(&self, sid: SessionId) {
        self.revoke_sid(sid);
        self.share(&format!("revoked:sid:{sid}"), &[1], self.lifetime)
            .await;
    }

    /// Ends every BFF session of an IdP session, everywhere.
    pub async fn revoke_idp_sid_everywhere(&self, idp_sid: &str) {
        self.revoke_idp_sid(idp_sid);
        self.share(&hashed("idp", idp_sid), &[1], self.lifetime)
            .await;
    }

    /// Ends every session of `sub` created up to `cutoff_ms` (Unix ms), everywhere.
    pub async fn revoke_sub_everywhere(&self, sub: &str, cutoff_ms: u64) {
        self.revoke_sub(sub, cutoff_ms);
        self.share(&hashed("sub", sub), &cutoff_ms.to_be_bytes(), self.lifetime)
            .await;
    }

    async fn share(&self, key: &str, value: &[u8], ttl: Duration) {
        if let Some(store) = self.shared.get() {
            if let Err(e) = store.put(key, value, ttl).await {
                tracing::warn!(error = %e, "could not share a revocation; it holds on this replica");
            }
        }
    }

    /// Records that session `sid` reached `generation` (a refresh). Older cookies of
    /// it are replays once the grace window is over.
    pub async fn record_generation(&self, sid: SessionId, generation: u32) {
        let now = self.clock.now_ms();
        let mut record = None;
        self.generations.upsert(sid.0, self.until(now), now, |old| {
            let next = Generation::advanced(old.copied(), generation, now);
            // Shared once per new generation, not once per coalesced request.
            if old != Some(&next) {
                record = Some(next);
            }
            next
        });
        if let Some(record) = record {
            self.share(&format!("gen:{sid}"), &record.encode(), self.lifetime)
                .await;
        }
    }

    /// Whether a logout token is used for the first time (by issuer and `jti`),
    /// remembering it for `ttl`, here and with replicas. A store that does not
    /// answer leaves the local memory to decide.
    pub async fn first_use_of_logout_token(&self, iss: &str, jti: &str, ttl: Duration) -> bool {
        let name = hashed("jti", &format!("{iss}\0{jti}"));
        let now = self.clock.now_ms();
        let expires = now.saturating_add(millis(ttl));
        if !self.logout_jtis.insert_new(name.clone(), (), expires, now) {
            return false;
        }
        let Some(store) = self.shared.get() else {
            return true;
        };
        match store
            .try_lock(&name, "used", ttl.max(Duration::from_secs(1)))
            .await
        {
            Ok(first) => first,
            Err(e) => {
                tracing::warn!(error = %e, "shared store unavailable: logout-token replay checked on this replica only");
                true
            }
        }
    }

    /// The standing of a session: revoked (here or, with a store, on any replica),
    /// a replay of an older generation after `window_ms`, or live. A store that does
    /// not answer counts as "nothing more known": sessions keep working while it is
    /// down.
    pub async fn standing(&self, s: &Session, window_ms: u64) -> Standing {
        let now = self.clock.now_ms();
        if self.is_revoked(s.sid, s.idp_sid.as_deref(), &s.sub, s.created_ms) {
            return Standing::Revoked;
        }
        let local_replay = self
            .generations
            .get(&s.sid.0, now)
            .is_some_and(|g| g.is_replay(s.refresh_count, now, window_ms));
        if local_replay {
            return Standing::Replay;
        }
        let Some(store) = self.shared.get() else {
            return Standing::Live;
        };
        let mut names = vec![
            format!("revoked:sid:{}", s.sid),
            hashed("sub", &s.sub),
            format!("gen:{}", s.sid),
        ];
        if let Some(idp) = &s.idp_sid {
            names.push(hashed("idp", idp));
        }
        let Ok(values) = store.get_many(&names).await else {
            return Standing::Live;
        };
        let found = |i: usize| values.get(i).and_then(Option::as_deref);
        let mut standing = Standing::Live;
        if found(0).is_some() {
            self.revoke_sid(s.sid);
            standing = Standing::Revoked;
        }
        if let Some(bytes) = found(1) {
            if let Ok(bytes) = <[u8; 8]>::try_from(bytes) {
                let cutoff = u64::from_be_bytes(bytes);
                self.revoke_sub(&s.sub, cutoff);
                if s.created_ms <= cutoff {
                    standing = Standing::Revoked;
                }
            }
        }
        if let (Some(idp), Some(_)) = (&s.idp_sid, found(3)) {
            self.revoke_idp_sid(idp);
            standing = Standing::Revoked;
        }
        if standing == Standing::Live {
            if let Some(g) = found(2).and_then(Generation::decode) {
                self.generations
                    .upsert(s.sid.0, self.until(now), now, |old| match old {
                        Some(o) if o.latest >= g.latest => *o,
                        _ => g,
                    });
                if g.is_replay(s.refresh_count, now, window_ms) {
                    standing = Standing::Replay;
                }
            }
        }
        standing
    }

    /// Ends one BFF session.
    pub fn revoke_sid(&self, sid: SessionId) {
        let now = self.clock.now_ms();
        self.sids.upsert(sid.0, self.until(now), now, |_| ());
    }

    /// Ends every BFF session made under this IdP session.
    pub fn revoke_idp_sid(&self, idp_sid: &str) {
        let now = self.clock.now_ms();
        self.idp_sids
            .upsert(idp_sid.to_owned(), self.until(now), now, |_| ());
    }

    /// Ends every session of `sub` created up to `cutoff_ms` (Unix ms). A later
    /// cutoff wins over an earlier one.
    pub fn revoke_sub(&self, sub: &str, cutoff_ms: u64) {
        let now = self.clock.now_ms();
        self.subs
            .upsert(sub.to_owned(), self.until(now), now, |old| {
                old.map_or(cutoff_ms, |o| (*o).max(cutoff_ms))
            });
    }

    /// Whether a session with these identifiers, created at `created_ms` (Unix ms),
    /// is revoked here.
    #[must_use]
    pub fn is_revoked(
        &self,
        sid: SessionId,
        idp_sid: Option<&str>,
        sub: &str,
        created_ms: u64,
    ) -> bool {
        let now = self.clock.now_ms();
        self.sids.get(&sid.0, now).is_some()
            || idp_sid.is_some_and(|s| self.idp_sids.get(s, now).is_some())
            || self
                .subs
                .get(sub, now)
                .is_some_and(|cutoff| created_ms <= cutoff)
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod example {
    /// What the module does, in a few lines.
    #[test]
    fn module_example() {
        use crate::revocation::RevocationList;
        use crate::session::SessionId;
        use std::time::Duration;

        let list = RevocationList::new(Duration::from_secs(3600));
        let sid = SessionId::random();
        list.revoke_sid(sid);
        assert!(list.is_revoked(sid, None, "alice", 0));
    }
}
