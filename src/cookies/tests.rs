//! Unit tests of `cookies`.

use super::*;
use proptest::prelude::*;

fn settings() -> CookieSettings {
    CookieSettings::new("__Host-Http-bff", true, SameSite::Strict)
}

/// The `Cookie` header a browser would send after storing `set_cookies` on top of
/// the cookies it already had.
fn browser_apply(jar: &mut Vec<(String, String)>, set_cookies: &[HeaderValue]) {
    for sc in set_cookies {
        let c = Cookie::parse(sc.to_str().unwrap().to_owned()).unwrap();
        jar.retain(|(n, _)| n != c.name());
        let removed = c.max_age() == Some(cookie::time::Duration::ZERO);
        if !removed {
            jar.push((c.name().to_owned(), c.value().to_owned()));
        }
    }
}

fn request(jar: &[(String, String)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    if !jar.is_empty() {
        let text: Vec<String> = jar.iter().map(|(n, v)| format!("{n}={v}")).collect();
        h.insert(COOKIE, HeaderValue::from_str(&text.join("; ")).unwrap());
    }
    h
}

fn read(s: &CookieSettings, h: &HeaderMap) -> SessionCookie<'static> {
    // Leaked: tests only, so the value can outlive the header map.
    let h: &'static HeaderMap = Box::leak(Box::new(h.clone()));
    CookieNames::new(s.name()).parse(h).unwrap().session()
}

fn value_of_len(len: usize) -> String {
    (0..len)
        .map(|i| char::from(b"abcdefghijklmnopqrstuvwxyz0123456789-_"[i % 38]))
        .collect()
}

#[test]
fn attributes_are_the_secure_defaults() {
    let out = settings()
        .write("v", Some(Duration::from_secs(60)), &Present::default())
        .unwrap();
    let text = out[0].to_str().unwrap();
    for attr in [
        "HttpOnly",
        "Secure",
        "SameSite=Strict",
        "Path=/",
        "Max-Age=60",
    ] {
        assert!(text.contains(attr), "{text} lacks {attr}");
    }
    assert!(!text.contains("Domain"), "{text}");
    let lax = CookieSettings::new("bff", false, SameSite::Lax)
        .write("v", None, &Present::default())
        .unwrap();
    let text = lax[0].to_str().unwrap();
    assert!(
        text.contains("SameSite=Lax") && !text.contains("Secure"),
        "{text}"
    );
}

#[test]
fn chunking_round_trips_from_0_to_16k_and_clears_stale_chunks() {
    let s = settings();
    let max_age = Some(Duration::from_secs(43_200));
    let mut jar: Vec<(String, String)> = vec![("other".into(), "keep".into())];
    // Grow then shrink, so every transition (whole→chunks, more→fewer chunks,
    // chunks→whole) happens.
    let mut sizes: Vec<usize> = (0..=16 * 1024).step_by(509).collect();
    sizes.extend([3900, 3950, 4000, 7800, 7900, 16 * 1024]);
    let down: Vec<usize> = sizes.iter().rev().copied().collect();
    sizes.extend(down);
    for len in sizes {
        let value = value_of_len(len);
        let req = request(&jar);
        let before = read(&s, &req);
        let out = s.write(&value, max_age, &before.present).unwrap();
        for sc in &out {
            assert!(sc.len() < 4096, "Set-Cookie of {} bytes", sc.len());
        }
        browser_apply(&mut jar, &out);
        let req = request(&jar);
        let after = read(&s, &req);
        let got = after
            .whole
            .map(<[u8]>::to_vec)
            .or(after.chunked.clone())
            .unwrap();
        assert_eq!(got, value.as_bytes(), "len {len}");
        // Exactly one form is left in the jar, with no stale chunk.
        assert!(
            after.whole.is_none() || after.present.chunks == 0,
            "len {len}: stale chunks {:?}",
            after.present
        );
        let chunk_count = after.present.chunks.count_ones() as usize;
        if after.whole.is_none() {
            assert_eq!(after.present.chunks, (1 << chunk_count) - 1, "len {len}");
        }
        assert!(jar.iter().any(|(n, v)| n == "other" && v == "keep"));
    }
}

