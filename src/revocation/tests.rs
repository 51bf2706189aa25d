//! Unit tests of `revocation`.

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
    list.revoke_sub("alice", 100_000);
    assert!(list.is_revoked(b, None, "alice", 100_000));
    assert!(
        !list.is_revoked(b, None, "alice", 100_001),
        "a later login is a new session, even within the same second"
    );
    list.revoke_sub("alice", 50_000);
    assert!(
        list.is_revoked(b, None, "alice", 99_000),
        "an earlier cutoff never shrinks it"
    );
}

#[test]
fn revocations_outlive_any_cache_capacity() {
    // The moka caches this replaced held at most 1,000,000 entries and could
    // refuse or evict new ones when full: a logout that did not take.
    let list = RevocationList::new(Duration::from_secs(3600));
    let sids: Vec<SessionId> = (0..1_100_000u32)
        .map(|i| {
            let mut id = [0u8; 16];
            id[..4].copy_from_slice(&i.to_be_bytes());
            SessionId(id)
        })
        .collect();
    for sid in &sids {
        list.revoke_sid(*sid);
    }
    assert!(sids.iter().all(|sid| list.is_revoked(*sid, None, "u", 0)));
}

#[test]
fn entries_expire_after_the_lifetime_only() {
    let clock = Arc::new(Clock::default());
    let list = RevocationList::with_clock(Duration::from_secs(60), Arc::clone(&clock));
    let sid = SessionId::random();
    list.revoke_sid(sid);
    clock.advance(Duration::from_secs(59));
    assert!(list.is_revoked(sid, None, "u", 0));
    clock.advance(Duration::from_secs(2));
    assert!(!list.is_revoked(sid, None, "u", 0));
}

#[test]
fn generations_tell_replays() {
    let g = Generation::advanced(None, 1, 10_000);
    assert!(!g.is_replay(1, 10_000, 2_000));
    assert!(!g.is_replay(0, 11_000, 2_000), "within the window");
    assert!(g.is_replay(0, 12_001, 2_000), "after the window");
    let g = Generation::advanced(Some(g), 2, 20_000);
    assert_eq!(g.previous_at_ms, 10_000);
    assert!(!g.is_replay(1, 21_000, 2_000));
    assert!(
        g.is_replay(0, 21_000, 2_000),
        "gen 0 was superseded at 10 s"
    );
    assert_eq!(
        Generation::advanced(Some(g), 1, 30_000),
        g,
        "never backwards"
    );
    assert_eq!(Generation::decode(&g.encode()), Some(g));
}

#[tokio::test]
async fn a_logout_token_is_used_once() {
    let list = RevocationList::new(Duration::from_secs(60));
    let ttl = Duration::from_secs(360);
    assert!(list.first_use_of_logout_token("iss", "j1", ttl).await);
    assert!(!list.first_use_of_logout_token("iss", "j1", ttl).await);
    assert!(list.first_use_of_logout_token("other", "j1", ttl).await);
}
