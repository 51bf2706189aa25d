//! A scripted browser: a cookie jar that follows Set-Cookie (removals included),
//! sends the SPA's CSRF header when asked, and logs in through the BFF and the IdP.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::Request;
use http::header::COOKIE;
use http_body_util::Full;

use super::{Http, Reply};

pub use super::jar::Jar;

/// A browser pointed at one BFF origin.
#[derive(Clone)]
pub struct Browser {
    pub http: Http,
    pub base: String,
    pub jar: Arc<Mutex<Jar>>,
}

impl Browser {
    pub fn new(base: &str) -> Self {
        Self {
            http: Http::new(),
            base: base.trim_end_matches('/').to_owned(),
            jar: Arc::new(Mutex::new(Jar::default())),
        }
    }

    /// A second browser tab: the same cookie jar.
    pub fn tab(&self) -> Self {
        self.clone()
    }

    pub fn jar(&self) -> Jar {
        self.jar.lock().unwrap().clone()
    }

    pub fn set_jar(&self, jar: Jar) {
        *self.jar.lock().unwrap() = jar;
    }

    /// A request to a path (or a full URL), with the jar's cookies for our origin;
    /// Set-Cookie is applied.
    pub async fn request(&self, method: &str, target: &str, headers: &[(&str, &str)]) -> Reply {
        self.try_request(method, target, headers).await.unwrap()
    }

    pub async fn try_request(
        &self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
    ) -> Result<Reply, String> {
        let url = if target.starts_with("http") {
            target.to_owned()
        } else {
            format!("{}{target}", self.base)
        };
        let ours = url.starts_with(&self.base);
        let mut req = Request::builder().method(method).uri(&url);
        if ours {
            if let Some(c) = self.jar().header() {
                req = req.header(COOKIE, c);
            }
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let reply = self
            .http
            .try_send(req.body(Full::<Bytes>::default()).unwrap())
            .await?;
        if ours {
            self.jar.lock().unwrap().apply(&reply.headers);
        }
        Ok(reply)
    }

    /// What the SPA's fetch() sends to an API.
    pub async fn api(&self, path: &str) -> Reply {
        self.request(
            "GET",
            path,
            &[("x-csrf", "1"), ("accept", "application/json")],
        )
        .await
    }

    /// Logs in through the BFF and the IdP (which logs the test user in at once).
    pub async fn login(&self, return_url: &str) {
        let enc: String = url::form_urlencoded::byte_serialize(return_url.as_bytes()).collect();
        let start = self
            .request(
                "GET",
                &format!("/bff/login?returnUrl={enc}"),
                &[("sec-fetch-mode", "navigate")],
            )
            .await;
        assert_eq!(start.status, 302, "{}", start.text());
        let at_idp = self.http.get(start.location().as_str()).await;
        assert_eq!(at_idp.status, 302, "{}", at_idp.text());
        let callback = at_idp.location();
        assert!(callback.as_str().starts_with(&self.base), "{callback}");
        let done = self.request("GET", callback.as_str(), &[]).await;
        assert_eq!(done.status, 302, "{}", done.text());
        assert_eq!(done.headers["location"], return_url);
        assert!(self.jar().has_session());
    }
}