#[test]
fn a_gap_in_chunks_is_no_value() {
    let s = settings();
    let jar = vec![
        ("__Host-Http-bff.0".to_owned(), "aa".to_owned()),
        ("__Host-Http-bff.2".to_owned(), "cc".to_owned()),
    ];
    let req = request(&jar);
    let read = read(&s, &req);
    assert_eq!(read.chunked, None);
    assert_eq!(read.present.chunks, 0b101);
    // Clearing removes both.
    assert_eq!(s.clear(&read.present).len(), 2);
}

#[test]
fn lookalike_names_are_not_ours() {
    let s = settings();
    let jar = vec![
        ("__Host-Http-bff.x".to_owned(), "a".to_owned()),
        ("__Host-Http-bff.10".to_owned(), "a".to_owned()),
        ("__Host-Http-bffx".to_owned(), "a".to_owned()),
    ];
    let req = request(&jar);
    let read = read(&s, &req);
    assert!(read.present.is_empty());
}

#[test]
fn oversized_cookie_headers_are_refused_cheaply() {
    let s = settings();
    let mut h = HeaderMap::new();
    h.insert(
        COOKIE,
        HeaderValue::from_str(&format!("a={}", "x".repeat(64 * 1024))).unwrap(),
    );
    let names = CookieNames::new(s.name());
    let err = names.parse(&h).unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::CookieHeaderTooLarge);

    let many: Vec<String> = (0..300).map(|i| format!("c{i}=1")).collect();
    h.insert(COOKIE, HeaderValue::from_str(&many.join("; ")).unwrap());
    assert_eq!(
        names.parse(&h).unwrap_err().kind(),
        &ErrorKind::CookieHeaderTooLarge
    );

    // Split over several headers, the limits still add up.
    let mut h = HeaderMap::new();
    for _ in 0..5 {
        h.append(
            COOKIE,
            HeaderValue::from_str(&format!("a={}", "x".repeat(8 * 1024))).unwrap(),
        );
    }
    assert!(names.parse(&h).is_err());
}

#[test]
fn too_large_a_value_is_an_error_not_a_broken_cookie() {
    let s = settings();
    assert!(
        s.write(&value_of_len(40 * 1024), None, &Present::default())
            .is_err()
    );
}

#[test]
fn semicolons_are_counted_up_to_the_limit() {
    let text: Vec<u8> = (0..2000)
        .map(|i| if i % 3 == 0 { b';' } else { b'a' })
        .collect();
    assert_eq!(count_semicolons(&text, 1000), 667);
    assert_eq!(count_semicolons(&text, MAX_COOKIE_PAIRS), MAX_COOKIE_PAIRS);
    assert_eq!(count_semicolons(&[b';'; 255], 255), 255);
    assert_eq!(count_semicolons(b"", MAX_COOKIE_PAIRS), 0);
    assert_eq!(count_semicolons(b"a=1", MAX_COOKIE_PAIRS), 0);
}

#[test]
fn the_cookie_count_limit_is_exact_across_headers() {
    let names = CookieNames::new(settings().name());
    let header = |from: usize, n: usize| {
        let pairs: Vec<String> = (from..from + n).map(|i| format!("c{i}=1")).collect();
        HeaderValue::from_str(&pairs.join("; ")).unwrap()
    };
    let mut h = HeaderMap::new();
    h.insert(COOKIE, header(0, MAX_COOKIE_PAIRS));
    assert_eq!(names.parse(&h).unwrap().pairs().count(), MAX_COOKIE_PAIRS);
    h.insert(COOKIE, header(0, MAX_COOKIE_PAIRS + 1));
    assert_eq!(
        names.parse(&h).unwrap_err().kind(),
        &ErrorKind::CookieHeaderTooLarge
    );

    // 100 + 80 in two headers is the limit; 100 + 81 is over it.
    let mut h = HeaderMap::new();
    h.append(COOKIE, header(0, 100));
    h.append(COOKIE, header(100, 80));
    assert_eq!(names.parse(&h).unwrap().pairs().count(), MAX_COOKIE_PAIRS);
    let mut h = HeaderMap::new();
    h.append(COOKIE, header(0, 100));
    h.append(COOKIE, header(100, 81));
    assert_eq!(
        names.parse(&h).unwrap_err().kind(),
        &ErrorKind::CookieHeaderTooLarge
    );
    // A header of nothing but `;` is refused, however long.
    let mut h = HeaderMap::new();
    h.insert(COOKIE, HeaderValue::from_str(&";".repeat(20_000)).unwrap());
    assert_eq!(
        names.parse(&h).unwrap_err().kind(),
        &ErrorKind::CookieHeaderTooLarge
    );
}

