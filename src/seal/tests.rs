//! Unit tests of `seal`.

use super::*;
use proptest::prelude::*;

fn ring() -> KeyRing {
    KeyRing::new(vec![KeyRing::generate_key()]).unwrap()
}

#[test]
fn round_trip_of_sizes() {
    let ring = ring();
    for len in [0usize, 1, 2, 3, 15, 16, 17, 1000, 4096, 16 * 1024] {
        let plain: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
        let sealed = ring.seal("c", &plain);
        assert_eq!(sealed.len(), KeyRing::sealed_len(len), "len {len}");
        assert_eq!(ring.open("c", &sealed).unwrap(), plain);
    }
}

#[test]
fn both_backends_read_each_other() {
    let key = KeyRing::generate_key();
    let ring_ring = KeyRing::with_backend(vec![key], AeadBackend::Ring).unwrap();
    let rust_ring = KeyRing::with_backend(vec![key], AeadBackend::AesGcm).unwrap();
    for len in [0usize, 1, 100, 3000] {
        let plain: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        assert_eq!(
            rust_ring.open("c", &ring_ring.seal("c", &plain)).unwrap(),
            plain
        );
        assert_eq!(
            ring_ring.open("c", &rust_ring.seal("c", &plain)).unwrap(),
            plain
        );
        let mut tampered = URL_SAFE_NO_PAD.decode(ring_ring.seal("c", &plain)).unwrap();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        let text = URL_SAFE_NO_PAD.encode(&tampered);
        assert!(rust_ring.open("c", &text).is_err());
        assert!(ring_ring.open("c", &text).is_err());
    }
}

#[test]
fn every_nonce_is_fresh() {
    let ring = ring();
    assert_ne!(ring.seal("c", b"same"), ring.seal("c", b"same"));
}

#[test]
fn every_single_byte_flip_is_rejected() {
    let ring = ring();
    let sealed = ring.seal("c", b"a session of some length, with tokens inside");
    let raw = URL_SAFE_NO_PAD.decode(&sealed).unwrap();
    for i in 0..raw.len() {
        for bit in 0..8 {
            let mut flipped = raw.clone();
            flipped[i] ^= 1 << bit;
            let text = URL_SAFE_NO_PAD.encode(&flipped);
            assert!(ring.open("c", &text).is_err(), "byte {i} bit {bit}");
        }
    }
    // And flips of the text itself (characters, not just bits of the bytes).
    let bytes = sealed.as_bytes();
    for i in 0..bytes.len() {
        let mut text = bytes.to_vec();
        text[i] = if text[i] == b'A' { b'B' } else { b'A' };
        let text = String::from_utf8(text).unwrap();
        if text != sealed {
            assert!(ring.open("c", &text).is_err(), "char {i}");
        }
    }
}

/// A value has one spelling: the unused low bits of the last base64 character must be
/// zero (a forgiving decoder would open `…A` and `…B` alike).
#[test]
fn non_canonical_trailing_bits_are_refused() {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let ring = ring();
    // 1 + 33 = 34 bytes: the last character carries 2 bits and 4 unused ones; 2 + 33
    // = 35 bytes: 4 bits and 2 unused.
    for plaintext in [&b"x"[..], b"xy"] {
        let sealed = ring.seal("c", plaintext);
        assert_ne!(sealed.len() % 4, 0);
        let mut text = sealed.clone().into_bytes();
        let last = text.len() - 1;
        let index = ALPHABET.iter().position(|&c| c == text[last]).unwrap();
        text[last] = ALPHABET[index ^ 1];
        let text = String::from_utf8(text).unwrap();
        assert!(ring.open("c", &sealed).is_ok());
        assert_eq!(ring.open("c", &text), Err(OpenError::Encoding), "{text}");
    }
}

#[test]
fn truncation_and_extension_are_rejected() {
    let ring = ring();
    let sealed = ring.seal("c", b"payload");
    for cut in 0..sealed.len() {
        assert!(ring.open("c", &sealed[..cut]).is_err(), "cut at {cut}");
    }
    assert!(ring.open("c", &format!("{sealed}AAAA")).is_err());
}

