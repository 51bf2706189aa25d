//! Session cookie costs: open (read the Cookie header, join chunks, base64url,
//! AES-256-GCM, decode) and seal (encode, AES-256-GCM, base64url, Set-Cookie lines)
//! for sessions whose sealed cookie value is about 1 KB, 3 KB and 8 KB; plus the
//! encoding choice, JSON against postcard, in time and size.
//!
//! `cargo bench --bench session`

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::Duration;

use bff_proxy::cookies::{CookieSettings, Present, SameSite, SessionSealer};
use bff_proxy::seal::{AeadBackend, KeyRing};
use bff_proxy::session::{Session, SessionId};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use http::header::{COOKIE, HeaderMap, HeaderValue};

const SIZES: [(usize, &str); 3] = [(1024, "1KB"), (3 * 1024, "3KB"), (8 * 1024, "8KB")];

/// Token-like text (base64url alphabet), deterministic.
fn token(len: usize, seed: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    (0..len)
        .map(|i| char::from(ALPHABET[(i * 31 + seed * 7) % 64]))
        .collect()
}

/// A session whose sealed cookie value is about `sealed` bytes: half of the token
/// bytes in the access token, a third in the ID token, the rest in the refresh token.
fn session_of_sealed_size(sealed: usize) -> Session {
    let plain = sealed * 3 / 4;
    let tokens = plain.saturating_sub(110);
    let mut s = Session::new(
        SessionId::random(),
        "248289761001".into(),
        token(tokens / 2, 1),
        1_900_000_000,
        1_899_999_000,
    );
    s.id_token = Some(token(tokens / 3, 2));
    s.refresh_token = Some(token(tokens - tokens / 2 - tokens / 3, 3));
    s.scope = "openid profile email offline_access".into();
    s
}

fn sealer() -> SessionSealer {
    SessionSealer::new(
        KeyRing::new(vec![KeyRing::generate_key()]).unwrap(),
        CookieSettings::new("__Host-Http-bff", true, SameSite::Strict),
    )
}

/// The Cookie header a browser sends back for these Set-Cookie lines, after an
/// unrelated cookie of the app.
fn cookie_header(set_cookies: &[HeaderValue]) -> HeaderMap {
    let mut pairs = vec!["theme=dark".to_owned()];
    for sc in set_cookies {
        pairs.push(sc.to_str().unwrap().split(';').next().unwrap().to_owned());
    }
    let mut h = HeaderMap::new();
    h.insert(COOKIE, HeaderValue::from_str(&pairs.join("; ")).unwrap());
    h
}

fn bench(c: &mut Criterion) {
    let sealer = sealer();
    let mut open = c.benchmark_group("open");
    for (size, label) in SIZES {
        let session = session_of_sealed_size(size);
        let set = sealer
            .set_cookies(&session, None, &Present::default())
            .unwrap();
        let headers = cookie_header(&set);
        let sealed_len: usize = set
            .iter()
            .map(|v| v.to_str().unwrap().split(';').next().unwrap().len())
            .sum();
        eprintln!(
            "{label}: encoded session {} B, sealed cookie(s) {} in {} Set-Cookie line(s)",
            session.encode().len(),
            sealed_len,
            set.len()
        );
        assert_eq!(
            sealer.read(&headers).unwrap().session.as_ref(),
            Some(&session)
        );
        open.bench_with_input(BenchmarkId::from_parameter(label), &headers, |b, h| {
            b.iter(|| sealer.read(black_box(h)).unwrap());
        });
    }
    open.finish();

    let mut seal = c.benchmark_group("seal");
    for (size, label) in SIZES {
        let session = session_of_sealed_size(size);
        seal.bench_with_input(BenchmarkId::from_parameter(label), &session, |b, s| {
            b.iter(|| {
                sealer
                    .set_cookies(
                        black_box(s),
                        Some(Duration::from_secs(43_200)),
                        &Present::default(),
                    )
                    .unwrap()
            });
        });
    }
    seal.finish();

    // The cipher alone (base64url + AES-256-GCM) on a 3 KB value, both backends.
    let plain = session_of_sealed_size(3 * 1024).encode();
    let key = KeyRing::generate_key();
    for (label, backend) in [
        ("ring", AeadBackend::Ring),
        ("aes_gcm", AeadBackend::AesGcm),
    ] {
        let ring = KeyRing::with_backend(vec![key], backend).unwrap();
        let sealed = ring.seal("__Host-Http-bff", &plain);
        c.bench_function(&format!("cipher_open_3KB/{label}"), |b| {
            b.iter(|| {
                ring.open_map("__Host-Http-bff", black_box(&sealed), |p| p.len())
                    .unwrap()
            });
        });
    }

    // Reading the Cookie header alone (no crypto), same 3 KB value.
    let set = sealer
        .set_cookies(&session_of_sealed_size(3 * 1024), None, &Present::default())
        .unwrap();
    let headers = cookie_header(&set);
    let names = bff_proxy::cookies::CookieNames::new(sealer.cookie().name());
    c.bench_function("cookie_read_3KB", |b| {
        b.iter(|| {
            names
                .parse(black_box(&headers))
                .unwrap()
                .session()
                .whole
                .map(<[u8]>::len)
        });
    });

    // Encoding: JSON against postcard (what the session cookie uses).
    let session = session_of_sealed_size(3 * 1024);
    let json = serde_json::to_vec(&session).unwrap();
    let compact = session.encode();
    eprintln!(
        "encoding of the 3KB session: json {} B, postcard {} B (sealed: {} vs {} B)",
        json.len(),
        compact.len(),
        KeyRing::sealed_len(json.len()),
        KeyRing::sealed_len(compact.len())
    );
    let mut enc = c.benchmark_group("encoding_3KB");
    enc.bench_function("json_encode", |b| {
        b.iter(|| serde_json::to_vec(black_box(&session)).unwrap())
    });
    enc.bench_function("postcard_encode", |b| {
        b.iter(|| black_box(&session).encode())
    });
    enc.bench_function("json_decode", |b| {
        b.iter(|| serde_json::from_slice::<Session>(black_box(&json)).unwrap())
    });
    enc.bench_function("postcard_decode", |b| {
        b.iter(|| Session::decode(black_box(&compact)).unwrap())
    });
    enc.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(50)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = bench
}
criterion_main!(benches);
