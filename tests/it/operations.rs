//! The binary as ops run it, for both engines: readiness that follows the shared
//! store; the drain on SIGTERM (`/readyz` 503 at once, requests still served for
//! `server.drain_delay`, then a bounded shutdown); JSON logs with one access line
//! and one request id per request; SIGHUP reloading session keys, the TLS
//! certificate and the log level (and refusing a broken or restart-only change);
//! `rediss://`. The binary runs on (a copy of) the root config.toml with its ports
//! moved by `BFF_*` overrides.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::support::browser::Browser;
use crate::support::{Http, free_port, free_ports};

/// The root config.toml with its API route's upstream moved to `echo` and the static
/// folder's path made absolute.
fn demo_config(echo: u16) -> String {
    let root = env!("CARGO_MANIFEST_DIR");
    let text = std::fs::read_to_string(format!("{root}/config.toml")).unwrap();
    let moved = text
        .replace(
            "upstream = \"http://127.0.0.1:9001\"",
            &format!("upstream = \"http://127.0.0.1:{echo}\""),
        )
        .replace(
            "static_dir = \"examples/spa\"",
            &format!("static_dir = \"{root}/examples/spa\""),
        );
    assert_ne!(
        moved, text,
        "config.toml changed: the test cannot move its ports"
    );
    moved
}

struct Proxy {
    child: tokio::process::Child,
    /// The folder of its config file.
    _dir: tempfile::TempDir,
    base: String,
    admin: String,
    http: Http,
}

impl Proxy {
    /// `bff-proxy --config config.toml --engine ENGINE` with its ports moved and
    /// `env` on top; waits until `/readyz` answers 200.
    async fn start(engine: &str, env: &[(&str, String)]) -> Self {
        Self::start_logging(engine, env, None).await
    }

