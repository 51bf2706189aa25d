//! The HTTP client the BFF uses to talk to the IdP: http and https (rustls, with the
//! system's roots and the Mozilla roots), bounded bodies, bounded time.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{ACCEPT, CONTENT_TYPE, HeaderMap, HeaderValue};
use http::{Request, StatusCode};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// The largest IdP answer read (discovery, JWKS, token responses).
pub const MAX_IDP_BODY: usize = 512 * 1024;

/// An answer from the IdP.
pub struct IdpResponse {
    /// Status.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// Body (at most [`MAX_IDP_BODY`] bytes).
    pub body: Bytes,
}

/// Why a request to the IdP got no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    /// No connection, or it broke.
    #[error("cannot reach the IdP: {0}")]
    Connect(String),
    /// No answer in time.
    #[error("the IdP did not answer in time")]
    Timeout,
    /// The answer was larger than [`MAX_IDP_BODY`].
    #[error("the IdP's answer is too large")]
    TooLarge,
    /// The URL could not be requested.
    #[error("bad IdP URL: {0}")]
    BadUrl(String),
}

/// The TLS client configuration for IdPs and upstreams: rustls with the `ring`
/// provider, trusting the system's root certificates and the Mozilla roots.
pub fn client_tls_config() -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for cert in rustls_native_certs::load_native_certs().certs {
        // A system certificate rustls cannot parse is skipped, as browsers do.
        let _ = roots.add(cert);
    }
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup failed: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// HTTP(S) client to the IdP.
#[derive(Clone)]
pub struct IdpHttp {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl std::fmt::Debug for IdpHttp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IdpHttp")
    }
}

impl IdpHttp {
    /// A client trusting the system's root certificates and the Mozilla roots.
    pub fn new() -> Result<Self, String> {
        let tls = client_tls_config()?;
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .build();
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(https);
        Ok(Self { client })
    }

    /// GET, expecting JSON.
    pub async fn get(&self, url: &str, timeout: Duration) -> Result<IdpResponse, FetchError> {
        let req = Request::get(url)
            .header(ACCEPT, "application/json")
            .body(Full::default())
            .map_err(|e| FetchError::BadUrl(e.to_string()))?;
        self.send(req, timeout).await
    }

    /// POST a form with these headers.
    pub async fn post_form(
        &self,
        url: &str,
        form: &[(&str, &str)],
        headers: Vec<(http::HeaderName, HeaderValue)>,
        timeout: Duration,
    ) -> Result<IdpResponse, FetchError> {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let mut req = Request::post(url)
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(ACCEPT, "application/json");
        for (name, value) in headers {
            req = req.header(name, value);
        }
        let req = req
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| FetchError::BadUrl(e.to_string()))?;
        self.send(req, timeout).await
    }

    async fn send(
        &self,
        req: Request<Full<Bytes>>,
        timeout: Duration,
    ) -> Result<IdpResponse, FetchError> {
        let work = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| FetchError::Connect(error_chain(&e)))?;
            let (parts, body) = resp.into_parts();
            let body = Limited::new(body, MAX_IDP_BODY)
                .collect()
                .await
                .map_err(|e| {
                    if e.is::<http_body_util::LengthLimitError>() {
                        FetchError::TooLarge
                    } else {
                        FetchError::Connect(e.to_string())
                    }
                })?
                .to_bytes();
            Ok(IdpResponse {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        tokio::time::timeout(timeout, work)
            .await
            .map_err(|_| FetchError::Timeout)?
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
