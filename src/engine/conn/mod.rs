//! Client connection limits, the same in both engines (DESIGN.md "Connections"):
//!
//! - `server.header_timeout`: a request head must have fully arrived this long after
//!   it began (after the connection opened, for the first request); else the client
//!   gets `408 Request Timeout` and the connection is closed. A client trickling one
//!   header line at a time (slowloris) cannot hold a connection open.
//! - `server.idle_timeout`: a keep-alive connection waiting for its next request
//!   this long is closed.
//! - `server.max_connections`: past this many open client connections, new ones are
//!   closed at once.
//!
//! The engines wrap each accepted connection in [`GuardedIo`], which watches the
//! clock while the engine waits to read a request head, and tell its
//! [`ConnState`] when a request head is complete and when its response is done.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

/// What a connection over its header deadline is told before it is closed.
const REQUEST_TIMEOUT: &[u8] =
    b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";

/// How often a refused connection is logged at most.
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);

/// The limits of one listener.
#[derive(Debug)]
pub struct ConnLimits {
    timeouts: Timeouts,
    permits: Arc<Semaphore>,
    max: usize,
    epoch: Instant,
    last_refusal_log_ms: AtomicU64,
}

/// Where a listener's header and idle timeouts come from.
enum Timeouts {
    Fixed {
        header: Duration,
        idle: Duration,
    },
    /// `server.header_timeout` / `idle_timeout` of the core's config now, so a
    /// reload changes them for new connections.
    Live(crate::bff::Bff),
}

impl std::fmt::Debug for Timeouts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (header, idle) = self.now();
        f.debug_struct("Timeouts")
            .field("header", &header)
            .field("idle", &idle)
            .finish()
    }
}

impl Timeouts {
    fn now(&self) -> (Duration, Duration) {
        match self {
            Self::Fixed { header, idle } => (*header, *idle),
            Self::Live(bff) => {
                let config = bff.config();
                (config.server.header_timeout, config.server.idle_timeout)
            }
        }
    }
}

/// One admitted connection's place under `server.max_connections`.
#[derive(Debug)]
pub struct ConnPermit {
    _permit: OwnedSemaphorePermit,
}

impl ConnLimits {
    /// Limits with these settings.
    #[must_use]
    pub fn new(header_timeout: Duration, idle_timeout: Duration, max_connections: usize) -> Self {
        let max = max_connections.clamp(1, Semaphore::MAX_PERMITS);
        Self {
            timeouts: Timeouts::Fixed {
                header: header_timeout,
                idle: idle_timeout,
            },
            permits: Arc::new(Semaphore::new(max)),
            max,
            epoch: Instant::now(),
            last_refusal_log_ms: AtomicU64::new(0),
        }
    }

    /// The limits of the core's `[server]`: `max_connections` as it is now, the
    /// timeouts as they are when each connection opens (a reload changes them).
    #[must_use]
    pub fn for_bff(bff: &crate::bff::Bff) -> Self {
        let mut limits = Self::new(
            Duration::ZERO,
            Duration::ZERO,
            bff.config().server.max_connections,
        );
        limits.timeouts = Timeouts::Live(bff.clone());
        limits
    }

    /// How many client connections are open now.
    #[must_use]
    #[cfg_attr(not(feature = "pingora"), allow(dead_code))]
    pub fn open(&self) -> usize {
        self.max.saturating_sub(self.permits.available_permits())
    }

    /// A place for a new connection, or None when `server.max_connections` are
    /// open (the engine then closes it at once; logged at most every 10 s).
    #[must_use]
    pub fn admit(&self) -> Option<ConnPermit> {
        match Arc::clone(&self.permits).try_acquire_owned() {
            Ok(permit) => Some(ConnPermit { _permit: permit }),
            Err(_) => {
                let now = ms_since(self.epoch);
                let last = self.last_refusal_log_ms.load(Ordering::Relaxed);
                let every = u64::try_from(REFUSAL_LOG_EVERY.as_millis()).unwrap_or(u64::MAX);
                if (last == 0 || now.saturating_sub(last) >= every)
                    && self
                        .last_refusal_log_ms
                        .compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
                        .is_ok()
                {
                    tracing::warn!(
                        max_connections = self.max,
                        "server.max_connections reached: refusing new connections"
                    );
                }
                None
            }
        }
    }