#[test]
fn cookie_names_are_checked() {
    assert!(check_cookie_name("__Host-Http-bff").is_ok());
    assert!(check_cookie_name("").is_err());
    assert!(check_cookie_name("a b").is_err());
    assert!(check_cookie_name("a;b").is_err());
    assert!(check_cookie_name("a=b").is_err());
}

/// A browser's cookies after a ~300-byte session was set.
fn logged_in_jar(sealer: &SessionSealer) -> Vec<(String, String)> {
    let session = crate::session::tests::sample(300);
    let out = sealer
        .set_cookies(&session, None, &Present::default())
        .unwrap();
    let mut jar = Vec::new();
    browser_apply(&mut jar, &out);
    jar
}

fn sealer() -> SessionSealer {
    SessionSealer::new(
        KeyRing::new(vec![KeyRing::generate_key()]).unwrap(),
        settings(),
    )
}

#[test]
fn sealer_round_trips_small_and_chunked_sessions() {
    let sealer = sealer();
    for size in [300, 3000, 8000, 14000] {
        let session = crate::session::tests::sample(size);
        let mut jar = Vec::new();
        let out = sealer
            .set_cookies(&session, None, &Present::default())
            .unwrap();
        browser_apply(&mut jar, &out);
        let read = sealer.read(&request(&jar)).unwrap();
        assert_eq!(read.session.as_ref(), Some(&session), "size {size}");
    }
}

#[test]
fn tampered_foreign_and_swapped_cookies_are_no_session() {
    let sealer = sealer();
    let jar = logged_in_jar(&sealer);

    let mut tampered = jar.clone();
    let v = &mut tampered[0].1;
    let last = v.pop().unwrap();
    v.push(if last == 'A' { 'B' } else { 'A' });
    let read = sealer.read(&request(&tampered)).unwrap();
    assert!(read.session.is_none());
    assert!(
        read.present.whole,
        "the bad cookie is still seen, to clear it"
    );

    let foreign = SessionSealer::new(
        KeyRing::new(vec![KeyRing::generate_key()]).unwrap(),
        settings(),
    );
    assert!(foreign.read(&request(&jar)).unwrap().session.is_none());

    // The same sealed value moved into another cookie family (same keys) does not
    // open: the family name is the associated data. (Chunks of one family share
    // its name, so moving a value between NAME and NAME.0 is no attack.)
    let login = SessionSealer::new(
        sealer.ring().clone(),
        CookieSettings::new("__Host-bff-login", true, SameSite::Strict),
    );
    let swapped = vec![("__Host-bff-login".to_owned(), jar[0].1.clone())];
    assert!(login.read(&request(&swapped)).unwrap().session.is_none());
    let same = vec![("__Host-Http-bff".to_owned(), jar[0].1.clone())];
    assert!(login.read(&request(&same)).unwrap().session.is_none());
    assert!(sealer.read(&request(&same)).unwrap().session.is_some());
}

fn kinds(header: &str) -> Vec<(String, CookieKind)> {
    let names = CookieNames::new("__Host-Http-bff");
    let mut h = HeaderMap::new();
    h.insert(COOKIE, HeaderValue::from_bytes(header.as_bytes()).unwrap());
    let parsed = names.parse(&h).unwrap();
    parsed
        .pairs()
        .map(|(k, p)| (String::from_utf8_lossy(p.name).into_owned(), k))
        .collect()
}

