//! The shared-store primitives, on the memory store and on a real Redis at
//! 127.0.0.1:6379 (started by .ci/run when it is not running).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use bff_proxy::store::{MemoryStore, RedisStore, SharedStore};

const REDIS: &str = "redis://127.0.0.1:6379";

async fn redis(prefix: &str) -> RedisStore {
    RedisStore::connect(REDIS, prefix, Duration::from_secs(2))
        .await
        .unwrap_or_else(|e| {
            panic!(
                "{e}: these tests need Redis at 127.0.0.1:6379; start it with\n  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save \"\""
            )
        })
}

fn prefix() -> String {
    format!("bff-test:{}:", bff_proxy::devidp::random_text(6))
}

async fn locks_are_owned_and_expire(store: &dyn SharedStore) {
    let ttl = Duration::from_millis(300);
    assert!(store.try_lock("lock", "a", ttl).await.unwrap());
    assert!(
        !store.try_lock("lock", "b", ttl).await.unwrap(),
        "held by a"
    );
    assert!(
        !store.renew_lock("lock", "b", ttl).await.unwrap(),
        "b cannot renew a's lock"
    );
    assert!(
        store
            .renew_lock("lock", "a", Duration::from_secs(5))
            .await
            .unwrap()
    );
    store.unlock("lock", "b").await.unwrap();
    assert!(
        !store.try_lock("lock", "b", ttl).await.unwrap(),
        "b cannot release a's lock"
    );
    store.unlock("lock", "a").await.unwrap();
    assert!(store.try_lock("lock", "b", ttl).await.unwrap(), "released");
    // An abandoned lock expires.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        if store.try_lock("lock", "c", ttl).await.unwrap() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the lock never expired"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn values_live_for_their_ttl(store: &dyn SharedStore) {
    store
        .put("v", b"sealed bytes", Duration::from_millis(300))
        .await
        .unwrap();
    assert_eq!(
        store.get("v").await.unwrap().as_deref(),
        Some(&b"sealed bytes"[..])
    );
    assert_eq!(store.get("missing").await.unwrap(), None);
    store.put("d", b"x", Duration::from_secs(60)).await.unwrap();
    store.delete("d").await.unwrap();
    assert_eq!(store.get("d").await.unwrap(), None);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while store.get("v").await.unwrap().is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the value never expired"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// One lock, many contenders at once: exactly one wins.
async fn one_winner(store: &'static dyn SharedStore) {
    let mut set = tokio::task::JoinSet::new();
    for i in 0..50 {
        set.spawn(async move {
            store
                .try_lock("race", &format!("owner-{i}"), Duration::from_secs(5))
                .await
                .unwrap()
        });
    }
    let mut wins = 0;
    while let Some(won) = set.join_next().await {
        wins += usize::from(won.unwrap());
    }
    assert_eq!(wins, 1);
}

#[tokio::test]
async fn memory_store() {
    let store: &'static MemoryStore = Box::leak(Box::new(MemoryStore::new()));
    locks_are_owned_and_expire(store).await;
    values_live_for_their_ttl(store).await;
    one_winner(store).await;
}

#[tokio::test]
async fn redis_store() {
    let prefix = prefix();
    let store: &'static RedisStore = Box::leak(Box::new(redis(&prefix).await));
    locks_are_owned_and_expire(store).await;
    values_live_for_their_ttl(store).await;
    one_winner(store).await;
    // Every key the store wrote has a time-to-live, and they all sit under the prefix.
    let client = redis::Client::open(REDIS).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(!keys.is_empty());
    for key in &keys {
        let ttl: i64 = redis::cmd("PTTL")
            .arg(key)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(ttl > 0, "{key} has no time-to-live ({ttl})");
        let _: i64 = redis::cmd("DEL")
            .arg(key)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn an_unreachable_redis_is_an_error_not_a_hang() {
    let started = std::time::Instant::now();
    let err = RedisStore::connect("redis://127.0.0.1:1", "x:", Duration::from_secs(2))
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(
        !err.to_string().contains("127.0.0.1:1"),
        "the URL (a secret) is not echoed: {err}"
    );
}
