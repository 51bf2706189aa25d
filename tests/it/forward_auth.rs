//! `GET /bff/auth` (forward-auth) through both engines, asked as a gateway asks:
//! the original method and path in `X-Forwarded-Method` / `X-Forwarded-Uri`, the
//! browser's cookies and headers as the request's own. The route rules, CSRF,
//! refresh and claim rules are the proxied request's; the answer carries what the
//! gateway copies (Bearer, identity headers, Set-Cookie). (A real nginx in front:
//! `tests/it/gateway.rs`.)

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use bff_proxy::devidp::{DevIdpSettings, DevUser};
use serde_json::json;

use crate::support::browser::Browser;
use crate::support::stack::{Front, Options, Stack, start};

fn options() -> Options {
    let mut user = DevUser::default();
    user.claims.insert("groups".into(), json!(["staff"]));
    Options::with_idp(DevIdpSettings {
        user,
        ..DevIdpSettings::default()
    })
    .env("BFF_FORWARD_AUTH_ENABLED", "true")
    .route(
        "/staff/",
        &[
            r#"require_claims = { groups = ["staff"] }"#,
            r#"identity_headers = { "X-User" = "sub" }"#,
        ],
    )
    .route("/admin/", &[r#"require_claims = { groups = ["admins"] }"#])
    .route("/get-only/", &[r#"methods = ["GET"]"#])
}

/// The gateway's question about `method uri`, with the browser's cookies and
/// `headers`.
async fn ask(
    b: &Browser,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
) -> crate::support::Reply {
    let mut all = vec![("x-forwarded-method", method), ("x-forwarded-uri", uri)];
    all.extend_from_slice(headers);
    b.request("GET", "/bff/auth", &all).await
}

fn counted(s: &Stack, outcome: &str) -> u64 {
    let text = prometheus::TextEncoder::new()
        .encode_to_string(&s.bff.metrics_registry().gather())
        .unwrap();
    let prefix = format!("bff_forward_auth_total{{outcome=\"{outcome}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .map_or(0, |v| v.trim().parse().unwrap())
}

async fn forward_auth(front: Front) {
    let s = start(front, options()).await;
    let b = s.browser();

    // No session: 401 JSON for an API call; 401 with the login URL for a navigation.
    let api = ask(&b, "GET", "/api/orders?x=1", &[("x-csrf", "1")]).await;
    assert_eq!(api.status, 401);
    assert_eq!(api.json()["error"], "unauthenticated");
    assert!(api.headers.get("location").is_none());
    let page = ask(&b, "GET", "/api/page", &[("sec-fetch-mode", "navigate")]).await;
    assert_eq!(page.status, 401);
    assert_eq!(
        page.headers["location"],
        "/bff/login?returnUrl=%2Fapi%2Fpage"
    );
    // The original URI is the one the route check reads: one that no parser
    // would agree on is refused.
    let odd = ask(&b, "GET", "/api/%2e%2e/admin/", &[("x-csrf", "1")]).await;
    assert_eq!(odd.status, 400);
    let none = b.request("GET", "/bff/auth", &[]).await;
    assert_eq!(none.status, 400, "no X-Forwarded-Uri");

    b.login("/").await;
    // 200 with the Bearer for the gateway to pass on; no body, not cached.
    let ok = ask(&b, "GET", "/api/orders", &[("x-csrf", "1")]).await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    let bearer = ok.headers["authorization"].to_str().unwrap();
    assert!(bearer.starts_with("Bearer ey"), "{bearer}");
    assert_eq!(ok.headers["cache-control"], "no-store");
    assert!(
        ok.headers.get("set-cookie").is_none(),
        "the session did not change"
    );
    // CSRF, methods and claim rules as on a proxied request.
    assert_eq!(ask(&b, "POST", "/api/orders", &[]).await.status, 403);
    assert_eq!(
        ask(&b, "POST", "/get-only/x", &[("x-csrf", "1")])
            .await
            .status,
        405
    );
    let admin = ask(&b, "GET", "/admin/x", &[("x-csrf", "1")]).await;
    assert_eq!(admin.status, 403);
    assert_eq!(admin.json()["error"], "forbidden");
    // Identity headers for the gateway to copy.
    let staff = ask(&b, "GET", "/staff/x", &[("x-csrf", "1")]).await;
    assert_eq!(staff.status, 200);
    assert_eq!(staff.headers["x-user"], "dev-user-1");
    // Not a route (one of our own endpoints): 404.
    assert_eq!(
        ask(&b, "GET", "/bff/user", &[("x-csrf", "1")]).await.status,
        404
    );

    // Near expiry: the answer refreshes and hands the rotated cookie over.
    s.bff.clock().advance(Duration::from_secs(290));
    let before = b.jar().header();
    let refreshed = ask(&b, "GET", "/api/orders", &[("x-csrf", "1")]).await;
    assert_eq!(refreshed.status, 200);
    assert!(refreshed.headers.get("set-cookie").is_some());
    assert_ne!(b.jar().header(), before);
    assert_ne!(
        refreshed.headers["authorization"].to_str().unwrap(),
        bearer,
        "a new access token"
    );
    let again = ask(&b, "GET", "/api/orders", &[("x-csrf", "1")]).await;
    assert_eq!(again.status, 200);

    assert!(counted(&s, "ok") >= 4);
    assert_eq!(counted(&s, "unauthenticated"), 2);
    assert_eq!(counted(&s, "forbidden"), 1);
    assert_eq!(counted(&s, "csrf"), 1);
    s.stop().await;
}

#[tokio::test]
async fn forward_auth_hyper() {
    forward_auth(Front::Hyper).await;
}

#[tokio::test]
async fn forward_auth_pingora() {
    forward_auth(Front::Pingora).await;
}

/// Off unless `[forward_auth] enabled = true`.
#[tokio::test]
async fn forward_auth_is_off_by_default() {
    let s = start(Front::Hyper, Options::default()).await;
    let b = s.browser();
    let r = ask(&b, "GET", "/api/x", &[("x-csrf", "1")]).await;
    assert_eq!(r.status, 404);
    s.stop().await;
}

/// Step-up and DPoP through forward-auth: a route with `acr` answers the gateway
/// 401 `insufficient_user_authentication` with `WWW-Authenticate` (a navigation:
/// with `Location:` the step-up login); with `oidc.dpop` the 200 carries
/// `Authorization: DPoP …` and the proof for the route's upstream URL.
#[tokio::test]
async fn forward_auth_step_up_and_dpop() {
    let s = start(
        Front::Hyper,
        Options::default()
            .env("BFF_FORWARD_AUTH_ENABLED", "true")
            .env("BFF_OIDC_DPOP", "true")
            .route("/mfa/", &[r#"acr = ["urn:example:mfa"]"#, "csrf = false"]),
    )
    .await;
    let b = s.browser();
    b.login("/").await;
    let r = ask(&b, "GET", "/mfa/x", &[("accept", "application/json")]).await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(r.json()["error"], "insufficient_user_authentication");
    assert_eq!(
        r.headers["www-authenticate"],
        r#"Bearer error="insufficient_user_authentication", acr_values="urn:example:mfa""#
    );
    let r = ask(&b, "GET", "/mfa/page", &[("sec-fetch-mode", "navigate")]).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"], "insufficient_user_authentication");
    assert_eq!(
        r.headers["location"],
        "/bff/login?acr_values=urn%3Aexample%3Amfa&returnUrl=%2Fmfa%2Fpage"
    );
    assert!(r.headers.get("www-authenticate").is_some());
    assert_eq!(counted(&s, "insufficient_user_authentication"), 2);

    let r = ask(&b, "POST", "/api/items?x=1", &[("x-csrf", "1")]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let auth = r.headers["authorization"].to_str().unwrap().to_owned();
    let token = auth.strip_prefix("DPoP ").expect("a DPoP token");
    let proof = r.headers["dpop"].to_str().unwrap();
    let upstream = format!("http://{}/api/items", s.echo.addr());
    let checked = bff_proxy::dpop::check_proof(
        proof,
        "POST",
        &upstream,
        Some(token),
        bff_proxy::dpop::now(),
    )
    .unwrap();
    let claims = crate::support::jwt_claims(token);
    assert_eq!(claims["cnf"]["jkt"], checked.jkt.as_str());
    s.stop().await;
}
