//! The tower layer and the axum integration as a backend team uses them, in process:
//! every request goes through `tower::ServiceExt::oneshot` on an axum `Router` with
//! `BffLayer` (no socket on the app's side; the dev IdP listens on loopback). Built
//! and run by CI with exactly what a tower user has: `--no-default-features
//! --features tower,axum` (the dev IdP and the test hooks come from the
//! dev-dependency on this crate).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod example;
mod support;

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use bff_proxy::axum::{ClaimsError, Session};
use bff_proxy::tower::BffLayer;
use bff_proxy::{Bff, RouteSpec, StartError};
use http::header::{AUTHORIZATION, COOKIE, LOCATION, SET_COOKIE};
use http::{HeaderMap, Request, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use support::{Harness, Jar};

/// What the test app's handlers answer: what they were given.
async fn seen(user: Option<Session>, headers: HeaderMap) -> axum::Json<Value> {
    axum::Json(json!({
        "sub": user.as_ref().map(Session::sub),
        "sid": user.as_ref().map(Session::sid),
        "authorization": headers.get(AUTHORIZATION).map(|v| v.to_str().unwrap().to_owned()),
        "cookie": headers.get(COOKIE).map(|v| v.to_str().unwrap().to_owned()),
    }))
}

/// A handler that needs a session.
async fn whoami(user: Session) -> String {
    user.sub().to_owned()
}

#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    email: String,
    name: String,
}

#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct WrongClaims {
    email: u64,
}

async fn claims(user: Session) -> axum::Json<Value> {
    let typed: Claims = user.claims().unwrap();
    let wrong = match user.claims::<WrongClaims>() {
        Err(ClaimsError::Mismatch(e)) => e.to_string(),
        other => panic!("{other:?}"),
    };
    let all: Value = user.claims().unwrap();
    axum::Json(json!({
        "sub": typed.sub, "email": typed.email, "name": typed.name,
        "wrong": wrong, "iss": all["iss"],
        "expires_in": user.access_token_expires_at()
            .duration_since(std::time::SystemTime::now()).map_or(0, |d| d.as_secs()),
        "access_token_len": user.access_token().len(),
    }))
}

/// The app a team writes: its own routes; the layer on top with one route of rules
/// (`/api/`, the default rules: a session and the CSRF header) and `/opt/` with
/// `auth = "optional"`.
fn app(bff: &Bff) -> Router {
    Router::new()
        .route("/api/whoami", get(whoami))
        .route("/api/claims", get(claims))
        .route("/whoami", get(whoami))
        .fallback(seen)
        .layer(BffLayer::new(bff.clone()))
}

fn routes(b: bff_proxy::BffBuilder) -> bff_proxy::BffBuilder {
    b.route(RouteSpec::new("/api/"))
        .route(RouteSpec::new("/opt/").set("auth", "optional"))
}

// ---- the builder ------------------------------------------------------------

