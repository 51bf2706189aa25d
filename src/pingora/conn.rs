//! The connection limits on pingora: a [`ServerApp`] in front of pingora's HTTP proxy
//! app that admits each connection under `server.max_connections`, wraps it in the
//! shared [`GuardedIo`] (header and idle deadlines), and drops it when its request
//! head ran over time. The proxy tells the connection's [`ConnState`] where its
//! request cycle is (see `early_request_filter` and `logging`).

use std::sync::Arc;

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::tls::{SslDigest, TlsRef};
use pingora::protocols::{
    ALPN, GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl,
    Stream, TimingDigest, UniqueID, UniqueIDType,
};
use pingora::proxy::HttpProxy;
use pingora::server::ShutdownWatch;

use super::BffPingora;
use crate::engine::conn::{ConnLimits, ConnState, GuardedIo};

/// pingora's proxy app behind the connection limits.
pub struct GuardedApp {
    proxy: Arc<HttpProxy<BffPingora>>,
    limits: Arc<ConnLimits>,
}

impl GuardedApp {
    /// The proxy app `proxy` under `limits`.
    #[must_use]
    pub fn new(proxy: HttpProxy<BffPingora>, limits: Arc<ConnLimits>) -> Self {
        Self {
            proxy: Arc::new(proxy),
            limits,
        }
    }
}

#[async_trait]
impl ServerApp for GuardedApp {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        // Past server.max_connections the connection is closed at once.
        let _permit = self.limits.admit()?;
        let h2 = matches!(stream.selected_alpn_proto(), Some(ALPN::H2));
        let (io, state) = self.limits.guard(stream);
        if h2 {
            // pingora's h2 streams never reach our hooks with this connection:
            // its own h2 idle timeout closes it (see `proxy_service`).
            state.unguarded();
        }
        let stream: Stream = Box::new(io);
        tokio::select! {
            _ = self.proxy.process_new(stream, shutdown) => {}
            () = state.timed_out() => {}
        }
        None
    }

    async fn cleanup(&self) {
        self.proxy.cleanup().await;
    }
}

/// The connection state of a pingora session's client connection, when it is one
/// of ours (HTTP/1).
pub(super) fn conn_state(session: &pingora::prelude::Session) -> Option<Arc<ConnState>> {
    session
        .stream()?
        .as_any()
        .downcast_ref::<GuardedIo<Stream>>()
        .map(|io| Arc::clone(io.state()))
}

#[async_trait]
impl Shutdown for GuardedIo<Stream> {
    async fn shutdown(&mut self) {
        self.get_mut().shutdown().await;
    }
}

impl UniqueID for GuardedIo<Stream> {
    fn id(&self) -> UniqueIDType {
        self.get_ref().id()
    }
}

impl Ssl for GuardedIo<Stream> {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.get_ref().get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.get_ref().get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.get_ref().selected_alpn_proto()
    }
}

impl GetTimingDigest for GuardedIo<Stream> {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.get_ref().get_timing_digest()
    }

    fn get_read_pending_time(&self) -> std::time::Duration {
        self.get_ref().get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> std::time::Duration {
        self.get_ref().get_write_pending_time()
    }
}

impl GetProxyDigest for GuardedIo<Stream> {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.get_ref().get_proxy_digest()
    }

    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.get_mut().set_proxy_digest(digest);
    }
}

impl GetSocketDigest for GuardedIo<Stream> {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.get_ref().get_socket_digest()
    }

    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.get_mut().set_socket_digest(digest);
    }
}

#[async_trait]
impl Peek for GuardedIo<Stream> {
    async fn try_peek(&mut self, buf: &mut [u8]) -> std::io::Result<bool> {
        self.get_mut().try_peek(buf).await
    }
}
