//! Interop with an independent, certified OpenID provider: panva's `oidc-provider`
//! (tests/interop/provider.mjs, installed by `npm ci --prefix tests/interop`), with
//! rotating refresh tokens, JWT access tokens, revocation, RP-initiated and
//! back-channel logout. Both engines. This provider revokes the whole grant when a
//! rotated refresh token comes back, so a duplicate refresh would end the session.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use crate::support::browser::Browser;
use crate::support::provider::{Provider, start_provider_with};
use crate::support::{Http, Reply};
use bff_proxy::Bff;
use bff_proxy::devecho::DevEcho;
use bff_proxy::engine::lifecycle::Running;
use bff_proxy::pingora::PingoraServer;
use bff_proxy::proxy::ProxyServer;
use bytes::Bytes;
use http::Request;
use http::header::{CONTENT_TYPE, COOKIE, LOCATION, SET_COOKIE};
use http_body_util::Full;
use tokio::net::TcpListener;

use crate::support::config::TestConfig;

enum Server {
    Hyper(Running),
    Pingora(Running),
}

struct Stack {
    bff: Arc<Bff>,
    base: String,
    provider: Provider,
    server: Server,
    _echo: DevEcho,
}

async fn stack(pingora: bool) -> Stack {
    stack_with(pingora, &[], 60, &[], &[]).await
}

