//! The no-refresh hot path of a proxied request: read the Cookie header, open the
//! session, check revocation, lifetime and CSRF, decide, build the Authorization
//! header and the upstream URI, strip our cookies. No network: the access token is
//! fresh, so the IdP is never asked.
//!
//! `cargo bench --bench hot_path`

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::Duration;

use bff_proxy::config::{Config, Env};
use bff_proxy::cookies::Present;
use bff_proxy::session::{Session, SessionId};
use bff_proxy::{Bff, Decision};
use criterion::{Criterion, criterion_group, criterion_main};
use http::Request;

const CONFIG: &str = r#"
[oidc]
issuer = "https://idp.example.com"
client_id = "bff"
client_secret = "s3cret"
[session]
keys = ["vUqhFABZp5xGtuGc//zqNm1RE5BdmW8dWI70Hto8GV8="]
[[routes]]
path = "/api/"
upstream = "http://127.0.0.1:9001"
[[routes]]
path = "/"
upstream = "http://127.0.0.1:9002"
auth = "none"
"#;

fn token(len: usize, seed: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    (0..len)
        .map(|i| char::from(ALPHABET[(i * 31 + seed * 7) % 64]))
        .collect()
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let config = Config::from_toml(CONFIG, ".".as_ref(), &Env::default()).unwrap();
    let bff = Bff::new(config).unwrap();
    let now = bff.clock().now_secs();
    // Token sizes of a typical IdP: a ~3 KB sealed cookie.
    let mut session = Session::new(
        SessionId::random(),
        "248289761001".into(),
        token(1100, 1),
        now + 3600,
        now,
    );
    session.refresh_token = Some(token(380, 2));
    session.id_token = Some(format!(
        "eyJhbGciOiJSUzI1NiJ9.{}.{}",
        "eyJzdWIiOiIyNDgyODk3NjEwMDEifQ",
        token(600, 3)
    ));
    session.scope = "openid profile email offline_access".into();
    let set = bff
        .sealer()
        .set_cookies(&session, None, &Present::default())
        .unwrap();
    let cookie: Vec<String> = set
        .iter()
        .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_owned())
        .collect();
    let cookie = format!("theme=dark; {}; _ga=GA1.1.123", cookie.join("; "));
    eprintln!("Cookie header of {} bytes", cookie.len());
    let (parts, ()) = Request::get("/api/orders/42?expand=items")
        .header("cookie", cookie)
        .header("x-csrf", "1")
        .header("accept", "application/json")
        .body(())
        .unwrap()
        .into_parts();
    let check = rt.block_on(bff.handle(&parts, None));
    assert!(
        matches!(check, Decision::Forward(ref f) if f.authorization().is_some()),
        "{check:?}"
    );

    c.bench_function("hot_path_fresh_session", |b| {
        b.to_async(&rt).iter(|| async {
            match bff.handle(black_box(&parts), None).await {
                Decision::Forward(f) => black_box(f),
                Decision::Respond(_) => unreachable!(),
            }
        });
    });

    let (public, ()) = Request::get("/index.html").body(()).unwrap().into_parts();
    c.bench_function("hot_path_public_route", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(bff.handle(black_box(&public), None).await) });
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(50)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