fn setting_of(err: &StartError) -> Vec<String> {
    match err {
        StartError::Setting { setting, .. } | StartError::Unavailable { setting, .. } => {
            vec![setting.clone()]
        }
        StartError::Config(e) => e.problems.iter().map(|p| p.path.clone()).collect(),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn the_builder_names_a_missing_or_invalid_setting() {
    let full = || support::builder("https://idp.example.com");
    // Missing.
    let err = support::bare_builder()
        .issuer("https://idp.example.com")
        .client_secret("s3cret")
        .keys([support::KEY])
        .public_url("https://app.example")
        .build()
        .await
        .unwrap_err();
    assert!(err.is_bad_setting());
    assert_eq!(setting_of(&err), ["oidc.client_id"], "{err}");
    let err = support::bare_builder()
        .issuer("https://idp.example.com")
        .client_id("spa")
        .client_secret("s3cret")
        .keys([support::KEY])
        .build()
        .await
        .unwrap_err();
    assert_eq!(setting_of(&err), ["server.public_url"], "{err}");
    // Invalid.
    let err = full()
        .set("refresh.skew", "soon")
        .build()
        .await
        .unwrap_err();
    assert_eq!(setting_of(&err), ["refresh.skew"], "{err}");
    assert!(err.to_string().contains("refresh.skew"), "{err}");
    let err = full().keys(["not-a-key"]).build().await.unwrap_err();
    assert_eq!(setting_of(&err), ["session.keys[0]"], "{err}");
    let err = full()
        .route(RouteSpec::new("/x/").set("auth", "sometimes"))
        .build()
        .await
        .unwrap_err();
    assert!(
        setting_of(&err).iter().any(|p| p.starts_with("routes[")),
        "{err}"
    );
    let err = full().set("oidc.nonsense", true).build().await.unwrap_err();
    assert_eq!(setting_of(&err), ["oidc.nonsense"], "{err}");
    // Redis through the builder: a Redis that does not answer names `store.url`.
    let err = full()
        .redis("redis://127.0.0.1:1")
        .build()
        .await
        .unwrap_err();
    assert!(
        !err.is_bad_setting(),
        "the machine's state, not the config's"
    );
    assert_eq!(setting_of(&err), ["store.url"], "{err}");
    // A complete one builds.
    full().build().await.unwrap();
}

#[tokio::test]
async fn redis_is_configured_through_the_builder() {
    let h = Harness::start_with(|b| {
        routes(b)
            .redis("redis://127.0.0.1:6379")
            .set(
                "store.key_prefix",
                format!("bff-layer-test-{}:", std::process::id()),
            )
            .set("session.mode", "server")
    })
    .await;
    let jar = h.login().await;
    // Server mode: the cookie is a handle; the session is in Redis.
    let r = h
        .call(h.get("/api/whoami", &jar).header("x-csrf", "1"))
        .await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (StatusCode::OK, "dev-user-1")
    );
    let cookie_len = jar.header().unwrap().len();
    assert!(
        cookie_len < 200,
        "a handle, not the tokens: {cookie_len} bytes"
    );
}

// ---- unmatched paths and the extractor --------------------------------------

#[tokio::test]
async fn an_unmatched_path_reaches_the_app_with_the_session_when_there_is_one() {
    let h = Harness::start().await;
    // Without a session: the app's page, anonymous.
    let r = h.call(h.get("/page", &Jar::default())).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["sub"], Value::Null);

    let jar = h.login().await;
    let mut with_other = jar.clone();
    with_other.0.push(("theme".into(), "dark".into()));
    let r = h.call(h.get("/page", &with_other)).await;
    assert_eq!(r.status, StatusCode::OK);
    let seen = r.json();
    assert_eq!(seen["sub"], "dev-user-1");
    assert_eq!(seen["sid"].as_str().unwrap().len(), 22);
    // No token on the app's own paths; our cookies never reach the app.
    assert_eq!(seen["authorization"], Value::Null);
    assert_eq!(seen["cookie"], "theme=dark");
    assert!(r.headers.get(SET_COOKIE).is_none());

    // A state-changing request gets the session only with the CSRF header: a
    // cross-site form post never acts as the user.
    let post = |csrf: bool| {
        let b = h.request("POST", "/page", &jar);
        if csrf { b.header("x-csrf", "1") } else { b }
    };
    assert_eq!(h.call(post(false)).await.json()["sub"], Value::Null);
    assert_eq!(h.call(post(true)).await.json()["sub"], "dev-user-1");

    // `auth = "optional"` route: the same, with the Bearer.
    let r = h.call(h.get("/opt/x", &jar).header("x-csrf", "1")).await;
    assert_eq!(r.json()["sub"], "dev-user-1");
    assert!(
        r.json()["authorization"]
            .as_str()
            .unwrap()
            .starts_with("Bearer ")
    );
}

#[tokio::test]
async fn a_client_cannot_send_the_app_a_session_of_its_own() {
    let h = Harness::start().await;
    let forged = h
        .get("/whoami", &Jar::default())
        .header(AUTHORIZATION, "Bearer forged");
    let r = h.call(forged).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn the_session_extractor_answers_401_json_without_a_session() {
    let h = Harness::start().await;
    let r = h.call(h.get("/whoami", &Jar::default())).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.headers["content-type"], "application/json");
    assert_eq!(r.json(), json!({"error": "unauthenticated"}));
    // An unreadable cookie is no session either.
    let junk = Jar(vec![("__Host-Http-bff".into(), "AAAA".into())]);
    let r = h.call(h.get("/whoami", &junk)).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    // With one.
    let jar = h.login().await;
    let r = h.call(h.get("/whoami", &jar)).await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (StatusCode::OK, "dev-user-1")
    );
}