/// A stack whose provider.mjs gets `provider_env` and issues access tokens for
/// `access_ttl` seconds, with more routes to the echo (path, setting line).
async fn stack_with(
    pingora: bool,
    provider_env: &[(&str, &str)],
    access_ttl: u64,
    routes: &[(&str, &str)],
    settings: &[(&'static str, &str)],
) -> Stack {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let provider = start_provider_with(&base, access_ttl, provider_env).await;
    let echo = DevEcho::start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let config = TestConfig::new(&provider.issuer, &base)
        .secret("interop-secret")
        .set(
            "oidc",
            r#"scopes = ["openid", "profile", "email", "offline_access"]"#,
        )
        .set("oidc", r#"auth_params = { prompt = "consent" }"#)
        .set("oidc", format!("post_logout_redirect_uri = \"{base}/\""));
    let mut config = config.upstream("/api/", &format!("http://{}", echo.addr()), &[]);
    for (section, line) in settings {
        config = config.set(section, *line);
    }
    for (path, line) in routes {
        config = config.upstream(path, &format!("http://{}", echo.addr()), &[line]);
    }
    let config = config.load();
    let bff = Arc::new(Bff::new(config).unwrap());
    let server = if pingora {
        Server::Pingora(
            PingoraServer::start_with(Arc::clone(&bff), listener.into_std().unwrap(), None)
                .unwrap(),
        )
    } else {
        Server::Hyper(ProxyServer::start_with(Arc::clone(&bff), listener, None).unwrap())
    };
    Stack {
        bff,
        base,
        provider,
        server,
        _echo: echo,
    }
}

/// The browser's cookies at the IdP (its session and interaction cookies).
#[derive(Default, Clone)]
struct IdpJar(Vec<(String, String)>);

impl IdpJar {
    fn apply(&mut self, reply: &Reply) {
        for sc in reply.headers.get_all(SET_COOKIE) {
            let Ok(c) = cookie::Cookie::parse(sc.to_str().unwrap().to_owned()) else {
                continue;
            };
            self.0.retain(|(n, _)| n != c.name());
            let expired = c.max_age() == Some(cookie::time::Duration::ZERO)
                || c.expires_datetime()
                    .is_some_and(|t| t < cookie::time::OffsetDateTime::now_utc());
            if !expired && !c.value().is_empty() {
                self.0.push((c.name().to_owned(), c.value().to_owned()));
            }
        }
    }

    fn header(&self) -> Option<String> {
        crate::support::browser::Jar(self.0.clone()).header()
    }

    async fn send(
        &mut self,
        http: &Http,
        method: &str,
        url: &str,
        form: Option<&[(&str, &str)]>,
    ) -> Reply {
        let mut req = Request::builder().method(method).uri(url);
        if let Some(c) = self.header() {
            req = req.header(COOKIE, c);
        }
        let body = match form {
            Some(pairs) => {
                req = req.header(CONTENT_TYPE, "application/x-www-form-urlencoded");
                url::form_urlencoded::Serializer::new(String::new())
                    .extend_pairs(pairs)
                    .finish()
            }
            None => String::new(),
        };
        let reply = http
            .send(req.body(Full::new(Bytes::from(body))).unwrap())
            .await;
        self.apply(&reply);
        reply
    }

    /// Follows the IdP's redirects until one leads back to `base`; returns that URL.
    async fn follow(&mut self, http: &Http, start: &str, base: &str) -> String {
        let mut url = start.to_owned();
        for _ in 0..12 {
            if url.starts_with(base) {
                return url;
            }
            let reply = self.send(http, "GET", &url, None).await;
            assert!(
                reply.status.is_redirection(),
                "{} at {url}: {}",
                reply.status,
                reply.text()
            );
            let location = reply.headers[LOCATION].to_str().unwrap();
            url = url::Url::parse(&url)
                .unwrap()
                .join(location)
                .unwrap()
                .to_string();
        }
        panic!("too many redirects at the IdP");
    }
}

/// `/bff/login`: the authorize URL the browser is sent to.
async fn start_login(s: &Stack, b: &Browser) -> url::Url {
    let start = b
        .request(
            "GET",
            "/bff/login?returnUrl=%2F",
            &[("sec-fetch-mode", "navigate")],
        )
        .await;
    assert_eq!(start.status, 302, "{}", start.text());
    let authorize = start.location();
    assert!(authorize.as_str().starts_with(&s.provider.issuer));
    authorize
}

/// Through the provider from `authorize` and back to the callback: logged in.
async fn finish_login(s: &Stack, b: &Browser, idp: &mut IdpJar, authorize: &url::Url) {
    let callback = idp.follow(&b.http, authorize.as_str(), &s.base).await;
    let done = b.request("GET", &callback, &[]).await;
    assert_eq!(done.status, 302, "{}", done.text());
    assert!(b.jar().has_session());
}

async fn login(s: &Stack, b: &Browser, idp: &mut IdpJar) {
    let authorize = start_login(s, b).await;
    finish_login(s, b, idp, &authorize).await;
}

fn fingerprint(r: &Reply) -> String {
    r.json()["bearer"]["fingerprint"]
        .as_str()
        .unwrap_or_else(|| panic!("no bearer: {}", r.text()))
        .to_owned()
}

fn idp_count(s: &Stack, endpoint: &str, status: &str) -> u64 {
    let text = s.bff.metrics().render();
    let needle = format!("bff_idp_requests_total{{endpoint=\"{endpoint}\",status=\"{status}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&needle))
        .map_or(0, |n| n.trim().parse().unwrap())
}

async fn interop(pingora: bool) {
    let s = stack(pingora).await;
    let b = Browser::new(&s.base);
    let mut idp = IdpJar::default();
    login(&s, &b, &mut idp).await;

    // Bearer injection: the upstream sees the provider's JWT access token.
    let r = b.api("/api/items").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let claims = &r.json()["bearer"]["claims"];
    assert_eq!(claims["iss"], s.provider.issuer.as_str());
    assert_eq!(claims["aud"], "urn:bff:api");
    assert_eq!(claims["sub"], "interop-user");
    let first = fingerprint(&r);

    // Transparent refresh with rotation, twice in a row: the grant survives.
    for round in 1..=2 {
        s.bff.clock().advance(Duration::from_secs(61));
        let r = b.api("/api/items").await;
        assert_eq!(r.status, 200, "round {round}: {}", r.text());
        assert_ne!(fingerprint(&r), first);
        assert_eq!(idp_count(&s, "token", "200"), 1 + round);
    }

    // A storm of concurrent requests on an expired token: one refresh, and the session
    // stays alive (a second refresh with the same token would revoke the grant).
    s.bff.clock().advance(Duration::from_secs(61));
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..100 {
        let tab = b.tab();
        set.spawn(async move { tab.api("/api/items").await });
    }
    while let Some(r) = set.join_next().await {
        assert_eq!(r.unwrap().status, 200);
    }
    assert_eq!(idp_count(&s, "token", "200"), 4, "login + 3 refreshes");
    s.bff.clock().advance(Duration::from_secs(61));
    assert_eq!(b.api("/api/items").await.status, 200, "the grant is alive");
    assert_eq!(idp_count(&s, "token", "200"), 5);

    // A second BFF session in the same IdP session (same browser at the IdP).
    let other = Browser::new(&s.base);
    login(&s, &other, &mut idp).await;
    assert_eq!(other.api("/api/items").await.status, 200);

    // Logout: the refresh token is revoked (RFC 7009) and the IdP's end-session,
    // once confirmed, sends a back-channel logout that ends the other BFF session.
    let user = b.api("/bff/user").await.json();
    let logout_url = user["session"]["logout_url"].as_str().unwrap().to_owned();
    let r = b.request("GET", &logout_url, &[]).await;
    assert_eq!(r.status, 302);
    assert!(!b.jar().has_session());
    assert_eq!(idp_count(&s, "revocation", "200"), 1);
    let end_session = r.headers[LOCATION].to_str().unwrap().to_owned();
    assert!(end_session.starts_with(&s.provider.issuer));
    let page = idp.send(&b.http, "GET", &end_session, None).await;
    assert_eq!(page.status, 200, "{}", page.text());
    let html = page.text();
    let xsrf = html
        .split("name=\"xsrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no xsrf in the logout page: {html}"))
        .to_owned();
    let confirm = url::Url::parse(&end_session)
        .unwrap()
        .join("/session/end/confirm")
        .unwrap();
    let done = idp
        .send(
            &b.http,
            "POST",
            confirm.as_str(),
            Some(&[("xsrf", &xsrf), ("logout", "yes")]),
        )
        .await;
    assert!(
        done.status.is_redirection(),
        "{}: {}",
        done.status,
        done.text()
    );
    let back = url::Url::parse(confirm.as_str())
        .unwrap()
        .join(done.headers[LOCATION].to_str().unwrap())
        .unwrap();
    assert_eq!(back.as_str(), format!("{}/", s.base));
    assert!(
        crate::support::eventually(Duration::from_secs(10), || s
            .bff
            .metrics()
            .sessions_ended_count("backchannel_logout")
            == 1)
        .await,
        "the back-channel logout reached the BFF"
    );
    let r = other.api("/api/items").await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"], "session_expired");

    match &s.server {
        Server::Hyper(h) => h.shutdown().await,
        Server::Pingora(p) => p.shutdown().await,
    }
}

#[tokio::test]
async fn hyper_engine_against_oidc_provider() {
    interop(false).await;
}

#[tokio::test]
async fn pingora_engine_against_oidc_provider() {
    interop(true).await;
}

/// RFC 9126 against oidc-provider with `requirePushedAuthorizationRequests`: the
/// BFF reads it from discovery (`[oidc] par` is off), pushes the request, and the
/// browser's authorize URL has only `client_id` and `request_uri`; the login and
/// an API call work.
async fn par_interop(pingora: bool) {
    let s = stack_with(pingora, &[("REQUIRE_PAR", "1")], 60, &[], &[]).await;
    let b = Browser::new(&s.base);
    let authorize = start_login(&s, &b).await;
    let mut keys: Vec<String> = authorize
        .query_pairs()
        .map(|(k, _)| k.into_owned())
        .collect();
    keys.sort();
    assert_eq!(keys, ["client_id", "request_uri"], "{authorize}");
    let mut idp = IdpJar::default();
    finish_login(&s, &b, &mut idp, &authorize).await;
    let r = b.api("/api/items").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(idp_count(&s, "par", "201"), 1);
    // Without PAR this provider refuses the authorization request.
    let mut plain = authorize.clone();
    plain
        .query_pairs_mut()
        .clear()
        .append_pair("client_id", "bff")
        .append_pair("response_type", "code")
        .append_pair("scope", "openid")
        .append_pair("redirect_uri", &format!("{}/bff/callback", s.base));
    let refused = b.http.get(plain.as_str()).await;
    assert!(
        refused.status.is_client_error()
            || refused
                .headers
                .get(LOCATION)
                .is_some_and(|l| l.to_str().unwrap().contains("error=")),
        "{}: {}",
        refused.status,
        refused.text()
    );
    match &s.server {
        Server::Hyper(h) => h.shutdown().await,
        Server::Pingora(p) => p.shutdown().await,
    }
}

#[tokio::test]
async fn hyper_engine_par_against_oidc_provider() {
    par_interop(false).await;
}

#[tokio::test]
async fn pingora_engine_par_against_oidc_provider() {
    par_interop(true).await;
}

const ORDERS: &str = "https://orders.example.test/";
const BILLING: &str = "https://billing.example.test/";

/// RFC 8707 against oidc-provider (resource indicators, rotating refresh tokens,
/// the grant revoked on any reuse): the login names both routes' resources; each
/// route's upstream gets an access token whose `aud` is its resource; 100
/// concurrent requests across both routes right after expiry make one token
/// request per stale token, and the grant is alive afterwards.
async fn resource_interop(pingora: bool) {
    let s = stack_with(
        pingora,
        &[],
        60,
        &[
            ("/orders/", &format!("resource = {ORDERS:?}")),
            ("/billing/", &format!("resource = {BILLING:?}")),
        ],
        &[],
    )
    .await;
    let b = Browser::new(&s.base);
    let authorize = start_login(&s, &b).await;
    let resources: Vec<String> = authorize
        .query_pairs()
        .filter(|(k, _)| k == "resource")
        .map(|(_, v)| v.into_owned())
        .collect();
    assert_eq!(resources, [BILLING, ORDERS], "{authorize}");
    let mut idp = IdpJar::default();
    finish_login(&s, &b, &mut idp, &authorize).await;

    let aud = |r: &Reply| {
        r.json()["bearer"]["claims"]["aud"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    let r = b.api("/orders/x").await;
    assert_eq!(
        (r.status.as_u16(), aud(&r)),
        (200, ORDERS.to_owned()),
        "{}",
        r.text()
    );
    let r = b.api("/billing/x").await;
    assert_eq!(
        (r.status.as_u16(), aud(&r)),
        (200, BILLING.to_owned()),
        "{}",
        r.text()
    );
    let before = idp_count(&s, "token", "200");

    for round in 1..=2 {
        s.bff.clock().advance(Duration::from_secs(61));
        let storm: Vec<_> = (0..100)
            .map(|i| {
                let tab = b.clone();
                let path = if i % 2 == 0 {
                    "/orders/x"
                } else {
                    "/billing/x"
                };
                async move { (path, tab.api(path).await) }
            })
            .collect();
        for (path, r) in futures_util::future::join_all(storm).await {
            assert_eq!(r.status, 200, "round {round} {path}: {}", r.text());
            let want = if path == "/orders/x" { ORDERS } else { BILLING };
            assert_eq!(aud(&r), want);
        }
        // One token request per stale token (the two resources and the session's
        // own, refreshed in the one flight): each rotated refresh token presented
        // once (this provider would revoke the grant otherwise).
        assert_eq!(
            idp_count(&s, "token", "200"),
            before + 3 * round,
            "round {round}"
        );
        assert_eq!(idp_count(&s, "token", "400"), 0, "round {round}");
    }
    // The grant is alive: the session's own token refreshes too.
    s.bff.clock().advance(Duration::from_secs(61));
    let r = b.api("/api/items").await;
    assert_eq!(r.status, 200, "{}", r.text());
    match &s.server {
        Server::Hyper(h) => h.shutdown().await,
        Server::Pingora(p) => p.shutdown().await,
    }
}

#[tokio::test]
async fn hyper_engine_resources_against_oidc_provider() {
    resource_interop(false).await;
}

#[tokio::test]
async fn pingora_engine_resources_against_oidc_provider() {
    resource_interop(true).await;
}

/// RFC 9449 against oidc-provider with nonces required: the code exchange and the
/// refreshes carry proofs (the nonce asked for once, then kept), the access tokens
/// are bound (`cnf.jkt`), and the echo upstream finds every request's proof valid
/// for its method, URL and token; a refresh storm still makes one token request.
async fn dpop_interop(pingora: bool) {
    let s = stack_with(
        pingora,
        &[("DPOP_NONCE", "1")],
        60,
        &[],
        &[("oidc", "dpop = true")],
    )
    .await;
    let b = Browser::new(&s.base);
    let mut idp = IdpJar::default();
    login(&s, &b, &mut idp).await;
    let check = |r: &Reply| -> String {
        assert_eq!(r.status, 200, "{}", r.text());
        let body = r.json();
        assert_eq!(body["bearer"]["scheme"], "DPoP", "{body}");
        assert_eq!(body["dpop"]["valid"], true, "{body}");
        assert_eq!(body["bearer"]["claims"]["cnf"]["jkt"], body["dpop"]["jkt"]);
        body["dpop"]["jkt"].as_str().unwrap().to_owned()
    };
    let jkt = check(&b.api("/api/items").await);
    // The first token request was asked for a nonce (400), the retry succeeded.
    assert_eq!(idp_count(&s, "token", "400"), 1);
    let before = idp_count(&s, "token", "200");
    s.bff.clock().advance(Duration::from_secs(61));
    let storm: Vec<_> = (0..30)
        .map(|_| {
            let tab = b.clone();
            async move { tab.api("/api/items").await }
        })
        .collect();
    for r in futures_util::future::join_all(storm).await {
        assert_eq!(check(&r), jkt);
    }
    assert_eq!(idp_count(&s, "token", "200"), before + 1);
    assert_eq!(idp_count(&s, "token", "400"), 1, "the nonce was kept");
    match &s.server {
        Server::Hyper(h) => h.shutdown().await,
        Server::Pingora(p) => p.shutdown().await,
    }
}

#[tokio::test]
async fn hyper_engine_dpop_against_oidc_provider() {
    dpop_interop(false).await;
}

#[tokio::test]
async fn pingora_engine_dpop_against_oidc_provider() {
    dpop_interop(true).await;
}
