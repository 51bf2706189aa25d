//! Sessions ended before their cookies expire: logout, back-channel logout, reuse
//! detection. Bounded in size and kept for the session lifetime, after which a
//! cookie is refused by its age anyway.
//!
//! ```
//! use std::time::Duration;
//! use bff_proxy::revocation::RevocationList;
//! use bff_proxy::session::SessionId;
//!
//! let list = RevocationList::new(Duration::from_secs(3600));
//! let sid = SessionId::random();
//! list.revoke_sid(sid);
//! assert!(list.is_revoked(sid, None, "alice", 0));
//! ```

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use moka::sync::Cache;

use crate::session::SessionId;
use crate::store::SharedStore;

/// The most entries of each kind remembered.
const CAPACITY: u64 = 1_000_000;

/// Revoked session ids, IdP session ids and subjects.
pub struct RevocationList {
    sids: Cache<[u8; 16], ()>,
    idp_sids: Cache<String, ()>,
    /// `sub` → Unix time of a logout by subject: sessions created before it are over.
    subs: Cache<String, u64>,
    /// With replicas, revocations are written to the shared store and looked up
    /// there, so a logout on one replica holds on all of them at once.
    shared: OnceLock<Arc<dyn SharedStore>>,
    lifetime: Duration,
}

impl std::fmt::Debug for RevocationList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RevocationList")
            .field("sids", &self.sids.entry_count())
            .field("idp_sids", &self.idp_sids.entry_count())
            .field("subs", &self.subs.entry_count())
            .finish()
    }
}

impl RevocationList {
    /// Entries live for `lifetime` (the session's absolute lifetime).
    #[must_use]
    pub fn new(lifetime: Duration) -> Self {
        let ttl = lifetime.max(Duration::from_secs(1));
        Self {
            sids: Cache::builder()
                .max_capacity(CAPACITY)
                .time_to_live(ttl)
                .build(),
            idp_sids: Cache::builder()
                .max_capacity(CAPACITY)
                .time_to_live(ttl)
                .build(),
            subs: Cache::builder()
                .max_capacity(CAPACITY)
                .time_to_live(ttl)
                .build(),
            shared: OnceLock::new(),
            lifetime: ttl,
        }
    }

    /// Shares revocations with other replicas through `store` (set once).
    pub fn set_store(&self, store: Arc<dyn SharedStore>) {
        let _ = self.shared.set(store);
    }

    fn hashed(kind: &str, id: &str) -> String {
        use sha2::Digest as _;
        let h = sha2::Sha256::digest(id.as_bytes());
        let hex: String = h.iter().map(|b| format!("{b:02x}")).collect();
        format!("revoked:{kind}:{hex}")
    }

    /// Ends one BFF session here and, with a store, on every replica.
    pub async fn revoke_sid_everywhere(&self, sid: SessionId) {
        self.revoke_sid(sid);
        self.share(&format!("revoked:sid:{sid}"), &[1]).await;
    }

    /// Ends every BFF session of an IdP session, everywhere.
    pub async fn revoke_idp_sid_everywhere(&self, idp_sid: &str) {
        self.revoke_idp_sid(idp_sid);
        self.share(&Self::hashed("idp", idp_sid), &[1]).await;
    }

    /// Ends every session of `sub` created at or before `at`, everywhere.
    pub async fn revoke_sub_everywhere(&self, sub: &str, at: u64) {
        self.revoke_sub(sub, at);
        self.share(&Self::hashed("sub", sub), &at.to_be_bytes())
            .await;
    }

    async fn share(&self, key: &str, value: &[u8]) {
        if let Some(store) = self.shared.get() {
            if let Err(e) = store.put(key, value, self.lifetime).await {
                tracing::warn!(error = %e, "could not share a revocation; it holds on this replica");
            }
        }
    }

    /// Like [`RevocationList::is_revoked`], also asking the shared store, so a
    /// logout on another replica counts at once. A store that does not answer
    /// counts as "not revoked": sessions keep working while it is down.
    pub async fn is_revoked_anywhere(
        &self,
        sid: SessionId,
        idp_sid: Option<&str>,
        sub: &str,
        created_at: u64,
    ) -> bool {
        if self.is_revoked(sid, idp_sid, sub, created_at) {
            return true;
        }
        let Some(store) = self.shared.get() else {
            return false;
        };
        let mut names = vec![format!("revoked:sid:{sid}"), Self::hashed("sub", sub)];
        if let Some(idp) = idp_sid {
            names.push(Self::hashed("idp", idp));
        }
        let Ok(values) = store.get_many(&names).await else {
            return false;
        };
        let mut revoked = false;
        if values.first().is_some_and(Option::is_some) {
            self.revoke_sid(sid);
            revoked = true;
        }
        if let Some(Some(at)) = values.get(1) {
            if let Ok(bytes) = <[u8; 8]>::try_from(at.as_slice()) {
                let at = u64::from_be_bytes(bytes);
                self.revoke_sub(sub, at);
                revoked |= created_at <= at;
            }
        }
        if let (Some(idp), Some(Some(_))) = (idp_sid, values.get(2)) {
            self.revoke_idp_sid(idp);
            revoked = true;
        }
        revoked
    }

    /// Ends one BFF session.
    pub fn revoke_sid(&self, sid: SessionId) {
        self.sids.insert(sid.0, ());
    }

    /// Ends every BFF session made under this IdP session.
    pub fn revoke_idp_sid(&self, idp_sid: &str) {
        self.idp_sids.insert(idp_sid.to_owned(), ());
    }

    /// Ends every session of `sub` created at or before `at` (Unix seconds).
    pub fn revoke_sub(&self, sub: &str, at: u64) {
        self.subs.insert(sub.to_owned(), at);
    }

    /// Whether a session with these identifiers, created at `created_at`, is revoked.
    #[must_use]
    pub fn is_revoked(
        &self,
        sid: SessionId,
        idp_sid: Option<&str>,
        sub: &str,
        created_at: u64,
    ) -> bool {
        self.sids.contains_key(&sid.0)
            || idp_sid.is_some_and(|s| self.idp_sids.contains_key(s))
            || self.subs.get(sub).is_some_and(|at| created_at <= at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_of_revocation() {
        let list = RevocationList::new(Duration::from_secs(60));
        let (a, b) = (SessionId::random(), SessionId::random());
        list.revoke_sid(a);
        assert!(list.is_revoked(a, None, "u", 10));
        assert!(!list.is_revoked(b, None, "u", 10));
        list.revoke_idp_sid("idp-1");
        assert!(list.is_revoked(b, Some("idp-1"), "u", 10));
        assert!(!list.is_revoked(b, Some("idp-2"), "u", 10));
        list.revoke_sub("alice", 100);
        assert!(list.is_revoked(b, None, "alice", 100));
        assert!(
            !list.is_revoked(b, None, "alice", 101),
            "a later login is a new session"
        );
    }
}
