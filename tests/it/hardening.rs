//! Regression tests of the hardening issue: each defect found by attacking the
//! release binary, reproduced through a real front door (both engines where the
//! defect lives in the front doors, and the tower layer where it applies).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::result_large_err
)]

use std::time::Duration;

use crate::support::browser::{Browser, Jar};
use crate::support::stack::{Front, Options, Stack, start};
use crate::support::{Http, Reply};
use bff_proxy::devidp::{DevIdpSettings, RefreshPolicy, TokenQuirk};
use bytes::Bytes;
use http::header::{COOKIE, HeaderValue};
use http_body_util::Full;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// A request with a raw Cookie header (bytes a browser could send, not only
/// visible ASCII) and extra headers.
async fn raw_cookie_request(
    s: &Stack,
    path: &str,
    cookie: &[u8],
    headers: &[(&str, &str)],
) -> Reply {
    let mut req = http::Request::get(format!("{}{path}", s.base));
    req = req.header(COOKIE, HeaderValue::from_bytes(cookie).unwrap());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    Http::new()
        .send(req.body(Full::<Bytes>::default()).unwrap())
        .await
}

/// The sealed session value a logged-in browser holds.
fn session_value(b: &Browser) -> String {
    b.jar()
        .0
        .iter()
        .find(|(n, _)| n == "__Host-Http-bff")
        .map(|(_, v)| v.clone())
        .expect("a session cookie")
}

/// A pingora stack with these options and a browser logged in to it.
async fn logged_in(options: Options) -> (Stack, Browser) {
    let s = start(Front::Pingora, options).await;
    let b = s.browser();
    b.login("/").await;
    (s, b)
}

// ---- 1. Session planting through Unicode-trimmed cookie names ----

async fn a_planted_lookalike_session_never_opens_and_never_reaches_upstream(front: Front) {
    let s = start(front, Options::default()).await;
    // The attacker logs in with their own browser and plants their sealed session
    // under a name that only Unicode trimming makes ours.
    let attacker = s.browser();
    attacker.login("/").await;
    let planted = session_value(&attacker);
    for space in [
        "\u{2000}", "\u{00A0}", "\u{3000}", "\u{0085}", "\u{1680}", "\u{205F}",
    ] {
        let cookie = format!("{space}__Host-Http-bff={planted}; theme=dark");
        // The victim, without a session of their own: no session, no Bearer.
        let r = raw_cookie_request(
            &s,
            "/api/x",
            cookie.as_bytes(),
            &[("x-csrf", "1"), ("accept", "application/json")],
        )
        .await;
        assert_eq!(
            (r.status.as_u16(), r.oauth_error().as_str()),
            (401, "unauthenticated"),
            "{space:?}: the planted session opened: {}",
            r.text()
        );
        // And the lookalike is stripped before any upstream.
        let r = raw_cookie_request(&s, "/pub/x", cookie.as_bytes(), &[]).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(
            r.json()["headers"]["cookie"],
            "theme=dark",
            "{space:?}: a lookalike of our cookie reached the upstream"
        );
    }
    // A victim with a session: the planted one placed first (a longer Path comes
    // first in the browser's header) does not win.
    let victim = s.browser();
    victim.login("/").await;
    let own = victim.api("/api/mine").await;
    let own_print = own.json()["bearer"]["fingerprint"].clone();
    let cookie = format!(
        "\u{2000}__Host-Http-bff={planted}; __Host-Http-bff={}",
        session_value(&victim)
    );
    let r = raw_cookie_request(
        &s,
        "/api/x",
        cookie.as_bytes(),
        &[("x-csrf", "1"), ("accept", "application/json")],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["bearer"]["fingerprint"], own_print);
    s.stop().await;
}

#[tokio::test]
async fn hyper_engine_refuses_planted_lookalike_sessions() {
    a_planted_lookalike_session_never_opens_and_never_reaches_upstream(Front::Hyper).await;
}

#[tokio::test]
async fn pingora_engine_refuses_planted_lookalike_sessions() {
    a_planted_lookalike_session_never_opens_and_never_reaches_upstream(Front::Pingora).await;
}

#[tokio::test]
async fn axum_layer_refuses_planted_lookalike_sessions() {
    a_planted_lookalike_session_never_opens_and_never_reaches_upstream(Front::Axum).await;
}

// ---- 2. Login-cookie bomb ----

fn login_cookies(jar: &Jar) -> usize {
    jar.0.iter().filter(|(n, _)| n.contains("-login-")).count()
}