#[test]
fn a_value_sealed_for_one_name_does_not_open_as_another() {
    let ring = ring();
    let sealed = ring.seal("__Host-Http-bff", b"x");
    assert_eq!(
        ring.open("__Host-Http-bff.0", &sealed),
        Err(OpenError::Authentication)
    );
    assert_eq!(
        ring.open("bff-login", &sealed),
        Err(OpenError::Authentication)
    );
}

#[test]
fn key_rotation_keeps_old_values_open_and_seals_with_the_new_key() {
    let old = KeyRing::generate_key();
    let new = KeyRing::generate_key();
    let before = KeyRing::new(vec![old]).unwrap();
    let sealed_old = before.seal("c", b"old");

    let after = KeyRing::new(vec![new, old]).unwrap();
    assert_eq!(after.open("c", &sealed_old).unwrap(), b"old");
    let sealed_new = after.seal("c", b"new");
    // The new seal names the new key and the old ring cannot open it.
    assert_eq!(before.open("c", &sealed_new), Err(OpenError::UnknownKey));
    let only_new = KeyRing::new(vec![new]).unwrap();
    assert_eq!(only_new.open("c", &sealed_new).unwrap(), b"new");
    // Once the old key is dropped, old values stop opening.
    assert_eq!(only_new.open("c", &sealed_old), Err(OpenError::UnknownKey));
}

#[test]
fn a_foreign_key_does_not_open() {
    let sealed = ring().seal("c", b"x");
    assert_eq!(ring().open("c", &sealed), Err(OpenError::UnknownKey));
}

#[test]
fn unknown_version_is_rejected() {
    let ring = ring();
    let mut raw = URL_SAFE_NO_PAD.decode(ring.seal("c", b"x")).unwrap();
    raw[0] = 2;
    assert_eq!(
        ring.open("c", &URL_SAFE_NO_PAD.encode(&raw)),
        Err(OpenError::Version)
    );
}

#[test]
fn overlong_input_is_refused_before_decoding() {
    let ring = ring();
    let long = "A".repeat(MAX_SEALED_LEN + 1);
    assert_eq!(ring.open("c", &long), Err(OpenError::TooLong));
}

#[test]
fn key_parsing_accepts_every_base64_flavour() {
    let key = KeyRing::generate_key();
    for engine in [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD] {
        let text = format!("  {}\n", engine.encode(key));
        assert_eq!(KeyRing::parse_key(&text).unwrap(), key);
    }
}

#[test]
fn weak_keys_are_refused() {
    assert_eq!(
        KeyRing::parse_key(&STANDARD.encode([7u8; 12])),
        Err(KeyError::WrongLength(12))
    );
    assert_eq!(KeyRing::parse_key("not base64!"), Err(KeyError::NotBase64));
    assert_eq!(
        KeyRing::parse_key(&STANDARD.encode([0u8; 32])),
        Err(KeyError::AllZero)
    );
    assert_eq!(
        KeyRing::parse_key(&STANDARD.encode([0xAAu8; 32])),
        Err(KeyError::LowVariety(1))
    );
    let pattern: Vec<u8> = b"abcd".iter().copied().cycle().take(32).collect();
    assert_eq!(
        KeyRing::parse_key(&STANDARD.encode(pattern)),
        Err(KeyError::LowVariety(4))
    );
    assert!(KeyRing::new(vec![[0u8; 32]]).is_err());
    assert!(KeyRing::new(vec![]).is_err());
}

#[test]
fn generated_keys_parse_back() {
    let text = KeyRing::generate_key_base64();
    assert_eq!(text.len(), 44);
    KeyRing::parse_key(&text).unwrap();
}

#[test]
fn debug_does_not_show_keys() {
    let shown = format!("{:?}", ring());
    assert_eq!(shown, "KeyRing { keys: 1, .. }");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    fn open_never_panics_on_text(text in ".{0,600}") {
        let ring = ring();
        let _ = ring.open("c", &text);
    }

    #[test]
    fn open_never_panics_on_base64_of_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let ring = ring();
        let _ = ring.open("c", &URL_SAFE_NO_PAD.encode(&bytes));
        // Also with a valid header in front, so decryption itself is exercised.
        let mut framed = vec![FORMAT_VERSION];
        framed.extend_from_slice(&ring.keys[0].id);
        framed.extend_from_slice(&bytes);
        prop_assert!(ring.open("c", &URL_SAFE_NO_PAD.encode(&framed)).is_err());
    }
}