    /// Wraps an accepted connection: the deadlines apply from now.
    pub fn guard<T>(&self, io: T) -> (GuardedIo<T>, Arc<ConnState>) {
        let (header_timeout, idle_timeout) = self.timeouts.now();
        let state = Arc::new(ConnState {
            phase: AtomicU8::new(Phase::Fresh as u8),
            active: AtomicU32::new(0),
            multiplexed: AtomicBool::new(false),
            since_ms: AtomicU64::new(ms_since(self.epoch)),
            epoch: self.epoch,
            expired: Notify::new(),
            reader: std::sync::Mutex::new(None),
        });
        let io = GuardedIo {
            inner: io,
            state: Arc::clone(&state),
            header_timeout,
            idle_timeout,
            sleep: Box::pin(tokio::time::sleep_until(Instant::now())),
            armed_for: None,
            timed_out: false,
        };
        (io, state)
    }
}

fn ms_since(epoch: Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Where a connection is in its request cycle.
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Just opened: the first request head must arrive within `header_timeout`.
    Fresh = 0,
    /// Between requests, nothing read yet: `idle_timeout` applies.
    Idle = 1,
    /// A request head has begun: `header_timeout` applies from then.
    Head = 2,
    /// A request is being answered: no deadline here (upstream timeouts apply).
    Busy = 3,
    /// Switched protocols (WebSocket): no HTTP deadlines any more.
    Upgraded = 4,
}

/// The shared state of one connection, told by the engine where its request cycle
/// is.
#[derive(Debug)]
pub struct ConnState {
    phase: AtomicU8,
    /// Requests being answered (more than one at a time only on HTTP/2).
    active: AtomicU32,
    /// HTTP/2: streams share the connection, so bytes read between requests are
    /// not a request head (pings, window updates); only the idle deadline and the
    /// first request's apply, and a connection over one closes quietly.
    multiplexed: AtomicBool,
    since_ms: AtomicU64,
    epoch: Instant,
    expired: Notify,
    /// The engine's read, parked while no deadline applied: woken when one starts
    /// to, so the deadline is armed.
    reader: std::sync::Mutex<Option<std::task::Waker>>,
}

impl ConnState {
    fn phase(&self) -> Phase {
        match self.phase.load(Ordering::Acquire) {
            0 => Phase::Fresh,
            1 => Phase::Idle,
            2 => Phase::Head,
            3 => Phase::Busy,
            _ => Phase::Upgraded,
        }
    }

    fn set(&self, phase: Phase) {
        self.since_ms.store(ms_since(self.epoch), Ordering::Release);
        self.phase.store(phase as u8, Ordering::Release);
    }

    /// A request head is complete: its handling begins.
    pub fn request_started(&self) {
        self.active.fetch_add(1, Ordering::AcqRel);
        if self.phase() != Phase::Upgraded {
            self.set(Phase::Busy);
        }
    }

    /// No HTTP deadlines of ours on this connection (its engine keeps its own,
    /// as pingora does for HTTP/2).
    #[cfg_attr(not(feature = "pingora"), allow(dead_code))]
    pub fn unguarded(&self) {
        self.upgraded();
    }

    /// The connection speaks HTTP/2 (ALPN `h2`).
    pub fn multiplexed(&self) {
        self.multiplexed.store(true, Ordering::Release);
    }

    /// The response is done: the connection waits for the next request (on
    /// HTTP/2, once no other request is being answered).
    pub fn request_finished(&self) {
        let before = self
            .active
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                Some(n.saturating_sub(1))
            })
            .unwrap_or(0);
        if before <= 1 && self.phase() == Phase::Busy {
            self.set(Phase::Idle);
            let parked = self
                .reader
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take();
            if let Some(waker) = parked {
                waker.wake();
            }
        }
    }

    fn park_reader(&self, waker: &std::task::Waker) {
        let mut slot = self
            .reader
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !slot.as_ref().is_some_and(|w| w.will_wake(waker)) {
            *slot = Some(waker.clone());
        }
    }

    /// The connection switched protocols: no HTTP deadlines from now on.
    pub fn upgraded(&self) {
        self.phase.store(Phase::Upgraded as u8, Ordering::Release);
    }

    /// Resolves when the connection ran over its header deadline and was told 408:
    /// the engine then drops it (engines race their connection future with this).
    pub async fn timed_out(&self) {
        self.expired.notified().await;
    }
}

