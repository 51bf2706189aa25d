//! Logs never hold a secret, at any level: a whole login → API → refresh → logout
//! run through both engines with everything at `trace`, through the binary's own
//! logger, and the log searched for every token, key, secret and cookie value the
//! run handled.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::browser::Browser;
use crate::support::stack::{Front, KEY, Options, SECRET, Stack, start};
use http::header::COOKIE;
use http::{HeaderMap, HeaderValue};

/// Everything logged, kept in memory.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'w> tracing_subscriber::fmt::MakeWriter<'w> for Captured {
    type Writer = Captured;

    fn make_writer(&'w self) -> Self::Writer {
        self.clone()
    }
}

/// The tokens of the session a browser holds (opened with the BFF's own sealer).
fn session_tokens(s: &Stack, b: &Browser) -> Vec<String> {
    let mut headers = HeaderMap::new();
    headers.insert(
        COOKIE,
        HeaderValue::from_str(&b.jar().header().unwrap()).unwrap(),
    );
    let session = s.bff.sealer().read(&headers).unwrap().session.unwrap();
    let mut out = vec![session.access_token.clone()];
    out.extend(session.refresh_token.clone());
    out.extend(session.id_token.clone());
    out
}

fn cookie_values(b: &Browser) -> Vec<String> {
    b.jar().0.into_iter().map(|(_, v)| v).collect()
}

/// One whole run; returns every secret it saw.
async fn run(front: Front) -> Vec<String> {
    let s = start(front, Options::default()).await;
    let b = s.browser();
    let mut secrets = vec![KEY.to_owned(), SECRET.to_owned()];
    // Login, step by step, to keep the login cookie and the code.
    let start_login = b
        .request(
            "GET",
            "/bff/login?returnUrl=%2F",
            &[("sec-fetch-mode", "navigate")],
        )
        .await;
    assert_eq!(start_login.status, 302);
    secrets.extend(cookie_values(&b));
    let at_idp = b.http.get(start_login.location().as_str()).await;
    let callback = at_idp.location();
    let code = callback
        .query_pairs()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.into_owned())
        .unwrap();
    secrets.push(code);
    let done = b.request("GET", callback.as_str(), &[]).await;
    assert_eq!(done.status, 302, "{}", done.text());
    secrets.extend(cookie_values(&b));
    secrets.extend(session_tokens(&s, &b));
    // API calls, then a refresh with rotation.
    assert_eq!(b.api("/api/a").await.status, 200);
    s.bff.clock().advance(Duration::from_secs(301));
    let r = b.api("/api/b").await;
    assert_eq!(r.status, 200, "{}", r.text());
    secrets.extend(cookie_values(&b));
    secrets.extend(session_tokens(&s, &b));
    // Logout (revocation at the IdP, end-session redirect).
    let out = b.request("POST", "/bff/logout", &[("x-csrf", "1")]).await;
    assert_eq!(out.status, 302);
    s.stop().await;
    secrets
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_logs_of_a_whole_run_hold_no_secret() {
    let captured = Captured::default();
    bff_proxy::logging::install(
        captured.clone(),
        bff_proxy::config::LogFormat::Text,
        "info",
        Some("trace"),
        false,
    )
    .unwrap();
    let mut secrets = run(Front::Hyper).await;
    secrets.extend(run(Front::Pingora).await);
    let log = String::from_utf8_lossy(&captured.0.lock().unwrap()).into_owned();
    assert!(log.contains("login"), "the log was captured:\n{log}");
    secrets.retain(|s| s.len() >= 8);
    assert!(secrets.len() > 10, "{} secrets", secrets.len());
    crate::support::assert_no_secret_in(&log, &secrets);
}
