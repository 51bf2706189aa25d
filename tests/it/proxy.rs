//! The front doors over real sockets on 127.0.0.1:0, with the dev IdP and real
//! upstreams: the hyper engine (the binary's second engine) and the tower layer in
//! front of an axum app. One suite, run for each front door.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::result_large_err
)]

use std::sync::Arc;
use std::time::Duration;

use crate::support::{Reply, eventually, rss_bytes};
use futures_util::{SinkExt as _, StreamExt as _};

use crate::support::stack::{Front, Options, Stack, stack};

fn error_of(r: &Reply) -> String {
    r.json()["error"].as_str().unwrap_or_default().to_owned()
}

fn clears_session(r: &Reply) -> bool {
    r.headers.get_all("set-cookie").iter().any(|v| {
        let t = v.to_str().unwrap();
        t.starts_with("__Host-Http-bff") && t.contains("Max-Age=0")
    })
}

fn sets_session(r: &Reply) -> bool {
    r.headers.get_all("set-cookie").iter().any(|v| {
        let t = v.to_str().unwrap();
        t.starts_with("__Host-Http-bff") && !t.contains("Max-Age=0")
    })
}

fn fingerprint(r: &Reply) -> String {
    r.json()["bearer"]["fingerprint"]
        .as_str()
        .unwrap_or_else(|| panic!("no bearer: {}", r.text()))
        .to_owned()
}

