//! Per-route claim rules (`require_claims`) and identity headers
//! (`identity_headers`) through every front door: the hyper and pingora engines and
//! the tower layer in an axum app. A user without the group gets 403 `forbidden` on
//! the route and 200 elsewhere; array and scalar claims; identity headers reach the
//! upstream, a client's copies never do.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use bff_proxy::devidp::{DevIdpSettings, DevUser};
use serde_json::json;

use crate::support::stack::{Front, Options, start};

fn user() -> DevUser {
    let mut user = DevUser::default();
    user.claims.insert("groups".into(), json!(["staff", "dev"]));
    user.claims.insert("email_verified".into(), json!(true));
    user.claims.insert("tier".into(), json!("gold"));
    user.claims.insert("level".into(), json!(3));
    user
}

fn options() -> Options {
    Options::with_idp(DevIdpSettings {
        user: user(),
        ..DevIdpSettings::default()
    })
    .route("/admin/", &[r#"require_claims = { groups = ["admins"] }"#])
    .route(
        "/staff/",
        &[
            r#"require_claims = { groups = ["staff"], email_verified = [true] }"#,
            r#"identity_headers = { "X-User" = "sub", "X-Groups" = "groups", "X-Email" = "email", "X-Level" = "level", "X-Missing" = "no_such_claim" }"#,
        ],
    )
    .route(
        "/gold/",
        &[r#"require_claims = { tier = ["gold", "platinum"], level = [3] }"#],
    )
    .route("/silver/", &[r#"require_claims = { tier = ["silver"] }"#])
}

async fn claim_rules(front: Front) {
    let s = start(front, options()).await;
    let b = s.browser();
    b.login("/").await;

    // Not in the group: 403 forbidden on the route, 200 elsewhere.
    let admin = b.api("/admin/x").await;
    assert_eq!(admin.status, 403, "{front:?}");
    assert_eq!(admin.json()["error"], "forbidden");
    assert_eq!(b.api("/api/x").await.status, 200);

    // An array claim holding one of the values, and a boolean.
    let staff = b
        .request(
            "GET",
            "/staff/x",
            &[
                ("x-csrf", "1"),
                ("x-user", "forged"),
                ("x-missing", "forged"),
            ],
        )
        .await;
    assert_eq!(staff.status, 200, "{front:?}: {}", staff.text());
    let seen = staff.json();
    assert_eq!(seen["headers"]["x-user"], "dev-user-1");
    assert_eq!(seen["headers"]["x-email"], "dev.user@example.test");
    assert_eq!(seen["headers"]["x-groups"], r#"["staff","dev"]"#);
    assert_eq!(seen["headers"]["x-level"], "3");
    assert!(
        seen["headers"].get("x-missing").is_none(),
        "a missing claim sends no header, and the client's copy is dropped: {seen}"
    );

    // Scalar claims: a string among the values, a number.
    assert_eq!(b.api("/gold/x").await.status, 200);
    assert_eq!(b.api("/silver/x").await.status, 403);

    // A client's copy of any configured identity header is dropped on every route.
    let api = b
        .request(
            "GET",
            "/api/x",
            &[("x-csrf", "1"), ("x-user", "forged"), ("X-Email", "forged")],
        )
        .await;
    assert_eq!(api.status, 200);
    let seen = api.json();
    assert!(seen["headers"].get("x-user").is_none(), "{seen}");
    assert!(seen["headers"].get("x-email").is_none(), "{seen}");
    s.stop().await;
}

#[tokio::test]
async fn claim_rules_hyper() {
    claim_rules(Front::Hyper).await;
}

#[tokio::test]
async fn claim_rules_pingora() {
    claim_rules(Front::Pingora).await;
}

#[tokio::test]
async fn claim_rules_tower_layer() {
    claim_rules(Front::Axum).await;
}

#[test]
fn claim_rules_are_checked_at_load() {
    let load = |lines: &[&str]| {
        crate::support::config::TestConfig::new("https://idp.example.com", "http://127.0.0.1:8080")
            .secret("s")
            .upstream("/api/", "http://127.0.0.1:9001", lines)
            .try_load()
            .unwrap_err()
            .problems
            .into_iter()
            .map(|p| p.path)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        load(&[
            r#"auth = "optional""#,
            r#"require_claims = { groups = ["a"] }"#
        ]),
        vec!["routes[0].require_claims.groups"]
    );
    assert_eq!(
        load(&[r#"require_claims = { groups = [] }"#]),
        vec!["routes[0].require_claims.groups"]
    );
    assert_eq!(
        load(&[r#"identity_headers = { "Authorization" = "sub" }"#]),
        vec!["routes[0].identity_headers.Authorization"]
    );
    assert_eq!(
        load(&[r#"identity_headers = { "X-Forwarded-User" = "sub" }"#]),
        vec!["routes[0].identity_headers.X-Forwarded-User"]
    );
    assert_eq!(
        load(&[r#"identity_headers = { "bad header" = "sub" }"#]),
        vec!["routes[0].identity_headers.bad header"]
    );
    assert_eq!(
        load(&[
            r#"auth = "none""#,
            r#"identity_headers = { "X-User" = "sub" }"#
        ]),
        vec!["routes[0].identity_headers.X-User"]
    );
}