async fn the_login_cookie_bomb_is_defused(front: Front) {
    let s = start(front, Options::default()).await;
    let b = s.browser();
    let long = format!("/{}", "a".repeat(500));
    let enc: String = url::form_urlencoded::byte_serialize(long.as_bytes()).collect();
    // Any site can start logins by top-level navigation, as often as it likes.
    for _ in 0..11 {
        let r = b
            .request("GET", &format!("/bff/login?returnUrl={enc}"), &[])
            .await;
        assert_eq!(r.status, 302, "{}", r.text());
    }
    assert!(
        login_cookies(&b.jar()) <= 4,
        "{} login cookies pending",
        login_cookies(&b.jar())
    );
    let page = b.request("GET", "/", &[]).await;
    assert_eq!(page.status, 200, "the SPA still loads");
    // A returnUrl over 512 bytes is refused.
    let too_long = format!("/{}", "a".repeat(512));
    let enc: String = url::form_urlencoded::byte_serialize(too_long.as_bytes()).collect();
    let r = b
        .request("GET", &format!("/bff/login?returnUrl={enc}"), &[])
        .await;
    assert_eq!(r.status, 400);
    // A finished login clears every pending attempt.
    b.login("/done").await;
    assert_eq!(login_cookies(&b.jar()), 0);
    // A Cookie header too large, full of login cookies (set before the cap): 431
    // and Set-Cookie lines that expire them, so the browser recovers.
    let mut jar = b.jar();
    for i in 0..40 {
        jar.0
            .push((format!("__Host-Http-bff-login-{i:016}"), "x".repeat(1000)));
    }
    b.set_jar(jar);
    let r = b.request("GET", "/", &[]).await;
    assert_eq!(r.status, 431);
    assert!(
        login_cookies(&b.jar()) < 40 - 20,
        "login cookies expired by the 431"
    );
    s.stop().await;
}

#[tokio::test]
async fn hyper_engine_defuses_the_login_cookie_bomb() {
    the_login_cookie_bomb_is_defused(Front::Hyper).await;
}

#[tokio::test]
async fn pingora_engine_defuses_the_login_cookie_bomb() {
    the_login_cookie_bomb_is_defused(Front::Pingora).await;
}

// ---- 3. Path escape with the user's Bearer ----

