//! Step-up and silent login (DESIGN.md's `/bff/login` row and the route rules
//! `acr` / `max_age`, RFC 9470) against the dev IdP and its two authentication
//! levels: the login parameters reach the IdP, bad ones are refused; a route with
//! `acr` answers 401 `insufficient_user_authentication` with `WWW-Authenticate` until
//! the user logs in again with `acr_values`, then 200 (through a refresh too); a
//! route with `max_age` once `auth_time` is too old; the callback refuses an ID token
//! without the level it asked for (403); `prompt=none` without an IdP session comes
//! back to the SPA as `?error=login_required`; any IdP error with a valid login
//! cookie goes back to `returnUrl?error=CODE`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use bff_proxy::devidp::{ACR_MFA, ACR_PASSWORD};
use http::header::{LOCATION, SET_COOKIE};

use crate::support::browser::Browser;
use crate::support::stack::{Front, Options, start};

fn options() -> Options {
    Options::default()
        .route("/mfa/", &[&format!("acr = [{ACR_MFA:?}]")])
        .route("/recent/", &[r#"max_age = "5m""#])
        .route(
            "/mfa-pages/",
            &[&format!("acr = [{ACR_MFA:?}]"), "csrf = false"],
        )
}

/// `/bff/login?{query}`, then the IdP (with its session cookie when given): the
/// IdP's redirect and the cookie it set, if any.
async fn to_idp(b: &Browser, query: &str, idp_cookie: Option<&str>) -> (url::Url, Option<String>) {
    let start = b
        .request(
            "GET",
            &format!("/bff/login?{query}"),
            &[("sec-fetch-mode", "navigate")],
        )
        .await;
    assert_eq!(start.status, 302, "{query}: {}", start.text());
    let mut req = http::Request::get(start.location().as_str());
    if let Some(c) = idp_cookie {
        req = req.header("cookie", c);
    }
    let at_idp = b
        .http
        .send(req.body(http_body_util::Full::default()).unwrap())
        .await;
    assert_eq!(at_idp.status, 302, "{}", at_idp.text());
    let cookie = at_idp.headers.get(SET_COOKIE).map(|v| {
        let text = v.to_str().unwrap();
        assert!(text.contains("Path=/authorize"), "{text}");
        text.split(';').next().unwrap().to_owned()
    });
    (at_idp.location(), cookie)
}

/// A login with `query`, through to the callback's answer.
async fn login_with(
    b: &Browser,
    query: &str,
    idp_cookie: Option<&str>,
) -> (crate::support::Reply, Option<String>) {
    let (callback, cookie) = to_idp(b, query, idp_cookie).await;
    assert!(callback.as_str().starts_with(&b.base), "{callback}");
    (b.request("GET", callback.as_str(), &[]).await, cookie)
}

/// The `acr` of the browser's session (`/bff/user` shows the ID token's claims).
async fn acr_of(b: &Browser) -> String {
    let user = b.api("/bff/user").await;
    assert_eq!(user.status, 200, "{}", user.text());
    user.json()["claims"]["acr"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

async fn route_step_up(front: Front) {
    let s = start(front, options()).await;
    let b = s.browser();
    b.login("/").await;
    assert_eq!(acr_of(&b).await, ACR_PASSWORD);

    // The route needs the second level: 401 with what it needs, the RFC 9470 header.
    let r = b.api("/mfa/x").await;
    assert_eq!(r.status, 401, "{front:?}: {}", r.text());
    assert_eq!(
        r.json(),
        serde_json::json!({"error": "insufficient_user_authentication", "acr_values": ACR_MFA})
    );
    assert_eq!(
        r.headers["www-authenticate"],
        format!(r#"Bearer error="insufficient_user_authentication", acr_values="{ACR_MFA}""#)
            .as_str()
    );
    // The session is kept: other routes still answer.
    assert_eq!(b.api("/api/x").await.status, 200, "{front:?}");
    // A navigation (a route without the CSRF check) is sent to log in at that
    // level, coming back to it.
    let nav = b
        .request(
            "GET",
            "/mfa-pages/p?tab=2",
            &[("sec-fetch-mode", "navigate")],
        )
        .await;
    assert_eq!(nav.status, 302, "{front:?}");
    let to = nav.headers[LOCATION].to_str().unwrap().to_owned();
    assert_eq!(
        to, "/bff/login?acr_values=urn%3Aexample%3Amfa&returnUrl=%2Fmfa-pages%2Fp%3Ftab%3D2",
        "{front:?}"
    );

    // The SPA steps up: /bff/login?acr_values=…, back with a stepped-up session.
    let (done, _) = login_with(
        &b,
        "acr_values=urn%3Aexample%3Amfa&returnUrl=%2Fmfa%2F",
        None,
    )
    .await;
    assert_eq!(done.status, 302, "{front:?}: {}", done.text());
    assert_eq!(done.headers[LOCATION], "/mfa/");
    assert_eq!(acr_of(&b).await, ACR_MFA);
    let r = b.api("/mfa/x").await;
    assert_eq!(r.status, 200, "{front:?}: {}", r.text());
    // The level survives a refresh (the refreshed ID token keeps acr).
    s.bff.clock().advance(Duration::from_secs(290));
    s.idp.advance_clock(Duration::from_secs(290));
    let refreshed = s.bff.metrics().refresh_count("ok");
    let r = b.api("/mfa/x").await;
    assert_eq!(r.status, 200, "{front:?}: {}", r.text());
    assert_eq!(
        s.bff.metrics().refresh_count("ok"),
        refreshed + 1,
        "{front:?}"
    );

    // max_age = 5m: fine just after the login, 401 with max_age once auth_time is older.
    assert_eq!(b.api("/recent/x").await.status, 200, "{front:?}");
    s.bff.clock().advance(Duration::from_secs(60));
    let r = b.api("/recent/x").await;
    assert_eq!(r.status, 401, "{front:?}");
    assert_eq!(r.json()["max_age"], 300);
    assert_eq!(
        r.headers["www-authenticate"],
        r#"Bearer error="insufficient_user_authentication", max_age="300""#
    );
    // Logging in again with max_age brings a fresh auth_time.
    let (done, _) = login_with(&b, "max_age=300&returnUrl=%2Frecent%2F", None).await;
    assert_eq!(done.status, 302, "{}", done.text());
    assert_eq!(b.api("/recent/x").await.status, 200, "{front:?}");
    s.stop().await;
}

#[tokio::test]
async fn route_step_up_hyper() {
    route_step_up(Front::Hyper).await;
}

#[tokio::test]
async fn route_step_up_pingora() {
    route_step_up(Front::Pingora).await;
}

#[tokio::test]
async fn route_step_up_axum() {
    route_step_up(Front::Axum).await;
}

#[tokio::test]
async fn login_parameters_reach_the_idp_and_bad_ones_are_refused() {
    let s = start(Front::Hyper, options()).await;
    let b = s.browser();
    let r = b
        .request(
            "GET",
            "/bff/login?returnUrl=%2F&prompt=login%20consent&acr_values=urn%3Aexample%3Amfa%20urn%3Ax&max_age=0&login_hint=dev.user%40example.test",
            &[("sec-fetch-mode", "navigate")],
        )
        .await;
    assert_eq!(r.status, 302, "{}", r.text());
    let pairs: std::collections::HashMap<String, String> =
        r.location().query_pairs().into_owned().collect();
    assert_eq!(pairs["prompt"], "login consent");
    assert_eq!(pairs["acr_values"], "urn:example:mfa urn:x");
    assert_eq!(pairs["max_age"], "0");
    assert_eq!(pairs["login_hint"], "dev.user@example.test");
    for bad in [
        "prompt=none%20login",
        "prompt=bogus",
        "prompt=",
        "max_age=-1",
        "max_age=1e3",
        "max_age=99999999999",
        "acr_values=a%22b",
        "acr_values=a%20%20b",
        "acr_values=",
        "login_hint=a%0Ab",
        "prompt=login&prompt=none",
        "acr_values=a&acr_values=b",
    ] {
        let r = b
            .request(
                "GET",
                &format!("/bff/login?returnUrl=%2F&{bad}"),
                &[("sec-fetch-mode", "navigate")],
            )
            .await;
        assert_eq!(r.status, 400, "{bad}");
        assert_eq!(r.json()["error"], "bad_request", "{bad}");
    }
    let long = "a".repeat(257);
    let r = b
        .request("GET", &format!("/bff/login?acr_values={long}"), &[])
        .await;
    assert_eq!(r.status, 400);

    // The IdP gives the first level where the second was not asked for: the
    // callback refuses a login that asked for a level the ID token does not show.
    let (done, _) = login_with(
        &b,
        "acr_values=urn%3Aexample%3Ahardware-key&returnUrl=%2F",
        None,
    )
    .await;
    assert_eq!(done.status, 403, "{}", done.text());
    assert_eq!(done.json()["error"], "insufficient_user_authentication");
    assert!(!b.jar().has_session());
    s.stop().await;
}

#[tokio::test]
async fn silent_login_and_idp_errors_go_back_to_the_spa() {
    let s = start(Front::Pingora, options()).await;
    let b = s.browser();
    // No IdP session: the IdP answers login_required, the SPA gets it.
    let (done, cookie) = login_with(&b, "prompt=none&returnUrl=%2Fapp%3Ftab%3D1%23top", None).await;
    assert!(cookie.is_none());
    assert_eq!(done.status, 302, "{}", done.text());
    assert_eq!(
        done.headers[LOCATION],
        "/app?tab=1&error=login_required#top"
    );
    assert!(!b.jar().has_session());
    assert!(
        !b.jar().0.iter().any(|(n, _)| n.contains("-login-")),
        "the login cookie is cleared"
    );

    // A login opens an IdP session (its cookie); a silent login then needs nobody.
    let (done, idp_cookie) = login_with(&b, "returnUrl=%2F", None).await;
    assert_eq!(done.status, 302);
    let idp_cookie = idp_cookie.expect("the dev IdP sets its session cookie");
    let fresh = Browser::new(&s.base);
    let (done, cookie) =
        login_with(&fresh, "prompt=none&returnUrl=%2Fsilent", Some(&idp_cookie)).await;
    assert_eq!(done.status, 302, "{}", done.text());
    assert_eq!(done.headers[LOCATION], "/silent");
    assert!(cookie.is_none(), "a silent login makes no new IdP session");
    assert!(fresh.jar().has_session());
    assert_eq!(acr_of(&fresh).await, ACR_PASSWORD);
    // Silent with a level the IdP session lacks: interaction_required, shown to the
    // SPA as login_required.
    let (done, _) = login_with(
        &fresh,
        "prompt=none&acr_values=urn%3Aexample%3Amfa&returnUrl=%2F",
        Some(&idp_cookie),
    )
    .await;
    assert_eq!(done.headers[LOCATION], "/?error=login_required");
    assert!(fresh.jar().has_session(), "the session is kept");
    // Silent with max_age the IdP session is too old for.
    s.idp.advance_clock(Duration::from_secs(120));
    let (done, _) = login_with(
        &fresh,
        "prompt=none&max_age=60&returnUrl=%2F",
        Some(&idp_cookie),
    )
    .await;
    assert_eq!(done.headers[LOCATION], "/?error=login_required");

    // Any IdP error with a valid login cookie: back to returnUrl?error=CODE.
    s.idp.deny_next_authorization("access_denied");
    let (done, _) = login_with(&b, "returnUrl=%2Fx", None).await;
    assert_eq!(done.status, 302);
    assert_eq!(done.headers[LOCATION], "/x?error=access_denied");
    s.stop().await;
}