#[tokio::test]
async fn claims_are_typed_with_serde() {
    let h = Harness::start().await;
    let jar = h.login().await;
    let r = h
        .call(h.get("/api/claims", &jar).header("x-csrf", "1"))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let c = r.json();
    assert_eq!(c["sub"], "dev-user-1");
    assert_eq!(c["email"], "dev.user@example.test");
    assert_eq!(c["name"], "Dev User");
    assert_eq!(c["iss"], h.idp.issuer());
    assert!(c["wrong"].as_str().unwrap().contains("expected u64"), "{c}");
    let expires_in = c["expires_in"].as_u64().unwrap();
    assert!((200..=300).contains(&expires_in), "{expires_in}");
    assert!(c["access_token_len"].as_u64().unwrap() > 20);
}

// ---- DESIGN.md's outcome table, row by row ----------------------------------

#[tokio::test]
async fn fresh_session_is_forwarded_with_the_bearer() {
    let h = Harness::start().await;
    let jar = h.login().await;
    let r = h.call(h.get("/api/x", &jar).header("x-csrf", "1")).await;
    assert_eq!(r.status, StatusCode::OK);
    let seen = r.json();
    assert_eq!(seen["sub"], "dev-user-1");
    let bearer = seen["authorization"].as_str().unwrap();
    assert!(bearer.starts_with("Bearer ey"), "{bearer}");
    assert_eq!(seen["cookie"], Value::Null);
    assert!(r.headers.get(SET_COOKIE).is_none());
}

#[tokio::test]
async fn refresh_through_the_layer_sets_the_rotated_cookie_on_the_apps_response() {
    let h = Harness::start().await;
    let mut jar = h.login().await;
    let before = h
        .call(h.get("/api/x", &jar).header("x-csrf", "1"))
        .await
        .json();
    h.bff.clock().advance(Duration::from_secs(280)); // within the 30 s skew
    let r = h.call(h.get("/api/x", &jar).header("x-csrf", "1")).await;
    assert_eq!(r.status, StatusCode::OK);
    let after = r.json();
    assert_ne!(
        after["authorization"], before["authorization"],
        "a new token"
    );
    assert_eq!(h.idp.stats().token_refresh, 1);
    let set: Vec<_> = r.headers.get_all(SET_COOKIE).iter().collect();
    assert!(
        set.iter()
            .any(|c| c.to_str().unwrap().starts_with("__Host-Http-bff")),
        "{set:?}"
    );
    let old = jar.clone();
    jar.apply(&r.headers);
    assert_ne!(old.header(), jar.header(), "the rotated session");
    // The rotated cookie works and needs no refresh.
    let r = h.call(h.get("/api/x", &jar).header("x-csrf", "1")).await;
    assert_eq!(r.json()["authorization"], after["authorization"]);
    assert_eq!(h.idp.stats().token_refresh, 1);

    // On a path no route matches, the same refresh, the same cookie.
    h.bff.clock().advance(Duration::from_secs(280));
    let r = h.call(h.get("/page", &jar)).await;
    assert_eq!(r.json()["sub"], "dev-user-1");
    assert_eq!(h.idp.stats().token_refresh, 2);
    assert!(r.headers.get(SET_COOKIE).is_some());
}

#[tokio::test]
async fn no_session_on_an_api_call_is_401() {
    let h = Harness::start().await;
    let r = h
        .call(h.get("/api/x", &Jar::default()).header("x-csrf", "1"))
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.json()["error"], "unauthenticated");
}

#[tokio::test]
async fn a_navigation_without_a_session_is_sent_to_login() {
    let h = Harness::start().await;
    let r = h
        .call(
            h.get("/api/report?y=2", &Jar::default())
                .header("sec-fetch-mode", "navigate"),
        )
        .await;
    assert_eq!(r.status, StatusCode::FOUND);
    assert_eq!(
        r.headers[LOCATION],
        "/bff/login?returnUrl=%2Fapi%2Freport%3Fy%3D2"
    );
}

#[tokio::test]
async fn a_missing_csrf_header_is_403() {
    let h = Harness::start().await;
    let jar = h.login().await;
    let r = h.call(h.get("/api/x", &jar)).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.json()["error"], "csrf");
}