async fn outcome_table(front: Front) {
    let s = stack(front, &[]).await;
    let b = s.browser();
    // No session.
    let r = b.api("/api/items").await;
    assert_eq!(
        (r.status.as_u16(), error_of(&r).as_str()),
        (401, "unauthenticated")
    );
    let r = b
        .request("GET", "/api/page?x=1", &[("sec-fetch-mode", "navigate")])
        .await;
    assert_eq!(r.status, 302);
    assert_eq!(
        r.headers["location"],
        "/bff/login?returnUrl=%2Fapi%2Fpage%3Fx%3D1"
    );
    let r = b.request("GET", "/api/items", &[]).await;
    assert_eq!((r.status.as_u16(), error_of(&r).as_str()), (403, "csrf"));

    b.login("/").await;
    // Fresh: forwarded with the Bearer token, our cookie stripped, others kept, a
    // forged Authorization replaced.
    let mut jar = b.jar();
    jar.0.push(("theme".into(), "dark".into()));
    b.set_jar(jar);
    let r = b
        .request(
            "GET",
            "/api/items?q=1",
            &[
                ("x-csrf", "1"),
                ("authorization", "Bearer forged"),
                ("connection", "keep-alive, x-remove-me"),
                ("x-remove-me", "1"),
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = r.json();
    assert_eq!(seen["headers"]["cookie"], "theme=dark");
    assert_eq!(seen["path"], "/api/items");
    assert_eq!(seen["query"], "q=1");
    assert_eq!(seen["bearer"]["claims"]["sub"], "dev-user-1");
    assert!(!sets_session(&r));
    let first = fingerprint(&r);
    match front {
        Front::Hyper | Front::Pingora => {
            assert!(
                seen["headers"].get("x-remove-me").is_none(),
                "hop-by-hop removed"
            );
            assert_eq!(seen["headers"]["x-forwarded-for"], "127.0.0.1");
            assert_eq!(seen["headers"]["x-forwarded-proto"], "http");
            assert_eq!(
                seen["headers"]["x-forwarded-host"],
                s.base.trim_start_matches("http://")
            );
        }
        Front::Axum => assert_eq!(seen["claims"]["sub"], "dev-user-1"),
    }
    // A public route: no token, the client's own Authorization passes, our cookie not.
    let r = b
        .request("GET", "/pub/x", &[("authorization", "Basic abc")])
        .await;
    let seen = r.json();
    assert!(seen["bearer"].is_null());
    assert_eq!(seen["headers"]["cookie"], "theme=dark");

    // Near expiry: refreshed, rotated cookie.
    s.bff.clock().advance(Duration::from_secs(290));
    let r = b.api("/api/items").await;
    assert_eq!(r.status, 200);
    assert!(sets_session(&r));
    let second = fingerprint(&r);
    assert_ne!(first, second);
    assert_eq!(s.idp.stats().token_refresh, 1);
    assert_eq!(fingerprint(&b.api("/api/items").await), second);

    // IdP down: still-valid token forwarded; expired: 503, cookie untouched.
    s.bff.clock().advance(Duration::from_secs(280));
    s.idp.set_down(true).await;
    let r = b.api("/api/items").await;
    assert_eq!(r.status, 200);
    assert_eq!(fingerprint(&r), second);
    assert!(r.headers.get("set-cookie").is_none());
    s.bff.clock().advance(Duration::from_secs(30));
    let r = b.api("/api/items").await;
    assert_eq!(
        (r.status.as_u16(), error_of(&r).as_str()),
        (503, "idp_unavailable")
    );
    assert!(r.headers.contains_key("retry-after"));
    assert!(r.headers.get("set-cookie").is_none());
    s.idp.set_down(false).await;
    let r = b.api("/api/items").await;
    assert_eq!(r.status, 200, "the session survived the outage");

    // invalid_grant: the session ends and the cookie is cleared.
    s.bff.clock().advance(Duration::from_secs(301));
    s.idp.fail_next_token_requests(1, 400);
    let r = b.api("/api/items").await;
    assert_eq!(
        (r.status.as_u16(), error_of(&r).as_str()),
        (401, "session_expired")
    );
    assert!(clears_session(&r));
    assert!(!b.jar().has_session());

    // User and logout over HTTP.
    b.login("/").await;
    let user = b.api("/bff/user").await;
    assert_eq!(user.status, 200);
    let logout_url = user.json()["session"]["logout_url"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = b.request("GET", &logout_url, &[]).await;
    assert_eq!(r.status, 302);
    assert!(r.location().as_str().starts_with(s.idp.issuer()));
    assert!(!b.jar().has_session());
    let r = s.browser().http.get(r.location().as_str()).await;
    assert_eq!(r.status, 302, "the IdP sends the browser back");
    assert_eq!(r.location().as_str(), format!("{}/", s.base));
    s.stop().await;
}

#[tokio::test]
async fn hyper_engine_outcome_table() {
    outcome_table(Front::Hyper).await;
}

#[tokio::test]
async fn pingora_engine_outcome_table() {
    outcome_table(Front::Pingora).await;
}

#[tokio::test]
async fn axum_layer_outcome_table() {
    outcome_table(Front::Axum).await;
}

async fn refresh_storm(front: Front) {
    let s = stack(front, &[]).await;
    let b = s.browser();
    b.login("/").await;
    s.idp.set_token_latency(Duration::from_millis(200));
    s.bff.clock().advance(Duration::from_secs(301));
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..200 {
        let tab = b.tab();
        set.spawn(async move { tab.api("/api/items").await });
    }
    let mut prints = std::collections::HashSet::new();
    while let Some(r) = set.join_next().await {
        let r = r.unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        prints.insert(fingerprint(&r));
    }
    assert_eq!(prints.len(), 1, "everyone got the one new token");
    assert_eq!(s.idp.stats().token_refresh, 1, "exactly one token request");
    s.stop().await;
}

#[tokio::test]
async fn hyper_engine_refresh_storm() {
    refresh_storm(Front::Hyper).await;
}

#[tokio::test]
async fn pingora_engine_refresh_storm() {
    refresh_storm(Front::Pingora).await;
}

#[tokio::test]
async fn axum_layer_refresh_storm() {
    refresh_storm(Front::Axum).await;
}

/// Streams `bytes` through the front door and reads it frame by frame; returns the
/// byte count and how much this process's memory grew meanwhile.
async fn stream_through(s: &Stack, bytes: u64) -> (u64, i64) {
    use http_body_util::BodyExt as _;
    let b = s.browser();
    b.login("/").await;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let req = http::Request::get(format!("{}/api/big?stream_bytes={bytes}", s.base))
        .header("cookie", b.jar().header().unwrap())
        .header("x-csrf", "1")
        .body(http_body_util::Empty::new())
        .unwrap();
    let before = rss_bytes() as i64;
    let resp = tokio::time::timeout(Duration::from_secs(30), client.request(req))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut total = 0u64;
    let mut peak = before;
    let read = async {
        while let Some(frame) = body.frame().await {
            total += frame.unwrap().data_ref().map_or(0, |d| d.len() as u64);
            peak = peak.max(rss_bytes() as i64);
        }
    };
    tokio::time::timeout(Duration::from_secs(60), read)
        .await
        .unwrap();
    (total, peak - before)
}

async fn streams_50mb_with_flat_memory(front: Front) {
    let s = stack(front, &[]).await;
    let size = 50 * 1024 * 1024;
    let (total, growth) = stream_through(&s, size).await;
    assert_eq!(total, size);
    assert!(
        growth < 20 * 1024 * 1024,
        "memory grew by {} MB while streaming 50 MB",
        growth / (1024 * 1024)
    );
    s.stop().await;
}

#[tokio::test]
async fn hyper_engine_streams_50mb_with_flat_memory() {
    streams_50mb_with_flat_memory(Front::Hyper).await;
}

#[tokio::test]
async fn pingora_engine_streams_50mb_with_flat_memory() {
    streams_50mb_with_flat_memory(Front::Pingora).await;
}

#[tokio::test]
async fn axum_layer_streams_50mb_with_flat_memory() {
    streams_50mb_with_flat_memory(Front::Axum).await;
}

async fn websocket_echo(front: Front) {
    let s = stack(front, &[]).await;
    let b = s.browser();
    b.login("/").await;
    let addr = s.base.trim_start_matches("http://").to_owned();
    let stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        format!("ws://{addr}/ws/chat"),
    )
    .unwrap();
    let cookie = format!("{}; theme=dark", b.jar().header().unwrap());
    req.headers_mut().insert("cookie", cookie.parse().unwrap());
    let (mut ws, resp) = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::client_async(req, stream),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(resp.status(), 101);
    let hello = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(hello.to_text().unwrap(), "bearer=true cookie=theme=dark");
    for i in 0..5 {
        ws.send(format!("message {i}").into()).await.unwrap();
        let back = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(back.to_text().unwrap(), format!("message {i}"));
    }
    ws.close(None).await.unwrap();
    // Without a session the upgrade is refused like any API request.
    let stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        format!("ws://{addr}/ws/chat"),
    )
    .unwrap();
    let refused = tokio_tungstenite::client_async(req, stream).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 401),
        other => panic!("expected a 401, got {other:?}"),
    }
    s.stop().await;
}

