//! TLS termination (`server.tls_cert`/`tls_key`) in both engines: a client that
//! trusts only the test's own self-signed certificate gets through, over HTTP/2
//! when it offers h2 by ALPN (HTTP/1.1 otherwise), and upstreams see
//! `X-Forwarded-Proto: https`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use bff_proxy::Bff;
use bff_proxy::config::{Config, Env};
use bff_proxy::devecho::DevEcho;
use bff_proxy::pingora::PingoraServer;
use bff_proxy::proxy::ProxyServer;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::support::config::TestConfig;

/// A client trusting only `cert_pem`, offering h2 and http/1.1 by ALPN, or only
/// http/1.1.
fn client(
    cert_pem: &str,
    h2: bool,
) -> Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    Empty<Bytes>,
> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap())
        .unwrap();
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only();
    let https = if h2 {
        https.enable_all_versions().build()
    } else {
        https.enable_http1().build()
    };
    Client::builder(TokioExecutor::new()).build(https)
}

async fn terminates_tls(pingora: bool) {
    let certified =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let cert_pem = certified.cert.pem();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("cert.pem"), &cert_pem).unwrap();
    std::fs::write(
        dir.path().join("key.pem"),
        certified.signing_key.serialize_pem(),
    )
    .unwrap();
    let echo = DevEcho::start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = TestConfig::new("http://127.0.0.1:1", &format!("https://{addr}"))
        .secret("s")
        .set("server", r#"tls_cert = "file:cert.pem""#)
        .set("server", r#"tls_key = "file:key.pem""#)
        .upstream(
            "/pub/",
            &format!("http://{}", echo.addr()),
            &[r#"auth = "none""#],
        )
        .load_in(dir.path(), &Env::default());
    assert!(config.resolved.tls.is_some());
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
    // The client offers h2 and http/1.1 by ALPN; the proxy picks h2.
    let h2 = client(&cert_pem, true);
    let url = format!("https://127.0.0.1:{}/pub/x", addr.port());
    for _ in 0..2 {
        let req = http::Request::get(&url)
            .header("cookie", "a=1")
            .header("cookie", "b=2")
            .body(Empty::new())
            .unwrap();
        let resp = tokio::time::timeout(Duration::from_secs(10), h2.request(req))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.version(), http::Version::HTTP_2, "HTTP/2 by ALPN");
        assert!(resp.headers().contains_key("x-request-id"));
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let seen: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(seen["headers"]["x-forwarded-proto"], "https");
        // HTTP/2's :authority becomes the forwarded host; the upstream hop is
        // HTTP/1.1 with one Cookie header holding both of the client's.
        assert_eq!(
            seen["headers"]["x-forwarded-host"],
            format!("127.0.0.1:{}", addr.port())
        );
        let cookie = seen["headers"]["cookie"].as_str().unwrap();
        assert!(cookie.contains("a=1") && cookie.contains("b=2"), "{cookie}");
    }
    // A client that offers only http/1.1 still gets it.
    let h1 = client(&cert_pem, false);
    let resp = tokio::time::timeout(Duration::from_secs(10), h1.get(url.parse().unwrap()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), http::Version::HTTP_11);
    // Plain http on the TLS port gets nowhere.
    let plain = common_plain_get(addr).await;
    assert!(plain.is_err() || plain.is_ok_and(|s| s != 200));
    if let Some(s) = hyper {
        s.shutdown().await;
    }
    if let Some(s) = pingora_server {
        s.shutdown().await;
    }
}

async fn common_plain_get(addr: std::net::SocketAddr) -> Result<u16, String> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let req = http::Request::get(format!("http://{addr}/pub/x"))
        .body(Empty::new())
        .unwrap();
    match tokio::time::timeout(Duration::from_secs(5), client.request(req)).await {
        Ok(Ok(resp)) => Ok(resp.status().as_u16()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timed out".into()),
    }
}

#[tokio::test]
async fn hyper_engine_terminates_tls() {
    terminates_tls(false).await;
}

#[tokio::test]
async fn pingora_engine_terminates_tls() {
    terminates_tls(true).await;
}

#[test]
fn tls_files_must_be_files_with_pem() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("junk.pem"), "not a certificate").unwrap();
    let with = |server: &str| {
        server
            .lines()
            .fold(
                TestConfig::new("https://idp.example.com", "https://app.example.com").secret("s"),
                |config, line| config.set("server", line.to_owned()),
            )
            .toml()
    };
    let err = Config::from_toml(
        &with("tls_cert = \"file:junk.pem\"\ntls_key = \"file:junk.pem\""),
        dir.path(),
        &Env::default(),
    )
    .unwrap_err();
    let paths: Vec<&str> = err.problems.iter().map(|p| p.path.as_str()).collect();
    assert!(
        paths.contains(&"server.tls_cert") && paths.contains(&"server.tls_key"),
        "{paths:?}"
    );
    let err = Config::from_toml(
        &with("tls_cert = \"literal\"\ntls_key = \"file:junk.pem\""),
        dir.path(),
        &Env::default(),
    )
    .unwrap_err();
    assert!(
        err.problems
            .iter()
            .any(|p| p.path == "server.tls_cert" && p.message.contains("file:"))
    );
}
