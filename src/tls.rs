//! The proxy's TLS certificate (`server.tls_cert` / `server.tls_key`), one for both
//! engines, replaceable while they run: each handshake takes the certificate that
//! is current then, so a reload (SIGHUP) changes it for new connections and leaves
//! open ones alone. HTTP/2 is offered by ALPN beside HTTP/1.1.

use std::fmt;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::config::TlsFiles;

/// ALPN protocols offered on TLS listeners, preferred first.
pub const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// The current certificate chain and key; cheap to clone (shared).
#[derive(Clone)]
pub struct ServerCert {
    current: Arc<ArcSwap<CertifiedKey>>,
}

impl fmt::Debug for ServerCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerCert")
            .field("chain", &self.current.load().cert.len())
            .finish_non_exhaustive()
    }
}

impl ServerCert {
    /// Reads the chain and key the config names. The error names the setting and
    /// never holds key material.
    pub fn load(files: &TlsFiles) -> Result<Self, (&'static str, String)> {
        Ok(Self {
            current: Arc::new(ArcSwap::from_pointee(read(files)?)),
        })
    }

    /// Replaces the certificate for new handshakes; on an error the current one
    /// stays.
    pub fn reload(&self, files: &TlsFiles) -> Result<(), (&'static str, String)> {
        self.current.store(Arc::new(read(files)?));
        Ok(())
    }

    /// The certificate now.
    #[must_use]
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current.load_full()
    }

    /// A rustls server config answering with the current certificate, offering
    /// h2 and http/1.1 (the hyper engine's acceptor).
    pub fn server_config(&self) -> Result<rustls::ServerConfig, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS setup failed: {e}"))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(self.clone()));
        config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
        Ok(config)
    }
}

impl ResolvesServerCert for ServerCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

fn read(files: &TlsFiles) -> Result<CertifiedKey, (&'static str, String)> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| ("server.tls_cert", e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| ("server.tls_cert", e.to_string()))?;
    if certs.is_empty() {
        return Err(("server.tls_cert", "no certificate in the file".into()));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| ("server.tls_key", format!("no usable private key: {e}")))?;
    let provider = rustls::crypto::ring::default_provider();
    CertifiedKey::from_der(certs, key, &provider).map_err(|e| {
        (
            "server.tls_cert / server.tls_key",
            format!("the key does not fit the certificate: {e}"),
        )
    })
}
