//! Entry points of the fuzz targets (the `fuzz/` package; feature `fuzzing`): each
//! runs production code on arbitrary bytes and checks the properties that code
//! promises. A panic is a finding: either the code panicked, or a property broke.
//!
//! | target | what runs |
//! |---|---|
//! | `sealed_cookie` | opening a sealed value, decoding a session, a Cookie header carrying one |
//! | `cookie_header` | the one Cookie-header parser; reading and stripping must agree |
//! | `path` | the path check, against an independent decoder |
//! | `token_response` | the token-endpoint response parser and error classifier |
//! | `logout_token` | the whole logout-token validator (signature, claims) and the claim rules |
//! | `config` | `config.toml` loading and validation |
//!
//! ```
//! for target in bff_proxy::fuzzing::TARGETS {
//!     for seed in bff_proxy::fuzzing::seeds(target) {
//!         bff_proxy::fuzzing::run(target, &seed);
//!     }
//! }
//! ```

use std::sync::OnceLock;

use http::header::{COOKIE, HeaderMap, HeaderValue};
use serde_json::{Value, json};

use crate::config::{Config, Env};
use crate::cookies::{CookieKind, CookieNames, CookieSettings, SameSite, SessionSealer};
use crate::paths::{PathCheck, check_path};
use crate::seal::KeyRing;
use crate::session::{Session, SessionId};

/// The targets, by name.
pub const TARGETS: &[&str] = &[
    "sealed_cookie",
    "cookie_header",
    "path",
    "token_response",
    "logout_token",
    "config",
];

const COOKIE_NAME: &str = "__Host-Http-bff";
const ISSUER: &str = "https://idp.example.com";
const CLIENT_ID: &str = "bff";
/// The fixed "now" of the logout-token target (Unix seconds).
const NOW: u64 = 1_900_000_000;
const KEY_B64: &str = "vUqhFABZp5xGtuGc//zqNm1RE5BdmW8dWI70Hto8GV8=";

/// Runs `target` on `data`. False when there is no such target.
pub fn run(target: &str, data: &[u8]) -> bool {
    match target {
        "sealed_cookie" => sealed_cookie(data),
        "cookie_header" => cookie_header(data),
        "path" => path(data),
        "token_response" => token_response(data),
        "logout_token" => logout_token(data),
        "config" => config(data),
        _ => return false,
    }
    true
}

fn sealer() -> Option<&'static SessionSealer> {
    static SEALER: OnceLock<Option<SessionSealer>> = OnceLock::new();
    SEALER
        .get_or_init(|| {
            let key = KeyRing::parse_key(KEY_B64).ok()?;
            let ring = KeyRing::new(vec![key]).ok()?;
            Some(SessionSealer::new(
                ring,
                CookieSettings::new(COOKIE_NAME, true, SameSite::Strict),
            ))
        })
        .as_ref()
}

fn names() -> &'static CookieNames {
    static NAMES: OnceLock<CookieNames> = OnceLock::new();
    NAMES.get_or_init(|| CookieNames::new(COOKIE_NAME))
}

fn sample_session() -> Session {
    let mut s = Session::new(
        SessionId([9; 16]),
        "248289761001".into(),
        "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.sig".into(),
        1_900_000_300,
        1_900_000_000,
    );
    s.refresh_token = Some("rt-0123456789".into());
    s.id_token = Some("eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJ4In0.sig".into());
    s.scope = "openid offline_access".into();
    s.idp_sid = Some("idp-sid".into());
    s
}

/// Opening a sealed value (as text), decoding a session (plain bytes), or a Cookie
/// header carrying the value: never a panic, and what decodes encodes back.
pub fn sealed_cookie(data: &[u8]) {
    let (Some((&mode, rest)), Some(sealer)) = (data.split_first(), sealer()) else {
        return;
    };
    match mode % 3 {
        0 => {
            // Raw bytes, as a Cookie header may carry them (not only UTF-8).
            let _ = sealer
                .ring()
                .open_map(COOKIE_NAME, rest, |p| Session::decode(p).ok());
        }
        1 => {
            if let Ok(session) = Session::decode(rest) {
                assert_eq!(Session::decode(&session.encode()).ok(), Some(session));
            }
        }
        _ => {
            let mut header = format!("{COOKIE_NAME}=").into_bytes();
            header.extend_from_slice(rest);
            if let Ok(value) = HeaderValue::from_bytes(&header) {
                let mut headers = HeaderMap::new();
                headers.insert(COOKIE, value);
                let _ = sealer.read(&headers);
            }
        }
    }
}

