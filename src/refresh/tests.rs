//! Unit tests of `refresh`.

use super::*;

#[test]
fn backoff_grows_and_is_capped() {
    for attempt in 1..20 {
        let d = backoff(attempt);
        assert!(d >= BACKOFF_BASE / 2, "{attempt}: {d:?}");
        assert!(d <= BACKOFF_CAP.mul_f64(1.5), "{attempt}: {d:?}");
    }
    assert!(backoff(1) < Duration::from_millis(151));
}

#[test]
fn expiry_comes_from_expires_in_then_the_jwt() {
    let mut t: TokenResponse = serde_json::from_str(r#"{"access_token":"opaque"}"#).unwrap();
    assert_eq!(access_expiry(&t, 1000), 1000 + DEFAULT_ACCESS_TTL);
    t.expires_in = Some(30);
    assert_eq!(access_expiry(&t, 1000), 1030);
    t.expires_in = None;
    // {"exp":2000}
    t.access_token = "e30.eyJleHAiOjIwMDB9.sig".into();
    assert_eq!(access_expiry(&t, 1000), 2000);
}
