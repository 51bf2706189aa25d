//! One request's id and its access line, for every front door.
//!
//! The request id (DESIGN.md "Headers the client may not choose"): a client's
//! `X-Request-Id` is kept only from a peer in `server.trusted_proxies`, and only
//! when it is one value of 1–128 visible ASCII characters; otherwise the request
//! gets a new random one. It goes upstream, comes back on the response, and every
//! log line of the request carries it: the door runs the request inside a
//! `request` span that holds it.
//!
//! The access line (`log.access`, target `bff_proxy::access`): request id, method,
//! path without the query, route, status, outcome, duration, upstream duration and
//! a short hash of the sid. Never a header value, a query, a token or a cookie.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use http::{HeaderValue, Method};

use super::headers::{HeaderEdit, X_REQUEST_ID};
use crate::bff::{Bff, Note};
use crate::logging::ACCESS_TARGET;
use crate::net::IpNet;

/// The longest request id kept from a trusted proxy.
const MAX_ID_LEN: usize = 128;

/// A request's id, ready to be a header value.
#[derive(Clone, PartialEq, Eq)]
pub struct RequestId(HeaderValue);

impl std::fmt::Debug for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RequestId({})", self.as_str())
    }
}

impl RequestId {
    /// A new random id: 128 bits as 32 hex digits.
    #[must_use]
    pub fn random() -> Self {
        use rand::Rng as _;
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let bits: u128 = rand::thread_rng().r#gen();
        let mut text = [0u8; 32];
        for (i, byte) in bits.to_be_bytes().into_iter().enumerate() {
            text[2 * i] = HEX[usize::from(byte >> 4)];
            text[2 * i + 1] = HEX[usize::from(byte & 0x0f)];
        }
        // Hex digits are a valid header value.
        Self(HeaderValue::from_bytes(&text).unwrap_or_else(|_| HeaderValue::from_static("0")))
    }

    /// The id of a request from `peer`: the client's `X-Request-Id` when the peer is
    /// a trusted proxy and it is one value of 1–128 visible ASCII characters, else
    /// a new one.
    #[must_use]
    pub fn of_request<H: HeaderEdit + ?Sized>(
        headers: &H,
        peer: Option<IpAddr>,
        trusted: &[IpNet],
    ) -> Self {
        let trusted_peer = peer.is_some_and(|ip| trusted.iter().any(|net| net.contains(ip)));
        if trusted_peer {
            let mut ids = headers.get_all(&X_REQUEST_ID).iter();
            if let (Some(one), None) = (ids.next(), ids.next()) {
                if is_acceptable(one.as_bytes()) {
                    return Self(one.clone());
                }
            }
        }
        Self::random()
    }

    /// The id as text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        // Only visible ASCII is ever kept.
        self.0.to_str().unwrap_or("-")
    }

    /// The id as a header value.
    #[must_use]
    pub fn header(&self) -> &HeaderValue {
        &self.0
    }
}

/// 1–128 visible ASCII characters (no space, no control character).
fn is_acceptable(id: &[u8]) -> bool {
    (1..=MAX_ID_LEN).contains(&id.len()) && id.iter().all(|b| (0x21..=0x7e).contains(b))
}

/// Sets the request id on a response (replacing an upstream's own).
pub fn set_on_response<H: HeaderEdit + ?Sized>(headers: &mut H, id: &RequestId) {
    headers.set(X_REQUEST_ID.clone(), id.header().clone());
}

/// What a door knows of a request for its access line, from its head to its
/// answer.
pub(crate) struct RequestLog {
    pub(crate) id: RequestId,
    /// The config as the request found it, read once for every hook of the door
    /// (a reload during the request does not change it midway).
    pub(crate) config: std::sync::Arc<crate::config::Config>,
    /// The `request` span every log line of the request is written in.
    pub(crate) span: tracing::Span,
    started: Instant,
    /// Method and path (no query), kept only when `log.access` is on.
    line: Option<(Method, Box<str>)>,
    note: Note,
    upstream: Option<Duration>,
}

impl std::fmt::Debug for RequestLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestLog")
            .field("id", &self.id)
            .field("route", &self.note.route)
            .field("outcome", &self.note.outcome)
            .finish_non_exhaustive()
    }
}

