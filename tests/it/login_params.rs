//! `/bff/login` parameters that are not built yet (step-up and silent login:
//! `prompt`, `acr_values`, `max_age`, `login_hint`) are refused with 400, never
//! dropped silently.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::support::stack::{Front, Options, start};

#[tokio::test]
async fn unsupported_login_parameters_are_refused() {
    let s = start(Front::Hyper, Options::default()).await;
    let b = s.browser();
    for extra in [
        "prompt=none",
        "acr_values=urn%3Amfa",
        "max_age=300",
        "login_hint=alice",
    ] {
        let r = b
            .request(
                "GET",
                &format!("/bff/login?returnUrl=%2F&{extra}"),
                &[("sec-fetch-mode", "navigate")],
            )
            .await;
        assert_eq!(r.status, 400, "{extra}");
        assert!(r.json()["error"] == "bad_request", "{extra}");
    }
    // Without them the login starts.
    let r = b
        .request(
            "GET",
            "/bff/login?returnUrl=%2F",
            &[("sec-fetch-mode", "navigate")],
        )
        .await;
    assert_eq!(r.status, 302);
    s.stop().await;
}
