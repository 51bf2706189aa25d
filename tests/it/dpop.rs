//! DPoP (RFC 9449, `[oidc] dpop = true`) with the dev IdP asking for nonces: a key
//! per session made at login; proofs on the code exchange and every refresh (the
//! `use_dpop_nonce` answer retried once with the IdP's nonce, before any grant is
//! consumed); access tokens bound to the key (`cnf.jkt`); upstream requests with
//! `Authorization: DPoP …` and a fresh proof for their method and URL (with `ath`),
//! checked by the echo upstream as a resource server would. Every door; routes
//! with `resource` and `token_exchange` too.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use bff_proxy::devidp::DevIdpSettings;
use serde_json::Value;

use crate::support::browser::Browser;
use crate::support::stack::{Front, Options, Stack, start};

fn options() -> Options {
    Options::with_idp(DevIdpSettings {
        dpop_nonce: true,
        ..DevIdpSettings::default()
    })
    .env("BFF_OIDC_DPOP", "true")
    .route(
        "/orders/",
        &[r#"resource = "https://orders.example.test/""#],
    )
    .route(
        "/reports/",
        &[r#"token_exchange = { audience = "reports" }"#],
    )
}

/// What the echo saw of a request: its `bearer` and `dpop` accounts.
async fn seen(b: &Browser, method: &str, path: &str) -> (Value, Value) {
    let r = b
        .request(
            method,
            path,
            &[
                ("x-csrf", "1"),
                ("accept", "application/json"),
                ("dpop", "a-client-proof"),
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{path}: {}", r.text());
    let body = r.json();
    (body["bearer"].clone(), body["dpop"].clone())
}

/// The proof was valid and the token bound to its key; the thumbprint.
fn bound(front: Front, path: &str, bearer: &Value, dpop: &Value) -> String {
    assert_eq!(bearer["scheme"], "DPoP", "{front:?} {path}");
    assert_eq!(dpop["valid"], true, "{front:?} {path}: {dpop}");
    assert_eq!(
        bearer["claims"]["cnf"]["jkt"], dpop["jkt"],
        "{front:?} {path}"
    );
    dpop["jkt"].as_str().unwrap().to_owned()
}

fn advance(s: &Stack, secs: u64) {
    s.bff.clock().advance(Duration::from_secs(secs));
    s.idp.advance_clock(Duration::from_secs(secs));
}

async fn dpop(front: Front) {
    let s = start(front, options()).await;
    let b = s.browser();
    b.login("/").await;
    // The code exchange: asked for a nonce once, then a valid proof.
    let stats = s.idp.stats();
    assert_eq!(
        (stats.dpop_nonce_challenges, stats.dpop_proofs),
        (1, 1),
        "{front:?}"
    );

    let (bearer, proof) = seen(&b, "GET", "/api/x?q=1").await;
    let jkt = bound(front, "/api/x", &bearer, &proof);
    assert!(
        proof["htu"].as_str().unwrap().ends_with("/api/x"),
        "{front:?}: the query is not part of htu: {proof}"
    );
    let (bearer, proof) = seen(&b, "POST", "/api/y").await;
    assert_eq!(bound(front, "/api/y", &bearer, &proof), jkt);
    // Per-route audiences are bound to the same key.
    let (bearer, proof) = seen(&b, "GET", "/orders/x").await;
    assert_eq!(bound(front, "/orders/x", &bearer, &proof), jkt);
    assert_eq!(bearer["claims"]["aud"], "https://orders.example.test/");
    let (bearer, proof) = seen(&b, "GET", "/reports/x").await;
    assert_eq!(bound(front, "/reports/x", &bearer, &proof), jkt);

    // A refresh: the nonce is known, no new challenge; the new token is bound to
    // the session's key.
    advance(&s, 290);
    let challenges = s.idp.stats().dpop_nonce_challenges;
    let (bearer2, proof) = seen(&b, "GET", "/api/x").await;
    assert_eq!(bound(front, "/api/x", &bearer2, &proof), jkt);
    assert_ne!(bearer2["fingerprint"], bearer["fingerprint"]);
    assert_eq!(s.idp.stats().dpop_nonce_challenges, challenges, "{front:?}");

    // The IdP changes its nonce: the next refresh is asked once, retried with the
    // new one, and its refresh token is presented once.
    s.idp.rotate_dpop_nonce();
    advance(&s, 290);
    let storm: Vec<_> = (0..20)
        .map(|_| {
            let tab = b.tab();
            async move { seen(&tab, "GET", "/api/x").await }
        })
        .collect();
    for (bearer, proof) in futures_util::future::join_all(storm).await {
        assert_eq!(bound(front, "/api/x", &bearer, &proof), jkt);
    }
    let stats = s.idp.stats();
    assert!(
        stats.dpop_nonce_challenges > challenges,
        "{front:?}: the new nonce was asked for"
    );
    assert_eq!(
        (
            stats.refresh_token_presented_again,
            stats.reuse_detected,
            stats.families_revoked
        ),
        (0, 0, 0),
        "{front:?}"
    );
    s.stop().await;
}

#[tokio::test]
async fn dpop_hyper() {
    dpop(Front::Hyper).await;
}

#[tokio::test]
async fn dpop_pingora() {
    dpop(Front::Pingora).await;
}

#[tokio::test]
async fn dpop_axum() {
    dpop(Front::Axum).await;
}

#[tokio::test]
async fn without_dpop_tokens_are_bearer() {
    let s = start(Front::Hyper, Options::default()).await;
    let b = s.browser();
    b.login("/").await;
    let (bearer, proof) = seen(&b, "GET", "/api/x").await;
    assert_eq!(bearer["scheme"], "Bearer");
    assert!(bearer["claims"].get("cnf").is_none());
    assert!(proof.is_null());
    s.stop().await;
}
