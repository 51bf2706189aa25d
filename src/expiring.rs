//! A map whose entries each live until their own expiry: the state that must never
//! be forgotten early (revocations, tombstones of rotated refresh tokens, refresh
//! results for the grace window). Unlike a cache it has no capacity, so nothing is
//! ever refused or evicted before its time; expired entries are swept when the map
//! has doubled since the last sweep, which spreads the cost over the inserts.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::RwLock;

/// A map whose entries each live until their own expiry (Unix ms). Expired entries
/// are swept when the map has doubled since the last sweep, so the cost of sweeping
/// is spread over the inserts. Nothing is ever dropped before its expiry.
pub(crate) struct ExpiringMap<K, V> {
    inner: RwLock<Swept<K, V>>,
}

struct Swept<K, V> {
    map: HashMap<K, (V, u64)>,
    /// Sweep when the map reaches this size.
    next_sweep: usize,
}

const FIRST_SWEEP: usize = 1024;

impl<K: Eq + Hash, V: Clone> ExpiringMap<K, V> {
    pub(crate) fn new() -> Self {
        Self {
            inner: RwLock::new(Swept {
                map: HashMap::new(),
                next_sweep: FIRST_SWEEP,
            }),
        }
    }

    pub(crate) fn get<Q>(&self, key: &Q, now_ms: u64) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let inner = self
            .inner
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        inner
            .map
            .get(key)
            .filter(|(_, expires)| *expires > now_ms)
            .map(|(v, _)| v.clone())
    }

    /// The write lock, after sweeping expired entries when it is time to.
    fn write(&self, now_ms: u64) -> std::sync::RwLockWriteGuard<'_, Swept<K, V>> {
        let mut inner = self
            .inner
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if inner.map.len() >= inner.next_sweep {
            inner.map.retain(|_, (_, expires)| *expires > now_ms);
            inner.next_sweep = (inner.map.len() * 2).max(FIRST_SWEEP);
        }
        inner
    }

    /// Inserts or updates with `merge(old live value) -> new value`.
    pub(crate) fn upsert(
        &self,
        key: K,
        expires_ms: u64,
        now_ms: u64,
        merge: impl FnOnce(Option<&V>) -> V,
    ) {
        let mut inner = self.write(now_ms);
        let old = inner
            .map
            .get(&key)
            .filter(|(_, e)| *e > now_ms)
            .map(|(v, e)| (v.clone(), *e));
        let value = merge(old.as_ref().map(|(v, _)| v));
        let expires = old.map_or(expires_ms, |(_, e)| e.max(expires_ms));
        inner.map.insert(key, (value, expires));
    }

    /// Inserts when absent (or expired). True when inserted.
    pub(crate) fn insert_new(&self, key: K, value: V, expires_ms: u64, now_ms: u64) -> bool {
        let mut fresh = true;
        self.upsert(key, expires_ms, now_ms, |old| {
            fresh = old.is_none();
            match old {
                Some(v) => v.clone(),
                None => value,
            }
        });
        fresh
    }

    /// Inserts or replaces.
    pub(crate) fn insert(&self, key: K, value: V, expires_ms: u64, now_ms: u64) {
        let mut inner = self.write(now_ms);
        inner.map.insert(key, (value, expires_ms));
    }

    /// Removes an entry.
    pub(crate) fn remove<Q>(&self, key: &Q)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.inner
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .map
            .remove(key);
    }

    pub(crate) fn len(&self) -> usize {
        self.inner
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .map
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_live_until_their_expiry_and_are_swept_later() {
        let map: ExpiringMap<u32, u32> = ExpiringMap::new();
        for i in 0..5000 {
            map.insert(i, i, 1000 + u64::from(i), 0);
        }
        assert_eq!(map.get(&10, 1009), Some(10));
        assert_eq!(map.get(&10, 1010), None);
        assert_eq!(map.get(&4999, 5998), Some(4999));
        // Inserts after most expired sweep them.
        for i in 5000..8300 {
            map.insert(i, i, 100_000, 5500);
        }
        assert!(map.len() < 5000, "swept: {}", map.len());
        assert_eq!(map.get(&4999, 5998), Some(4999));
        assert!(map.insert_new(1, 1, 9000, 6000), "expired counts as absent");
        assert!(!map.insert_new(1, 2, 9000, 6000));
        map.remove(&1);
        assert_eq!(map.get(&1, 6000), None);
    }
}
