//! Several replicas behave as one through Redis (127.0.0.1:6379): three BFF
//! instances in one process share a store; a storm spread over them causes exactly
//! one token request, even when the IdP is slower than the lock's first TTL.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use crate::support::Http;
use crate::support::browser::Jar;
use bff_proxy::config::Env;
use bff_proxy::devidp::{DevClient, DevClientAuth, DevIdp, DevIdpSettings};
use bff_proxy::store::RedisStore;
use bff_proxy::{Bff, Decision};
use http::Request;
use http::header::{COOKIE, LOCATION};
use http::request::Parts;

use crate::support::config::TestConfig;
const PUBLIC: &str = "http://127.0.0.1:8080";

fn parts(uri: &str, jar: &Jar, extra: &[(&str, &str)]) -> Parts {
    let mut b = Request::get(uri);
    if let Some(c) = jar.header() {
        b = b.header(COOKIE, c);
    }
    for (k, v) in extra {
        b = b.header(*k, *v);
    }
    b.body(()).unwrap().into_parts().0
}

fn respond(d: Decision) -> http::Response<bytes::Bytes> {
    match d {
        Decision::Respond(r) => r,
        Decision::Forward(_) => panic!("expected a response"),
    }
}

fn bearer(d: Decision) -> String {
    match d {
        Decision::Forward(f) => f.authorization().unwrap().to_str().unwrap().to_owned(),
        Decision::Respond(r) => panic!("{} {}", r.status(), String::from_utf8_lossy(r.body())),
    }
}

async fn replicas(n: usize) -> (DevIdp, Vec<Arc<Bff>>) {
    let (idp, bffs, _) = replicas_with(n, &[]).await;
    (idp, bffs)
}

async fn replicas_with_prefix(n: usize) -> (DevIdp, Vec<Arc<Bff>>, String) {
    replicas_with(n, &[]).await
}

async fn replicas_with(n: usize, env: &[(&str, &str)]) -> (DevIdp, Vec<Arc<Bff>>, String) {
    let (idp, bffs, prefix, _) = replicas_on(
        n,
        env,
        "redis://127.0.0.1:6379",
        Duration::from_secs(2),
        &[],
    )
    .await;
    (idp, bffs, prefix)
}

