//! The demo SPA in a real browser (Debian's Chromium, headless, driven by
//! playwright-core through tests/interop/browser.mjs), through the proxy, for both
//! engines, with the dev IdP and with oidc-provider; and step-up and silent login
//! (tests/interop/stepup.mjs) with the dev IdP's login form. Screenshots of every step go to
//! `target/browser-shots/<case>/` and are kept when a case fails (or always, with
//! `BFF_KEEP_SCREENSHOTS=1`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bff_proxy::Bff;
use bff_proxy::devecho::DevEcho;
use bff_proxy::devidp::{DevClient, DevClientAuth, DevIdp, DevIdpSettings};
use bff_proxy::pingora::PingoraServer;
use bff_proxy::proxy::ProxyServer;
use tokio::net::TcpListener;

use crate::support::config::TestConfig;
/// Access tokens live this long, so the script waits for real expiries.
const ACCESS_TTL_SECS: u64 = 4;

fn chromium() -> PathBuf {
    let path =
        PathBuf::from(std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()));
    assert!(
        path.exists(),
        "Chromium is needed for the browser tests: apt-get install -y chromium (.ci/run does)"
    );
    path
}

/// Which script runs: the main one (login, refresh, two tabs, logout) or step-up
/// and silent login (the dev IdP with its login form and second factor).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Script {
    Main,
    StepUp,
}

async fn run_case(case: &str, pingora: bool, oidc_provider: bool, script: Script) {
    let chromium = chromium();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    assert!(
        root.join("tests/interop/node_modules/playwright-core")
            .is_dir(),
        "playwright-core is not installed: run `npm ci --prefix tests/interop` (.ci/run does)"
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let echo = DevEcho::start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    // Keep the provider alive for the whole case.
    let mut _provider = None;
    let mut _dev_idp = None;
    let (issuer, secret, auth_params) = if oidc_provider {
        let p = crate::support::provider::start_provider(&base, ACCESS_TTL_SECS).await;
        let issuer = p.issuer.clone();
        _provider = Some(p);
        (
            issuer,
            "interop-secret",
            "auth_params = { prompt = \"consent\" }",
        )
    } else {
        let mut client = DevClient::new(
            "bff",
            DevClientAuth::SecretBasic("s3cret".into()),
            &format!("{base}/bff/callback"),
        );
        client.post_logout_redirect_uris.push(format!("{base}/"));
        let idp = DevIdp::start(DevIdpSettings {
            clients: vec![client],
            access_token_ttl: Duration::from_secs(ACCESS_TTL_SECS),
            login_form: script == Script::StepUp,
            ..DevIdpSettings::default()
        })
        .await
        .unwrap();
        let issuer = idp.issuer().to_owned();
        _dev_idp = Some(idp);
        (issuer, "s3cret", "")
    };
    let spa = root.join("examples/spa");
    let mut config = TestConfig::new(&issuer, &base)
        .secret(secret)
        .set(
            "oidc",
            r#"scopes = ["openid", "profile", "email", "offline_access"]"#,
        )
        .set("oidc", format!("post_logout_redirect_uri = \"{base}/\""))
        .set("refresh", r#"skew = "1s""#)
        .upstream("/api/", &format!("http://{}", echo.addr()), &[])
        .upstream(
            "/api/secure/",
            &format!("http://{}", echo.addr()),
            &[r#"acr = ["urn:example:mfa"]"#],
        )
        .route("/", &[&format!("static_dir = {spa:?}"), r#"auth = "none""#]);
    if !auth_params.is_empty() {
        config = config.set("oidc", auth_params);
    }
    let config = config.load();
    let bff = Arc::new(Bff::new(config).unwrap());
    let (hyper, pingora_server) = if pingora {
        (
            None,
            Some(
                PingoraServer::start_with(Arc::clone(&bff), listener.into_std().unwrap(), None)
                    .unwrap(),
            ),
        )
    } else {
        (
            Some(ProxyServer::start_with(Arc::clone(&bff), listener, None).unwrap()),
            None,
        )
    };
    let target =
        std::env::var("CARGO_TARGET_DIR").map_or_else(|_| root.join("target"), PathBuf::from);
    let shots = target.join("browser-shots").join(case);
    let _ = std::fs::remove_dir_all(&shots);
    let (file, ok) = match script {
        Script::Main => ("browser.mjs", "BROWSER OK"),
        Script::StepUp => ("stepup.mjs", "STEPUP OK"),
    };
    let run = tokio::process::Command::new("node")
        .arg(file)
        .arg(&base)
        .arg(&shots)
        .arg((ACCESS_TTL_SECS * 1000).to_string())
        .current_dir(root.join("tests/interop"))
        .env("CHROMIUM", &chromium)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(180), run)
        .await
        .expect("the browser script took more than 180 s")
        .expect("node is needed for the browser tests");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains(ok),
        "{case} failed (screenshots kept in {}):\n{stdout}\n{stderr}",
        shots.display()
    );
    if script == Script::Main {
        // Exactly the refreshes the script caused: one per expiry, the two tabs
        // sharing one.
        assert_eq!(bff.metrics().refresh_count("ok"), 2, "{case}");
    }
    if std::env::var_os("BFF_KEEP_SCREENSHOTS").is_none() {
        let _ = std::fs::remove_dir_all(&shots);
    }
    if let Some(s) = hyper {
        s.shutdown().await;
    }
    if let Some(s) = pingora_server {
        s.shutdown().await;
    }
}

#[tokio::test]
async fn browser_hyper_dev_idp() {
    run_case("hyper-dev-idp", false, false, Script::Main).await;
}

#[tokio::test]
async fn browser_pingora_dev_idp() {
    run_case("pingora-dev-idp", true, false, Script::Main).await;
}

#[tokio::test]
async fn browser_hyper_oidc_provider() {
    run_case("hyper-oidc-provider", false, true, Script::Main).await;
}

#[tokio::test]
async fn browser_pingora_oidc_provider() {
    run_case("pingora-oidc-provider", true, true, Script::Main).await;
}

#[tokio::test]
async fn browser_step_up_hyper_dev_idp() {
    run_case("step-up-hyper-dev-idp", false, false, Script::StepUp).await;
}

#[tokio::test]
async fn browser_step_up_pingora_dev_idp() {
    run_case("step-up-pingora-dev-idp", true, false, Script::StepUp).await;
}