impl RequestLog {
    /// Starts the log of a request from `peer` (None: not known, as behind the
    /// tower layer without `ConnectInfo`).
    pub(crate) fn start<H: HeaderEdit + ?Sized>(
        bff: &Bff,
        method: &Method,
        path: &str,
        headers: &H,
        peer: Option<IpAddr>,
    ) -> Box<Self> {
        let config = bff.config();
        let id = RequestId::of_request(headers, peer, &config.resolved.trusted_proxies);
        // Values as Display (`%`): the text formatter writes Debug of a `&str` one
        // escaped character at a time (~14,000 instructions for an access line).
        let span = tracing::info_span!("request", request_id = %id.as_str());
        // Nothing kept for a line no one would write (`log.access = false`, or a
        // level above `info`).
        let line = (config.log.access
            && tracing::enabled!(target: ACCESS_TARGET, tracing::Level::INFO))
        .then(|| (method.clone(), Box::from(path)));
        // Boxed: the engines move their per-request futures, which hold this.
        Box::new(Self {
            id,
            config,
            span,
            started: Instant::now(),
            line,
            note: Note::default(),
            upstream: None,
        })
    }

    /// What the core said of the request.
    pub(crate) fn noted(&mut self, note: Note) {
        self.note = note;
    }

    /// How long the upstream took to answer.
    pub(crate) fn upstream_took(&mut self, took: Duration) {
        self.upstream = Some(took);
    }

    /// Writes the access line, once the response status is known (`0`: none was
    /// sent, the client went away).
    pub(crate) fn finish(&mut self, status: u16) {
        let Some((method, path)) = self.line.take() else {
            return;
        };
        let status_text;
        let outcome = match self.note.outcome {
            Some(outcome) => outcome,
            None => {
                status_text = status.to_string();
                status_text.as_str()
            }
        };
        // Hashed here, only for a line that is written.
        let sid = self.note.sid.map(|id| id.short_hash().to_string());
        tracing::info!(
            target: ACCESS_TARGET,
            parent: None,
            request_id = %self.id.as_str(),
            method = %method.as_str(),
            path = %&*path,
            route = %self.note.route.as_deref().unwrap_or("none"),
            status,
            outcome = %outcome,
            duration_ms = millis(self.started.elapsed()),
            upstream_ms = self.upstream.map(millis),
            sid = sid.as_deref().map(tracing::field::display),
            "access"
        );
    }
}

/// A duration in milliseconds, to the microsecond.
fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 1_000_000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderMap;

    fn with_id(value: &[u8]) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            X_REQUEST_ID.clone(),
            HeaderValue::from_bytes(value).unwrap(),
        );
        h
    }

    fn trusted() -> Vec<IpNet> {
        vec![IpNet::parse("10.0.0.0/8").unwrap()]
    }

    const PROXY: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::new(10, 1, 2, 3)));
    const CLIENT: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 9)));

    #[test]
    fn a_trusted_proxys_id_is_kept() {
        let id = RequestId::of_request(&with_id(b"abc-123"), PROXY, &trusted());
        assert_eq!(id.as_str(), "abc-123");
        let long = vec![b'x'; 128];
        let id = RequestId::of_request(&with_id(&long), PROXY, &trusted());
        assert_eq!(id.as_str().len(), 128);
    }

    #[test]
    fn an_untrusted_or_unfit_id_is_replaced() {
        let fresh = |h: &HeaderMap, peer| {
            let id = RequestId::of_request(h, peer, &trusted());
            assert_eq!(id.as_str().len(), 32, "{id:?}");
            assert!(id.as_str().bytes().all(|b| b.is_ascii_hexdigit()));
        };
        fresh(&with_id(b"abc"), CLIENT);
        fresh(&with_id(b"abc"), None);
        fresh(&with_id(&[b'x'; 129]), PROXY);
        fresh(&with_id(b"has space"), PROXY);
        fresh(&with_id(b"tab\there"), PROXY);
        fresh(&with_id(b"caf\xc3\xa9"), PROXY);
        fresh(&with_id(b""), PROXY);
        let mut two = with_id(b"a");
        two.append(X_REQUEST_ID.clone(), HeaderValue::from_static("b"));
        fresh(&two, PROXY);
        fresh(&HeaderMap::new(), PROXY);
    }

    #[test]
    fn random_ids_differ() {
        assert_ne!(RequestId::random(), RequestId::random());
    }
}