/// The Cookie-header parser: reading and stripping agree on every input. What is
/// forwarded holds exactly the pairs not read as ours or as lookalikes, and none of
/// ours; only exact names are ours; a value is read only from a name sent once.
pub fn cookie_header(data: &[u8]) {
    let mut headers = HeaderMap::new();
    // A newline separates Cookie header lines (several headers are allowed).
    for line in data.split(|&b| b == b'\n') {
        if let Ok(value) = HeaderValue::from_bytes(line) {
            headers.append(COOKIE, value);
        }
    }
    let names = names();
    let _ = names.login_names(&headers);
    let Ok(parsed) = names.parse(&headers) else {
        return;
    };
    let mut kept = 0;
    let mut whole = 0;
    for (kind, pair) in parsed.pairs() {
        match kind {
            CookieKind::Session => {
                assert_eq!(pair.name, COOKIE_NAME.as_bytes());
                whole += 1;
            }
            CookieKind::Chunk(i) => {
                assert_eq!(pair.name, format!("{COOKIE_NAME}.{i}").as_bytes());
            }
            CookieKind::Login => {
                assert!(pair.name.starts_with(names.login_prefix().as_bytes()));
            }
            CookieKind::Lookalike => {}
            CookieKind::Other => {
                kept += 1;
                assert_ne!(pair.name, COOKIE_NAME.as_bytes());
            }
        }
    }
    let session = parsed.session();
    assert!(session.whole.is_none() || whole == 1);
    if let Some(sealer) = sealer() {
        let _ = sealer.open(&session);
    }
    match parsed.forwarded() {
        None => assert_eq!(kept, 0),
        Some(forwarded) => {
            let mut again = HeaderMap::new();
            again.insert(COOKIE, forwarded);
            let reparsed = names.parse(&again);
            assert!(reparsed.is_ok(), "the forwarded header is readable");
            if let Ok(reparsed) = reparsed {
                assert!(reparsed.pairs().all(|(k, _)| k == CookieKind::Other));
                assert_eq!(reparsed.pairs().count(), kept);
                // Independently of the classifier: no name that a lenient parser
                // (Unicode trim, lower case, percent-decoding) reads as ours goes on.
                for (_, pair) in reparsed.pairs() {
                    for name in [pair.name, pair.raw] {
                        let decoded = decode_once(name);
                        let loose = String::from_utf8_lossy(&decoded).trim().to_lowercase();
                        let loose = loose.split('=').next().unwrap_or_default().trim();
                        let ours = COOKIE_NAME.to_lowercase();
                        assert!(
                            loose != ours
                                && !loose.starts_with(&format!("{ours}."))
                                && !loose.starts_with(&format!("{ours}-login-")),
                            "a lookalike of ours is forwarded"
                        );
                    }
                }
            }
        }
    }
}