/// A dev IdP and the replicas' config (`/api/` and `routes`: path, setting line).
async fn idp_and_config(routes: &[(&str, &str)]) -> (DevIdp, TestConfig) {
    let client = DevClient::new(
        "bff",
        DevClientAuth::SecretBasic("s".into()),
        &format!("{PUBLIC}/bff/callback"),
    );
    let idp = DevIdp::start(DevIdpSettings {
        clients: vec![client],
        ..DevIdpSettings::default()
    })
    .await
    .unwrap();
    let config = TestConfig::new(idp.issuer(), PUBLIC)
        .secret("s")
        .set("oidc", r#"scopes = ["openid", "offline_access"]"#)
        .set("refresh", r#"timeout = "10s""#)
        .upstream("/api/", "http://127.0.0.1:9", &[]);
    let config = routes.iter().fold(config, |c, (path, line)| {
        c.upstream(path, "http://127.0.0.1:9", &[line])
    });
    (idp, config)
}

/// `n` replicas sharing the Redis at `redis_url` under a fresh key prefix.
async fn replicas_on(
    n: usize,
    env: &[(&str, &str)],
    redis_url: &str,
    timeout: Duration,
    routes: &[(&str, &str)],
) -> (DevIdp, Vec<Arc<Bff>>, String, Arc<RedisStore>) {
    let (idp, config) = idp_and_config(routes).await;
    let prefix = format!("bff-test:{}:", bff_proxy::devidp::random_text(6));
    let store = Arc::new(
        RedisStore::connect(redis_url, &prefix, timeout)
            .await
            .unwrap_or_else(|e| panic!("{e}: start Redis with: redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save \"\"")),
    );
    let bffs = (0..n)
        .map(|_| {
            let config = config.load_in(".".as_ref(), &Env::from_pairs(env.iter().copied()));
            Arc::new(Bff::new(config).unwrap().with_store(store.clone()))
        })
        .collect();
    (idp, bffs, prefix, store)
}

/// Logs in through replica 0.
async fn login(bff: &Bff) -> Jar {
    let mut jar = Jar::default();
    let r = respond(
        bff.handle(&parts("/bff/login?returnUrl=%2F", &jar, &[]), None)
            .await,
    );
    jar.apply(r.headers());
    let at_idp = Http::new()
        .get(r.headers()[LOCATION].to_str().unwrap())
        .await;
    let cb = at_idp.location();
    let r = respond(
        bff.handle(
            &parts(&format!("{}?{}", cb.path(), cb.query().unwrap()), &jar, &[]),
            None,
        )
        .await,
    );
    assert_eq!(r.status(), 302);
    jar.apply(r.headers());
    jar
}

async fn storm(bffs: &[Arc<Bff>], jar: &Jar, requests: usize) -> std::collections::HashSet<String> {
    let mut set = tokio::task::JoinSet::new();
    for i in 0..requests {
        let bff = Arc::clone(&bffs[i % bffs.len()]);
        let jar = jar.clone();
        set.spawn(async move {
            bearer(
                bff.handle(&parts("/api/x", &jar, &[("x-csrf", "1")]), None)
                    .await,
            )
        });
    }
    let mut tokens = std::collections::HashSet::new();
    while let Some(t) = set.join_next().await {
        tokens.insert(t.unwrap());
    }
    tokens
}

#[tokio::test]
async fn a_storm_over_three_replicas_causes_one_token_request() {
    let (idp, bffs, prefix) = replicas_with_prefix(3).await;
    let jar = login(&bffs[0]).await;
    idp.set_token_latency(Duration::from_millis(300));
    for b in &bffs {
        b.clock().advance(Duration::from_secs(301));
    }
    let tokens = storm(&bffs, &jar, 300).await;
    assert_eq!(tokens.len(), 1, "all 300 got the same new token");
    assert_eq!(
        idp.stats().token_refresh,
        1,
        "one token request across the replicas"
    );
    assert_eq!(idp.stats().reuse_detected, 0);

    // What the replicas left in Redis: every key has a TTL, and no key or value holds
    // a token in clear (neither the new access token nor the rotated refresh token).
    let access = tokens
        .into_iter()
        .next()
        .unwrap()
        .strip_prefix("Bearer ")
        .unwrap()
        .to_owned();
    let session = bffs[0]
        .sealer()
        .read(&parts("/", &jar, &[]).headers)
        .unwrap()
        .session
        .unwrap();
    let old_refresh = session.refresh_token.unwrap();
    let client = redis::Client::open("redis://127.0.0.1:6379").unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        keys.len() >= 2,
        "a result and a tombstone at least: {keys:?}"
    );
    for key in &keys {
        let ttl: i64 = redis::cmd("PTTL")
            .arg(key)
            .query_async(&mut conn)
            .await
            .unwrap();
        // -2: gone since KEYS listed it (a lock released meanwhile).
        if ttl == -2 {
            continue;
        }
        assert!(ttl > 0, "{key} has no TTL");
        let value: Vec<u8> = redis::cmd("GET")
            .arg(key)
            .query_async(&mut conn)
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&value);
        for secret in [&access, &old_refresh] {
            assert!(
                !text.contains(secret.as_str()),
                "{key} holds a token in clear"
            );
            assert!(!key.contains(secret.as_str()), "{key} names a token");
        }
    }
}

