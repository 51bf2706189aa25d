//! The layer tests' harness: a dev IdP on loopback, a `Bff` built in code, the test
//! app behind `BffLayer`, requests through `oneshot`, and a cookie jar.

use bff_proxy::Bff;
use bff_proxy::config::Env;
use bff_proxy::devidp::{DevClient, DevClientAuth, DevIdp, DevIdpSettings};
use bytes::Bytes;
use http::header::{COOKIE, LOCATION};
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use std::time::Duration;

pub const KEY: &str = "vUqhFABZp5xGtuGc//zqNm1RE5BdmW8dWI70Hto8GV8=";
pub const SECRET: &str = "s3cret";
/// The app's origin: no socket behind it, the requests go through `oneshot`.
pub const PUBLIC: &str = "https://app.example";
const TIMEOUT: Duration = Duration::from_secs(20);

/// A builder with no environment (the process's could change what a test sees).
pub fn bare_builder() -> bff_proxy::BffBuilder {
    Bff::builder().env(Env::from_pairs::<&str, &str>([]))
}

/// Every setting a BFF in code needs.
pub fn builder(issuer: &str) -> bff_proxy::BffBuilder {
    bare_builder()
        .issuer(issuer)
        .client_id("spa")
        .client_secret(SECRET)
        .keys([KEY])
        .public_url(PUBLIC)
        .set(
            "oidc.scopes",
            vec!["openid", "profile", "email", "offline_access"],
        )
}

/// A response, read whole.
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

pub async fn reply<B>(resp: http::Response<B>) -> Reply
where
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    let (parts, body) = resp.into_parts();
    let body = tokio::time::timeout(TIMEOUT, body.collect())
        .await
        .expect("body timed out")
        .expect("body")
        .to_bytes();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

/// The integration tests' cookie jar, one definition for both test crates.
#[path = "../it/support/jar.rs"]
#[allow(dead_code)]
mod jar;
pub use jar::Jar;

/// The dev IdP, the BFF, the test app.
pub struct Harness {
    pub idp: DevIdp,
    pub bff: Bff,
    app: axum::Router,
}

impl Harness {
    pub async fn start() -> Self {
        Self::start_with(super::routes).await
    }

    /// With the builder changed by `f` (given one with the IdP, client and keys).
    pub async fn start_with(
        f: impl FnOnce(bff_proxy::BffBuilder) -> bff_proxy::BffBuilder,
    ) -> Self {
        let idp = DevIdp::start(DevIdpSettings {
            clients: vec![DevClient::new(
                "spa",
                DevClientAuth::SecretBasic(SECRET.into()),
                &format!("{PUBLIC}/bff/callback"),
            )],
            ..DevIdpSettings::default()
        })
        .await
        .unwrap();
        let bff = f(builder(idp.issuer())).build().await.unwrap();
        let app = super::app(&bff);
        Self { idp, bff, app }
    }

    pub fn request(&self, method: &str, path: &str, jar: &Jar) -> http::request::Builder {
        let mut b = Request::builder().method(method).uri(path);
        if let Some(c) = jar.header() {
            b = b.header(COOKIE, c);
        }
        b
    }

    pub fn get(&self, path: &str, jar: &Jar) -> http::request::Builder {
        self.request("GET", path, jar)
    }

    /// One request through the layer and the app, in process.
    pub async fn call(&self, req: http::request::Builder) -> Reply {
        let req = req.body(axum::body::Body::empty()).unwrap();
        let resp = tokio::time::timeout(TIMEOUT, tower::ServiceExt::oneshot(self.app.clone(), req))
            .await
            .expect("the layer timed out")
            .unwrap();
        reply(resp).await
    }

    /// The login flow: `/bff/login` through the layer, the IdP's authorize URL over
    /// loopback, `/bff/callback` through the layer.
    pub async fn login(&self) -> Jar {
        let mut jar = Jar::default();
        let r = self
            .call(self.get("/bff/login?returnUrl=/home", &jar))
            .await;
        assert_eq!(r.status, StatusCode::FOUND, "{}", r.text());
        jar.apply(&r.headers);
        let authorize = r.headers[LOCATION].to_str().unwrap().to_owned();
        let callback = idp_answer(&authorize).await;
        let callback = callback
            .strip_prefix(PUBLIC)
            .unwrap_or_else(|| panic!("the IdP sent the browser to {callback}"))
            .to_owned();
        let r = self.call(self.get(&callback, &jar)).await;
        assert_eq!(r.status, StatusCode::FOUND, "{}", r.text());
        assert_eq!(r.headers[LOCATION], "/home");
        jar.apply(&r.headers);
        assert!(jar.has_session(), "{jar:?}");
        jar
    }
}

/// A GET over loopback (the dev IdP, the example's server), with the jar's cookies.
pub async fn http_get(url: &str, jar: &Jar) -> Reply {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut req = Request::get(url);
    if let Some(c) = jar.header() {
        req = req.header(COOKIE, c);
    }
    let resp = tokio::time::timeout(TIMEOUT, client.request(req.body(Full::default()).unwrap()))
        .await
        .unwrap_or_else(|_| panic!("{url} timed out"))
        .unwrap();
    reply(resp).await
}

/// Where the IdP's answer to a GET sends the browser (its `Location`).
pub async fn idp_answer(url: &str) -> String {
    let r = http_get(url, &Jar::default()).await;
    assert_eq!(r.status, StatusCode::FOUND, "the IdP answered {url}");
    r.headers[LOCATION].to_str().unwrap().to_owned()
}
