//! The root config.toml, end to end over HTTP, as a newcomer uses it: the dev IdP,
//! the echo upstream, the SPA; log in, call the API, let the access token expire,
//! call again (rotated cookie, new token upstream), log out. The demo's fixed ports
//! are swapped for ephemeral ones; everything else is the file as committed.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use crate::support::browser::Browser;
use bff_proxy::Bff;
use bff_proxy::config::{Config, Env};
use bff_proxy::devecho::DevEcho;
use bff_proxy::devidp::{DevIdp, DevIdpSettings};
use bff_proxy::pingora::PingoraServer;
use bff_proxy::proxy::ProxyServer;
use tokio::net::TcpListener;

#[tokio::test]
async fn the_demo_config_end_to_end_pingora() {
    demo(true).await;
}

#[tokio::test]
async fn the_demo_config_end_to_end_hyper() {
    demo(false).await;
}

async fn demo(pingora: bool) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let proxy = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let idp_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let echo =
        DevEcho::start_with_listener(TcpListener::bind("127.0.0.1:0").await.unwrap()).unwrap();
    let text = std::fs::read_to_string(root.join("config.toml"))
        .unwrap()
        .replace("127.0.0.1:8080", &proxy.local_addr().unwrap().to_string())
        .replace("127.0.0.1:9100", &admin.local_addr().unwrap().to_string())
        .replace(
            "127.0.0.1:9000",
            &idp_listener.local_addr().unwrap().to_string(),
        )
        .replace("127.0.0.1:9001", &echo.addr().to_string());
    let config = Config::from_toml(&text, root, &Env::default()).unwrap();
    assert!(config.dev.idp && config.proxy_problems().is_empty());
    let idp =
        DevIdp::start_with_listener(DevIdpSettings::for_config(&config).unwrap(), idp_listener)
            .await
            .unwrap();
    let lifetime = config.dev.access_token_lifetime;
    let bff = Arc::new(Bff::new(config).unwrap());
    assert_eq!(
        bff.config().server.engine,
        bff_proxy::config::Engine::Pingora,
        "the demo's engine"
    );
    let (hyper, pingora_server, addr) = if pingora {
        let s = PingoraServer::start_with(Arc::clone(&bff), proxy.into_std().unwrap(), Some(admin))
            .unwrap();
        let addr = s.addr();
        (None, Some(s), addr)
    } else {
        let s = ProxyServer::start_with(Arc::clone(&bff), proxy, Some(admin)).unwrap();
        let addr = s.addr();
        (Some(s), None, addr)
    };
    let base = format!("http://{addr}");
    let b = Browser::new(&base);

    // The SPA, then the login it starts.
    let page = b.request("GET", "/", &[("accept", "text/html")]).await;
    assert_eq!(page.status, 200);
    assert!(page.text().contains("/bff/user"));
    assert_eq!(b.api("/bff/user").await.status, 401);
    b.login("/").await;
    let user = b.api("/bff/user").await.json();
    assert_eq!(user["claims"]["sub"], "dev-user-1");

    // The API button: the upstream sees a Bearer token with a short life.
    let first = b.api("/api/echo").await;
    assert_eq!(first.status, 200);
    let seen = first.json();
    let first_print = seen["bearer"]["fingerprint"].as_str().unwrap().to_owned();
    let expires_in = seen["bearer"]["expires_in"].as_i64().unwrap();
    assert!(expires_in > 0 && expires_in <= 20, "{expires_in}");
    assert!(
        !first.text().contains("eyJ"),
        "the echo never shows the token itself"
    );

    // Wait past the expiry (the BFF's clock moves; nothing sleeps), click again.
    bff.clock().advance(lifetime);
    let jar_before = b.jar();
    let second = b.api("/api/echo").await;
    assert_eq!(second.status, 200);
    let second_print = second.json()["bearer"]["fingerprint"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(first_print, second_print, "a new access token upstream");
    assert_ne!(
        b.jar().header(),
        jar_before.header(),
        "the cookie was rotated"
    );
    assert_eq!(idp.stats().token_refresh, 1);

    // Log out through the link /bff/user gives.
    let logout_url = b.api("/bff/user").await.json()["session"]["logout_url"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = b.request("GET", &logout_url, &[]).await;
    assert_eq!(r.status, 302);
    assert!(!b.jar().has_session());
    let back = b.http.get(r.location().as_str()).await;
    assert_eq!(back.location().as_str(), format!("{base}/"));
    assert_eq!(idp.stats().revocations, 1);
    assert_eq!(b.api("/api/echo").await.status, 401);

    if let Some(s) = hyper {
        s.shutdown().await;
    }
    if let Some(s) = pingora_server {
        s.shutdown().await;
    }
    idp.shutdown().await;
    echo.shutdown().await;
}
