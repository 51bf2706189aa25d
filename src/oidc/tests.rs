//! Unit tests of `oidc`.

use super::*;

#[test]
fn classification_follows_the_design() {
    let c = |status: u16, body: &str| {
        classify_token_error(StatusCode::from_u16(status).unwrap(), body.as_bytes(), None)
    };
    assert!(matches!(
        c(400, r#"{"error":"invalid_grant"}"#),
        TokenError::Dead { .. }
    ));
    assert!(matches!(c(400, ""), TokenError::Dead { .. }));
    assert!(matches!(
        c(400, "<html>bad</html>"),
        TokenError::Dead { .. }
    ));
    assert!(matches!(c(403, ""), TokenError::Dead { .. }));
    assert!(matches!(
        c(401, r#"{"error":"invalid_client"}"#),
        TokenError::Misconfigured { .. }
    ));
    assert!(matches!(
        c(400, r#"{"error":"unauthorized_client"}"#),
        TokenError::Misconfigured { .. }
    ));
    assert!(matches!(c(401, ""), TokenError::Misconfigured { .. }));
    assert!(matches!(
        c(500, r#"{"error":"invalid_grant"}"#),
        TokenError::Transient { .. }
    ));
    assert!(matches!(c(503, ""), TokenError::Transient { .. }));
    assert!(matches!(c(429, ""), TokenError::Transient { .. }));
    assert!(matches!(
        c(400, r#"{"error":"temporarily_unavailable"}"#),
        TokenError::Transient { .. }
    ));
}

#[test]
fn retry_after_seconds_are_read() {
    let mut h = http::HeaderMap::new();
    h.insert(RETRY_AFTER, HeaderValue::from_static("7"));
    assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
    h.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
    assert_eq!(retry_after(&h), None);
}

#[test]
fn token_response_debug_redacts() {
    let t: TokenResponse = serde_json::from_str(
        r#"{"access_token":"AT-SECRET","refresh_token":"RT-SECRET","id_token":"ID-SECRET","token_type":"Bearer"}"#,
    )
    .unwrap();
    let shown = format!("{t:?}");
    assert!(!shown.contains("SECRET"), "{shown}");
}
