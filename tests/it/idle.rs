//! `session.idle_timeout`: a session used every half of it lives on for three
//! times as long; left alone for longer it ends (401 `session_expired`, counted
//! with reason `idle`); its time of use is sealed again at most every quarter of
//! the timeout. Both session modes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use crate::support::stack::{Front, Options, Stack, start};

fn ended_idle(s: &Stack) -> u64 {
    let text = prometheus::TextEncoder::new()
        .encode_to_string(&s.bff.metrics_registry().gather())
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(r#"bff_sessions_ended_total{reason="idle"} "#))
        .map_or(0, |v| v.trim().parse().unwrap())
}

async fn idle_timeout(front: Front, mode: &str) {
    let s = start(
        front,
        Options::default()
            .env("BFF_SESSION_IDLE_TIMEOUT", "60s")
            .env("BFF_SESSION_MODE", mode),
    )
    .await;
    let b = s.browser();
    b.login("/").await;
    // Used every 30 s for 3 minutes: alive.
    for step in 1..=6 {
        s.bff.clock().advance(Duration::from_secs(30));
        assert_eq!(b.api("/api/x").await.status, 200, "{mode}: step {step}");
    }
    // Used every 5 s for a minute: sealed again at most every 15 s.
    let mut sealed = 0;
    for _ in 0..12 {
        s.bff.clock().advance(Duration::from_secs(5));
        let r = b.api("/api/x").await;
        assert_eq!(r.status, 200);
        if r.headers.get("set-cookie").is_some() {
            sealed += 1;
        }
    }
    assert!(sealed <= 5, "{mode}: sealed {sealed} times in a minute");
    if mode == "cookie" {
        assert!(sealed >= 3, "{mode}: sealed {sealed} times in a minute");
    }
    assert_eq!(b.api("/bff/user").await.status, 200);
    // Left alone for longer than the timeout: ended.
    s.bff.clock().advance(Duration::from_secs(61));
    let r = b.api("/api/x").await;
    assert_eq!(r.status, 401, "{mode}");
    assert_eq!(r.json()["error"], "session_expired");
    assert_eq!(ended_idle(&s), 1);
    assert_eq!(b.api("/bff/user").await.status, 401);
    s.stop().await;
}

#[tokio::test]
async fn idle_timeout_cookie_sessions() {
    idle_timeout(Front::Hyper, "cookie").await;
}

#[tokio::test]
async fn idle_timeout_server_sessions() {
    idle_timeout(Front::Pingora, "server").await;
}

#[tokio::test]
async fn idle_timeout_behind_the_tower_layer() {
    idle_timeout(Front::Axum, "cookie").await;
}
