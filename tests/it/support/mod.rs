//! Helpers shared by the integration tests: a small HTTP client that never follows
//! redirects and bounds every request in time.

#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::result_large_err
)]

use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, LOCATION};
use http::{Request, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

/// The one session key of the tests (`session.keys`).
pub const KEY: &str = "vUqhFABZp5xGtuGc//zqNm1RE5BdmW8dWI70Hto8GV8=";
/// The dev IdP client secret of the tests.
pub const SECRET: &str = "s3cret";

/// The bound on any one request in the tests.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// An answer, body read.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn location(&self) -> url::Url {
        let loc = self
            .headers
            .get(LOCATION)
            .unwrap_or_else(|| panic!("no Location in a {} answer", self.status))
            .to_str()
            .unwrap();
        url::Url::parse(loc).unwrap()
    }

    /// The OAuth `error` of an error answer.
    pub fn oauth_error(&self) -> String {
        self.json()["error"].as_str().unwrap_or_default().to_owned()
    }
}

#[derive(Clone)]
pub struct Http {
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Default for Http {
    fn default() -> Self {
        Self::new()
    }
}

impl Http {
    pub fn new() -> Self {
        Self {
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    /// Sends a request; Err on connection failures (refused, reset) and time-outs.
    pub async fn try_send(&self, req: Request<Full<Bytes>>) -> Result<Reply, String> {
        let resp = tokio::time::timeout(REQUEST_TIMEOUT, self.client.request(req))
            .await
            .map_err(|_| "timed out".to_owned())?
            .map_err(|e| format!("{e:?}"))?;
        let (parts, body) = resp.into_parts();
        let body = tokio::time::timeout(REQUEST_TIMEOUT, body.collect())
            .await
            .map_err(|_| "body timed out".to_owned())?
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok(Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }

    pub async fn send(&self, req: Request<Full<Bytes>>) -> Reply {
        self.try_send(req).await.unwrap()
    }

    pub async fn get(&self, url: &str) -> Reply {
        self.send(Request::get(url).body(Full::default()).unwrap())
            .await
    }

    /// POSTs a form, with HTTP Basic client credentials when given.
    pub async fn post_form(
        &self,
        url: &str,
        pairs: &[(&str, &str)],
        basic: Option<(&str, &str)>,
    ) -> Reply {
        self.try_post_form(url, pairs, basic).await.unwrap()
    }

    pub async fn try_post_form(
        &self,
        url: &str,
        pairs: &[(&str, &str)],
        basic: Option<(&str, &str)>,
    ) -> Result<Reply, String> {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish();
        let mut req = Request::post(url).header(CONTENT_TYPE, "application/x-www-form-urlencoded");
        if let Some((id, secret)) = basic {
            let enc =
                |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
            let creds = base64::engine::general_purpose::STANDARD.encode(format!(
                "{}:{}",
                enc(id),
                enc(secret)
            ));
            req = req.header(AUTHORIZATION, format!("Basic {creds}"));
        }
        self.try_send(req.body(Full::new(Bytes::from(body))).unwrap())
            .await
    }
}

/// A PKCE pair: (verifier, S256 challenge).
pub fn pkce() -> (String, String) {
    use sha2::Digest as _;
    let verifier = bff_proxy::devidp::random_text(48);
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(sha2::Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}

/// Reads one claim set of a JWT without verifying it.
pub fn jwt_claims(jwt: &str) -> Value {
    let payload = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}

/// Reads a JWT's header without verifying it.
pub fn jwt_header(jwt: &str) -> Value {
    let header = jwt.split('.').next().unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(header)
            .unwrap(),
    )
    .unwrap()
}

pub mod browser;
pub mod config;
pub mod jar;
pub mod provider;
pub mod stack;

/// Waits until `cond` holds, checking every 10 ms, for at most `limit`.
pub async fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    cond()
}

/// This process's resident memory in bytes (Linux).
/// Fails when any of `secrets` (at least 8 bytes; a JWT's signature or payload
/// counts on its own too) is in `log`, showing the lines that hold it.
pub fn assert_no_secret_in(log: &str, secrets: &[String]) {
    for secret in secrets.iter().filter(|s| s.len() >= 8) {
        let pieces: Vec<&str> = std::iter::once(secret.as_str())
            .chain(secret.split('.').filter(|p| p.len() >= 16))
            .collect();
        for piece in pieces {
            assert!(
                !log.contains(piece),
                "a secret ({} bytes) is in the log:\n{}",
                piece.len(),
                log.lines()
                    .filter(|l| l.contains(piece))
                    .take(3)
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
    }
}

/// A free loopback port for a child process (which cannot hand back a port 0 it
/// bound). It is taken from below the kernel's ephemeral range: a port the kernel
/// hands out (to a `bind(0)` of a test running beside this one, or as the local
/// port of an outgoing connection) can be taken again between this check and the
/// child's bind, and the child fails with "Address already in use" (an nginx in
/// CI did). Below that range only another call of this function picks ports, and
/// a counter shared by the whole test binary keeps those apart.
pub fn free_port() -> u16 {
    free_ports::<1>()[0]
}

/// `N` free ports, all different, from below the ephemeral range (see
/// [`free_port`]); each is held until all are picked.
pub fn free_ports<const N: usize>() -> [u16; N] {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    // Ports [FLOOR, ceiling): ceiling is the first ephemeral port.
    const FLOOR: u32 = 10_000;
    let ceiling = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u32>().ok())
        .filter(|c| *c > FLOOR + 1_000 && *c <= 65_536)
        .unwrap_or(32_768);
    let span = ceiling - FLOOR;
    // Each test binary starts somewhere else in the span (two runs on one machine).
    let _ = NEXT.compare_exchange(
        0,
        std::process::id().wrapping_mul(7_919) % span + 1,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    let mut held = Vec::with_capacity(N);
    for _ in 0..span {
        if held.len() == N {
            break;
        }
        let port = FLOOR + NEXT.fetch_add(1, Ordering::Relaxed) % span;
        if let Ok(l) = std::net::TcpListener::bind(("127.0.0.1", port as u16)) {
            held.push(l);
        }
    }
    assert_eq!(held.len(), N, "no {N} free ports below {ceiling}");
    std::array::from_fn(|i| held[i].local_addr().unwrap().port())
}

/// Why: a port the kernel hands out to `bind(0)` or to an outgoing connection
/// can be taken between the check and the child's bind (CI saw nginx fail with
/// "Address already in use" on 35893); ports for children come from below.
#[test]
fn ports_for_children_are_below_the_ephemeral_range() {
    let first_ephemeral: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768);
    let ports = free_ports::<4>();
    for p in ports.into_iter().chain([free_port()]) {
        assert!(p < first_ephemeral, "{p} is in the ephemeral range");
    }
    let mut sorted = ports.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), 4, "all different: {ports:?}");
}

pub fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// A minimal front door for engine-level tests: serves the `Bff` that `slot` holds
/// (set once it exists) with bodies, so an IdP can deliver back-channel logouts.
pub async fn front_door(
    slot: std::sync::Arc<std::sync::OnceLock<std::sync::Arc<bff_proxy::Bff>>>,
) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let slot = std::sync::Arc::clone(&slot);
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    let slot = std::sync::Arc::clone(&slot);
                    async move {
                        let (p, body) = req.into_parts();
                        let body = body.collect().await.unwrap().to_bytes();
                        let bff = slot.get().unwrap();
                        let resp = match bff.handle(&p, Some(body)).await {
                            bff_proxy::Decision::Respond(r) => r.map(Full::new),
                            bff_proxy::Decision::Forward(_) => http::Response::new(Full::default()),
                        };
                        Ok::<_, std::convert::Infallible>(resp)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}
