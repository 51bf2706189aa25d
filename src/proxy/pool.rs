//! The hyper engine's upstream connections: HTTP/1.1 connections kept per upstream
//! origin, one pool per worker thread (each thread's door has its own), so a
//! request and the connection it reuses stay on one thread.
//!
//! hyper-util's pooled client did this job before; callgrind counted ~10,000
//! instructions per proxied request in it beyond the HTTP/1 connection itself: a
//! race of a pool checkout against a lazy connect, a task spawned per request to
//! put the connection back, the URI taken apart again for its pool key and `Host`.
//! Here the route's [`Upstream`] was taken apart at start, a connection goes back to
//! the pool when its response body ends (`PooledBody`), and the connection's own
//! task (spawned once per connection) notices an upstream's close, so a closed
//! connection is never handed out twice.
//!
//! As hyper-util does, a request that never left on a reused connection (the
//! upstream closed it just then) is sent again on a fresh one; nothing is sent
//! twice.

use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::{Authority, PathAndQuery};
use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use tower::Service as _;

use crate::bff::Upstream;

/// An upstream origin: whether over TLS, and the authority.
type Origin = (bool, Authority);

/// Whether two origins are the same, their authorities compared byte for byte.
/// `Authority`'s own `==` ignores ASCII case one byte at a time (~280 instructions
/// per comparison, two per request); an upstream's authority is written once, at
/// config load, so an exact comparison finds it. Two routes spelling one host in
/// different cases get a list each, which costs nothing but a connection.
fn same_origin(a: &Origin, b: &Origin) -> bool {
    a.0 == b.0 && a.1.as_str() == b.1.as_str()
}

/// Idle connections per upstream origin, the most recently used last. A list, not
/// a hash map: a proxy has a few upstreams, and hashing an authority (SipHash) cost
/// more than comparing it with each.
type IdleLists = Vec<(Origin, Vec<Idle>)>;

/// Idle connections to upstream origins.
#[derive(Clone)]
pub(crate) struct Pool {
    idle: Arc<Mutex<IdleLists>>,
    connector: HttpsConnector<HttpConnector>,
    /// `server.upstream_keepalive`: idle connections kept per origin (0: none).
    max_idle: usize,
    /// How long an idle connection is kept.
    idle_timeout: Duration,
    /// How long a kept connection may take to be ready for the next request.
    ready_timeout: Duration,
    reaper: Arc<std::sync::Once>,
}

struct Idle {
    sender: SendRequest<Incoming>,
    since: Instant,
}

/// Why a request found no answer upstream.
#[derive(Debug)]
pub(crate) enum SendError {
    /// No connection could be made (refused, unresolvable, TLS, connect timeout).
    Connect(Box<dyn std::error::Error + Send + Sync>),
    /// The connection failed while the request or the response head was under way.
    Request(hyper::Error),
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Connect(e) => write!(f, "connect: {e}"),
            Self::Request(e) => write!(f, "{e}"),
        }
    }
}

impl Pool {
    pub(crate) fn new(
        connector: HttpsConnector<HttpConnector>,
        max_idle: usize,
        idle_timeout: Duration,
        ready_timeout: Duration,
    ) -> Self {
        Self {
            idle: Arc::default(),
            connector,
            max_idle,
            idle_timeout,
            ready_timeout,
            reaper: Arc::new(std::sync::Once::new()),
        }
    }

    /// Sends `req` to `path` on `upstream` over HTTP/1.1: a kept connection when
    /// one is ready, else a new one. The request's `Host` is the upstream's unless it
    /// has one. The response's body puts the connection back when it ends.
    pub(crate) async fn send(
        &self,
        mut req: Request<Incoming>,
        upstream: &Upstream,
        path: &PathAndQuery,
    ) -> Result<Response<PooledBody>, SendError> {
        *req.uri_mut() = Uri::from(path.clone());
        *req.version_mut() = http::Version::HTTP_11;
        if !req.headers().contains_key(http::header::HOST) {
            req.headers_mut()
                .insert(http::header::HOST, upstream.host_header().clone());
        }
        let origin: Origin = (upstream.tls(), upstream.authority().clone());
        loop {
            let (mut sender, reused) = match self.checkout(&origin).await {
                Some(sender) => (sender, true),
                None => (self.connect(upstream).await?, false),
            };
            match sender.try_send_request(req).await {
                Ok(resp) => {
                    let back = (self.max_idle > 0).then(|| Back {
                        pool: self.clone(),
                        origin,
                        sender,
                    });
                    return Ok(resp.map(|inner| PooledBody { inner, back }));
                }
                Err(mut e) => match e.take_message() {
                    // Never sent: the kept connection closed just then.
                    Some(unsent) if reused => req = unsent,
                    _ => return Err(SendError::Request(e.into_error())),
                },
            }
        }
    }

