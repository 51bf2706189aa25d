//! The core through its engine API (`Bff::handle`), against the dev IdP over real
//! HTTP: every row of DESIGN.md's outcome table and every refresh rule.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::support::browser::Jar;
use crate::support::{Http, jwt_claims};
use bff_proxy::config::Env;
use bff_proxy::devidp::{DevClient, DevClientAuth, DevIdp, DevIdpSettings, RefreshPolicy};
use bff_proxy::{Bff, Decision, Forward};
use bytes::Bytes;
use http::header::{COOKIE, HeaderMap, LOCATION, SET_COOKIE};
use http::request::Parts;
use http::{Request, Response};

use crate::support::SECRET;
use crate::support::config::TestConfig;
const PUBLIC: &str = "http://127.0.0.1:8080";

fn parts(method: &str, uri: &str, jar: &Jar, extra: &[(&str, &str)]) -> Parts {
    let mut b = Request::builder().method(method).uri(uri);
    if let Some(c) = jar.header() {
        b = b.header(COOKIE, c);
    }
    for (k, v) in extra {
        b = b.header(*k, *v);
    }
    b.body(()).unwrap().into_parts().0
}

fn forward(d: Decision) -> Forward {
    match d {
        Decision::Forward(f) => *f,
        Decision::Respond(r) => panic!(
            "expected a forward, got {} {}",
            r.status(),
            String::from_utf8_lossy(r.body())
        ),
    }
}

fn respond(d: Decision) -> Response<Bytes> {
    match d {
        Decision::Respond(r) => r,
        Decision::Forward(f) => panic!("expected a response, got a forward to {:?}", f.target()),
    }
}

fn bearer(f: &Forward) -> String {
    f.authorization()
        .as_ref()
        .expect("no Authorization")
        .to_str()
        .unwrap()
        .strip_prefix("Bearer ")
        .unwrap()
        .to_owned()
}

fn error_of(r: &Response<Bytes>) -> String {
    let v: serde_json::Value = serde_json::from_slice(r.body()).unwrap();
    v["error"].as_str().unwrap().to_owned()
}

fn clears_session(r: &HeaderMap) -> bool {
    r.get_all(SET_COOKIE).iter().any(|v| {
        let t = v.to_str().unwrap();
        t.starts_with("__Host-Http-bff") && t.contains("Max-Age=0")
    })
}

struct Harness {
    idp: DevIdp,
    bff: Arc<Bff>,
    http: Http,
}

struct Setup {
    policy: RefreshPolicy,
    client: DevClientAuth,
    /// Lines for [oidc] describing client authentication.
    auth_lines: String,
    /// BFF_* overrides.
    env: Vec<(String, String)>,
    backchannel: Option<String>,
}

impl Default for Setup {
    fn default() -> Self {
        Self {
            policy: RefreshPolicy::default(),
            client: DevClientAuth::SecretBasic(SECRET.into()),
            auth_lines: format!("client_secret = \"{SECRET}\""),
            env: Vec::new(),
            backchannel: None,
        }
    }
}

