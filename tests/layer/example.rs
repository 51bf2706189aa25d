//! examples/axum_app.rs (the README's tower section) runs: built by `cargo test`
//! with the other examples, started here against the dev IdP, used as a browser
//! would.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use bff_proxy::devidp::{DevClient, DevClientAuth, DevIdp, DevIdpSettings};
use http::StatusCode;
use http::header::LOCATION;
use tokio::io::AsyncBufReadExt as _;

use crate::support::{Jar, KEY, SECRET, http_get, idp_answer};

/// The example's binary, beside this test's: target/<profile>/examples/.
fn example_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|deps| deps.parent()).unwrap();
    let bin = dir.join("examples").join("axum_app");
    assert!(
        bin.is_file(),
        "{} is missing: `cargo test` builds the examples (not `cargo test --test layer` alone)",
        bin.display()
    );
    bin
}

async fn get(url: &str, jar: &Jar) -> (StatusCode, http::HeaderMap, String) {
    let r = http_get(url, jar).await;
    let body = r.text();
    (r.status, r.headers, body)
}

#[tokio::test]
async fn the_readme_axum_app_logs_a_user_in_and_greets_them() {
    // The browser reaches the app at `public`: its callback comes back there.
    let public = "https://app.example";
    let idp = DevIdp::start(DevIdpSettings {
        clients: vec![DevClient::new(
            "spa",
            DevClientAuth::SecretBasic(SECRET.into()),
            &format!("{public}/bff/callback"),
        )],
        ..DevIdpSettings::default()
    })
    .await
    .unwrap();
    let mut child = tokio::process::Command::new(example_binary())
        .env("BFF_OIDC_ISSUER", idp.issuer())
        .env("BFF_OIDC_CLIENT_ID", "spa")
        .env("BFF_OIDC_CLIENT_SECRET", SECRET)
        .env("BFF_SESSION_KEYS", KEY)
        .env("BFF_SERVER_PUBLIC_URL", public)
        .env("LISTEN", "127.0.0.1:0")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("the example did not start")
        .unwrap()
        .expect("the example exited");
    let base = line.strip_prefix("listening on ").unwrap().to_owned();

    let mut jar = Jar::default();
    let (status, _, body) = get(&format!("{base}/"), &jar).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "a public page"));
    let (status, _, body) = get(&format!("{base}/me"), &jar).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body, r#"{"error":"unauthenticated"}"#);

    let (status, headers, _) = get(&format!("{base}/bff/login?returnUrl=/me"), &jar).await;
    assert_eq!(status, StatusCode::FOUND);
    jar.apply(&headers);
    let callback = idp_answer(headers[LOCATION].to_str().unwrap()).await;
    let callback = callback.strip_prefix(public).unwrap();
    let (status, headers, _) = get(&format!("{base}{callback}"), &jar).await;
    assert_eq!(status, StatusCode::FOUND);
    assert_eq!(headers[LOCATION], "/me");
    jar.apply(&headers);
    let (status, _, body) = get(&format!("{base}/me"), &jar).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "dev-user-1"));
    child.kill().await.unwrap();
}

#[test]
fn the_readme_shows_the_example_as_it_is_and_it_is_at_most_15_lines() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let example = std::fs::read_to_string(root.join("examples/axum_app.rs")).unwrap();
    let code = &example[example.find("use axum::").unwrap()..];
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    assert!(
        readme.contains(&format!("```rust\n{code}```")),
        "README.md's tower section is not examples/axum_app.rs"
    );
    assert!(code.lines().count() <= 15, "{} lines", code.lines().count());
}
