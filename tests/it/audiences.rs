//! Per-route audiences (DESIGN.md "Per-route rules": `resource`, RFC 8707, and
//! `token_exchange`, RFC 8693) with the dev IdP, whose refresh tokens rotate with
//! reuse detection: each route's upstream gets an access token whose `aud` is its
//! resource or audience, kept in the session until it nears expiry; 100 concurrent
//! requests across two resources right after expiry present each refresh token to
//! the IdP exactly once and leave the grant alive; the session's own token and
//! other routes are unaffected. Every door (both engines and the tower layer), and
//! server-side sessions.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use bff_proxy::devidp::DevIdpSettings;

use crate::support::browser::Browser;
use crate::support::stack::{Front, Options, Stack, start};

const ORDERS: &str = "https://orders.example.test/";
const BILLING: &str = "https://billing.example.test/";

fn options(mode: &str) -> Options {
    Options::with_idp(DevIdpSettings {
        access_token_ttl: Duration::from_secs(120),
        ..DevIdpSettings::default()
    })
    .env("BFF_SESSION_MODE", mode)
    .route("/orders/", &[&format!("resource = {ORDERS:?}")])
    .route("/billing/", &[&format!("resource = {BILLING:?}")])
    .route(
        "/reports/",
        &[r#"token_exchange = { audience = "reports", scope = "openid profile" }"#],
    )
}

/// The `aud` and fingerprint of the token the upstream got.
async fn seen(b: &Browser, path: &str) -> (String, String) {
    let r = b.api(path).await;
    assert_eq!(r.status, 200, "{path}: {}", r.text());
    let bearer = &r.json()["bearer"];
    (
        bearer["claims"]["aud"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        bearer["fingerprint"].as_str().unwrap().to_owned(),
    )
}

fn advance(s: &Stack, secs: u64) {
    s.bff.clock().advance(Duration::from_secs(secs));
    s.idp.advance_clock(Duration::from_secs(secs));
}

async fn audiences(front: Front, mode: &str) {
    let s = start(front, options(mode)).await;
    let b = s.browser();
    b.login("/").await;

    let (own, own_print) = seen(&b, "/api/x").await;
    assert_eq!(own, "bff", "{front:?} {mode}");
    let (orders, orders_print) = seen(&b, "/orders/x").await;
    assert_eq!(orders, ORDERS, "{front:?} {mode}");
    let (billing, _) = seen(&b, "/billing/x").await;
    assert_eq!(billing, BILLING);
    let (reports, _) = seen(&b, "/reports/x").await;
    assert_eq!(reports, "reports");
    let stats = s.idp.stats();
    assert_eq!(
        (stats.refresh_resource, stats.token_exchange),
        (2, 1),
        "{front:?} {mode}"
    );
    // Kept until they near expiry: no new grant, the same tokens.
    assert_eq!(seen(&b, "/orders/x").await.1, orders_print);
    assert_eq!(
        seen(&b, "/api/x").await.1,
        own_print,
        "the own token is untouched"
    );
    assert_eq!(s.idp.stats().refresh_resource, 2);
    assert_eq!(s.idp.stats().token_exchange, 1);

    // Right after expiry, 100 requests at once across both resources (and the
    // session's own token): each refresh token reaches the IdP once.
    advance(&s, 120);
    let before_storm = b.jar();
    let paths = ["/orders/x", "/billing/x", "/api/x"];
    let storm: Vec<_> = (0..100)
        .map(|i| {
            let tab = b.tab();
            let path = paths[i % 3];
            async move { (path, tab.api(path).await) }
        })
        .collect();
    let mut jars = Vec::new();
    for (path, r) in futures_util::future::join_all(storm).await {
        assert_eq!(r.status, 200, "{front:?} {mode} {path}: {}", r.text());
        let mut jar = before_storm.clone();
        jar.apply(&r.headers);
        jars.push(jar);
        let aud = r.json()["bearer"]["claims"]["aud"]
            .as_str()
            .unwrap()
            .to_owned();
        let want = match path {
            "/orders/x" => ORDERS,
            "/billing/x" => BILLING,
            _ => "bff",
        };
        assert_eq!(aud, want, "{front:?} {mode}");
    }
    let stats = s.idp.stats();
    assert_eq!(
        (
            stats.refresh_token_presented_again,
            stats.reuse_detected,
            stats.families_revoked
        ),
        (0, 0, 0),
        "{front:?} {mode}: a refresh token was presented twice"
    );
    // One grant per need: the two resources and the session's own token.
    assert_eq!(stats.refresh_ok, 2 + 3, "{front:?} {mode}");
    // Every answer of the burst carries the same, newest session state: whichever
    // cookie the browser keeps is no replay after the grace window.
    advance(&s, 61);
    for (i, jar) in jars.into_iter().enumerate().step_by(9) {
        let other = Browser::new(&s.base);
        other.set_jar(jar);
        let r = other.api("/orders/x").await;
        assert_eq!(
            r.status,
            200,
            "{front:?} {mode}: the cookie of answer {i}: {}",
            r.text()
        );
    }
    // The grant is alive: the latest cookie keeps working after another expiry.
    advance(&s, 120);
    assert_eq!(seen(&b, "/billing/x").await.0, BILLING);
    assert_eq!(seen(&b, "/orders/x").await.0, ORDERS);
    assert_eq!(seen(&b, "/reports/x").await.0, "reports");
    let stats = s.idp.stats();
    assert_eq!(
        (stats.refresh_token_presented_again, stats.families_revoked),
        (0, 0)
    );
    assert!(
        s.bff
            .metrics()
            .render()
            .contains("bff_refresh_total{result=\"resource\"}"),
        "{front:?}"
    );
    s.stop().await;
}

#[tokio::test]
async fn audiences_hyper_cookie() {
    audiences(Front::Hyper, "cookie").await;
}

#[tokio::test]
async fn audiences_pingora_cookie() {
    audiences(Front::Pingora, "cookie").await;
}

#[tokio::test]
async fn audiences_axum_cookie() {
    audiences(Front::Axum, "cookie").await;
}

#[tokio::test]
async fn audiences_pingora_server() {
    audiences(Front::Pingora, "server").await;
}

/// The IdP unreachable: a resource token still valid (inside `refresh.skew`) is
/// used as it is; an expired one gives 503 `idp_unavailable` even while the
/// session's own token is still valid, and the session is kept.
#[tokio::test]
async fn an_idp_outage_keeps_a_valid_resource_token_and_refuses_an_expired_one() {
    let s = start(Front::Pingora, options("cookie")).await;
    let b = s.browser();
    b.login("/").await;
    // The own token lives 120 s, the resource token 40 s.
    s.idp.set_access_token_ttl(Duration::from_secs(40));
    let (_, print) = seen(&b, "/orders/x").await;
    s.idp.set_down(true).await;
    // At +20 s a refresh is due (30 s skew) but the resource token holds.
    advance(&s, 20);
    assert_eq!(seen(&b, "/orders/x").await.1, print);
    // At +45 s it has expired; the own token has not.
    advance(&s, 25);
    let r = b.api("/orders/x").await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.json()["error"], "idp_unavailable");
    s.idp.set_down(false).await;
    let (aud, again) = seen(&b, "/orders/x").await;
    assert_eq!(aud, ORDERS);
    assert_ne!(again, print);
    s.stop().await;
}