#[test]
fn own_cookies_are_stripped_and_others_kept_byte_for_byte() {
    let names = CookieNames::new("__Host-Http-bff");
    let mut h = HeaderMap::new();
    h.insert(
        COOKIE,
        HeaderValue::from_static("a=1; __Host-Http-bff=x; __Host-Http-bff.0=y; b=2; __Host-Http-bff-login-ABCDEFGHIJKLMNOP=z; __Host-Http-bffx=keep"),
    );
    h.append(COOKIE, HeaderValue::from_static("c=3"));
    h.append(COOKIE, HeaderValue::from_bytes(b"d=\xff\xfe").unwrap());
    let kept = names.parse(&h).unwrap().forwarded().unwrap();
    assert_eq!(
        kept.as_bytes(),
        b"a=1; b=2; __Host-Http-bffx=keep; c=3; d=\xff\xfe"
    );
    let mut only = HeaderMap::new();
    only.insert(COOKIE, HeaderValue::from_static("__Host-Http-bff=x"));
    assert!(names.parse(&only).unwrap().forwarded().is_none());
}

#[test]
fn names_are_ours_only_byte_for_byte() {
    // The spaces and tabs RFC 6265 allows around a pair are not part of the name.
    assert_eq!(
        kinds(" \t__Host-Http-bff =v; __Host-Http-bff.1\t= w ")
            .iter()
            .map(|(_, k)| *k)
            .collect::<Vec<_>>(),
        [CookieKind::Session, CookieKind::Chunk(1)]
    );
    // Anything else that only another trimming, decoding or case folding would
    // make ours is a lookalike: never read, always stripped.
    for planted in [
        "\u{2000}__Host-Http-bff",
        "\u{00A0}__Host-Http-bff",
        "\u{3000}__Host-Http-bff",
        "\u{0085}__Host-Http-bff",
        "\u{1680}__Host-Http-bff",
        "\u{205F}__Host-Http-bff",
        "__Host-Http-bff\u{2000}",
        "\u{200B}__Host-Http-bff",
        "\u{FEFF}__Host-Http-bff",
        "__host-http-bff",
        "__HOST-HTTP-BFF",
        "__Host-Http-bff.9",
        "__Host-Http-bff.x",
        "__Host-Http-bff.00",
        "__Host-Http-bff-login-short",
        "__host-http-bff-login-ABCDEFGHIJKLMNOP",
        "%5F_Host-Http-bff",
        "%255F_Host-Http-bff",
        "__Host-Http-bff%3d",
        "\u{2000}__Host-Http-bff%3Dx",
        "\"__Host-Http-bff\"",
        "\u{FF3F}\u{FF3F}Host-Http-bff",
        "__Host-Http-bff\u{0085}.0",
    ] {
        let found = kinds(&format!("a=1; {planted}=v; b=2"));
        assert_eq!(found.len(), 3, "{planted:?}");
        assert_eq!(found[1].1, CookieKind::Lookalike, "{planted:?}");
        assert_eq!(found[0].1, CookieKind::Other);
        assert_eq!(found[2].1, CookieKind::Other);
    }
    // A pair without `=` is a value with an empty name; if its text is ours, it
    // is stripped too.
    assert_eq!(kinds("__Host-Http-bff")[0].1, CookieKind::Lookalike);
    // Found by AFL++: a pair without `=` whose text holds an encoded one.
    assert_eq!(
        kinds("\u{2000}__Host-Http-bff%3d")[0].1,
        CookieKind::Lookalike
    );
    assert_eq!(kinds("plain")[0].1, CookieKind::Other);
    // Names that merely start alike are other apps' cookies.
    for other in [
        "__Host-Http-bffx",
        "__Host-Http",
        "bff",
        "__Host-Http-bff\u{2000}x",
    ] {
        assert_eq!(
            kinds(&format!("{other}=1"))[0].1,
            CookieKind::Other,
            "{other:?}"
        );
    }
    assert_eq!(
        kinds("__Host-Http-bff-login-ABCDEFGHIJ_-0123=v")[0].1,
        CookieKind::Login
    );
}

#[test]
fn a_planted_lookalike_never_opens_and_is_stripped() {
    let sealer = sealer();
    let jar = logged_in_jar(&sealer);
    let sealed = jar[0].1.clone();
    let names = CookieNames::new("__Host-Http-bff");
    for space in ['\u{2000}', '\u{00A0}', '\u{3000}'] {
        let header = format!("{space}__Host-Http-bff={sealed}; theme=dark");
        let mut h = HeaderMap::new();
        h.insert(COOKIE, HeaderValue::from_bytes(header.as_bytes()).unwrap());
        assert!(sealer.read(&h).unwrap().session.is_none(), "{space:?}");
        let parsed = names.parse(&h).unwrap();
        assert_eq!(parsed.forwarded().unwrap(), "theme=dark");
    }
}