    /// [`Proxy::start`], its log (stderr) written to `log` when given.
    async fn start_logging(
        engine: &str,
        env: &[(&str, String)],
        log: Option<&std::path::Path>,
    ) -> Self {
        let [port, admin, idp, echo] = free_ports();
        // The demo's config.toml, its API route sent to this run's echo.
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.toml");
        std::fs::write(&config, demo_config(echo)).unwrap();
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_bff-proxy"));
        cmd.current_dir(env!("CARGO_MANIFEST_DIR"))
            .arg("--config")
            .arg(&config)
            .args(["--engine", engine]);
        for (k, _) in std::env::vars() {
            if k.starts_with("BFF_") {
                cmd.env_remove(k);
            }
        }
        let base = format!("http://127.0.0.1:{port}");
        cmd.env("BFF_SERVER_LISTEN", format!("127.0.0.1:{port}"))
            .env("BFF_SERVER_PUBLIC_URL", &base)
            .env("BFF_SERVER_ADMIN_LISTEN", format!("127.0.0.1:{admin}"))
            .env("BFF_OIDC_ISSUER", format!("http://127.0.0.1:{idp}"))
            .env("BFF_OIDC_POST_LOGOUT_REDIRECT_URI", format!("{base}/"))
            .env("BFF_DEV_ECHO", format!("127.0.0.1:{echo}"))
            .env("RUST_LOG", "warn");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let stderr = match log {
            Some(path) => Stdio::from(std::fs::File::create(path).unwrap()),
            None => Stdio::inherit(),
        };
        let child = cmd
            .stdout(Stdio::null())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let proxy = Self {
            child,
            _dir: dir,
            base,
            admin: format!("http://127.0.0.1:{admin}"),
            http: Http::new(),
        };
        proxy
            .wait_ready(200, Duration::from_secs(60))
            .await
            .expect("the proxy never became ready");
        // The admin listener may answer before the proxy's own.
        let start = Instant::now();
        while proxy.get_status(&format!("{}/", proxy.base)).await != Some(200) {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the proxy never answered"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        proxy
    }

    /// `/readyz`'s status, or None when nothing answers.
    async fn readyz(&self) -> Option<u16> {
        self.get_status(&format!("{}/readyz", self.admin)).await
    }

    async fn get_status(&self, url: &str) -> Option<u16> {
        let req = http::Request::get(url)
            .body(http_body_util::Full::default())
            .unwrap();
        self.http
            .try_send(req)
            .await
            .ok()
            .map(|r| r.status.as_u16())
    }

    /// Polls `/readyz` until it answers `status`; how long that took.
    async fn wait_ready(&self, status: u16, limit: Duration) -> Option<Duration> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if self.readyz().await == Some(status) {
                return Some(start.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }

    fn sigterm(&self) {
        let pid = self.child.id().expect("still running").to_string();
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

async fn sigterm_drains_then_stops(engine: &str) {
    let drain = Duration::from_secs(2);
    let mut proxy = Proxy::start(
        engine,
        &[
            ("BFF_SERVER_DRAIN_DELAY", "2s".into()),
            ("BFF_SERVER_SHUTDOWN_TIMEOUT", "2s".into()),
        ],
    )
    .await;
    assert_eq!(
        proxy.get_status(&format!("{}/", proxy.base)).await,
        Some(200)
    );

    let signalled = Instant::now();
    proxy.sigterm();
    // /readyz turns 503 at once…
    let took = proxy
        .wait_ready(503, Duration::from_secs(1))
        .await
        .expect("/readyz still 200 a second after SIGTERM");
    assert!(took < Duration::from_millis(500), "{took:?}");
    // …while requests are still served for the drain.
    let mut served = 0;
    while signalled.elapsed() < drain - Duration::from_millis(500) {
        assert_eq!(
            proxy.get_status(&format!("{}/", proxy.base)).await,
            Some(200),
            "a request during the drain, {:?} after SIGTERM",
            signalled.elapsed()
        );
        served += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(served >= 5, "{served}");
    // Then a bounded shutdown: drain + shutdown_timeout, and a margin.
    let exit = tokio::time::timeout(Duration::from_secs(10), proxy.child.wait())
        .await
        .expect("the process did not stop within drain + shutdown_timeout")
        .unwrap();
    let stopped = signalled.elapsed();
    assert!(
        stopped >= drain,
        "stopped after {stopped:?}, before the drain ended"
    );
    assert!(stopped < drain + Duration::from_secs(4), "{stopped:?}");
    assert!(exit.success(), "{exit:?}");
}

#[tokio::test]
async fn sigterm_drains_then_stops_pingora() {
    sigterm_drains_then_stops("pingora").await;
}

#[tokio::test]
async fn sigterm_drains_then_stops_hyper() {
    sigterm_drains_then_stops("hyper").await;
}

/// A Redis of the test's own, to stop and start again.
fn redis_server(port: u16) -> tokio::process::Child {
    tokio::process::Command::new("redis-server")
        .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("redis-server is needed (scripts/setup installs it)")
}

async fn wait_listening(port: u16) {
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("redis-server did not start on {port}");
}

#[tokio::test]
async fn readyz_follows_the_shared_store() {
    let port = free_port();
    let mut redis = redis_server(port);
    wait_listening(port).await;
    let store_timeout = Duration::from_secs(1);
    let proxy = Proxy::start(
        "hyper",
        &[
            ("BFF_STORE_KIND", "redis".into()),
            ("BFF_STORE_URL", format!("redis://127.0.0.1:{port}")),
            ("BFF_STORE_TIMEOUT", "1s".into()),
            ("BFF_STORE_KEY_PREFIX", format!("bff-readyz-{port}:")),
        ],
    )
    .await;
    assert_eq!(proxy.readyz().await, Some(200));

    // Redis stops: 503 within store.timeout + 1 s.
    redis.kill().await.unwrap();
    let took = proxy
        .wait_ready(503, store_timeout + Duration::from_secs(1))
        .await
        .expect("/readyz still 200 with Redis stopped");
    eprintln!("/readyz 503 {took:?} after Redis stopped");
    let body = {
        let req = http::Request::get(format!("{}/readyz", proxy.admin))
            .body(http_body_util::Full::default())
            .unwrap();
        proxy.http.send(req).await.text()
    };
    assert!(body.starts_with("not ready: store"), "{body}");
    // Each failed ping is counted.
    let metrics = {
        let req = http::Request::get(format!("{}/metrics", proxy.admin))
            .body(http_body_util::Full::default())
            .unwrap();
        proxy.http.send(req).await.text()
    };
    let failed_pings: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix(r#"bff_store_errors_total{op="ping"} "#))
        .unwrap_or_else(|| panic!("no failed ping counted in\n{metrics}"))
        .parse()
        .unwrap();
    assert!(failed_pings >= 1);
    // The proxy itself stays up: static pages are still served.
    assert_eq!(
        proxy.get_status(&format!("{}/", proxy.base)).await,
        Some(200)
    );

    // Redis back: 200 again.
    let _redis = redis_server(port);
    wait_listening(port).await;
    let took = proxy
        .wait_ready(200, Duration::from_secs(15))
        .await
        .expect("/readyz stayed 503 with Redis back");
    eprintln!("/readyz 200 {took:?} after Redis came back");
}

/// `rediss://` with a password and a database number: a TLS Redis of the test's
/// own (a self-signed certificate, trusted through `SSL_CERT_FILE`).
#[tokio::test]
async fn rediss_with_a_password_and_a_database_number() {
    let dir = tempfile::tempdir().unwrap();
    let certified =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    let port = free_port();
    let password = "redis-pass-7f3a";
    let _redis = tokio::process::Command::new("redis-server")
        .args([
            "--bind",
            "127.0.0.1",
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
        ])
        .arg("--tls-cert-file")
        .arg(&cert)
        .arg("--tls-key-file")
        .arg(&key)
        .arg("--tls-ca-cert-file")
        .arg(&cert)
        .args(["--tls-auth-clients", "no", "--requirepass", password])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("redis-server is needed (scripts/setup installs it)");
    wait_listening(port).await;
    let url = |pass: &str| format!("rediss://:{pass}@127.0.0.1:{port}/3");
    let ca = cert.display().to_string();

    // A wrong password: the binary does not start (exit 69), naming the setting and
    // never printing the URL or the password.
    let [listen, admin, idp, echo] = free_ports();
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_bff-proxy"))
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args(["--config", "config.toml", "--engine", "hyper"])
            .env("BFF_SERVER_LISTEN", format!("127.0.0.1:{listen}"))
            .env("BFF_SERVER_ADMIN_LISTEN", format!("127.0.0.1:{admin}"))
            .env("BFF_OIDC_ISSUER", format!("http://127.0.0.1:{idp}"))
            .env("BFF_DEV_ECHO", format!("127.0.0.1:{echo}"))
            .env("BFF_STORE_KIND", "redis")
            .env("BFF_STORE_URL", url("wrong-pass-91"))
            .env("SSL_CERT_FILE", &ca)
            .output(),
    )
    .await
    .expect("a refused store must end the start")
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(69), "{stderr}");
    assert!(stderr.contains("store.url"), "{stderr}");
    assert!(
        !stderr.contains("wrong-pass-91") && !stderr.contains("rediss://"),
        "{stderr}"
    );

    // The right one: ready, and a server-mode session lands in database 3.
    let proxy = Proxy::start(
        "hyper",
        &[
            ("BFF_STORE_KIND", "redis".into()),
            ("BFF_STORE_URL", url(password)),
            ("BFF_SESSION_MODE", "server".into()),
            ("SSL_CERT_FILE", ca.clone()),
        ],
    )
    .await;
    let browser = crate::support::browser::Browser::new(&proxy.base);
    browser.login("/").await;
    assert_eq!(browser.api("/bff/user").await.status, 200);
    let dbsize = |db: &str| {
        let out = std::process::Command::new("redis-cli")
            .args(["--tls", "--cacert", &ca, "-p", &port.to_string()])
            .args(["-a", password, "--no-auth-warning", "-n", db, "dbsize"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse::<u64>()
            .unwrap_or_else(|_| panic!("redis-cli: {}", String::from_utf8_lossy(&out.stderr)))
    };
    assert!(dbsize("3") > 0, "the session is in database 3");
    assert_eq!(dbsize("0"), 0, "nothing in database 0");
}

/// The demo with `[log] format = "json"`, through login → API → refresh → logout:
/// every line is a JSON object; every request has exactly one access line; the
/// request id of a request is the same in its access line, in what the upstream
/// (echo) received, and in the response header; a trusted proxy's id is kept and an
/// untrusted client's replaced; and no token, code or cookie value is in the log.
async fn json_logs_of_a_whole_run(engine: &str) {
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("stderr.log");
    let proxy = Proxy::start_logging(
        engine,
        &[
            ("BFF_LOG_FORMAT", "json".into()),
            ("BFF_LOG_LEVEL", "debug".into()),
            ("BFF_LOG_ACCESS", "true".into()),
            // Refreshed a second after login (refresh.skew is 5s in the demo).
            ("BFF_DEV_ACCESS_TOKEN_LIFETIME", "6s".into()),
            ("BFF_SERVER_TRUSTED_PROXIES", "[\"127.0.0.2/32\"]".into()),
            ("RUST_LOG", String::new()),
        ],
        Some(&log_path),
    )
    .await;
    let b = Browser::new(&proxy.base);
    let mut seen_ids = Vec::new();
    let mut secrets = Vec::new();
    let mut id_of = |reply: &crate::support::Reply| -> String {
        let id = reply.headers["x-request-id"].to_str().unwrap().to_owned();
        assert_eq!(id.len(), 32, "{id}");
        seen_ids.push(id.clone());
        id
    };

    // Login, step by step, keeping the login cookie, state and code.
    let start = b
        .request(
            "GET",
            "/bff/login?returnUrl=%2F",
            &[("sec-fetch-mode", "navigate")],
        )
        .await;
    assert_eq!(start.status, 302);
    id_of(&start);
    secrets.extend(b.jar().0.into_iter().map(|(_, v)| v));
    let at_idp = b.http.get(start.location().as_str()).await;
    let callback = at_idp.location();
    secrets.extend(
        callback
            .query_pairs()
            .filter(|(k, _)| k == "code" || k == "state")
            .map(|(_, v)| v.into_owned()),
    );
    let done = b.request("GET", callback.as_str(), &[]).await;
    assert_eq!(done.status, 302, "{}", done.text());
    id_of(&done);
    secrets.extend(session_secrets(&b));

    // The API: the echo received the same id the response carries.
    let api = b.api("/api/hello").await;
    assert_eq!(api.status, 200);
    let id = id_of(&api);
    assert_eq!(api.json()["headers"]["x-request-id"], id.as_str());

    // A client's own X-Request-Id is not kept (the peer is not a trusted proxy).
    let forged = b
        .request(
            "GET",
            "/api/forged",
            &[("x-csrf", "1"), ("x-request-id", "client-chosen")],
        )
        .await;
    let id = id_of(&forged);
    assert_ne!(id, "client-chosen");
    assert_eq!(forged.json()["headers"]["x-request-id"], id.as_str());

    // The refresh: the session cookie changes.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before = b.jar().header();
    let refreshed = b.api("/api/after-refresh").await;
    assert_eq!(refreshed.status, 200);
    id_of(&refreshed);
    assert_ne!(b.jar().header(), before, "the session was not refreshed");
    secrets.extend(session_secrets(&b));

    // A refusal has an id too.
    let refused = b.request("GET", "/api/no-csrf", &[]).await;
    assert_eq!(refused.status, 403);
    id_of(&refused);

    let logout = b.request("POST", "/bff/logout", &[("x-csrf", "1")]).await;
    assert!(logout.status.is_redirection(), "{}", logout.status);
    id_of(&logout);
    // pingora writes a request's access line after its response went out: wait
    // (bounded) until every request's access line is in the log.
    let deadline = Instant::now() + Duration::from_secs(10);
    let log = loop {
        let log = std::fs::read_to_string(&log_path).unwrap();
        let logged = |id: &String| {
            log.lines()
                .any(|l| l.contains("bff_proxy::access") && l.contains(id.as_str()))
        };
        if seen_ids.iter().all(logged) || Instant::now() > deadline {
            break log;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    drop(proxy);
    let mut access = Vec::new();
    for line in log.lines() {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("a log line is not JSON ({e}): {line}"));
        for key in ["timestamp", "level", "target"] {
            assert!(v.get(key).is_some(), "no {key}: {line}");
        }
        if v["target"] == "bff_proxy::access" {
            access.push(v);
        }
    }
    for id in &seen_ids {
        let lines: Vec<_> = access
            .iter()
            .filter(|a| a["request_id"] == id.as_str())
            .collect();
        assert_eq!(lines.len(), 1, "access lines of {id}: {lines:?}\n{log}");
        let line = lines[0];
        for key in [
            "method",
            "path",
            "route",
            "status",
            "outcome",
            "duration_ms",
        ] {
            assert!(line.get(key).is_some(), "no {key}: {line}");
        }
        assert!(!line["path"].as_str().unwrap().contains('?'), "{line}");
    }
    let ids: std::collections::HashSet<_> =
        access.iter().map(|a| a["request_id"].to_string()).collect();
    assert_eq!(ids.len(), access.len(), "one access line per request");
    // The API's line: route, outcome, upstream time and the session's hash.
    let api_line = access.iter().find(|a| a["path"] == "/api/hello").unwrap();
    assert_eq!(api_line["route"], "/api/", "{api_line}");
    assert_eq!(api_line["outcome"], "forwarded", "{api_line}");
    assert_eq!(api_line["status"], 200, "{api_line}");
    assert!(api_line["upstream_ms"].is_number(), "{api_line}");
    assert_eq!(api_line["sid"].as_str().unwrap().len(), 12, "{api_line}");
    let refused_line = access.iter().find(|a| a["path"] == "/api/no-csrf").unwrap();
    assert_eq!(refused_line["outcome"], "csrf", "{refused_line}");
    assert_eq!(refused_line["status"], 403, "{refused_line}");
    // Lines of a request carry its id in their span.
    assert!(
        log.lines()
            .any(|l| l.contains("\"span\":{") && l.contains("\"request_id\"")),
        "no line within a request span:\n{log}"
    );

    secrets.retain(|s| s.len() >= 8);
    assert!(secrets.len() >= 6, "{} secrets", secrets.len());
    crate::support::assert_no_secret_in(&log, &secrets);
}

/// The session cookie's value and the tokens sealed in it (opened with the demo's
/// key from config.toml).
fn session_secrets(b: &Browser) -> Vec<String> {
    use bff_proxy::config::{Config, Env};
    let config = Config::load(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config.toml"),
        &Env::default(),
    )
    .unwrap();
    let mut headers = http::HeaderMap::new();
    headers.insert(
        http::header::COOKIE,
        http::HeaderValue::from_str(&b.jar().header().unwrap()).unwrap(),
    );
    let session = config
        .session_sealer()
        .unwrap()
        .read(&headers)
        .unwrap()
        .session
        .unwrap();
    let mut out: Vec<String> = b.jar().0.into_iter().map(|(_, v)| v).collect();
    out.push(session.access_token.clone());
    out.extend(session.refresh_token.clone());
    out.extend(session.id_token.clone());
    out
}

#[tokio::test]
async fn json_logs_of_a_whole_run_pingora() {
    json_logs_of_a_whole_run("pingora").await;
}

#[tokio::test]
async fn json_logs_of_a_whole_run_hyper() {
    json_logs_of_a_whole_run("hyper").await;
}

/// The demo's session key (config.toml).
const DEMO_KEY: &str = "vUqhFABZp5xGtuGc//zqNm1RE5BdmW8dWI70Hto8GV8=";

/// A CA, and leaf certificates for 127.0.0.1 signed by it.
struct TestCa {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    pem: String,
}

impl TestCa {
    fn new() -> Self {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Self {
            pem: cert.pem(),
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    /// A leaf for 127.0.0.1: (certificate PEM, key PEM, certificate DER).
    fn leaf(&self) -> (String, String, Vec<u8>) {
        let params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem(), cert.der().to_vec())
    }

    fn client_config(&self) -> rustls::ClientConfig {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject as _;
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(self.pem.as_bytes()).unwrap())
            .unwrap();
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth()
    }
}

type HttpsClient = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    http_body_util::Full<bytes::Bytes>,
>;

/// A new HTTPS connection for every request (so each one is a new handshake).
fn https_client(ca: &TestCa) -> HttpsClient {
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(ca.client_config())
        .https_or_http()
        .enable_http1()
        .build();
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build(https)
}

/// A GET with the jar's cookies (and the CSRF header); Set-Cookie applied.
async fn get_with(
    client: &HttpsClient,
    url: &str,
    jar: Option<&std::sync::Mutex<crate::support::browser::Jar>>,
    headers: &[(&str, &str)],
) -> Result<(u16, http::HeaderMap, bytes::Bytes), String> {
    use http_body_util::BodyExt as _;
    let mut req = http::Request::get(url);
    if let Some(cookie) = jar.and_then(|j| j.lock().unwrap().header()) {
        req = req.header(http::header::COOKIE, cookie);
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(http_body_util::Full::default()).unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(10), client.request(req))
        .await
        .map_err(|_| "timed out".to_owned())?
        .map_err(|e| e.to_string())?;
    let (head, body) = resp.into_parts();
    let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
    if let Some(jar) = jar {
        jar.lock().unwrap().apply(&head.headers);
    }
    Ok((head.status.as_u16(), head.headers, body))
}

/// Logs a browser in through the proxy (HTTPS) and the dev IdP (plain http).
async fn https_login(
    client: &HttpsClient,
    base: &str,
) -> std::sync::Mutex<crate::support::browser::Jar> {
    let jar = std::sync::Mutex::new(crate::support::browser::Jar::default());
    let mut url = format!("{base}/bff/login?returnUrl=%2F");
    for _ in 0..3 {
        let ours = url.starts_with(base);
        let (status, headers, _) = get_with(
            client,
            &url,
            ours.then_some(&jar),
            &[("sec-fetch-mode", "navigate")],
        )
        .await
        .unwrap();
        assert_eq!(status, 302, "{url}");
        let location = headers["location"].to_str().unwrap().to_owned();
        if location == "/" {
            return jar;
        }
        url = location;
    }
    panic!("the login did not end at returnUrl");
}

/// The session sealer of the demo config with only `key`.
fn sealer_with_only(key: &str) -> bff_proxy::cookies::SessionSealer {
    let text = std::fs::read_to_string(format!("{}/config.toml", env!("CARGO_MANIFEST_DIR")))
        .unwrap()
        .replace(DEMO_KEY, key);
    bff_proxy::config::Config::from_toml(
        &text,
        env!("CARGO_MANIFEST_DIR").as_ref(),
        &bff_proxy::config::Env::default(),
    )
    .unwrap()
    .session_sealer()
    .unwrap()
}

fn opens(
    sealer: &bff_proxy::cookies::SessionSealer,
    jar: &std::sync::Mutex<crate::support::browser::Jar>,
) -> bool {
    let mut headers = http::HeaderMap::new();
    headers.insert(
        http::header::COOKIE,
        http::HeaderValue::from_str(&jar.lock().unwrap().header().unwrap()).unwrap(),
    );
    sealer.read(&headers).is_ok_and(|r| r.session.is_some())
}

/// The leaf certificate a new TLS handshake with `addr` shows.
async fn served_certificate(ca: &TestCa, addr: std::net::SocketAddr) -> Vec<u8> {
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(ca.client_config()));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let tls = tokio::time::timeout(Duration::from_secs(10), connector.connect(name, tcp))
        .await
        .unwrap()
        .unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

/// `bff_config_reloads_total{result}` as the admin listener shows it.
async fn reloads(http: &Http, admin: &str, result: &str) -> u64 {
    let metrics = http.get(&format!("{admin}/metrics")).await.text();
    let prefix = format!("bff_config_reloads_total{{result=\"{result}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .map_or(0, |v| v.trim().parse().unwrap())
}

async fn wait_for_reloads(http: &Http, admin: &str, result: &str, count: u64) {
    let start = Instant::now();
    while reloads(http, admin, result).await < count {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "no reload with result {result} counted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// SIGHUP with live sessions, a new first session key and a new TLS certificate,
/// while a load loop runs: no request fails, old cookies still open, new cookies
/// are sealed with the new key, a new handshake shows the new certificate. Then a
/// broken config and a restart-only change: refused, logged, counted as errors, the
/// running config kept.
async fn sighup_reloads_keys_and_certificate(engine: &str) {
    let ca = TestCa::new();
    let (cert_a, key_a, _) = ca.leaf();
    let (cert_b, key_b, der_b) = ca.leaf();
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name);
    std::fs::write(path("cert.pem"), cert_a).unwrap();
    std::fs::write(path("key.pem"), key_a).unwrap();
    let [port, admin_port, idp, echo] = free_ports();
    let base = format!("https://127.0.0.1:{port}");
    let tls = "tls_cert = \"file:cert.pem\"\ntls_key = \"file:key.pem\"\n";
    // Warnings only until the reload turns the level to info.
    let config = demo_config(echo).replacen("[server]\n", &format!("[server]\n{tls}"), 1)
        + "\n[log]\nlevel = \"warn\"\n";
    std::fs::write(path("config.toml"), &config).unwrap();
    let log_path = path("stderr.log");
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_bff-proxy"));
    cmd.arg("--config")
        .arg(path("config.toml"))
        .args(["--engine", engine]);
    for (k, _) in std::env::vars() {
        if k.starts_with("BFF_") {
            cmd.env_remove(k);
        }
    }
    let mut child = cmd
        .env("BFF_SERVER_LISTEN", format!("127.0.0.1:{port}"))
        .env("BFF_SERVER_PUBLIC_URL", &base)
        .env("BFF_SERVER_ADMIN_LISTEN", format!("127.0.0.1:{admin_port}"))
        .env("BFF_OIDC_ISSUER", format!("http://127.0.0.1:{idp}"))
        .env("BFF_OIDC_POST_LOGOUT_REDIRECT_URI", format!("{base}/"))
        .env("BFF_DEV_ECHO", format!("127.0.0.1:{echo}"))
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(&log_path).unwrap()))
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let admin = format!("http://127.0.0.1:{admin_port}");
    let http = Http::new();
    let client = https_client(&ca);
    let start = Instant::now();
    while get_with(&client, &format!("{base}/"), None, &[])
        .await
        .map(|r| r.0)
        != Ok(200)
    {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the proxy never answered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(reloads(&http, &admin, "ok").await, 0);

    // A live session, sealed with the demo key.
    let old = https_login(&client, &base).await;
    assert!(opens(&sealer_with_only(DEMO_KEY), &old));

    // A load loop on that session through the reload.
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let answered = std::sync::Arc::new(AtomicU32::new(0));
    let old_cookie = old.lock().unwrap().header().unwrap();
    let load = {
        let (stop, answered) = (stop.clone(), answered.clone());
        let (client, base) = (client.clone(), base.clone());
        tokio::spawn(async move {
            let (mut ok, mut failed) = (0u32, Vec::new());
            while !stop.load(Ordering::Relaxed) {
                let r = get_with(
                    &client,
                    &format!("{base}/api/load"),
                    None,
                    &[("cookie", &old_cookie), ("x-csrf", "1")],
                )
                .await;
                match r {
                    Ok((200, _, _)) => ok += 1,
                    other => failed.push(format!("{:?}", other.map(|r| r.0))),
                }
                answered.fetch_add(1, Ordering::Relaxed);
            }
            (ok, failed)
        })
    };
    // Requests answered since `from` reach `n` (bounded).
    let progressed = |from: u32, n: u32| {
        let answered = answered.clone();
        async move {
            let start = Instant::now();
            while answered.load(Ordering::Relaxed) < from + n {
                assert!(
                    start.elapsed() < Duration::from_secs(15),
                    "the load loop stalled"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    progressed(0, 5).await;

    // The new key first, the old one still listed; the new certificate.
    let new_key = bff_proxy::seal::KeyRing::generate_key_base64();
    std::fs::write(path("cert.pem"), cert_b).unwrap();
    std::fs::write(path("key.pem"), key_b).unwrap();
    std::fs::write(
        path("config.toml"),
        config
            .replace(
                &format!("keys = [\"{DEMO_KEY}\"]"),
                &format!("keys = [\"{new_key}\", \"{DEMO_KEY}\"]"),
            )
            .replace("level = \"warn\"", "level = \"info\""),
    )
    .unwrap();
    signal(&child, "-HUP");
    wait_for_reloads(&http, &admin, "ok", 1).await;
    // More requests after the reload, then stop.
    progressed(answered.load(Ordering::Relaxed), 5).await;
    stop.store(true, Ordering::Relaxed);
    let (ok, failed) = load.await.unwrap();
    assert!(
        failed.is_empty(),
        "requests failed during the reload: {failed:?}"
    );
    assert!(ok >= 10, "only {ok} requests in the load loop");

    // Old cookies still open; new ones are sealed with the new key.
    let (status, _, _) = get_with(
        &client,
        &format!("{base}/api/old"),
        Some(&old),
        &[("x-csrf", "1")],
    )
    .await
    .unwrap();
    assert_eq!(status, 200);
    let new = https_login(&client, &base).await;
    assert!(opens(&sealer_with_only(&new_key), &new));
    assert!(!opens(&sealer_with_only(DEMO_KEY), &new));
    // A new handshake shows the new certificate.
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    assert!(
        served_certificate(&ca, addr).await == der_b,
        "a new handshake shows the old certificate"
    );

    // A broken config: refused, the running one kept.
    std::fs::write(path("config.toml"), config.replace(DEMO_KEY, "not-a-key")).unwrap();
    signal(&child, "-HUP");
    wait_for_reloads(&http, &admin, "error", 1).await;
    // A change only a restart can make: refused, named.
    std::fs::write(
        path("config.toml"),
        config.replace(
            "cookie_name = \"__Host-Http-bff\"",
            "cookie_name = \"__Host-Http-other\"",
        ),
    )
    .unwrap();
    signal(&child, "-HUP");
    wait_for_reloads(&http, &admin, "error", 2).await;
    assert_eq!(reloads(&http, &admin, "ok").await, 1);
    let (status, _, _) = get_with(
        &client,
        &format!("{base}/api/after"),
        Some(&new),
        &[("x-csrf", "1")],
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "the reloaded config (new key) still runs");
    assert!(
        served_certificate(&ca, addr).await == der_b,
        "a new handshake shows the old certificate"
    );
    let log = std::fs::read_to_string(&log_path).unwrap();
    // The level changed with the reload: info lines only from then on.
    assert!(!log.contains("bff-proxy serving"), "{log}");
    assert!(log.contains("config reloaded"), "{log}");
    assert!(log.contains("config reload refused"), "{log}");
    assert!(log.contains("session.keys[0]"), "{log}");
    assert!(
        log.contains("needs a restart to change: session.cookie_name"),
        "{log}"
    );
    assert!(!log.contains(&new_key), "a key was logged");
    child.kill().await.unwrap();
}

fn signal(child: &tokio::process::Child, which: &str) {
    let pid = child.id().expect("still running").to_string();
    let status = std::process::Command::new("kill")
        .args([which, &pid])
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test]
async fn sighup_reloads_keys_and_certificate_pingora() {
    sighup_reloads_keys_and_certificate("pingora").await;
}

#[tokio::test]
async fn sighup_reloads_keys_and_certificate_hyper() {
    sighup_reloads_keys_and_certificate("hyper").await;
}