#[tokio::test]
async fn hyper_engine_websocket_echo() {
    websocket_echo(Front::Hyper).await;
}

#[tokio::test]
async fn pingora_engine_websocket_echo() {
    websocket_echo(Front::Pingora).await;
}

async fn upstream_failures_static_files_and_metrics(front: Front) {
    let s = stack(front, &[]).await;
    let b = s.browser();
    let r = b.request("GET", "/down/x", &[]).await;
    assert_eq!(
        (r.status.as_u16(), error_of(&r).as_str()),
        (502, "bad_gateway")
    );
    let r = b.request("GET", "/slow/x", &[]).await;
    assert_eq!(
        (r.status.as_u16(), error_of(&r).as_str()),
        (504, "gateway_timeout")
    );
    // Static files: the SPA, its fallback for page loads, no escape from the folder.
    let r = b.request("GET", "/", &[]).await;
    assert_eq!(r.status, 200);
    assert!(r.text().contains("bff-proxy demo"));
    let r = b
        .request("GET", "/some/client/route", &[("accept", "text/html")])
        .await;
    assert_eq!(r.status, 200);
    let r = b.request("GET", "/missing.js", &[]).await;
    assert_eq!(r.status, 404);
    // Escapes are refused before routing (DESIGN.md "Paths").
    let r = b.request("GET", "/%2e%2e/Cargo.toml", &[]).await;
    assert_eq!(r.status, 400);
    let r = b.request("POST", "/index.html", &[]).await;
    assert_eq!(r.status, 405);

    b.login("/").await;
    b.api("/api/a").await;
    b.api("/api/b").await;
    s.bff.clock().advance(Duration::from_secs(301));
    b.api("/api/c").await;
    let admin = s.admin.clone().unwrap();
    let http = crate::support::Http::new();
    assert_eq!(http.get(&format!("{admin}/healthz")).await.status, 200);
    assert!(
        eventually(Duration::from_secs(10), || s.bff.ready()).await,
        "ready once discovery and JWKS are loaded"
    );
    assert_eq!(http.get(&format!("{admin}/readyz")).await.status, 200);
    let metrics = http.get(&format!("{admin}/metrics")).await.text();
    for line in [
        r#"bff_requests_total{outcome="forwarded",route="/api/"} 3"#,
        r#"bff_requests_total{outcome="forwarded",route="/down/"} 1"#,
        r#"bff_requests_total{outcome="unauthenticated",route="/api/"}"#,
        r#"bff_refresh_total{result="ok"} 1"#,
        r#"bff_idp_requests_total{endpoint="token",status="200"} 2"#,
    ] {
        if line.ends_with('}') {
            assert!(!metrics.contains(line), "{line} counted but never happened");
            continue;
        }
        assert!(metrics.contains(line), "{line} not in\n{metrics}");
    }
    // Upstream time per route: the three answers from /api/.
    assert!(
        metrics.contains(r#"bff_upstream_duration_seconds_count{route="/api/"} 3"#),
        "{metrics}"
    );
    assert!(metrics.contains("bff_refresh_duration_seconds_count 1"));
    // Which build serves, and the standard process metrics.
    let engine = if front == Front::Hyper {
        "hyper"
    } else {
        "pingora"
    };
    assert!(
        metrics.contains(&format!(
            r#"bff_build_info{{engine="{engine}",version="{}"}} 1"#,
            env!("CARGO_PKG_VERSION")
        )),
        "{metrics}"
    );
    for name in [
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_cpu_seconds_total",
    ] {
        assert!(metrics.contains(name), "{name} not in\n{metrics}");
    }
    s.stop().await;
}

#[tokio::test]
async fn hyper_engine_upstream_failures_static_files_and_metrics() {
    upstream_failures_static_files_and_metrics(Front::Hyper).await;
}

#[tokio::test]
async fn pingora_engine_upstream_failures_static_files_and_metrics() {
    upstream_failures_static_files_and_metrics(Front::Pingora).await;
}

async fn shuts_down_within_its_timeout(front: Front) {
    let s = stack(front, &[("BFF_SERVER_SHUTDOWN_TIMEOUT", "1s")]).await;
    // A request that hangs (the silent upstream) must not hold the shutdown.
    let b = s.browser();
    let hanging = tokio::spawn(async move { b.try_request("GET", "/slow/x", &[]).await });
    let bff = Arc::clone(&s.bff);
    assert!(
        eventually(Duration::from_secs(10), || bff
            .metrics()
            .request_count("/slow/", "forwarded")
            == 1)
        .await,
        "the hanging request reached the proxy"
    );
    let started = std::time::Instant::now();
    if let Some(server) = &s.server {
        server.shutdown().await;
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    let _ = hanging.await;
    let refused = crate::support::Http::new()
        .try_send(
            http::Request::get(format!("{}/", s.base))
                .body(Default::default())
                .unwrap(),
        )
        .await;
    assert!(refused.is_err(), "no longer accepting");
    s.idp.shutdown().await;
}

#[tokio::test]
async fn hyper_engine_shuts_down_within_its_timeout() {
    shuts_down_within_its_timeout(Front::Hyper).await;
}

#[tokio::test]
async fn pingora_engine_shuts_down_within_its_timeout() {
    shuts_down_within_its_timeout(Front::Pingora).await;
}

/// What an upstream of the test's own counted: connections accepted, and closed
/// by it after an answer.
#[derive(Default)]
struct Counts {
    accepted: std::sync::atomic::AtomicUsize,
    closed: std::sync::atomic::AtomicUsize,
}

impl Counts {
    fn accepted(&self) -> usize {
        self.accepted.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn closed(&self) -> usize {
        self.closed.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// An HTTP/1.1 upstream of its own that counts the connections it accepts and
/// answers every request `ok`; with `close_after_each`, it closes the connection
/// after each answer without saying so (as an upstream's idle timeout does).
async fn counting_upstream(close_after_each: bool) -> (String, Arc<Counts>) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let counts = Arc::new(Counts::default());
    let count = Arc::clone(&counts);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            count
                .accepted
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let count = Arc::clone(&count);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Ok(n) = stream.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    // GET requests only: a head ends the request.
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..end + 4);
                        let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                        if stream.write_all(answer).await.is_err() {
                            return;
                        }
                        if close_after_each {
                            drop(stream);
                            count
                                .closed
                                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            return;
                        }
                    }
                }
            });
        }
    });
    (url, counts)
}