/// A login, then 30 requests over the replicas once the access token has expired,
/// with a token endpoint that takes `latency` (the lock lives 2 s unless renewed):
/// one token, from one token request.
async fn storm_with_a_slow_idp(idp: &DevIdp, bffs: &[Arc<Bff>], latency: Duration) {
    let jar = login(&bffs[0]).await;
    idp.set_token_latency(latency);
    for b in bffs {
        b.clock().advance(Duration::from_secs(301));
    }
    let tokens = storm(bffs, &jar, 30).await;
    assert_eq!(tokens.len(), 1);
    assert_eq!(idp.stats().token_refresh, 1);
}

#[tokio::test]
async fn an_idp_slower_than_the_lock_ttl_still_gets_one_token_request() {
    let (idp, bffs) = replicas(3).await;
    storm_with_a_slow_idp(&idp, &bffs, Duration::from_secs(5)).await;
}

fn status(d: Decision) -> u16 {
    match d {
        Decision::Forward(_) => 200,
        Decision::Respond(r) => r.status().as_u16(),
    }
}

#[tokio::test]
async fn a_logout_on_one_replica_holds_on_the_others_at_once() {
    let (_idp, bffs) = replicas(3).await;
    let jar = login(&bffs[0]).await;
    for b in &bffs {
        assert_eq!(
            status(
                b.handle(&parts("/api/x", &jar, &[("x-csrf", "1")]), None)
                    .await
            ),
            200
        );
    }
    let r = respond(
        bffs[0]
            .handle(
                &parts("/bff/logout", &jar, &[("x-csrf", "1")]).tap_post(),
                None,
            )
            .await,
    );
    assert_eq!(r.status(), 302);
    // No waiting: the very next request on B and C is refused.
    for b in &bffs[1..] {
        let r = respond(
            b.handle(&parts("/api/x", &jar, &[("x-csrf", "1")]), None)
                .await,
        );
        assert_eq!(r.status(), 401);
    }
}

/// Sends the IdP's back-channel logout to replica B through a minimal front door.
async fn front_door(bff: Arc<Bff>) -> std::net::SocketAddr {
    let slot = Arc::new(std::sync::OnceLock::new());
    let _ = slot.set(bff);
    crate::support::front_door(slot).await
}

#[tokio::test]
async fn a_backchannel_logout_received_by_one_replica_revokes_on_all() {
    let (idp, bffs) = replicas(3).await;
    let door = front_door(Arc::clone(&bffs[1])).await;
    let jar = login(&bffs[0]).await;
    let user = respond(
        bffs[2]
            .handle(&parts("/bff/user", &jar, &[("x-csrf", "1")]), None)
            .await,
    );
    let user: serde_json::Value = serde_json::from_slice(user.body()).unwrap();
    let idp_sid = user["claims"]["sid"].as_str().unwrap().to_owned();
    let delivered = idp
        .backchannel_logout_to(&idp_sid, &format!("http://{door}/bff/backchannel-logout"))
        .await;
    assert!(delivered, "replica B accepted the logout token");
    for b in [&bffs[0], &bffs[2]] {
        let r = respond(
            b.handle(&parts("/api/x", &jar, &[("x-csrf", "1")]), None)
                .await,
        );
        assert_eq!(r.status(), 401);
    }
}

trait TapPost {
    fn tap_post(self) -> Self;
}

impl TapPost for Parts {
    fn tap_post(mut self) -> Self {
        self.method = http::Method::POST;
        self
    }
}

/// A TCP relay in front of Redis that the test can cut and restore.
struct Relay {
    addr: std::net::SocketAddr,
    cut: tokio::sync::watch::Sender<bool>,
}

async fn relay() -> Relay {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (cut, cut_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            if *cut_rx.borrow() {
                continue; // dropped: the connection closes at once
            }
            let mut cut_rx = cut_rx.clone();
            tokio::spawn(async move {
                let Ok(mut redis) = tokio::net::TcpStream::connect("127.0.0.1:6379").await else {
                    return;
                };
                tokio::select! {
                    _ = tokio::io::copy_bidirectional(&mut client, &mut redis) => {}
                    _ = cut_rx.wait_for(|c| *c) => {}
                }
            });
        }
    });
    Relay { addr, cut }
}

