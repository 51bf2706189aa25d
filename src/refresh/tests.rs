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

#[test]
fn shared_results_of_the_earlier_layout_still_open() {
    #[derive(serde::Serialize)]
    struct OldTokens<'a> {
        access_token: &'a str,
        access_expires_at: u64,
        refresh_token: Option<&'a str>,
        id_token: Option<&'a str>,
        idp_sid: Option<&'a str>,
        scope: Option<&'a str>,
        id_iss: Option<&'a str>,
        id_sub: Option<&'a str>,
    }
    #[derive(serde::Serialize)]
    struct Old<'a> {
        tokens: OldTokens<'a>,
        at_ms: u64,
        rotated: bool,
    }
    let ring = KeyRing::new(vec![KeyRing::generate_key()]).unwrap();
    let old = Old {
        tokens: OldTokens {
            access_token: "at",
            access_expires_at: 2000,
            refresh_token: Some("rt-2"),
            id_token: None,
            idp_sid: None,
            scope: Some("openid"),
            id_iss: None,
            id_sub: None,
        },
        at_ms: 1_000_000,
        rotated: true,
    };
    let sealed = ring
        .seal(
            flight::ROTATION_SEAL_NAME_V1,
            &postcard::to_allocvec(&old).unwrap(),
        )
        .into_bytes();
    let opened = flight::open_rotation(&ring, &sealed).unwrap();
    assert!(opened.rotated && opened.gives(None));
    assert_eq!(opened.tokens[0].refresh_token.as_deref(), Some("rt-2"));
    // The current layout round-trips, and is not read as the old one.
    let again = flight::open_rotation(&ring, &flight::seal_rotation(&ring, &opened)).unwrap();
    assert_eq!(again.tokens.len(), 1);
    assert_eq!(again.at_ms, 1_000_000);
    assert!(flight::open_rotation(&ring, b"not sealed").is_none());
}
