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
    stack_with(pingora, &[]).await
}

/// A stack whose provider.mjs gets `provider_env`.
async fn stack_with(pingora: bool, provider_env: &[(&str, &str)]) -> Stack {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let provider = start_provider_with(&base, 60, provider_env).await;
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
        .set("oidc", format!("post_logout_redirect_uri = \"{base}/\""))
        .upstream("/api/", &format!("http://{}", echo.addr()), &[])
        .load();
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

async fn login(s: &Stack, b: &Browser, idp: &mut IdpJar) {
    let start = b
        .request(
            "GET",
            "/bff/login?returnUrl=%2F",
            &[("sec-fetch-mode", "navigate")],
        )
        .await;
    assert_eq!(start.status, 302, "{}", start.text());
    let authorize = start.headers[LOCATION].to_str().unwrap().to_owned();
    assert!(authorize.starts_with(&s.provider.issuer));
    let callback = idp.follow(&b.http, &authorize, &s.base).await;
    let done = b.request("GET", &callback, &[]).await;
    assert_eq!(done.status, 302, "{}", done.text());
    assert!(b.jar().has_session());
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
    let s = stack_with(pingora, &[("REQUIRE_PAR", "1")]).await;
    let b = Browser::new(&s.base);
    let start = b
        .request(
            "GET",
            "/bff/login?returnUrl=%2F",
            &[("sec-fetch-mode", "navigate")],
        )
        .await;
    assert_eq!(start.status, 302, "{}", start.text());
    let authorize = start.location();
    let mut keys: Vec<String> = authorize
        .query_pairs()
        .map(|(k, _)| k.into_owned())
        .collect();
    keys.sort();
    assert_eq!(keys, ["client_id", "request_uri"], "{authorize}");
    let mut idp = IdpJar::default();
    let callback = idp.follow(&b.http, authorize.as_str(), &s.base).await;
    let done = b.request("GET", &callback, &[]).await;
    assert_eq!(done.status, 302, "{}", done.text());
    assert!(b.jar().has_session());
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