/// A client connection under the deadlines of [`ConnLimits`]. Reads and writes pass
/// through; while the engine waits for a request head, the deadline that applies is
/// watched.
pub struct GuardedIo<T> {
    inner: T,
    state: Arc<ConnState>,
    header_timeout: Duration,
    idle_timeout: Duration,
    sleep: Pin<Box<Sleep>>,
    armed_for: Option<Instant>,
    timed_out: bool,
}

impl<T> std::fmt::Debug for GuardedIo<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuardedIo")
            .field("phase", &self.state.phase())
            .finish_non_exhaustive()
    }
}

/// What pingora's adapter needs of a guarded connection (its `IO` trait reaches
/// through to the socket).
#[cfg(feature = "pingora")]
impl<T> GuardedIo<T> {
    /// The wrapped connection.
    pub fn get_ref(&self) -> &T {
        &self.inner
    }

    /// The wrapped connection.
    pub fn get_mut(&mut self) -> &mut T {
        &mut self.inner
    }

    /// The connection's shared state.
    #[must_use]
    pub fn state(&self) -> &Arc<ConnState> {
        &self.state
    }
}

impl<T> GuardedIo<T> {
    /// The deadline of the current phase, if it has one.
    fn deadline(&self) -> Option<(Instant, Phase)> {
        let phase = self.state.phase();
        let limit = match phase {
            Phase::Fresh | Phase::Head => self.header_timeout,
            Phase::Idle => self.idle_timeout,
            Phase::Busy | Phase::Upgraded => return None,
        };
        let since = self.state.since_ms.load(Ordering::Acquire);
        Some((
            self.state.epoch + Duration::from_millis(since) + limit,
            phase,
        ))
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for GuardedIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.timed_out {
            return Poll::Pending;
        }
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if self.state.multiplexed.load(Ordering::Acquire) {
                    // HTTP/2 frames between requests start no head deadline.
                } else if buf.filled().len() > before && self.state.phase() == Phase::Idle {
                    self.state.set(Phase::Head);
                } else if buf.filled().len() > before && self.state.phase() == Phase::Fresh {
                    // The first head's deadline runs from the connection's start.
                    self.state.phase.store(Phase::Head as u8, Ordering::Release);
                }
                return Poll::Ready(Ok(()));
            }
            other @ Poll::Ready(Err(_)) => return other,
            Poll::Pending => {}
        }
        let Some((deadline, phase)) = self.deadline() else {
            // No deadline while a request is answered; woken when the idle one
            // starts.
            self.state.park_reader(cx.waker());
            return Poll::Pending;
        };
        if self.armed_for != Some(deadline) {
            self.sleep.as_mut().reset(deadline);
            self.armed_for = Some(deadline);
        }
        if self.sleep.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        match phase {
            // Nothing of a request yet: close quietly, as the client would see an
            // idle keep-alive connection close. HTTP/2 is closed quietly too (a
            // 408 in HTTP/1 bytes means nothing there).
            Phase::Fresh | Phase::Idle => Poll::Ready(Ok(())),
            _ if self.state.multiplexed.load(Ordering::Acquire) => Poll::Ready(Ok(())),
            _ => {
                // A head that began and did not finish: tell the client (one
                // attempt; a client that does not read gets a plain close), then
                // have the engine drop the connection.
                let _ = Pin::new(&mut self.inner).poll_write(cx, REQUEST_TIMEOUT);
                let _ = Pin::new(&mut self.inner).poll_flush(cx);
                self.timed_out = true;
                self.state.expired.notify_one();
                Poll::Pending
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for GuardedIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod example {
    /// What the module does, in a few lines.
    #[test]
    fn module_example() {
        use crate::engine::conn::ConnLimits;
        use std::time::Duration;

        let limits = ConnLimits::new(Duration::from_secs(10), Duration::from_secs(60), 2);
        let a = limits.admit().unwrap();
        let _b = limits.admit().unwrap();
        assert!(limits.admit().is_none(), "a third connection is refused");
        drop(a);
        assert!(limits.admit().is_some());
    }
}