#[tokio::test]
async fn a_redis_outage_falls_back_to_local_and_recovers() {
    let relay = relay().await;
    let (idp, bffs, _, store) = replicas_on(
        3,
        &[],
        &format!("redis://{}", relay.addr),
        Duration::from_secs(1),
        &[],
    )
    .await;
    let jar = login(&bffs[0]).await;

    // Redis goes away: fresh sessions keep being served, on every replica.
    relay.cut.send_replace(true);
    for b in &bffs {
        assert_eq!(
            status(
                b.handle(&parts("/api/x", &jar, &[("x-csrf", "1")]), None)
                    .await
            ),
            200
        );
    }
    // An expired token is still refreshed, on the local path, and says so.
    bffs[0].clock().advance(Duration::from_secs(301));
    let r = bffs[0]
        .handle(&parts("/api/x", &jar, &[("x-csrf", "1")]), None)
        .await;
    let new_cookie = match r {
        Decision::Forward(f) => {
            assert!(!f.set_cookies().is_empty());
            f.set_cookies().to_vec()
        }
        Decision::Respond(r) => panic!("{} {}", r.status(), String::from_utf8_lossy(r.body())),
    };
    assert_eq!(bffs[0].metrics().refresh_count("store_fallback"), 1);
    assert_eq!(idp.stats().token_refresh, 1);

    // Redis is back: the shared path works again by itself.
    relay.cut.send_replace(false);
    let mut jar = jar.clone();
    jar.apply_values(&new_cookie);
    let probe = store.clone();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        use bff_proxy::store::SharedStore as _;
        if probe
            .put("probe", b"1", Duration::from_secs(5))
            .await
            .is_ok()
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the store never reconnected"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for b in &bffs {
        b.clock().advance(Duration::from_secs(301 * 2));
    }
    idp.set_token_latency(Duration::from_millis(300));
    let tokens = storm(&bffs, &jar, 60).await;
    assert_eq!(tokens.len(), 1);
    assert_eq!(
        idp.stats().token_refresh,
        2,
        "one more token request, shared again"
    );
}

#[tokio::test]
async fn server_side_sessions_work_across_replicas() {
    let (idp, bffs, prefix) = replicas_with(3, &[("BFF_SESSION_MODE", "server")]).await;
    let jar = login(&bffs[0]).await;
    // The cookie is a sealed handle: small, and no token inside even sealed.
    let cookie = jar.header().unwrap();
    assert!(cookie.len() < 120, "{} bytes: {cookie}", cookie.len());
    let mut tokens = std::collections::HashSet::new();
    for b in &bffs {
        tokens.insert(bearer(
            b.handle(&parts("/api/x", &jar, &[("x-csrf", "1")]), None)
                .await,
        ));
    }
    assert_eq!(
        tokens.len(),
        1,
        "every replica reads the one stored session"
    );
    // A refresh on one replica updates the stored session for all, without a new cookie.
    for b in &bffs {
        b.clock().advance(Duration::from_secs(301));
    }
    let d = bffs[1]
        .handle(&parts("/api/x", &jar, &[("x-csrf", "1")]), None)
        .await;
    let refreshed = match d {
        Decision::Forward(f) => {
            assert!(f.set_cookies().is_empty(), "the handle does not change");
            f.authorization().unwrap().to_str().unwrap().to_owned()
        }
        Decision::Respond(r) => panic!("{}", r.status()),
    };
    assert!(!tokens.contains(&refreshed));
    for b in [&bffs[0], &bffs[2]] {
        assert_eq!(
            bearer(
                b.handle(&parts("/api/x", &jar, &[("x-csrf", "1")]), None)
                    .await
            ),
            refreshed
        );
    }
    assert_eq!(idp.stats().token_refresh, 1);
    // The stored session is sealed: no token in clear in Redis.
    let client = redis::Client::open("redis://127.0.0.1:6379").unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}session:*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(keys.len(), 1);
    let value: Vec<u8> = redis::cmd("GET")
        .arg(&keys[0])
        .query_async(&mut conn)
        .await
        .unwrap();
    let access = refreshed.strip_prefix("Bearer ").unwrap();
    assert!(!String::from_utf8_lossy(&value).contains(access));
    // Logout on C removes it: A and B refuse the handle.
    let r = respond(
        bffs[2]
            .handle(
                &parts("/bff/logout", &jar, &[("x-csrf", "1")]).tap_post(),
                None,
            )
            .await,
    );
    assert_eq!(r.status(), 302);
    for b in [&bffs[0], &bffs[1]] {
        assert_eq!(
            status(
                b.handle(&parts("/api/x", &jar, &[("x-csrf", "1")]), None)
                    .await
            ),
            401
        );
    }
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}session:*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(keys.is_empty(), "the stored session is gone");
}