#[tokio::test]
async fn invalid_grant_ends_the_session_and_clears_the_cookie() {
    let h = Harness::start().await;
    let jar = h.login().await;
    h.bff.clock().advance(Duration::from_secs(301));
    h.idp
        .fail_next_token_requests_with(1, 400, r#"{"error":"invalid_grant"}"#);
    let r = h.call(h.get("/api/x", &jar).header("x-csrf", "1")).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.json()["error"], "session_expired");
    assert!(r.headers.get_all(SET_COOKIE).iter().any(|c| {
        let c = c.to_str().unwrap();
        c.starts_with("__Host-Http-bff") && c.contains("Max-Age=0")
    }));
    // The app's own pages: the ended session is no session.
    let r = h.call(h.get("/page", &jar)).await;
    assert_eq!(r.json()["sub"], Value::Null);
}

#[tokio::test]
async fn an_unreachable_idp_keeps_the_session() {
    let h = Harness::start_with(|b| routes(b).set("refresh.timeout", "1s")).await;
    let jar = h.login().await;
    let current = h
        .call(h.get("/api/x", &jar).header("x-csrf", "1"))
        .await
        .json()["authorization"]
        .clone();
    h.idp.set_down(true).await;
    // Token still valid: forwarded with it, cookie untouched.
    h.bff.clock().advance(Duration::from_secs(280));
    let r = h.call(h.get("/api/x", &jar).header("x-csrf", "1")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["authorization"], current);
    assert!(r.headers.get(SET_COOKIE).is_none());
    // Expired: 503 with Retry-After, cookie untouched.
    h.bff.clock().advance(Duration::from_secs(30));
    let r = h.call(h.get("/api/x", &jar).header("x-csrf", "1")).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.json()["error"], "idp_unavailable");
    assert!(r.headers.contains_key("retry-after"));
    assert!(r.headers.get(SET_COOKIE).is_none());
    // The app's own pages still show who it is (the token's expiry tells the rest).
    let r = h.call(h.get("/page", &jar)).await;
    assert_eq!(r.json()["sub"], "dev-user-1");
    // Back up: the same cookie works.
    h.idp.set_down(false).await;
    let r = h.call(h.get("/api/x", &jar).header("x-csrf", "1")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_ne!(r.json()["authorization"], current);
}

// ---- the endpoints and the admin router -------------------------------------

#[tokio::test]
async fn the_layer_answers_its_endpoints_and_logs_out() {
    let h = Harness::start().await;
    let mut jar = h.login().await;
    let r = h.call(h.get("/bff/user", &jar).header("x-csrf", "1")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["claims"]["sub"], "dev-user-1");
    let r = h
        .call(h.request("POST", "/bff/logout", &jar).header("x-csrf", "1"))
        .await;
    assert!(
        r.status.is_success() || r.status.is_redirection(),
        "{}",
        r.status
    );
    jar.apply(&r.headers);
    assert!(!jar.has_session());
    assert_eq!(
        h.call(h.get("/whoami", &jar)).await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn the_admin_router_answers_readyz_healthz_and_metrics() {
    let h = Harness::start().await;
    let admin = |path: &str| {
        let router: Router = h.bff.admin_router();
        let req = Request::get(path).body(Body::empty()).unwrap();
        async move { support::reply(tower::ServiceExt::oneshot(router, req).await.unwrap()).await }
    };
    assert_eq!(admin("/healthz").await.status, StatusCode::OK);
    // Ready once discovery and the keys are loaded.
    h.bff.warm_up().await.unwrap();
    let r = admin("/readyz").await;
    assert_eq!((r.status, r.text().as_str()), (StatusCode::OK, "ready\n"));
    // The layer's requests are counted in the registry the app can merge.
    let jar = h.login().await;
    h.call(h.get("/api/x", &jar).header("x-csrf", "1")).await;
    let metrics = admin("/metrics").await.text();
    assert!(metrics.contains("bff_requests_total"), "{metrics}");
    let families = h.bff.metrics_registry().gather();
    assert!(families.iter().any(|f| f.name() == "bff_requests_total"));
    assert_eq!(admin("/nope").await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn readyz_is_503_until_the_idp_is_reached() {
    let bff = support::builder("http://127.0.0.1:9")
        .build()
        .await
        .unwrap();
    let router: Router = bff.admin_router();
    let req = Request::get("/readyz").body(Body::empty()).unwrap();
    let r = support::reply(tower::ServiceExt::oneshot(router, req).await.unwrap()).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
}
