//! The development echo upstream: answers every request with a JSON account of what
//! reached it, so the demo and the tests can see what the BFF forwarded. The Bearer
//! token is never echoed: only its claims, its remaining lifetime and a short
//! fingerprint (so a rotation is visible without the token reaching the browser).
//!
//! `?stream_bytes=N` on any path streams N bytes instead (large-body tests).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt as _;
use hyper::body::{Body, Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Map, Value, json};
use sha2::{Digest as _, Sha256};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// The largest `stream_bytes` served (1 GiB).
const MAX_STREAM: u64 = 1 << 30;
const CHUNK: usize = 64 * 1024;
static FILLER: [u8; CHUNK] = [b'x'; CHUNK];

/// A running echo upstream.
pub struct DevEcho {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for DevEcho {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevEcho").field("addr", &self.addr).finish()
    }
}

impl DevEcho {
    /// Binds and serves.
    pub async fn start(addr: SocketAddr) -> std::io::Result<Self> {
        Self::start_with_listener(TcpListener::bind(addr).await?)
    }

    /// Serves on a listener already bound.
    pub fn start_with_listener(listener: TcpListener) -> std::io::Result<Self> {
        let addr = listener.local_addr()?;
        let (stop, mut stop_rx) = watch::channel(false);
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        tokio::spawn(async move {
                            let _ = hyper::server::conn::http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), service_fn(echo))
                                .await;
                        });
                    }
                    _ = stop_rx.changed() => break,
                }
            }
        });
        Ok(Self {
            addr,
            stop,
            task: Mutex::new(Some(task)),
        })
    }

    /// The bound address.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting.
    pub async fn shutdown(&self) {
        let _ = self.stop.send(true);
        let task = self
            .task
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(task) = task {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
    }
}

/// The body of the echo's answers: JSON, or N streamed bytes.
#[derive(Debug)]
pub enum EchoBody {
    /// A whole body.
    Full(Option<Bytes>),
    /// This many bytes still to stream.
    Stream(u64),
}

impl Body for EchoBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        match this {
            EchoBody::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            EchoBody::Stream(0) => Poll::Ready(None),
            EchoBody::Stream(left) => {
                let n = usize::try_from(*left).unwrap_or(CHUNK).min(CHUNK);
                *left -= n as u64;
                Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(&FILLER[..n])))))
            }
        }
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        match self {
            EchoBody::Full(Some(d)) => hyper::body::SizeHint::with_exact(d.len() as u64),
            EchoBody::Full(None) => hyper::body::SizeHint::with_exact(0),
            EchoBody::Stream(n) => hyper::body::SizeHint::with_exact(*n),
        }
    }
}

fn bearer_summary(value: &str) -> Value {
    use base64::Engine as _;
    let Some((scheme, token)) = value
        .strip_prefix("Bearer ")
        .map(|t| ("Bearer", t))
        .or_else(|| value.strip_prefix("DPoP ").map(|t| ("DPoP", t)))
    else {
        return Value::Null;
    };
    let fingerprint: String = Sha256::digest(token.as_bytes())[..6]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let claims = token
        .split('.')
        .nth(1)
        .and_then(|p| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(p)
                .ok()
        })
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let expires_in = claims
        .as_ref()
        .and_then(|c| c["exp"].as_u64())
        .map(|exp| i64::try_from(exp).unwrap_or(0) - i64::try_from(now).unwrap_or(0));
    json!({ "scheme": scheme, "fingerprint": fingerprint, "claims": claims, "expires_in": expires_in })
}

/// What a resource server checks of a DPoP-bound request (RFC 9449 section 7):
/// the proof for this method and URL (`http://` + `Host` + path) and this token
/// (`ath`), and the token bound to the proof's key (`cnf.jkt`).
fn dpop_summary(parts: &http::request::Parts, authorization: &str) -> Value {
    let Some(token) = authorization.strip_prefix("DPoP ") else {
        return Value::Null;
    };
    let host = parts
        .headers
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let url = format!("http://{host}{}", parts.uri.path());
    let now = crate::dpop::now();
    let Some(proof) = parts.headers.get("dpop").and_then(|v| v.to_str().ok()) else {
        return json!({ "valid": false, "error": "no DPoP proof" });
    };
    match crate::dpop::check_proof(proof, parts.method.as_str(), &url, Some(token), now) {
        Ok(checked) => {
            let bound = crate::oidc::unverified_claims(token)
                .and_then(|c| c.get("cnf")?.get("jkt")?.as_str().map(str::to_owned));
            let valid = bound.as_deref() == Some(checked.jkt.as_str());
            json!({
                "valid": valid,
                "error": if valid { Value::Null } else { "the token is not bound to the proof's key".into() },
                "jkt": checked.jkt,
                "htu": url,
            })
        }
        Err(why) => json!({ "valid": false, "error": why, "htu": url }),
    }
}

/// The JSON account of a request the echo gives (also used by tests that echo from
/// an application behind the tower layer).
#[must_use]
pub fn describe(parts: &http::request::Parts, body_bytes: u64) -> Value {
    let mut headers = Map::new();
    for (name, value) in &parts.headers {
        let shown = if name == AUTHORIZATION {
            "<redacted>".to_owned()
        } else {
            String::from_utf8_lossy(value.as_bytes()).into_owned()
        };
        headers.insert(name.as_str().to_owned(), Value::String(shown));
    }
    let authorization = parts
        .headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let bearer = authorization.map_or(Value::Null, bearer_summary);
    let dpop = authorization.map_or(Value::Null, |a| dpop_summary(parts, a));
    json!({
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "headers": headers,
        "body_bytes": body_bytes,
        "bearer": bearer,
        "dpop": dpop,
    })
}

async fn echo(req: Request<Incoming>) -> Result<Response<EchoBody>, Infallible> {
    let (parts, body) = req.into_parts();
    let stream = parts.uri.query().and_then(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "stream_bytes")
            .and_then(|(_, v)| v.parse::<u64>().ok())
    });
    // The request body is counted, not kept.
    let mut body_bytes: u64 = 0;
    let mut body = body;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => body_bytes += f.data_ref().map_or(0, |d| d.len() as u64),
            Err(_) => break,
        }
    }
    if let Some(n) = stream {
        let mut resp = Response::new(EchoBody::Stream(n.min(MAX_STREAM)));
        resp.headers_mut().insert(
            CONTENT_TYPE,
            http::HeaderValue::from_static("application/octet-stream"),
        );
        return Ok(resp);
    }
    let answer = describe(&parts, body_bytes);
    let mut resp = Response::new(EchoBody::Full(Some(Bytes::from(answer.to_string()))));
    *resp.status_mut() = StatusCode::OK;
    resp.headers_mut().insert(
        CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}