/// An independent percent-decoder for the path property (not the one under test).
fn decode_once(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if let [b'%', h, l, ..] = bytes[i..] {
            if h.is_ascii_hexdigit() && l.is_ascii_hexdigit() {
                let text = [h, l];
                let hex = std::str::from_utf8(&text)
                    .ok()
                    .and_then(|t| u8::from_str_radix(t, 16).ok());
                if let Some(b) = hex {
                    out.push(b);
                    i += 3;
                    continue;
                }
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

/// The path check: a path it lets through has no dot segment, backslash or NUL in
/// any of the decodings an upstream might apply; strict passing implies the
/// encoded-slash mode passes.
pub fn path(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let strict = check_path(&text, PathCheck::Strict);
    let lenient = check_path(&text, PathCheck::AllowEncodedSlash);
    if strict.is_ok() {
        assert!(
            lenient.is_ok(),
            "strict passed but the lenient mode refused"
        );
    }
    if lenient.is_err() {
        return;
    }
    let mut current = text.as_bytes().to_vec();
    for _ in 0..3 {
        assert!(!current.contains(&0) && !current.contains(&b'\\'));
        for segment in current.split(|&b| b == b'/') {
            let base = segment.split(|&b| b == b';').next().unwrap_or(segment);
            assert!(base != b"." && base != b"..", "a dot segment passed");
        }
        let decoded = decode_once(&current);
        if decoded == current {
            break;
        }
        current = decoded;
    }
}

/// The token-endpoint response parser and error classifier.
pub fn token_response(data: &[u8]) {
    let dpop = data.first().is_some_and(|b| b % 2 == 1);
    match crate::oidc::parse_token_response_as(data, dpop) {
        Ok(tokens) => {
            assert!(!tokens.access_token.is_empty());
            assert!(tokens.refresh_token.as_deref() != Some(""));
            assert!(tokens.expires_in.is_none_or(|s| s <= 10 * 365 * 24 * 3600));
            let _ = crate::refresh::access_expiry(&tokens, NOW);
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
    let status = data.first().map_or(400, |b| 400 + u16::from(*b % 200));
    if let Ok(status) = http::StatusCode::from_u16(status) {
        let _ = crate::oidc::classify_token_error(status, data, None);
    }
}

/// The test key the logout-token target verifies with: (JWKS, signer).
fn logout_keys() -> &'static (jsonwebtoken::jwk::JwkSet, jsonwebtoken::EncodingKey) {
    static KEYS: OnceLock<(jsonwebtoken::jwk::JwkSet, jsonwebtoken::EncodingKey)> = OnceLock::new();
    KEYS.get_or_init(|| {
        use base64::Engine as _;
        use rsa::pkcs1::EncodeRsaPrivateKey as _;
        use rsa::traits::PublicKeyParts as _;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let key = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).ok();
        let der = key
            .as_ref()
            .and_then(|k| k.to_pkcs1_der().ok())
            .map(|d| d.as_bytes().to_vec())
            .unwrap_or_default();
        let (n, e) = key.as_ref().map_or((String::new(), String::new()), |k| {
            (
                b64.encode(k.n().to_bytes_be()),
                b64.encode(k.e().to_bytes_be()),
            )
        });
        let jwks = serde_json::from_value(json!({"keys": [
            {"kty": "RSA", "use": "sig", "alg": "RS256", "kid": "k1", "n": n, "e": e}
        ]}))
        .unwrap_or(jsonwebtoken::jwk::JwkSet { keys: Vec::new() });
        (jwks, jsonwebtoken::EncodingKey::from_rsa_der(&der))
    })
}

/// A logout token signed with the target's key (seeds).
#[must_use]
pub fn sign_logout_token(claims: &Value) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = Some("k1".into());
    header.typ = Some("logout+jwt".into());
    jsonwebtoken::encode(&header, claims, &logout_keys().1).unwrap_or_default()
}

/// The whole logout-token validator, or (mode 1) the claim rules on any JSON: a
/// token it accepts obeys every rule.
pub fn logout_token(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        let token = String::from_utf8_lossy(rest);
        let accepted = crate::oidc::validate_logout_token_with(
            &token,
            &logout_keys().0,
            ISSUER,
            CLIENT_ID,
            NOW,
        );
        if let Ok(claims) = accepted {
            assert!(!claims.jti.is_empty());
            assert!(claims.iat <= NOW + 60 && claims.iat + 300 >= NOW);
            assert!(claims.sid.is_some() || !claims.sub.is_empty());
        }
    } else if let Ok(value) = serde_json::from_slice::<Value>(rest) {
        if let Ok(claims) = crate::oidc::check_logout_claims(&value, NOW) {
            assert!(value.get("nonce").is_none());
            assert!(!claims.jti.is_empty());
        }
    }
}

fn config_dir() -> &'static std::path::Path {
    static DIR: OnceLock<std::path::PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("bff-fuzz-config-{}", std::process::id()));
        let _ = std::fs::create_dir_all(dir.join("spa"));
        let _ = std::fs::write(dir.join("secret.txt"), "s3cret\n");
        dir
    })
}

/// `config.toml` loading and validation: never a panic, and a config that loads
/// has every duration within bounds (a far-off one once panicked at start).
pub fn config(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let env = Env::from_pairs([
        ("BFF_SESSION_KEY", KEY_B64),
        ("BFF_CLIENT_SECRET", "s3cret"),
    ]);
    let Ok(config) = Config::from_toml(&text, config_dir(), &env) else {
        return;
    };
    let year = std::time::Duration::from_secs(366 * 24 * 3600);
    for d in [
        config.session.absolute_lifetime,
        config.refresh.grace,
        config.refresh.skew,
        config.refresh.timeout,
        config.server.header_timeout,
        config.server.idle_timeout,
        config.server.shutdown_timeout,
        config.server.upstream_timeout,
        config.server.upstream_connect_timeout,
        config.store.timeout,
    ] {
        assert!(d <= year, "a duration of {d:?} loaded");
    }
    let _ = config.proxy_problems();
    let _ = crate::refresh::RefreshSettings::from_config(&config);
    let _ = crate::revocation::RevocationList::new(config.session.absolute_lifetime);
}