/// Session management across replicas: three sessions of one user, each made on
/// another replica, are listed by any replica; the admin call on one replica ends
/// them all (each refresh token revoked at the IdP, each sid on every replica).
#[tokio::test]
async fn the_admin_ends_every_session_of_a_user_across_replicas() {
    let (idp, bffs) = replicas(3).await;
    let mut jars = Vec::new();
    for b in &bffs {
        jars.push(login(b).await);
    }
    let listed = respond(
        bffs[2]
            .handle(&parts("/bff/sessions", &jars[0], &[]), None)
            .await,
    );
    assert_eq!(listed.status(), 200);
    let listed: serde_json::Value = serde_json::from_slice(listed.body()).unwrap();
    let sessions = listed["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 3, "{listed}");
    assert_eq!(
        sessions.iter().filter(|s| s["current"] == true).count(),
        1,
        "{listed}"
    );
    for (b, jar) in bffs.iter().zip(&jars) {
        assert_eq!(
            status(
                b.handle(&parts("/api/x", jar, &[("x-csrf", "1")]), None)
                    .await
            ),
            200
        );
    }
    idp.reset_stats();
    assert_eq!(bffs[1].end_sessions_of("dev-user-1").await.unwrap(), 3);
    assert_eq!(idp.stats().revocation, 3, "each refresh token revoked");
    for b in &bffs {
        for jar in &jars {
            assert_eq!(
                status(
                    b.handle(&parts("/api/x", jar, &[("x-csrf", "1")]), None)
                        .await
                ),
                401
            );
        }
    }
    // Nothing left to list (a new login starts a new list).
    let again = login(&bffs[0]).await;
    let listed = respond(
        bffs[1]
            .handle(&parts("/bff/sessions", &again, &[]), None)
            .await,
    );
    let listed: serde_json::Value = serde_json::from_slice(listed.body()).unwrap();
    assert_eq!(listed["sessions"].as_array().unwrap().len(), 1, "{listed}");
}

/// Per-route audiences across replicas: 300 requests over three replicas and two
/// `resource` routes (and the session's own token) right after expiry: every
/// refresh token reaches the IdP once, and each route gets its resource's token.
#[tokio::test]
async fn audiences_over_three_replicas_present_each_refresh_token_once() {
    let (idp, bffs, _, _) = replicas_on(
        3,
        &[],
        "redis://127.0.0.1:6379",
        Duration::from_secs(2),
        &[
            ("/orders/", r#"resource = "https://orders.example.test/""#),
            ("/billing/", r#"resource = "https://billing.example.test/""#),
        ],
    )
    .await;
    let mut jar = login(&bffs[0]).await;
    // Both resource tokens once, so the session holds them.
    for path in ["/orders/x", "/billing/x"] {
        let d = bffs[1]
            .handle(&parts(path, &jar, &[("x-csrf", "1")]), None)
            .await;
        let Decision::Forward(f) = d else {
            panic!("{path} was refused")
        };
        jar.apply_values(f.set_cookies());
    }
    idp.set_token_latency(Duration::from_millis(200));
    for b in &bffs {
        b.clock().advance(Duration::from_secs(301));
    }
    idp.advance_clock(Duration::from_secs(301));
    let before = idp.stats();
    let mut set = tokio::task::JoinSet::new();
    for i in 0..300 {
        let bff = Arc::clone(&bffs[i % 3]);
        let jar = jar.clone();
        let path = ["/orders/x", "/billing/x", "/api/x"][i % 3];
        set.spawn(async move {
            let token = bearer(
                bff.handle(&parts(path, &jar, &[("x-csrf", "1")]), None)
                    .await,
            );
            (path, token)
        });
    }
    while let Some(done) = set.join_next().await {
        let (path, token) = done.unwrap();
        let claims = crate::support::jwt_claims(token.strip_prefix("Bearer ").unwrap());
        let want = match path {
            "/orders/x" => "https://orders.example.test/",
            "/billing/x" => "https://billing.example.test/",
            _ => "bff",
        };
        assert_eq!(claims["aud"], want);
    }
    let after = idp.stats();
    assert_eq!(
        (
            after.refresh_token_presented_again,
            after.reuse_detected,
            after.families_revoked
        ),
        (0, 0, 0)
    );
    // One flight across the replicas: both resources and the own token.
    assert_eq!(after.refresh_ok - before.refresh_ok, 3);
}

/// A shared store whose first lock renewals fail (a store that hiccups while a
/// slow token request is under way).
struct FlakyRenewals {
    inner: bff_proxy::store::MemoryStore,
    failures_left: std::sync::atomic::AtomicU32,
}

#[async_trait::async_trait]
impl bff_proxy::store::SharedStore for FlakyRenewals {
    async fn try_lock(
        &self,
        name: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<bool, bff_proxy::store::StoreError> {
        self.inner.try_lock(name, owner, ttl).await
    }
    async fn renew_lock(
        &self,
        name: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<bool, bff_proxy::store::StoreError> {
        use std::sync::atomic::Ordering;
        let left = self.failures_left.load(Ordering::SeqCst);
        if left > 0 {
            self.failures_left.store(left - 1, Ordering::SeqCst);
            return Err(bff_proxy::store::StoreError::Unavailable("hiccup".into()));
        }
        self.inner.renew_lock(name, owner, ttl).await
    }
    async fn unlock(&self, name: &str, owner: &str) -> Result<(), bff_proxy::store::StoreError> {
        self.inner.unlock(name, owner).await
    }
    async fn put(
        &self,
        name: &str,
        value: &[u8],
        ttl: Duration,
    ) -> Result<(), bff_proxy::store::StoreError> {
        self.inner.put(name, value, ttl).await
    }
    async fn get(&self, name: &str) -> Result<Option<Vec<u8>>, bff_proxy::store::StoreError> {
        self.inner.get(name).await
    }
    async fn delete(&self, name: &str) -> Result<(), bff_proxy::store::StoreError> {
        self.inner.delete(name).await
    }
}

/// A lock renewal that fails is tried again: the token request outlives the lock's
/// TTL, the first renewals fail, and still no other replica takes the lock and
/// presents the refresh token a second time.
#[tokio::test]
async fn a_failed_lock_renewal_is_tried_again() {
    let (idp, config) = idp_and_config(&[]).await;
    let store: Arc<dyn bff_proxy::store::SharedStore> = Arc::new(FlakyRenewals {
        inner: bff_proxy::store::MemoryStore::new(),
        failures_left: std::sync::atomic::AtomicU32::new(2),
    });
    let bffs: Vec<Arc<Bff>> = (0..3)
        .map(|_| {
            Arc::new(
                Bff::new(config.load())
                    .unwrap()
                    .with_store(Arc::clone(&store)),
            )
        })
        .collect();
    storm_with_a_slow_idp(&idp, &bffs, Duration::from_secs(4)).await;
    assert_eq!(idp.stats().reuse_detected, 0);
}