    /// The most recently used kept connection to `origin` that is ready; closed and
    /// expired ones are dropped on the way.
    async fn checkout(&self, origin: &Origin) -> Option<SendRequest<Incoming>> {
        loop {
            let idle = {
                let mut lists = self.idle.lock().unwrap_or_else(|p| p.into_inner());
                let (_, list) = lists.iter_mut().find(|(o, _)| same_origin(o, origin))?;
                list.pop()?
            };
            let Idle { mut sender, since } = idle;
            if sender.is_closed() || since.elapsed() > self.idle_timeout {
                continue;
            }
            if sender.is_ready() {
                return Some(sender);
            }
            // Its last response has just ended: the connection's task takes it to
            // idle on its next turn.
            if let Ok(Ok(())) = tokio::time::timeout(self.ready_timeout, sender.ready()).await {
                return Some(sender);
            }
        }
    }

    /// A new connection (TCP, TLS for `https`), its task spawned.
    async fn connect(&self, upstream: &Upstream) -> Result<SendRequest<Incoming>, SendError> {
        let uri = Uri::builder()
            .scheme(upstream.scheme())
            .authority(upstream.authority().clone())
            .path_and_query("/")
            .build()
            .map_err(|e| SendError::Connect(e.into()))?;
        let io = self
            .connector
            .clone()
            .call(uri)
            .await
            .map_err(SendError::Connect)?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(SendError::Request)?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "upstream connection ended");
            }
        });
        sender.ready().await.map_err(SendError::Request)?;
        Ok(sender)
    }

    /// Keeps a connection whose response has ended, at most `max_idle` per origin
    /// (the oldest goes).
    fn checkin(&self, origin: Origin, sender: SendRequest<Incoming>) {
        if sender.is_closed() {
            return;
        }
        let now = Instant::now();
        {
            let mut lists = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            let at = match lists.iter().position(|(o, _)| same_origin(o, &origin)) {
                Some(at) => at,
                None => {
                    lists.push((origin, Vec::new()));
                    lists.len() - 1
                }
            };
            let list = &mut lists[at].1;
            if list.len() >= self.max_idle {
                list.remove(0);
            }
            list.push(Idle { sender, since: now });
        }
        self.reaper.call_once(|| self.spawn_reaper());
    }

    /// Drops expired and closed idle connections now and then, so a pool that sees
    /// no more requests does not hold its connections open.
    fn spawn_reaper(&self) {
        let idle: Weak<Mutex<IdleLists>> = Arc::downgrade(&self.idle);
        let timeout = self.idle_timeout;
        let every = (timeout / 2).max(Duration::from_secs(1));
        if tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(idle) = idle.upgrade() else { return };
                let mut lists = idle.lock().unwrap_or_else(|p| p.into_inner());
                lists.retain_mut(|(_, list)| {
                    list.retain(|c| !c.sender.is_closed() && c.since.elapsed() <= timeout);
                    !list.is_empty()
                });
            }
        });
    }
}

/// Where a connection goes back to when its response ends.
struct Back {
    pool: Pool,
    origin: Origin,
    sender: SendRequest<Incoming>,
}

/// An upstream response's body: when it has been read to its end, its connection
/// goes back to the pool (dropped before: the connection closes with it).
pub(crate) struct PooledBody {
    inner: Incoming,
    back: Option<Back>,
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        if let Some(back) = self.back.take() {
            if http_body::Body::is_end_stream(&self.inner) {
                back.pool.checkin(back.origin, back.sender);
            }
        }
    }
}

impl http_body::Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, hyper::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `Host` an upstream request gets when the client's was removed: as
    /// hyper-util set it, the port only when it is not the scheme's default.
    #[test]
    fn host_is_the_upstreams() {
        for (url, host) in [
            ("http://127.0.0.1:80/", "127.0.0.1"),
            ("http://127.0.0.1:8080/x", "127.0.0.1:8080"),
            ("https://api.example.com:443", "api.example.com"),
            ("https://[::1]:8443", "[::1]:8443"),
        ] {
            let u = Upstream::new(&url::Url::parse(url).unwrap()).unwrap();
            assert_eq!(u.host_header(), host, "{url}");
        }
    }

    /// Kept connections are found by scheme and authority, exactly as the config
    /// wrote them: a plain and a TLS connection to one authority never mix.
    #[test]
    fn origins_match_on_tls_and_the_exact_authority() {
        let origin = |tls: bool, authority: &str| -> Origin {
            (tls, Authority::try_from(authority).unwrap())
        };
        let a = origin(false, "127.0.0.1:8080");
        assert!(same_origin(&a, &origin(false, "127.0.0.1:8080")));
        assert!(!same_origin(&a, &origin(true, "127.0.0.1:8080")));
        assert!(!same_origin(&a, &origin(false, "127.0.0.1:8081")));
        assert!(!same_origin(&a, &origin(false, "127.0.0.1")));
        let named = origin(true, "api.example.com");
        assert!(same_origin(&named, &origin(true, "api.example.com")));
        assert!(!same_origin(&named, &origin(true, "api.example.org")));
        // Another spelling is another list (a connection more, never a wrong one).
        assert!(!same_origin(&named, &origin(true, "API.example.com")));
    }
}