async fn answers_ok(b: &crate::support::browser::Browser, path: &str) {
    let r = b.request("GET", path, &[]).await;
    assert_eq!(
        (r.status.as_u16(), r.text().as_str()),
        (200, "ok"),
        "{path}"
    );
}

/// Requests one after another reuse their upstream connection (one per worker
/// thread at most); an upstream that closes its idle connections costs no request.
async fn upstream_connections_are_kept(front: Front) {
    let (keeps, kept) = counting_upstream(false).await;
    let (closes, closed) = counting_upstream(true).await;
    let s = crate::support::stack::start(
        front,
        Options {
            upstreams: vec![("/keeps/".into(), keeps), ("/closes/".into(), closes)],
            ..Options::default()
        },
    )
    .await;
    let b = s.browser();
    for i in 0..30 {
        answers_ok(&b, &format!("/keeps/{i}")).await;
    }
    // Two worker threads, each with its own connections.
    assert!(
        (1..=2).contains(&kept.accepted()),
        "30 requests opened {} upstream connections",
        kept.accepted()
    );
    for i in 0..30 {
        answers_ok(&b, &format!("/closes/{i}")).await;
        // Every third request waits until the upstream has closed the connection
        // (the proxy sees the close before its next request); the others go at
        // once (the request may meet the close and is sent again on a new
        // connection): either way it is answered.
        if i % 3 == 0 {
            assert!(
                eventually(Duration::from_secs(5), || closed.closed() > i).await,
                "the upstream closed {} connections",
                closed.closed()
            );
        }
    }
    assert_eq!(closed.accepted(), 30);
    s.stop().await;
}

#[tokio::test]
async fn hyper_engine_upstream_connections_are_kept() {
    upstream_connections_are_kept(Front::Hyper).await;
}

#[tokio::test]
async fn pingora_engine_upstream_connections_are_kept() {
    upstream_connections_are_kept(Front::Pingora).await;
}