fn config(issuer: &str, auth_lines: &str) -> TestConfig {
    auth_lines
        .lines()
        .fold(TestConfig::new(issuer, PUBLIC), |c, line| {
            c.set("oidc", line.to_owned())
        })
        .set("server", r#"listen = "127.0.0.1:8080""#)
        .set(
            "oidc",
            r#"scopes = ["openid", "profile", "offline_access"]"#,
        )
        .set("oidc", format!("post_logout_redirect_uri = \"{PUBLIC}/\""))
        .upstream("/api/", "http://127.0.0.1:9/base", &["strip_prefix = true"])
        .upstream("/opt/", "http://127.0.0.1:9", &[r#"auth = "optional""#])
        .upstream("/pub/", "http://127.0.0.1:9", &[r#"auth = "none""#])
        .upstream(
            "/get-only/",
            "http://127.0.0.1:9",
            &[r#"methods = ["GET"]"#],
        )
}

impl Harness {
    async fn start(setup: Setup) -> Self {
        let mut client = DevClient::new("bff", setup.client, &format!("{PUBLIC}/bff/callback"));
        client.post_logout_redirect_uris.push(format!("{PUBLIC}/"));
        client.backchannel_logout_uri = setup.backchannel;
        let idp = DevIdp::start(DevIdpSettings {
            clients: vec![client],
            refresh: setup.policy,
            key_bits: 2048,
            ..DevIdpSettings::default()
        })
        .await
        .unwrap();
        let config = config(idp.issuer(), &setup.auth_lines)
            .load_in(".".as_ref(), &Env::from_pairs(setup.env));
        let bff = Arc::new(Bff::new(config).unwrap());
        Self {
            idp,
            bff,
            http: Http::new(),
        }
    }

    async fn handle(&self, p: Parts) -> Decision {
        self.bff.handle(&p, None).await
    }

    /// An API call as the SPA makes it.
    async fn api(&self, jar: &Jar) -> Decision {
        self.handle(parts("GET", "/api/items?x=1", jar, &[("x-csrf", "1")]))
            .await
    }

    /// Starts a login; returns the IdP's authorize URL (the login cookie is in `jar`).
    async fn begin_login(&self, jar: &mut Jar, return_url: &str) -> String {
        let enc: String = url::form_urlencoded::byte_serialize(return_url.as_bytes()).collect();
        let resp = respond(
            self.handle(parts(
                "GET",
                &format!("/bff/login?returnUrl={enc}"),
                jar,
                &[],
            ))
            .await,
        );
        assert_eq!(resp.status(), 302);
        jar.apply(resp.headers());
        resp.headers()[LOCATION].to_str().unwrap().to_owned()
    }

    /// Lets the IdP answer the authorize URL; returns the callback path and query.
    async fn idp_login(&self, authorize: &str) -> String {
        let reply = self.http.get(authorize).await;
        assert_eq!(reply.status, 302, "{}", reply.text());
        let cb = reply.location();
        format!("{}?{}", cb.path(), cb.query().unwrap())
    }

    async fn finish_login(&self, jar: &mut Jar, callback: &str) -> Response<Bytes> {
        let resp = respond(self.handle(parts("GET", callback, jar, &[])).await);
        jar.apply(resp.headers());
        resp
    }

    async fn login(&self) -> Jar {
        let mut jar = Jar::default();
        let authorize = self.begin_login(&mut jar, "/app").await;
        let callback = self.idp_login(&authorize).await;
        let resp = self.finish_login(&mut jar, &callback).await;
        assert_eq!(
            resp.status(),
            302,
            "{}",
            String::from_utf8_lossy(resp.body())
        );
        assert_eq!(resp.headers()[LOCATION], "/app");
        assert!(jar.has_session());
        assert!(
            !jar.0.iter().any(|(n, _)| n.contains("-login-")),
            "login cookie cleared"
        );
        jar
    }

    /// Makes the session's access token expire (the BFF's clock moves on).
    fn expire_access_token(&self) {
        self.bff.clock().advance(Duration::from_secs(301));
    }
}

#[tokio::test]
async fn a_fresh_token_is_forwarded_with_the_header_rules() {
    let h = Harness::start(Setup::default()).await;
    let jar = h.login().await;
    let mut jar_with_other = jar.clone();
    jar_with_other.0.push(("theme".into(), "dark".into()));
    let f = forward(
        h.handle(parts(
            "GET",
            "/api/items?x=1",
            &jar_with_other,
            &[("x-csrf", "1"), ("authorization", "Bearer client-forged")],
        ))
        .await,
    );
    let token = bearer(&f);
    assert_ne!(token, "client-forged");
    assert_eq!(jwt_claims(&token)["sub"], "dev-user-1");
    assert!(f.strips_authorization());
    assert_eq!(
        f.cookie().unwrap(),
        "theme=dark",
        "session cookie stripped, others kept"
    );
    assert!(f.set_cookies().is_empty());
    match &f.target() {
        target @ bff_proxy::Target::Upstream { .. } => {
            assert_eq!(
                target.upstream_uri().unwrap().to_string(),
                "http://127.0.0.1:9/base/items?x=1"
            )
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(f.claims().unwrap()["sub"], "dev-user-1");
    assert_eq!(h.idp.stats().token_refresh, 0);
}

#[tokio::test]
async fn near_expiry_is_refreshed_with_rotation_and_a_new_cookie() {
    let h = Harness::start(Setup::default()).await;
    let mut jar = h.login().await;
    let before = bearer(&forward(h.api(&jar).await));
    h.bff.clock().advance(Duration::from_secs(280)); // within the 30 s skew
    let f = forward(h.api(&jar).await);
    let after = bearer(&f);
    assert_ne!(before, after);
    assert!(!f.set_cookies().is_empty(), "rotated session cookie");
    let old_jar = jar.clone();
    jar.apply_values(f.set_cookies());
    assert_ne!(jar.header(), old_jar.header());
    assert_eq!(h.idp.stats().token_refresh, 1);
    // The new cookie carries the new token without another refresh.
    assert_eq!(bearer(&forward(h.api(&jar).await)), after);
    assert_eq!(h.idp.stats().token_refresh, 1);
    assert_eq!(h.bff.metrics().refresh_count("ok"), 1);
}

#[tokio::test]
async fn two_hundred_concurrent_requests_cause_one_token_request() {
    let h = Harness::start(Setup::default()).await;
    let jar = h.login().await;
    h.idp.set_token_latency(Duration::from_millis(200));
    h.expire_access_token();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..200 {
        let bff = Arc::clone(&h.bff);
        let jar = jar.clone();
        set.spawn(async move {
            let p = parts("GET", "/api/items", &jar, &[("x-csrf", "1")]);
            bff.handle(&p, None).await
        });
    }
    let mut tokens = std::collections::HashSet::new();
    while let Some(d) = set.join_next().await {
        let f = forward(d.unwrap());
        assert!(!f.set_cookies().is_empty());
        tokens.insert(bearer(&f));
    }
    assert_eq!(tokens.len(), 1, "all got the same new token");
    assert_eq!(h.idp.stats().token_refresh, 1);
    let m = h.bff.metrics();
    assert_eq!(m.refresh_count("ok"), 1);
    assert_eq!(
        m.refresh_count("ok") + m.refresh_count("coalesced") + m.refresh_count("grace_hit"),
        200
    );
}

#[tokio::test]
async fn the_old_cookie_inside_the_grace_window_gets_the_new_tokens_and_after_it_is_refused() {
    let h = Harness::start(Setup::default()).await;
    let old = h.login().await;
    h.expire_access_token();
    let first = forward(h.api(&old).await);
    let mut new = old.clone();
    new.apply_values(first.set_cookies());
    // 30 s later the browser still sends the old cookie: grace (60 s).
    h.bff.clock().advance(Duration::from_secs(30));
    let again = forward(h.api(&old).await);
    assert_eq!(bearer(&again), bearer(&first));
    assert!(
        !again.set_cookies().is_empty(),
        "the old cookie is replaced"
    );
    assert_eq!(h.idp.stats().token_refresh, 1, "no second token request");
    assert_eq!(h.bff.metrics().refresh_count("grace_hit"), 1);

    // After the window the old cookie is a replay: refused, and the session revoked.
    h.bff.clock().advance(Duration::from_secs(31));
    let late = respond(h.api(&old).await);
    assert_eq!(late.status(), 401);
    assert_eq!(error_of(&late), "session_expired");
    assert!(clears_session(late.headers()));
    assert_eq!(h.bff.metrics().reuse_count(), 1);
    let revoked = respond(h.api(&new).await);
    assert_eq!(
        error_of(&revoked),
        "session_expired",
        "the whole session is revoked"
    );
    assert_eq!(
        h.idp.stats().token_refresh,
        1,
        "the old token never went to the IdP again"
    );
}

#[tokio::test]
async fn with_the_harshest_idp_a_storm_leaves_the_session_alive() {
    // Reuse detection and no grace at the IdP: one duplicate refresh would kill it.
    let h = Harness::start(Setup {
        policy: RefreshPolicy {
            grace: Duration::ZERO,
            reuse_detection: true,
            ..RefreshPolicy::default()
        },
        ..Setup::default()
    })
    .await;
    let mut jar = h.login().await;
    for round in 0..3 {
        h.expire_access_token();
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..50 {
            let bff = Arc::clone(&h.bff);
            let jar = jar.clone();
            set.spawn(async move {
                bff.handle(&parts("GET", "/api/x", &jar, &[("x-csrf", "1")]), None)
                    .await
            });
        }
        let mut last = None;
        while let Some(d) = set.join_next().await {
            last = Some(forward(d.unwrap()));
        }
        jar.apply_values(last.unwrap().set_cookies());
        assert_eq!(h.idp.stats().token_refresh, round + 1);
    }
    assert_eq!(h.idp.stats().reuse_detected, 0);
    forward(h.api(&jar).await);
}

#[tokio::test]
async fn an_idp_outage_never_ends_the_session() {
    let h = Harness::start(Setup {
        env: vec![("BFF_REFRESH_TIMEOUT".into(), "1s".into())],
        ..Setup::default()
    })
    .await;
    let jar = h.login().await;
    let current = bearer(&forward(h.api(&jar).await));
    h.idp.set_down(true).await;
    // Within the skew, token still valid: forwarded with the current token.
    h.bff.clock().advance(Duration::from_secs(280));
    let f = forward(h.api(&jar).await);
    assert_eq!(bearer(&f), current);
    assert!(f.set_cookies().is_empty(), "cookie untouched");
    // Expired: 503 with Retry-After, cookie untouched.
    h.bff.clock().advance(Duration::from_secs(30));
    let r = respond(h.api(&jar).await);
    assert_eq!(r.status(), 503);
    assert_eq!(error_of(&r), "idp_unavailable");
    assert!(r.headers().contains_key("retry-after"));
    assert!(r.headers().get(SET_COOKIE).is_none());
    assert!(h.bff.metrics().refresh_count("transient_error") >= 1);
    // Back up: the same cookie works.
    h.idp.set_down(false).await;
    let f = forward(h.api(&jar).await);
    assert_ne!(bearer(&f), current);
}

#[tokio::test]
async fn idp_errors_and_slowness_are_retried_then_answered_without_ending_the_session() {
    let h = Harness::start(Setup {
        env: vec![("BFF_REFRESH_TIMEOUT".into(), "2s".into())],
        ..Setup::default()
    })
    .await;
    let jar = h.login().await;
    h.expire_access_token();
    // Two 503s, then success: retried inside refresh.timeout.
    h.idp.fail_next_token_requests(2, 503);
    forward(h.api(&jar).await);
    assert_eq!(h.idp.stats().token_refresh, 3);

    let jar = h.login().await;
    h.expire_access_token();
    // A 429 storm longer than the timeout: 503, session kept.
    h.idp.fail_next_token_requests(1000, 429);
    let r = respond(h.api(&jar).await);
    assert_eq!(error_of(&r), "idp_unavailable");
    h.idp.fail_next_token_requests(0, 503);
    // Slow: slower than refresh.timeout.
    h.idp.set_token_latency(Duration::from_secs(3));
    let r = respond(h.api(&jar).await);
    assert_eq!(
        (r.status().as_u16(), error_of(&r).as_str()),
        (503, "idp_unavailable")
    );
    h.idp.set_token_latency(Duration::ZERO);
    forward(h.api(&jar).await);
}

#[tokio::test]
async fn invalid_grant_and_bare_400_end_the_session() {
    let h = Harness::start(Setup::default()).await;
    let jar = h.login().await;
    h.expire_access_token();
    h.idp.fail_next_token_requests(1, 400);
    let r = respond(h.api(&jar).await);
    assert_eq!(
        (r.status().as_u16(), error_of(&r).as_str()),
        (401, "session_expired")
    );
    assert!(clears_session(r.headers()));
    assert_eq!(h.bff.metrics().sessions_ended_count("invalid_grant"), 1);
    // A copy of the cookie is refused without asking the IdP again.
    let before = h.idp.stats().token_refresh;
    assert_eq!(error_of(&respond(h.api(&jar).await)), "session_expired");
    assert_eq!(h.idp.stats().token_refresh, before);

    let jar = h.login().await;
    h.expire_access_token();
    h.idp.fail_next_token_requests_with(1, 400, "");
    assert_eq!(error_of(&respond(h.api(&jar).await)), "session_expired");
}

#[tokio::test]
async fn invalid_client_answers_503_and_keeps_the_session() {
    let h = Harness::start(Setup::default()).await;
    let jar = h.login().await;
    h.expire_access_token();
    h.idp
        .fail_next_token_requests_with(1, 401, r#"{"error":"invalid_client"}"#);
    let r = respond(h.api(&jar).await);
    assert_eq!(
        (r.status().as_u16(), error_of(&r).as_str()),
        (503, "misconfigured")
    );
    assert!(r.headers().get(SET_COOKIE).is_none());
    assert_eq!(h.bff.metrics().refresh_count("invalid_client"), 1);
    forward(h.api(&jar).await);
}

#[tokio::test]
async fn absolute_lifetime_and_max_refreshes_end_the_session() {
    let h = Harness::start(Setup::default()).await;
    let jar = h.login().await;
    h.bff.clock().advance(Duration::from_secs(12 * 3600));
    let r = respond(h.api(&jar).await);
    assert_eq!(
        (r.status().as_u16(), error_of(&r).as_str()),
        (401, "session_expired")
    );
    assert_eq!(h.bff.metrics().sessions_ended_count("absolute_lifetime"), 1);

    let h = Harness::start(Setup {
        env: vec![("BFF_SESSION_MAX_REFRESHES".into(), "2".into())],
        ..Setup::default()
    })
    .await;
    let mut jar = h.login().await;
    for _ in 0..2 {
        h.expire_access_token();
        let f = forward(h.api(&jar).await);
        jar.apply_values(f.set_cookies());
    }
    h.expire_access_token();
    let r = respond(h.api(&jar).await);
    assert_eq!(error_of(&r), "session_expired");
    assert_eq!(h.bff.metrics().sessions_ended_count("max_refreshes"), 1);
    assert_eq!(h.idp.stats().token_refresh, 2);
}

#[tokio::test]
async fn an_idp_without_rotation_keeps_the_refresh_token() {
    for return_unrotated in [true, false] {
        let h = Harness::start(Setup {
            policy: RefreshPolicy {
                rotate: false,
                return_unrotated,
                ..RefreshPolicy::default()
            },
            ..Setup::default()
        })
        .await;
        let mut jar = h.login().await;
        for round in 1..=3 {
            h.expire_access_token();
            let f = forward(h.api(&jar).await);
            jar.apply_values(f.set_cookies());
            assert_eq!(h.idp.stats().refresh_ok, round);
        }
    }
}

async fn refreshes_with(client: DevClientAuth, auth_lines: String) {
    let h = Harness::start(Setup {
        client,
        auth_lines,
        ..Setup::default()
    })
    .await;
    let jar = h.login().await;
    h.expire_access_token();
    forward(h.api(&jar).await);
    assert_eq!(h.idp.stats().refresh_ok, 1);
    assert_eq!(h.idp.stats().invalid_client, 0);
}

#[tokio::test]
async fn each_client_authentication_method_logs_in_and_refreshes() {
    refreshes_with(
        DevClientAuth::SecretBasic(SECRET.into()),
        format!("client_auth = \"client_secret_basic\"\nclient_secret = \"{SECRET}\""),
    )
    .await;
    refreshes_with(
        DevClientAuth::SecretPost(SECRET.into()),
        format!("client_auth = \"client_secret_post\"\nclient_secret = \"{SECRET}\""),
    )
    .await;
    refreshes_with(DevClientAuth::None, "client_auth = \"none\"".into()).await;
    use rsa::pkcs8::{EncodePrivateKey as _, EncodePublicKey as _};
    let key = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).unwrap();
    let public_key_pem = key
        .to_public_key()
        .to_public_key_pem(rsa::pkcs8::LineEnding::LF)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pem_path = dir.path().join("client.pem");
    std::fs::write(
        &pem_path,
        key.to_pkcs8_pem(rsa::pkcs8::LineEnding::LF)
            .unwrap()
            .as_bytes(),
    )
    .unwrap();
    refreshes_with(
        DevClientAuth::PrivateKeyJwt { public_key_pem },
        format!(
            "client_auth = \"private_key_jwt\"\nprivate_key = \"file:{}\"",
            pem_path.display()
        ),
    )
    .await;
}

#[tokio::test]
async fn a_tampered_or_foreign_key_cookie_is_no_session() {
    let h = Harness::start(Setup::default()).await;
    let jar = h.login().await;
    let mut tampered = jar.clone();
    let v = &mut tampered.0[0].1;
    let last = v.pop().unwrap();
    v.push(if last == 'A' { 'B' } else { 'A' });
    let r = respond(h.api(&tampered).await);
    assert_eq!(
        (r.status().as_u16(), error_of(&r).as_str()),
        (401, "unauthenticated")
    );
    assert!(clears_session(r.headers()));

    let other = Harness::start(Setup {
        env: vec![(
            "BFF_SESSION_KEYS".into(),
            bff_proxy::seal::KeyRing::generate_key_base64(),
        )],
        ..Setup::default()
    })
    .await;
    let r = respond(other.api(&jar).await);
    assert_eq!(error_of(&r), "unauthenticated");
    // Garbage of every sort: never a panic, never a 500.
    for junk in ["", "x", "!!!", &"A".repeat(5000)] {
        let j = Jar(vec![("__Host-Http-bff".into(), junk.into())]);
        assert_eq!(respond(h.api(&j).await).status(), 401);
    }
}

#[tokio::test]
async fn navigation_csrf_and_method_rules() {
    let h = Harness::start(Setup::default()).await;
    let none = Jar::default();
    // A browser navigation without a session: to login, with the original path.
    let r = respond(
        h.handle(parts(
            "GET",
            "/api/page?q=1",
            &none,
            &[("sec-fetch-mode", "navigate")],
        ))
        .await,
    );
    assert_eq!(r.status(), 302);
    assert_eq!(
        r.headers()[LOCATION],
        "/bff/login?returnUrl=%2Fapi%2Fpage%3Fq%3D1"
    );
    let r = respond(
        h.handle(parts(
            "GET",
            "/api/page",
            &none,
            &[("accept", "text/html,*/*")],
        ))
        .await,
    );
    assert_eq!(r.status(), 302);
    // API without a session and without CSRF: 403 comes first.
    let r = respond(h.handle(parts("GET", "/api/x", &none, &[])).await);
    assert_eq!((r.status().as_u16(), error_of(&r).as_str()), (403, "csrf"));
    let r = respond(h.api(&none).await);
    assert_eq!(
        (r.status().as_u16(), error_of(&r).as_str()),
        (401, "unauthenticated")
    );
    // With a session, a missing or wrong CSRF header is refused.
    let jar = h.login().await;
    let r = respond(h.handle(parts("GET", "/api/x", &jar, &[])).await);
    assert_eq!(error_of(&r), "csrf");
    let r = respond(
        h.handle(parts("GET", "/api/x", &jar, &[("x-csrf", "2")]))
            .await,
    );
    assert_eq!(error_of(&r), "csrf");
    // Method allowlist.
    let r = respond(
        h.handle(parts("POST", "/get-only/x", &jar, &[("x-csrf", "1")]))
            .await,
    );
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "GET");
    // Optional: with a session a token, without one none.
    let f = forward(
        h.handle(parts("GET", "/opt/x", &jar, &[("x-csrf", "1")]))
            .await,
    );
    assert!(f.authorization().is_some());
    let f = forward(
        h.handle(parts("GET", "/opt/x", &none, &[("x-csrf", "1")]))
            .await,
    );
    assert!(f.authorization().is_none());
    // None: no token, no session handling, but the session cookie is still stripped.
    let f = forward(h.handle(parts("GET", "/pub/x", &jar, &[])).await);
    assert!(f.authorization().is_none() && f.cookie().is_none() && !f.strips_authorization());
    // Nothing routed.
    let r = respond(h.handle(parts("GET", "/elsewhere", &jar, &[])).await);
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn several_tabs_log_in_at_once() {
    let h = Harness::start(Setup::default()).await;
    let mut jar = Jar::default();
    let mut pending = Vec::new();
    for tab in 0..4 {
        let authorize = h.begin_login(&mut jar, &format!("/tab{tab}")).await;
        pending.push((tab, h.idp_login(&authorize).await));
    }
    assert_eq!(
        jar.0.iter().filter(|(n, _)| n.contains("-login-")).count(),
        4
    );
    // Tabs whose callbacks race each carry every attempt: all of them finish.
    let racing = jar.clone();
    for (tab, callback) in &pending[2..] {
        let mut own = racing.clone();
        let resp = h.finish_login(&mut own, callback).await;
        assert_eq!(resp.status(), 302);
        assert_eq!(resp.headers()[LOCATION], format!("/tab{tab}").as_str());
    }
    // Finished one after another: the first login clears every pending attempt
    // (the login-cookie bomb defence), and the later tabs, finding the browser
    // logged in, go to the app.
    pending.truncate(2);
    pending.reverse();
    for (i, (tab, callback)) in pending.into_iter().enumerate() {
        let resp = h.finish_login(&mut jar, &callback).await;
        assert_eq!(
            resp.status(),
            302,
            "{}",
            String::from_utf8_lossy(resp.body())
        );
        let expected = if i == 0 {
            format!("/tab{tab}")
        } else {
            "/".to_owned()
        };
        assert_eq!(resp.headers()[LOCATION], expected.as_str());
        assert!(!jar.0.iter().any(|(n, _)| n.contains("-login-")));
    }
    forward(h.api(&jar).await);
}

#[tokio::test]
async fn login_refusals_and_bad_return_urls() {
    let h = Harness::start(Setup::default()).await;
    for bad in [
        "//evil.example/",
        "/\\evil.example",
        "https://evil.example/",
        "/a%0Ab",
    ] {
        let r = respond(
            h.handle(parts(
                "GET",
                &format!("/bff/login?returnUrl={bad}"),
                &Jar::default(),
                &[],
            ))
            .await,
        );
        assert_eq!(r.status(), 400, "{bad}");
    }
    // The IdP refuses: back to the SPA with the error (the login cookie is valid).
    let mut jar = Jar::default();
    let authorize = h.begin_login(&mut jar, "/").await;
    h.idp.deny_next_authorization("access_denied");
    let callback = h.idp_login(&authorize).await;
    let r = h.finish_login(&mut jar, &callback).await;
    assert_eq!(r.status(), 302);
    assert_eq!(r.headers()["location"], "/?error=access_denied");
    // A callback without its login cookie.
    let authorize = h.begin_login(&mut Jar::default(), "/").await;
    let callback = h.idp_login(&authorize).await;
    let r = h.finish_login(&mut Jar::default(), &callback).await;
    assert_eq!(r.status(), 400);
    // A replayed callback (the code is single use, the login cookie is gone).
    let mut jar = Jar::default();
    let authorize = h.begin_login(&mut jar, "/").await;
    let callback = h.idp_login(&authorize).await;
    let saved = jar.clone();
    assert_eq!(h.finish_login(&mut jar, &callback).await.status(), 302);
    let mut replay = saved;
    assert_eq!(h.finish_login(&mut replay, &callback).await.status(), 400);
}

#[tokio::test]
async fn user_and_logout() {
    let h = Harness::start(Setup::default()).await;
    let jar = h.login().await;
    let r = respond(h.handle(parts("GET", "/bff/user", &jar, &[])).await);
    assert_eq!(r.status(), 403, "CSRF header required");
    let r = respond(
        h.handle(parts("GET", "/bff/user", &jar, &[("x-csrf", "1")]))
            .await,
    );
    assert_eq!(r.status(), 200);
    let user: serde_json::Value = serde_json::from_slice(r.body()).unwrap();
    assert_eq!(user["claims"]["sub"], "dev-user-1");
    let sid = user["session"]["sid"].as_str().unwrap().to_owned();
    assert_eq!(
        user["session"]["logout_url"],
        format!("/bff/logout?sid={sid}").as_str()
    );
    assert!(user["session"]["expires_at"].as_u64().unwrap() > 0);
    let r = respond(
        h.handle(parts(
            "GET",
            "/bff/user",
            &Jar::default(),
            &[("x-csrf", "1")],
        ))
        .await,
    );
    assert_eq!(r.status(), 401);

    // GET logout with somebody else's sid is refused.
    let r = respond(
        h.handle(parts(
            "GET",
            "/bff/logout?sid=AAAAAAAAAAAAAAAAAAAAAA",
            &jar,
            &[],
        ))
        .await,
    );
    assert_eq!(r.status(), 400);
    // The real link: revokes at the IdP, clears the cookie, goes to end_session.
    let r = respond(
        h.handle(parts("GET", &format!("/bff/logout?sid={sid}"), &jar, &[]))
            .await,
    );
    assert_eq!(r.status(), 302);
    assert!(clears_session(r.headers()));
    let location = url::Url::parse(r.headers()[LOCATION].to_str().unwrap()).unwrap();
    assert_eq!(location.path(), "/end_session");
    let q: std::collections::HashMap<_, _> = location.query_pairs().into_owned().collect();
    assert!(q.contains_key("id_token_hint"));
    assert_eq!(q["post_logout_redirect_uri"], format!("{PUBLIC}/"));
    assert_eq!(
        h.idp.stats().revocations,
        1,
        "refresh token revoked (RFC 7009)"
    );
    // The old cookie is refused from now on.
    let r = respond(h.api(&jar).await);
    assert_eq!(error_of(&r), "session_expired");

    // POST logout needs the CSRF header.
    let jar = h.login().await;
    let r = respond(h.handle(parts("POST", "/bff/logout", &jar, &[])).await);
    assert_eq!(r.status(), 403);
    let r = respond(
        h.handle(parts("POST", "/bff/logout", &jar, &[("x-csrf", "1")]))
            .await,
    );
    assert_eq!(r.status(), 302);
    assert_eq!(h.idp.stats().revocations, 2);
}

/// Back-channel logout arrives over HTTP from the IdP, through a minimal front door.
#[tokio::test]
async fn backchannel_logout_revokes_the_session() {
    let slot: Arc<OnceLock<Arc<Bff>>> = Arc::new(OnceLock::new());
    let addr = crate::support::front_door(Arc::clone(&slot)).await;
    let h = Harness::start(Setup {
        backchannel: Some(format!("http://{addr}/bff/backchannel-logout")),
        ..Setup::default()
    })
    .await;
    let _ = slot.set(Arc::clone(&h.bff));
    let jar = h.login().await;
    let other = h.login().await;
    forward(h.api(&jar).await);
    // Find the IdP session of the first login from its ID token.
    let r = respond(
        h.handle(parts("GET", "/bff/user", &jar, &[("x-csrf", "1")]))
            .await,
    );
    let user: serde_json::Value = serde_json::from_slice(r.body()).unwrap();
    let idp_sid = user["claims"]["sid"].as_str().unwrap().to_owned();
    assert_eq!(
        h.idp.logout_session(&idp_sid).await,
        1,
        "delivered and accepted"
    );
    let r = respond(h.api(&jar).await);
    assert_eq!(
        (r.status().as_u16(), error_of(&r).as_str()),
        (401, "session_expired")
    );
    // Another IdP session is untouched.
    forward(h.api(&other).await);
    // A forged logout token is refused.
    let bad = Bytes::from_static(b"logout_token=eyJhbGciOiJub25lIn0.e30.");
    let p = parts("POST", "/bff/backchannel-logout", &Jar::default(), &[]);
    let r = respond(h.bff.handle(&p, Some(bad)).await);
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn an_unknown_kid_triggers_one_jwks_refetch() {
    let h = Harness::start(Setup::default()).await;
    let jar = h.login().await;
    let fetches = h.idp.stats().jwks;
    h.idp.rotate_signing_key().await.unwrap();
    h.expire_access_token();
    // The refresh returns an ID token signed with the new kid.
    let f = forward(h.api(&jar).await);
    assert!(!f.set_cookies().is_empty());
    assert_eq!(h.idp.stats().jwks, fetches + 1);
    // A new login validates with the cached set: no further fetch.
    h.login().await;
    assert_eq!(h.idp.stats().jwks, fetches + 1);
}

#[tokio::test]
async fn a_refresh_updates_the_scope_and_the_id_token() {
    let h = Harness::start(Setup::default()).await;
    let jar = h.login().await;
    let open = |jar: &Jar| {
        let p = parts("GET", "/", jar, &[]);
        h.bff.sealer().read(&p.headers).unwrap().session.unwrap()
    };
    let before = open(&jar);
    assert_eq!(before.scope, "openid profile offline_access");
    h.idp.set_refresh_scope(Some("openid offline_access"));
    let new_kid = h.idp.rotate_signing_key().await.unwrap();
    h.expire_access_token();
    let f = forward(h.api(&jar).await);
    let mut after_jar = jar.clone();
    after_jar.apply_values(f.set_cookies());
    let after = open(&after_jar);
    assert_eq!(after.scope, "openid offline_access", "narrower scope kept");
    let id_token = after.id_token.unwrap();
    assert_ne!(Some(&id_token), before.id_token.as_ref());
    assert_eq!(
        crate::support::jwt_header(&id_token)["kid"],
        new_kid.as_str()
    );
    assert_eq!(after.refresh_count, 1);
    assert_ne!(after.refresh_token, before.refresh_token);
}

#[tokio::test]
async fn reuse_with_revoke_at_idp_kills_the_token_family_at_the_idp() {
    let h = Harness::start(Setup {
        env: vec![("BFF_REFRESH_ON_REUSE".into(), "revoke_at_idp".into())],
        ..Setup::default()
    })
    .await;
    let old = h.login().await;
    h.expire_access_token();
    forward(h.api(&old).await);
    h.bff.clock().advance(Duration::from_secs(120)); // past the 60 s grace
    let r = respond(h.api(&old).await);
    assert_eq!(error_of(&r), "session_expired");
    // The stale token went to the IdP once, on purpose, and its reuse detection
    // revoked the family.
    assert!(
        crate::support::eventually(Duration::from_secs(10), || h.idp.stats().reuse_detected
            == 1)
        .await,
        "the IdP saw the stale token"
    );
    assert_eq!(h.idp.stats().families_revoked, 1);
}

#[tokio::test]
async fn server_side_sessions_with_the_memory_store() {
    let h = Harness::start(Setup {
        env: vec![("BFF_SESSION_MODE".into(), "server".into())],
        ..Setup::default()
    })
    .await;
    let jar = h.login().await;
    let cookie = jar.header().unwrap();
    assert!(
        cookie.len() < 120,
        "a sealed handle, not the tokens: {cookie}"
    );
    let first = bearer(&forward(h.api(&jar).await));
    h.expire_access_token();
    let f = forward(h.api(&jar).await);
    assert!(
        f.set_cookies().is_empty(),
        "the handle stays; the stored session changed"
    );
    assert_ne!(bearer(&f), first);
    // The same old cookie now carries the new token: the session lives server-side.
    assert_eq!(bearer(&forward(h.api(&jar).await)), bearer(&f));
    assert_eq!(h.idp.stats().token_refresh, 1);
    let r = respond(
        h.handle(parts("POST", "/bff/logout", &jar, &[("x-csrf", "1")]))
            .await,
    );
    assert_eq!(r.status(), 302);
    let r = respond(h.api(&jar).await);
    assert_eq!(r.status(), 401);
}

/// Every move of a request's future copies all of it (pingora boxes it per request,
/// hyper moves it into its dispatcher): the rare, heavy paths (a token rotation, an
/// endpoint's calls to the IdP) are boxed where they start, so a request on a fresh
/// session carries a small state. Measured by callgrind: memcpy was 15 % of the
/// proxy's instructions before (benches/load/instructions.sh).
#[tokio::test]
async fn a_requests_future_stays_small() {
    let h = Harness::start(Setup::default()).await;
    let p = parts("GET", "/api/items", &Jar::default(), &[("x-csrf", "1")]);
    let size = std::mem::size_of_val(&h.bff.handle(&p, None));
    eprintln!("Bff::handle future: {size} bytes");
    assert!(size <= 4096, "Bff::handle's future is {size} bytes");
}
