//! Pushed authorization requests (RFC 9126) with the dev IdP: with `[oidc] par`, or
//! when discovery says `require_pushed_authorization_requests`, the login's
//! parameters go to the IdP's PAR endpoint and the browser's authorize URL has only
//! `client_id` and `request_uri`; the login completes (step-up parameters included),
//! a `request_uri` works once; an IdP that refuses the push gives 503, never a login
//! page without PAR.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use bff_proxy::devidp::{ACR_MFA, DevIdpSettings};

use crate::support::browser::Browser;
use crate::support::stack::{Front, Options, start};

/// `/bff/login?{query}`: the authorize URL the browser is sent to.
async fn authorize_url(b: &Browser, query: &str) -> url::Url {
    let r = b
        .request(
            "GET",
            &format!("/bff/login?{query}"),
            &[("sec-fetch-mode", "navigate")],
        )
        .await;
    assert_eq!(r.status, 302, "{}", r.text());
    r.location()
}

fn only_client_id_and_request_uri(url: &url::Url) {
    let mut keys: Vec<String> = url.query_pairs().map(|(k, _)| k.into_owned()).collect();
    keys.sort();
    assert_eq!(keys, ["client_id", "request_uri"], "{url}");
    let uri = url
        .query_pairs()
        .find(|(k, _)| k == "request_uri")
        .unwrap()
        .1
        .into_owned();
    assert!(
        uri.starts_with("urn:ietf:params:oauth:request_uri:"),
        "{uri}"
    );
}

async fn par_login(front: Front) {
    let s = start(front, Options::default().env("BFF_OIDC_PAR", "true")).await;
    let b = s.browser();
    let url = authorize_url(&b, "returnUrl=%2Fhome&acr_values=urn%3Aexample%3Amfa").await;
    only_client_id_and_request_uri(&url);
    let at_idp = b.http.get(url.as_str()).await;
    assert_eq!(at_idp.status, 302, "{}", at_idp.text());
    let callback = at_idp.location();
    let done = b.request("GET", callback.as_str(), &[]).await;
    assert_eq!(done.status, 302, "{front:?}: {}", done.text());
    assert_eq!(done.headers["location"], "/home");
    // The pushed acr_values reached the IdP: the session has the second level.
    let user = b.api("/bff/user").await;
    assert_eq!(user.json()["claims"]["acr"], ACR_MFA, "{front:?}");
    assert_eq!(b.api("/api/x").await.status, 200);
    let stats = s.idp.stats();
    assert_eq!((stats.par, stats.authorize_par), (1, 1), "{front:?}");
    // The request_uri is used once.
    let again = b.http.get(url.as_str()).await;
    assert_eq!(again.status, 400, "{front:?}");
    assert!(
        s.bff
            .metrics()
            .render()
            .contains(r#"bff_idp_requests_total{endpoint="par",status="201"} 1"#),
        "{front:?}"
    );
    s.stop().await;
}

#[tokio::test]
async fn par_login_hyper() {
    par_login(Front::Hyper).await;
}

#[tokio::test]
async fn par_login_pingora() {
    par_login(Front::Pingora).await;
}

#[tokio::test]
async fn par_login_axum() {
    par_login(Front::Axum).await;
}

#[tokio::test]
async fn discovery_can_require_par() {
    let s = start(
        Front::Hyper,
        Options::with_idp(DevIdpSettings {
            require_par: true,
            ..DevIdpSettings::default()
        }),
    )
    .await;
    let b = s.browser();
    // [oidc] par is off, discovery requires it: PAR it is.
    let url = authorize_url(&b, "returnUrl=%2F").await;
    only_client_id_and_request_uri(&url);
    // This IdP refuses an authorization request that did not come through PAR.
    let mut plain = url.clone();
    plain
        .query_pairs_mut()
        .clear()
        .append_pair("client_id", "bff")
        .append_pair("response_type", "code");
    assert_eq!(b.http.get(plain.as_str()).await.status, 400);
    b.login("/").await;
    assert_eq!(s.idp.stats().par, 2);
    s.stop().await;
}

#[tokio::test]
async fn a_refused_push_is_a_503_not_a_plain_login() {
    let s = start(
        Front::Pingora,
        Options::default()
            .env("BFF_OIDC_PAR", "true")
            .env("BFF_OIDC_CLIENT_SECRET", "not-the-secret"),
    )
    .await;
    let b = s.browser();
    let start = || async {
        b.request(
            "GET",
            "/bff/login?returnUrl=%2F",
            &[("sec-fetch-mode", "navigate")],
        )
        .await
    };
    let r = start().await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.json()["error"], "misconfigured");
    assert!(r.headers.get("location").is_none());
    // The IdP down: 503 idp_unavailable with Retry-After.
    s.idp.set_down(true).await;
    let r = start().await;
    assert_eq!(r.json()["error"], "idp_unavailable");
    assert!(r.headers.get("retry-after").is_some());
    assert_eq!(r.status, 503, "{}", r.text());
    s.stop().await;
}