#[test]
fn a_repeated_name_is_ambiguous_and_opens_nothing() {
    let sealer = sealer();
    let jar = logged_in_jar(&sealer);
    let once = request(&jar);
    assert!(sealer.read(&once).unwrap().session.is_some());
    let mut twice = jar.clone();
    twice.push(jar[0].clone());
    let read = sealer.read(&request(&twice)).unwrap();
    assert!(read.session.is_none());
    assert!(read.present.whole, "still cleared");
}

#[test]
fn login_names_are_found_even_in_an_oversized_header() {
    let names = CookieNames::new("__Host-Http-bff");
    let mut text = String::new();
    for i in 0..40 {
        text.push_str(&format!("__Host-Http-bff-login-{i:016}=x; "));
    }
    text.push_str(&format!("big={}", "y".repeat(40 * 1024)));
    let mut h = HeaderMap::new();
    h.insert(COOKIE, HeaderValue::from_str(&text).unwrap());
    assert!(names.parse(&h).is_err());
    let found = names.login_names(&h);
    assert_eq!(found.len(), MAX_LOGIN_EXPIRIES);
    assert_eq!(found[0], "__Host-Http-bff-login-0000000000000000");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]
    #[test]
    fn reading_arbitrary_cookie_headers_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let sealer = sealer();
        if let Ok(v) = HeaderValue::from_bytes(&bytes) {
            let mut h = HeaderMap::new();
            h.insert(COOKIE, v);
            let _ = sealer.read(&h);
        }
    }

    #[test]
    fn reading_and_stripping_agree(bytes in proptest::collection::vec(prop_oneof![
        Just(b'_'), Just(b'='), Just(b';'), Just(b' '), Just(b'\t'), Just(b'.'), Just(b'-'),
        Just(b'%'), Just(b'"'), Just(0xC2), Just(0xA0), Just(0xE2), Just(0x80), Just(0x80),
        any::<u8>(),
    ], 0..96), seed in proptest::sample::select(vec![
        "__Host-Http-bff=", "__Host-Http-bff.0=", "__Host-Http-bff-login-ABCDEFGHIJKLMNOP=",
        "\u{2000}__Host-Http-bff=", "__host-http-bff=", "a=", "",
    ])) {
        let mut header = seed.as_bytes().to_vec();
        header.extend_from_slice(&bytes);
        if let Ok(v) = HeaderValue::from_bytes(&header) {
            let names = CookieNames::new("__Host-Http-bff");
            let mut h = HeaderMap::new();
            h.insert(COOKIE, v);
            let parsed = names.parse(&h).unwrap();
            let kept = parsed.pairs().filter(|(k, _)| !k.is_stripped()).count();
            match parsed.forwarded() {
                None => prop_assert_eq!(kept, 0),
                Some(fwd) => {
                    // What goes upstream holds exactly the pairs that were not
                    // read as ours or as lookalikes, and none of ours.
                    let mut h2 = HeaderMap::new();
                    h2.insert(COOKIE, fwd);
                    let again = names.parse(&h2).unwrap();
                    prop_assert!(again.pairs().all(|(k, _)| k == CookieKind::Other));
                    prop_assert_eq!(again.pairs().count(), kept);
                }
            }
            // Every pair read as ours is stripped.
            for (kind, _) in parsed.pairs() {
                if matches!(kind, CookieKind::Session | CookieKind::Chunk(_) | CookieKind::Login) {
                    prop_assert!(kind.is_stripped());
                }
            }
        }
    }

    #[test]
    fn reading_cookie_shaped_headers_never_panics(
        pairs in proptest::collection::vec(("(__Host-Http-bff(\\.[0-9]{1,2})?|[a-z]{1,4})", "[A-Za-z0-9_=\"-]{0,80}"), 0..20)
    ) {
        let sealer = sealer();
        let text: Vec<String> = pairs.iter().map(|(n, v)| format!("{n}={v}")).collect();
        if let Ok(v) = HeaderValue::from_str(&text.join("; ")) {
            let mut h = HeaderMap::new();
            h.insert(COOKIE, v);
            let read = sealer.read(&h).unwrap();
            prop_assert!(read.session.is_none());
        }
    }
}