/// The seed inputs of a target: real, valid examples to mutate from.
#[must_use]
pub fn seeds(target: &str) -> Vec<Vec<u8>> {
    let sealed = sealer()
        .and_then(|s| {
            s.set_cookies(&sample_session(), None, &Default::default())
                .ok()
        })
        .and_then(|v| v.first().cloned())
        .map(|v| {
            let text = String::from_utf8_lossy(v.as_bytes()).into_owned();
            let pair = text.split(';').next().unwrap_or_default().to_owned();
            pair.split_once('=')
                .map(|(_, v)| v.to_owned())
                .unwrap_or_default()
        })
        .unwrap_or_default();
    let with_mode = |mode: u8, body: &[u8]| {
        let mut v = vec![mode];
        v.extend_from_slice(body);
        v
    };
    match target {
        "sealed_cookie" => vec![
            with_mode(0, sealed.as_bytes()),
            with_mode(1, &sample_session().encode()),
            with_mode(2, sealed.as_bytes()),
        ],
        "cookie_header" => vec![
            format!("{COOKIE_NAME}={sealed}; theme=dark").into_bytes(),
            format!("a=1; {COOKIE_NAME}.0=x; {COOKIE_NAME}.1=y; b=2").into_bytes(),
            format!("{COOKIE_NAME}-login-ABCDEFGHIJKLMNOP=v\n\u{2000}{COOKIE_NAME}=z; c=\"q\"")
                .into_bytes(),
            b"__host-http-bff=1; %5F_Host-Http-bff=2; =3; x".to_vec(),
        ],
        "path" => [
            "/api/items/42?x=1",
            "/sp/../admin",
            "/a/%2e%2e/b",
            "/a/..%2fb",
            "/a/..;x/b",
            "/files/a%2Fb",
            "/%252e%252e/",
            "/a%5cb",
            "/.well-known/x",
        ]
        .iter()
        .map(|p| p.as_bytes().to_vec())
        .collect(),
        "token_response" => [
            r#"{"access_token":"at","token_type":"Bearer","expires_in":3599,"refresh_token":"rt","id_token":"a.b.c","scope":"openid"}"#,
            r#"{"access_token":"at","expires_in":"3599","refresh_token":""}"#,
            r#"{"access_token":"at","token_type":"DPoP","expires_in":1e3}"#,
            r#"{"error":"invalid_grant"}"#,
            "<html>oops</html>",
        ]
        .iter()
        .map(|p| p.as_bytes().to_vec())
        .collect(),
        "logout_token" => {
            let claims = json!({
                "iss": ISSUER, "aud": CLIENT_ID, "iat": NOW - 10, "jti": "j-1",
                "sid": "s-1", "sub": "u-1",
                "events": {"http://schemas.openid.net/event/backchannel-logout": {}},
            });
            let mut sub_only = claims.clone();
            if let Some(m) = sub_only.as_object_mut() {
                m.remove("sid");
            }
            vec![
                with_mode(0, sign_logout_token(&claims).as_bytes()),
                with_mode(0, sign_logout_token(&sub_only).as_bytes()),
                with_mode(1, claims.to_string().as_bytes()),
            ]
        }
        "config" => vec![
            include_str!("../config.toml").as_bytes().to_vec(),
            include_str!("../tests/fixtures/config/all-keys.toml")
                .as_bytes()
                .to_vec(),
            format!(
                "[oidc]\nissuer = \"{ISSUER}\"\nclient_id = \"bff\"\nclient_secret = \"file:secret.txt\"\n[session]\nkeys = [\"env:BFF_SESSION_KEY\"]\nabsolute_lifetime = \"12h\"\n[[routes]]\npath = \"/\"\nstatic_dir = \"spa\"\nauth = \"none\"\n"
            )
            .into_bytes(),
        ],
        _ => Vec::new(),
    }
}