/// Sends a request line as is (no client normalises or refuses it) and reads the
/// status.
async fn raw_status(s: &Stack, target: &str, cookie: Option<&str>) -> u16 {
    let mut stream = TcpStream::connect(s.authority()).await.unwrap();
    let mut head = format!(
        "GET {target} HTTP/1.1\r\nHost: {}\r\nX-CSRF: 1\r\nConnection: close\r\n",
        s.authority()
    );
    if let Some(c) = cookie {
        head.push_str(&format!("Cookie: {c}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .expect("an answer in time")
        .ok();
    let text = String::from_utf8_lossy(&answer);
    text.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line for {target}: {text:?}"))
}

async fn paths_that_escape_a_route_are_refused(front: Front) {
    let s = start(front, Options::default()).await;
    let b = s.browser();
    b.login("/").await;
    let cookie = b.jar().header().unwrap();
    // The route's own paths work.
    assert_eq!(raw_status(&s, "/sp/items", Some(&cookie)).await, 200);
    for target in [
        "/sp/../admin",
        "/sp/%2e%2e/admin",
        "/sp/%2E%2E/admin",
        "/sp/..%2fadmin",
        "/sp/..%2Fadmin",
        "/sp/..;/admin",
        "/sp/.;/admin",
        "/api/../pub/x",
        "/pub/../api/x",
        "/sp/a%5c..%5cadmin",
        "/sp/a\\..\\admin",
        "/sp/a%00b",
        "/sp/a%2fb",
        "/sp/%252e%252e/admin",
    ] {
        assert_eq!(
            raw_status(&s, target, Some(&cookie)).await,
            400,
            "{target} was not refused"
        );
    }
    s.stop().await;
}

#[tokio::test]
async fn hyper_engine_refuses_path_escapes() {
    paths_that_escape_a_route_are_refused(Front::Hyper).await;
}

#[tokio::test]
async fn pingora_engine_refuses_path_escapes() {
    paths_that_escape_a_route_are_refused(Front::Pingora).await;
}

// ---- 4. Connections: header deadline, idle keep-alive, connection bound ----

/// Reads until the peer closes or `limit` passes; returns what was read and
/// whether it closed.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> (Vec<u8>, bool) {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + limit;
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return (got, false),
            Ok(Ok(0) | Err(_)) => return (got, true),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

fn connection_options() -> Options {
    Options::default()
        .env("BFF_SERVER_HEADER_TIMEOUT", "1s")
        .env("BFF_SERVER_IDLE_TIMEOUT", "1s")
        .env("BFF_SERVER_MAX_CONNECTIONS", "20")
}

async fn slow_idle_and_surplus_connections_are_cut(front: Front) {
    let s = start(front, connection_options()).await;
    // A client trickling one header line every 300 ms (slowloris) is cut at the
    // 1 s header deadline, with 408 or a plain close.
    let mut slow = TcpStream::connect(s.authority()).await.unwrap();
    slow.write_all(b"GET /pub/x HTTP/1.1\r\n").await.unwrap();
    let started = std::time::Instant::now();
    let trickle = async {
        for i in 0..30 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            if slow
                .write_all(format!("X-Slow-{i}: 1\r\n").as_bytes())
                .await
                .is_err()
            {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(3), trickle).await;
    let (answer, closed) = read_until_closed(&mut slow, Duration::from_secs(5)).await;
    assert!(
        closed,
        "a trickling client still connected after {:?}",
        started.elapsed()
    );
    let text = String::from_utf8_lossy(&answer);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "unexpected answer: {text:?}"
    );

    // An idle keep-alive connection is closed at the 1 s idle timeout.
    let mut idle = TcpStream::connect(s.authority()).await.unwrap();
    idle.write_all(format!("GET /pub/x HTTP/1.1\r\nHost: {}\r\n\r\n", s.authority()).as_bytes())
        .await
        .unwrap();
    let mut first = [0u8; 12];
    idle.read_exact(&mut first).await.unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    let waited = std::time::Instant::now();
    let (_, closed) = read_until_closed(&mut idle, Duration::from_secs(5)).await;
    assert!(
        closed,
        "an idle keep-alive connection was still open after 5 s"
    );
    assert!(
        waited.elapsed() >= Duration::from_millis(500),
        "closed too early"
    );

    // max_connections + 10 connections: the first ones are served, the surplus
    // closed, and the proxy stays up.
    let mut held = Vec::new();
    for _ in 0..30 {
        held.push(TcpStream::connect(s.authority()).await.unwrap());
    }
    let request = format!(
        "GET /pub/x HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        s.authority()
    );
    let mut served = 0;
    let mut refused = 0;
    for stream in &mut held {
        let _ = stream.write_all(request.as_bytes()).await;
    }
    for stream in &mut held {
        let (answer, _) = read_until_closed(stream, Duration::from_secs(5)).await;
        if answer.starts_with(b"HTTP/1.1 200") {
            served += 1;
        } else {
            refused += 1;
        }
    }
    assert!(served >= 18, "only {served} of the first 20 served");
    assert!(
        refused >= 8,
        "only {refused} of 10 surplus connections refused"
    );
    drop(held);
    // Up, and accepting again once connections closed.
    let mut ok = false;
    for _ in 0..50 {
        let r = Http::new()
            .try_send(
                http::Request::get(format!("{}/pub/x", s.base))
                    .body(Full::default())
                    .unwrap(),
            )
            .await;
        if r.is_ok_and(|r| r.status == 200) {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "the proxy did not recover");
    s.stop().await;
}

#[tokio::test]
async fn hyper_engine_cuts_slow_idle_and_surplus_connections() {
    slow_idle_and_surplus_connections_are_cut(Front::Hyper).await;
}

#[tokio::test]
async fn pingora_engine_cuts_slow_idle_and_surplus_connections() {
    slow_idle_and_surplus_connections_are_cut(Front::Pingora).await;
}

// ---- 5-8. Odd token-endpoint answers ----

fn non_rotating() -> Options {
    Options::with_idp(DevIdpSettings {
        refresh: RefreshPolicy {
            rotate: false,
            ..RefreshPolicy::default()
        },
        ..DevIdpSettings::default()
    })
}

#[tokio::test]
async fn an_empty_refresh_token_is_no_rotation() {
    let (s, b) = logged_in(non_rotating()).await;
    s.idp
        .quirk_next_token_responses(1, TokenQuirk::EmptyRefreshToken);
    s.bff.clock().advance(Duration::from_secs(301));
    let r = b.api("/api/a").await;
    assert_eq!(r.status, 200, "{}", r.text());
    // Past the grace window, the next refresh uses the kept token: no replay.
    s.bff.clock().advance(Duration::from_secs(301));
    s.idp.advance_clock(Duration::from_secs(301));
    let r = b.api("/api/b").await;
    assert_eq!(r.status, 200, "the session ended: {}", r.text());
    assert_eq!(s.idp.stats().token_refresh, 2);
    s.stop().await;
}

#[tokio::test]
async fn an_unreadable_200_is_never_retried_with_the_same_refresh_token() {
    let (s, b) = logged_in(Options::with_idp(DevIdpSettings {
        refresh: RefreshPolicy {
            reuse_detection: true,
            grace: Duration::ZERO,
            ..RefreshPolicy::default()
        },
        ..DevIdpSettings::default()
    }))
    .await;
    s.idp.quirk_next_token_responses(
        1,
        TokenQuirk::Unreadable("<html>upstream hiccup</html>".into()),
    );
    s.bff.clock().advance(Duration::from_secs(301));
    let r = b.api("/api/a").await;
    assert_eq!(
        (r.status.as_u16(), r.oauth_error().as_str()),
        (503, "idp_unavailable")
    );
    assert_eq!(
        s.idp.stats().token_refresh,
        1,
        "the consumed refresh token was presented again"
    );
    assert_eq!(s.idp.stats().reuse_detected, 0);
    assert_eq!(s.bff.metrics().refresh_count("unreadable"), 1);
    s.stop().await;
}

#[tokio::test]
async fn expires_in_as_a_string_is_read() {
    let s = start(Front::Pingora, Options::default()).await;
    s.idp
        .quirk_next_token_responses(2, TokenQuirk::ExpiresInString);
    let b = s.browser();
    b.login("/").await;
    let r = b.api("/api/a").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(s.idp.stats().token_refresh, 0, "300 s read from \"300\"");
    s.bff.clock().advance(Duration::from_secs(290));
    assert_eq!(b.api("/api/b").await.status, 200);
    assert_eq!(s.idp.stats().token_refresh, 1);
    s.stop().await;
}

#[tokio::test]
async fn a_refreshed_id_token_for_another_subject_ends_the_session() {
    let (s, b) = logged_in(Options::default()).await;
    s.idp
        .quirk_next_token_responses(1, TokenQuirk::OtherSub("mallory".into()));
    s.bff.clock().advance(Duration::from_secs(301));
    let r = b.api("/api/a").await;
    assert_eq!(
        (r.status.as_u16(), r.oauth_error().as_str()),
        (401, "session_expired")
    );
    let user = b.api("/bff/user").await;
    assert_ne!(user.status, 200, "{}", user.text());
    assert_eq!(s.bff.metrics().sessions_ended_count("sub_changed"), 1);
    s.stop().await;
}

// ---- 9. Back-channel logout replay and age ----

async fn post_logout_token(s: &Stack, token: &str) -> u16 {
    Http::new()
        .post_form(
            &format!("{}/bff/backchannel-logout", s.base),
            &[("logout_token", token)],
            None,
        )
        .await
        .status
        .as_u16()
}

#[tokio::test]
async fn old_and_replayed_logout_tokens_are_refused() {
    let (s, b) = logged_in(Options::default()).await;
    // Three days old, no exp.
    let old = s.idp.logout_token("any", |c| {
        let iat = c["iat"].as_u64().unwrap();
        c["iat"] = (iat - 3 * 86_400).into();
        c.as_object_mut().unwrap().remove("exp");
        c.as_object_mut().unwrap().remove("sid");
    });
    assert_eq!(post_logout_token(&s, &old).await, 400);
    assert_eq!(b.api("/api/a").await.status, 200, "an old token logged out");
    // A sub-only token ends the sessions created up to its iat...
    let token = s.idp.logout_token("any", |c| {
        c.as_object_mut().unwrap().remove("sid");
    });
    assert_eq!(post_logout_token(&s, &token).await, 200);
    assert_eq!(b.api("/api/a").await.status, 401);
    // ...not the ones opened afterwards, and a replay of it is refused.
    s.bff.clock().advance(Duration::from_secs(2));
    s.idp.advance_clock(Duration::from_secs(2));
    b.login("/").await;
    assert_eq!(post_logout_token(&s, &token).await, 400, "replay accepted");
    assert_eq!(
        b.api("/api/b").await.status,
        200,
        "the replay ended a later session"
    );
    s.stop().await;
}

#[tokio::test]
async fn a_sub_logout_token_revokes_up_to_its_iat_not_the_proxy_clock() {
    let (s, b) = logged_in(Options::default()).await;
    // Issued two minutes before this login, delivered now.
    let token = s.idp.logout_token("any", |c| {
        let iat = c["iat"].as_u64().unwrap();
        c["iat"] = (iat - 120).into();
        c.as_object_mut().unwrap().remove("sid");
    });
    assert_eq!(post_logout_token(&s, &token).await, 200);
    assert_eq!(
        b.api("/api/a").await.status,
        200,
        "a session created after the token's iat was revoked"
    );
    // Same second: a login right after a sub-wide logout survives it.
    let token = s.idp.logout_token("any", |c| {
        c.as_object_mut().unwrap().remove("sid");
    });
    assert_eq!(post_logout_token(&s, &token).await, 200);
    assert_eq!(b.api("/api/b").await.status, 401);
    b.login("/").await;
    assert_eq!(b.api("/api/c").await.status, 200);
    s.stop().await;
}

// ---- 10, 11, 14a. Headers the client may not choose ----

async fn spoofed_forwarding_headers_never_reach_the_upstream(front: Front) {
    let s = start(front, Options::default()).await;
    let b = s.browser();
    let spoofed = [
        ("forwarded", "for=6.6.6.6;proto=https"),
        ("x-real-ip", "6.6.6.6"),
        ("x-client-ip", "6.6.6.6"),
        ("x-forwarded-port", "443"),
        ("x-forwarded-prefix", "/admin"),
        ("x-forwarded-server", "evil"),
        ("x-original-url", "/admin"),
        ("x-rewrite-url", "/admin"),
        ("x-forwarded-for", "6.6.6.6"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "evil.example"),
    ];
    let r = b.request("GET", "/pub/x", &spoofed).await;
    assert_eq!(r.status, 200);
    let seen = &r.json()["headers"];
    for (name, _) in &spoofed[..8] {
        assert!(seen.get(*name).is_none(), "{name} reached the upstream");
    }
    assert_eq!(seen["x-forwarded-for"], "127.0.0.1");
    assert_eq!(seen["x-forwarded-proto"], "http");
    assert_eq!(seen["x-forwarded-host"], s.authority());
    s.stop().await;

    // Behind a trusted proxy, its X-Forwarded-* are kept (and XFF extended).
    let s = start(
        front,
        Options::default().env("BFF_SERVER_TRUSTED_PROXIES", "127.0.0.0/8"),
    )
    .await;
    let r = s.browser().request("GET", "/pub/x", &spoofed).await;
    let seen = &r.json()["headers"];
    assert_eq!(seen["x-forwarded-for"], "6.6.6.6, 127.0.0.1");
    assert_eq!(seen["x-forwarded-proto"], "https");
    assert_eq!(seen["x-forwarded-host"], "evil.example");
    assert!(seen.get("x-real-ip").is_none() && seen.get("forwarded").is_none());
    s.stop().await;
}

#[tokio::test]
async fn hyper_engine_drops_spoofed_forwarding_headers() {
    spoofed_forwarding_headers_never_reach_the_upstream(Front::Hyper).await;
}

#[tokio::test]
async fn pingora_engine_drops_spoofed_forwarding_headers() {
    spoofed_forwarding_headers_never_reach_the_upstream(Front::Pingora).await;
}

async fn connection_cannot_remove_what_the_proxy_sets(front: Front) {
    let s = start(front, Options::default()).await;
    let b = s.browser();
    b.login("/").await;
    for named in [
        "authorization",
        "cookie, authorization",
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
    ] {
        let r = b
            .request(
                "GET",
                "/api/x",
                &[
                    ("x-csrf", "1"),
                    ("connection", named),
                    ("authorization", "Bearer forged"),
                ],
            )
            .await;
        assert_eq!(r.status, 200, "Connection: {named}: {}", r.text());
        let seen = r.json();
        assert!(
            seen["bearer"]["fingerprint"].is_string(),
            "Connection: {named} removed the Bearer: {seen}"
        );
        assert_eq!(seen["bearer"]["claims"]["sub"], "dev-user-1");
        if front != Front::Axum {
            assert_eq!(seen["headers"]["x-forwarded-for"], "127.0.0.1", "{named}");
        }
    }
    s.stop().await;
}

#[tokio::test]
async fn hyper_engine_keeps_its_bearer_whatever_connection_names() {
    connection_cannot_remove_what_the_proxy_sets(Front::Hyper).await;
}

#[tokio::test]
async fn pingora_engine_keeps_its_bearer_whatever_connection_names() {
    connection_cannot_remove_what_the_proxy_sets(Front::Pingora).await;
}

#[tokio::test]
async fn axum_layer_keeps_its_bearer_whatever_connection_names() {
    connection_cannot_remove_what_the_proxy_sets(Front::Axum).await;
}

// ---- 14b. Logout with a bad returnUrl ----

async fn a_logout_with_a_bad_return_url_still_logs_out(front: Front) {
    let s = start(front, Options::default()).await;
    let b = s.browser();
    b.login("/").await;
    let r = b
        .request(
            "POST",
            "/bff/logout?returnUrl=%2F%2Fevil.example",
            &[("x-csrf", "1")],
        )
        .await;
    assert_eq!(r.status, 400);
    assert!(!b.jar().has_session(), "the cookie was not cleared");
    assert!(
        !r.headers
            .get("location")
            .is_some_and(|l| l.to_str().unwrap_or("").contains("evil")),
        "open redirect"
    );
    // Even a copy of the old cookie is refused now.
    let r = s
        .browser()
        .request("GET", "/api/x", &[("x-csrf", "1")])
        .await;
    assert_eq!(r.status, 401);
    s.stop().await;
}

#[tokio::test]
async fn hyper_engine_logs_out_before_refusing_a_bad_return_url() {
    a_logout_with_a_bad_return_url_still_logs_out(Front::Hyper).await;
}

#[tokio::test]
async fn pingora_engine_logs_out_before_refusing_a_bad_return_url() {
    a_logout_with_a_bad_return_url_still_logs_out(Front::Pingora).await;
}

// ---- 15. Replay without rotation; kid-less keys ----

#[tokio::test]
async fn replaying_an_old_cookie_cannot_reset_max_refreshes() {
    let (s, b) = logged_in(non_rotating().env("BFF_SESSION_MAX_REFRESHES", "3")).await;
    let first = b.jar();
    // Two refreshes: the session is at its second generation, one refresh left.
    for _ in 0..2 {
        s.bff.clock().advance(Duration::from_secs(301));
        assert_eq!(b.api("/api/a").await.status, 200);
    }
    // The first cookie (no refresh yet), replayed long after the grace window: with
    // an IdP that does not rotate, refreshing it again would reset the count.
    s.bff.clock().advance(Duration::from_secs(301));
    let replay = s.browser();
    replay.set_jar(first);
    let r = replay.api("/api/b").await;
    assert_eq!(
        (r.status.as_u16(), r.oauth_error().as_str()),
        (401, "session_expired"),
        "an old cookie refreshed again: {}",
        r.text()
    );
    assert_eq!(s.bff.metrics().sessions_ended_count("replay"), 1);
    // The replay ended the session for every copy of its cookie.
    assert_eq!(b.api("/api/c").await.status, 401);
    s.stop().await;
}

#[tokio::test]
async fn an_idp_with_one_key_and_no_kid_works() {
    let (s, b) = logged_in(Options::with_idp(DevIdpSettings {
        anonymous_keys: true,
        ..DevIdpSettings::default()
    }))
    .await;
    assert_eq!(b.api("/api/a").await.status, 200);
    s.stop().await;
}

// ---- 16. Revocation endpoint only in RFC 8414 metadata ----

#[tokio::test]
async fn logout_revokes_through_the_rfc8414_revocation_endpoint() {
    let (s, b) = logged_in(Options::with_idp(DevIdpSettings {
        revocation_in_rfc8414_only: true,
        ..DevIdpSettings::default()
    }))
    .await;
    let r = b.request("POST", "/bff/logout", &[("x-csrf", "1")]).await;
    assert_eq!(r.status, 302);
    assert_eq!(
        s.idp.stats().revocations,
        1,
        "the refresh token was not revoked"
    );
    s.stop().await;
}

// ---- 14a. pingora and Connection: x-forwarded-* ----

#[tokio::test]
async fn pingora_answers_connection_naming_forwarding_headers() {
    let s = start(Front::Pingora, Options::default()).await;
    for named in ["x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"] {
        let r = s
            .browser()
            .try_request("GET", "/pub/x", &[("connection", named)])
            .await;
        let r = r.unwrap_or_else(|e| panic!("Connection: {named}: no answer ({e})"));
        assert_eq!(r.status, 200, "Connection: {named}");
    }
    s.stop().await;
}
