//! The session: what the BFF keeps for a logged-in browser, and its compact encoding.
//!
//! A session is encoded with [postcard] (a compact binary serde format) behind a
//! one-byte payload version, then sealed into the session cookie by
//! [`SessionSealer`](crate::cookies::SessionSealer). postcard was picked on size: for
//! a typical session it is the tokens plus a few dozen bytes, where JSON adds the
//! field names and turns the 16-byte session id into ~60 characters (numbers measured
//! by `cargo bench --bench session`, recorded in the README).

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

/// The version byte in front of an encoded session. Bump it when the layout changes,
/// and keep decoding the older layouts, so an upgrade logs nobody out.
pub const PAYLOAD_VERSION: u8 = 4;

/// A random 128-bit session id. Not a secret on its own (it appears in
/// `/bff/user` and in logout links), but unguessable.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SessionId(pub [u8; 16]);

impl SessionId {
    /// A fresh id from the operating system's generator.
    #[must_use]
    pub fn random() -> Self {
        use rand::RngCore as _;
        let mut id = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut id);
        Self(id)
    }

    /// Parses the text form (22 characters of base64url).
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        if text.len() != 22 {
            return None;
        }
        let bytes = URL_SAFE_NO_PAD.decode(text).ok()?;
        Some(Self(bytes.try_into().ok()?))
    }
}

impl SessionId {
    /// A short hash of the id for the access log: the first 6 bytes of its
    /// SHA-256, so lines of one session can be grouped without the id itself.
    #[must_use]
    pub fn short_hash(&self) -> SidHash {
        use sha2::{Digest as _, Sha256};
        let digest = Sha256::digest(self.0);
        let mut out = [0u8; 6];
        out.copy_from_slice(&digest[..6]);
        SidHash(out)
    }
}

/// [`SessionId::short_hash`]: 12 hex digits.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SidHash([u8; 6]);

impl fmt::Display for SidHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for SidHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SidHash({self})")
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&URL_SAFE_NO_PAD.encode(self.0))
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionId({self})")
    }
}

/// Why bytes did not decode as a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Empty input.
    #[error("empty session payload")]
    Empty,
    /// A payload version this build does not read.
    #[error("unknown session payload version {0}")]
    Version(u8),
    /// The bytes are not a session of this version.
    #[error("malformed session payload")]
    Malformed,
}

/// What the BFF keeps for one logged-in browser. Times are Unix seconds.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// Random session id.
    pub sid: SessionId,
    /// The user's subject (`sub` of the ID token).
    pub sub: String,
    /// The current access token.
    #[serde(deserialize_with = "token_text::read")]
    pub access_token: String,
    /// When the access token expires (absolute).
    pub access_expires_at: u64,
    /// The current refresh token, if the IdP issued one.
    #[serde(deserialize_with = "token_text::read_some")]
    pub refresh_token: Option<String>,
    /// The ID token: its claims answer `/bff/user`, and it is the `id_token_hint` at
    /// logout.
    #[serde(deserialize_with = "token_text::read_some")]
    pub id_token: Option<String>,
    /// When the session was created (login).
    pub created_at: u64,
    /// When the tokens were last refreshed (`created_at` until the first refresh).
    pub refreshed_at: u64,
    /// How many refreshes this session has had.
    pub refresh_count: u32,
    /// The scope granted by the IdP (space separated).
    pub scope: String,
    /// The IdP's session id (`sid` claim of the ID token), which back-channel logout
    /// names.
    pub idp_sid: Option<String>,
    /// When the session was created, in Unix milliseconds: a logout of every
    /// session of a user up to some instant needs more than whole seconds.
    pub created_ms: u64,
    /// When the session was last used, as last sealed (`session.idle_timeout`).
    pub last_used: u64,
    /// Access tokens for other audiences (routes' `resource` and `token_exchange`),
    /// kept until they near expiry.
    pub audience_tokens: Vec<AudienceToken>,
    /// The session's DPoP key (RFC 9449, `oidc.dpop`): its PKCS#8 document.
    pub dpop_key: Option<Vec<u8>>,
}

/// The session's tokens (its longest strings) read with a SIMD UTF-8 check: std's
/// check cost ~1,300 instructions per request on a 2 KB session. postcard writes a
/// string and a byte string alike (a length, then the bytes), so reading a string's
/// bytes and checking them here reads the same encoding.
mod token_text {
    use std::fmt;

    use serde::de::{self, Unexpected, Visitor};
    use serde::{Deserialize, Deserializer};

    /// One token, read as bytes and checked here.
    struct Token(String);

    struct Text;

    impl Visitor<'_> for Text {
        type Value = String;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a UTF-8 string")
        }

        fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<String, E> {
            simdutf8::basic::from_utf8(v)
                .map(str::to_owned)
                .map_err(|_| E::invalid_value(Unexpected::Other("bytes that are not UTF-8"), &self))
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
            Ok(v.to_owned())
        }
    }

    impl<'de> Deserialize<'de> for Token {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_bytes(Text).map(Token)
        }
    }

    pub(super) fn read<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        Token::deserialize(d).map(|t| t.0)
    }

    pub(super) fn read_some<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        Ok(Option::<Token>::deserialize(d)?.map(|t| t.0))
    }
}

/// An access token for one audience of a route (`resource` or `token_exchange`).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AudienceToken {
    /// What it is for: `r:` and the route's `resource`, or `x:`, the route's
    /// `token_exchange` audience, a space and its scope.
    pub key: String,
    /// The access token.
    pub access_token: String,
    /// When it expires (Unix seconds).
    pub expires_at: u64,
}

impl fmt::Debug for AudienceToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AudienceToken")
            .field("key", &self.key)
            .field("access_token", &Redacted(&self.access_token))
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

impl Session {
    /// The kept token for the audience `key`, if any.
    #[must_use]
    pub fn audience_token(&self, key: &str) -> Option<&AudienceToken> {
        self.audience_tokens.iter().find(|t| t.key == key)
    }

    /// Keeps `token` for its audience, replacing an older one.
    pub fn keep_audience_token(&mut self, token: AudienceToken) {
        self.audience_tokens.retain(|t| t.key != token.key);
        self.audience_tokens.push(token);
    }
}

/// Layout 3 (before `audience_tokens`), still read.
#[derive(Deserialize)]
struct SessionV3 {
    sid: SessionId,
    sub: String,
    access_token: String,
    access_expires_at: u64,
    refresh_token: Option<String>,
    id_token: Option<String>,
    created_at: u64,
    refreshed_at: u64,
    refresh_count: u32,
    scope: String,
    idp_sid: Option<String>,
    created_ms: u64,
    last_used: u64,
}

impl From<SessionV3> for Session {
    fn from(v: SessionV3) -> Self {
        Self {
            sid: v.sid,
            sub: v.sub,
            access_token: v.access_token,
            access_expires_at: v.access_expires_at,
            refresh_token: v.refresh_token,
            id_token: v.id_token,
            created_at: v.created_at,
            refreshed_at: v.refreshed_at,
            refresh_count: v.refresh_count,
            scope: v.scope,
            idp_sid: v.idp_sid,
            created_ms: v.created_ms,
            last_used: v.last_used,
            audience_tokens: Vec::new(),
            dpop_key: None,
        }
    }
}

/// Layout 2 (before `last_used`), still read.
#[derive(Deserialize)]
struct SessionV2 {
    sid: SessionId,
    sub: String,
    access_token: String,
    access_expires_at: u64,
    refresh_token: Option<String>,
    id_token: Option<String>,
    created_at: u64,
    refreshed_at: u64,
    refresh_count: u32,
    scope: String,
    idp_sid: Option<String>,
    created_ms: u64,
}

impl From<SessionV2> for SessionV3 {
    fn from(v: SessionV2) -> Self {
        Self {
            // Not known: the latest time the layout recorded.
            last_used: v.refreshed_at.max(v.created_at),
            sid: v.sid,
            sub: v.sub,
            access_token: v.access_token,
            access_expires_at: v.access_expires_at,
            refresh_token: v.refresh_token,
            id_token: v.id_token,
            created_at: v.created_at,
            refreshed_at: v.refreshed_at,
            refresh_count: v.refresh_count,
            scope: v.scope,
            idp_sid: v.idp_sid,
            created_ms: v.created_ms,
        }
    }
}

/// Layout 1 (before `created_ms`), still read.
#[derive(Deserialize)]
struct SessionV1 {
    sid: SessionId,
    sub: String,
    access_token: String,
    access_expires_at: u64,
    refresh_token: Option<String>,
    id_token: Option<String>,
    created_at: u64,
    refreshed_at: u64,
    refresh_count: u32,
    scope: String,
    idp_sid: Option<String>,
}

impl From<SessionV1> for SessionV2 {
    fn from(v: SessionV1) -> Self {
        Self {
            created_ms: v.created_at.saturating_mul(1000),
            sid: v.sid,
            sub: v.sub,
            access_token: v.access_token,
            access_expires_at: v.access_expires_at,
            refresh_token: v.refresh_token,
            id_token: v.id_token,
            created_at: v.created_at,
            refreshed_at: v.refreshed_at,
            refresh_count: v.refresh_count,
            scope: v.scope,
            idp_sid: v.idp_sid,
        }
    }
}

impl Session {
    /// A session just created at login.
    #[must_use]
    pub fn new(
        sid: SessionId,
        sub: String,
        access_token: String,
        access_expires_at: u64,
        now: u64,
    ) -> Self {
        Self {
            sid,
            sub,
            access_token,
            access_expires_at,
            refresh_token: None,
            id_token: None,
            created_at: now,
            refreshed_at: now,
            refresh_count: 0,
            scope: String::new(),
            idp_sid: None,
            created_ms: now.saturating_mul(1000),
            last_used: now,
            audience_tokens: Vec::new(),
            dpop_key: None,
        }
    }

    /// Encodes the session: the payload version byte, then postcard.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let out = vec![PAYLOAD_VERSION];
        // postcard cannot fail for this type: every field is a plain value, and
        // writing into a Vec does not run out of room.
        match postcard::to_extend(self, out) {
            Ok(v) => v,
            Err(_) => vec![PAYLOAD_VERSION],
        }
    }

    /// Decodes what [`Session::encode`] wrote. Trailing bytes are refused.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let (&version, rest) = bytes.split_first().ok_or(DecodeError::Empty)?;
        match version {
            PAYLOAD_VERSION => match postcard::take_from_bytes::<Self>(rest) {
                Ok((session, [])) => Ok(session),
                _ => Err(DecodeError::Malformed),
            },
            3 => match postcard::take_from_bytes::<SessionV3>(rest) {
                Ok((session, [])) => Ok(session.into()),
                _ => Err(DecodeError::Malformed),
            },
            2 => match postcard::take_from_bytes::<SessionV2>(rest) {
                Ok((session, [])) => Ok(SessionV3::from(session).into()),
                _ => Err(DecodeError::Malformed),
            },
            1 => match postcard::take_from_bytes::<SessionV1>(rest) {
                Ok((session, [])) => Ok(SessionV3::from(SessionV2::from(session)).into()),
                _ => Err(DecodeError::Malformed),
            },
            other => Err(DecodeError::Version(other)),
        }
    }
}

/// Shows lengths in place of tokens, so a session can be logged while debugging.
struct Redacted<'a>(&'a str);

impl fmt::Debug for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<redacted {} bytes>", self.0.len())
    }
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("sid", &self.sid)
            .field("sub", &self.sub)
            .field("access_token", &Redacted(&self.access_token))
            .field("access_expires_at", &self.access_expires_at)
            .field(
                "refresh_token",
                &self.refresh_token.as_deref().map(Redacted),
            )
            .field("id_token", &self.id_token.as_deref().map(Redacted))
            .field("created_at", &self.created_at)
            .field("refreshed_at", &self.refreshed_at)
            .field("refresh_count", &self.refresh_count)
            .field("scope", &self.scope)
            .field("idp_sid", &self.idp_sid)
            .field("created_ms", &self.created_ms)
            .field("last_used", &self.last_used)
            .field("audience_tokens", &self.audience_tokens)
            .field(
                "dpop_key",
                &self
                    .dpop_key
                    .as_ref()
                    .map(|k| format!("<redacted {} bytes>", k.len())),
            )
            .finish()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A session with tokens of realistic shape whose encoding is about `target` bytes.
    pub(crate) fn sample(target: usize) -> Session {
        let filler = |n: usize, seed: u8| -> String {
            (0..n)
                .map(|i| {
                    let c = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
                        [(i * 31 + usize::from(seed)) % 64];
                    char::from(c)
                })
                .collect()
        };
        let fixed = 120;
        let tokens = target.saturating_sub(fixed);
        let mut s = Session::new(
            SessionId::random(),
            "248289761001".into(),
            filler(tokens / 2, 1),
            1_900_000_000,
            1_899_999_000,
        );
        s.refresh_token = Some(filler(tokens / 6, 2));
        s.id_token = Some(filler(tokens - tokens / 2 - tokens / 6, 3));
        s.scope = "openid profile email offline_access".into();
        s
    }

    #[test]
    fn round_trip() {
        for size in [0, 1000, 3000, 8000] {
            let s = sample(size);
            assert_eq!(Session::decode(&s.encode()).unwrap(), s);
        }
    }

    #[test]
    fn tokens_are_checked_as_utf8_as_they_are_read() {
        // Text beyond ASCII comes back as it was, in every token field.
        let mut s = sample(1000);
        s.access_token = format!("{}-é€😀", s.access_token);
        s.refresh_token = Some("rt-ü".into());
        s.id_token = Some("€".repeat(40));
        assert_eq!(Session::decode(&s.encode()).unwrap(), s);
        s.refresh_token = None;
        s.id_token = None;
        assert_eq!(Session::decode(&s.encode()).unwrap(), s);

        // Bytes that are not UTF-8 in any token field: no session. A stray
        // continuation byte, a lead byte without its continuation, and one at the end.
        let mut s = sample(600);
        s.access_token = format!("{}@access@", s.access_token);
        s.refresh_token = Some("@refresh@".into());
        s.id_token = Some("id@id@".into());
        let encoded = s.encode();
        for marker in [&b"@access@"[..], b"@refresh@", b"@id@"] {
            let at = encoded
                .windows(marker.len())
                .position(|w| w == marker)
                .unwrap();
            for (offset, byte) in [(0, 0x80), (1, 0xC3), (marker.len() - 1, 0xE2)] {
                let mut bad = encoded.clone();
                bad[at + offset] = byte;
                assert_eq!(
                    Session::decode(&bad),
                    Err(DecodeError::Malformed),
                    "{} with {byte:#x} at {offset}",
                    String::from_utf8_lossy(marker)
                );
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        #[test]
        fn any_tokens_round_trip(
            access in any::<String>(),
            refresh in proptest::option::of(any::<String>()),
            id in proptest::option::of(any::<String>()),
        ) {
            let mut s = sample(0);
            s.access_token = access;
            s.refresh_token = refresh;
            s.id_token = id;
            prop_assert_eq!(Session::decode(&s.encode()).unwrap(), s);
        }
    }

    #[test]
    fn postcard_is_smaller_than_json() {
        let s = sample(3000);
        let json = serde_json::to_vec(&s).unwrap();
        let compact = s.encode();
        assert!(
            compact.len() + 100 < json.len(),
            "postcard {} vs json {}",
            compact.len(),
            json.len()
        );
    }

    #[test]
    fn versions_and_trailing_bytes_are_checked() {
        let s = sample(200);
        let mut bytes = s.encode();
        assert_eq!(Session::decode(&[]), Err(DecodeError::Empty));
        bytes[0] = 9;
        assert_eq!(Session::decode(&bytes), Err(DecodeError::Version(9)));
        bytes[0] = 1;
        assert_eq!(Session::decode(&bytes), Err(DecodeError::Malformed));
        let mut bytes = s.encode();
        bytes.push(0);
        assert_eq!(Session::decode(&bytes), Err(DecodeError::Malformed));
    }

    #[test]
    fn layout_1_still_opens() {
        #[derive(Serialize)]
        struct V1<'a> {
            sid: SessionId,
            sub: &'a str,
            access_token: &'a str,
            access_expires_at: u64,
            refresh_token: Option<&'a str>,
            id_token: Option<&'a str>,
            created_at: u64,
            refreshed_at: u64,
            refresh_count: u32,
            scope: &'a str,
            idp_sid: Option<&'a str>,
        }
        let sid = SessionId::random();
        let mut bytes = vec![1u8];
        bytes.extend(
            postcard::to_allocvec(&V1 {
                sid,
                sub: "alice",
                access_token: "at",
                access_expires_at: 2000,
                refresh_token: Some("rt"),
                id_token: None,
                created_at: 1000,
                refreshed_at: 1500,
                refresh_count: 3,
                scope: "openid",
                idp_sid: Some("idp"),
            })
            .unwrap(),
        );
        let s = Session::decode(&bytes).unwrap();
        assert_eq!((s.sid, s.sub.as_str(), s.refresh_count), (sid, "alice", 3));
        assert_eq!(s.created_ms, 1_000_000);
        assert_eq!(s.refresh_token.as_deref(), Some("rt"));
    }

    #[test]
    fn layout_2_still_opens() {
        #[derive(Serialize)]
        struct V2<'a> {
            sid: SessionId,
            sub: &'a str,
            access_token: &'a str,
            access_expires_at: u64,
            refresh_token: Option<&'a str>,
            id_token: Option<&'a str>,
            created_at: u64,
            refreshed_at: u64,
            refresh_count: u32,
            scope: &'a str,
            idp_sid: Option<&'a str>,
            created_ms: u64,
        }
        let sid = SessionId::random();
        let mut bytes = vec![2u8];
        bytes.extend(
            postcard::to_allocvec(&V2 {
                sid,
                sub: "alice",
                access_token: "at",
                access_expires_at: 2000,
                refresh_token: Some("rt"),
                id_token: None,
                created_at: 1000,
                refreshed_at: 1500,
                refresh_count: 3,
                scope: "openid",
                idp_sid: None,
                created_ms: 1_000_123,
            })
            .unwrap(),
        );
        let s = Session::decode(&bytes).unwrap();
        assert_eq!((s.sid, s.created_ms), (sid, 1_000_123));
        // Its last use is not known: the latest time it recorded.
        assert_eq!(s.last_used, 1500);
    }

    #[test]
    fn layout_3_still_opens() {
        // Layout 3 is layout 4 without the audience tokens and DPoP key at the end.
        let mut s = sample(400);
        let mut bytes = s.encode();
        assert_eq!(bytes.pop(), Some(0), "no DPoP key is one zero byte");
        assert_eq!(bytes.pop(), Some(0), "an empty list is one zero byte");
        bytes[0] = 3;
        assert_eq!(Session::decode(&bytes).unwrap(), s);
        s.keep_audience_token(AudienceToken {
            key: "r:https://api.example".into(),
            access_token: "at-1".into(),
            expires_at: 5,
        });
        s.keep_audience_token(AudienceToken {
            key: "r:https://api.example".into(),
            access_token: "at-2".into(),
            expires_at: 6,
        });
        assert_eq!(s.audience_tokens.len(), 1);
        let back = Session::decode(&s.encode()).unwrap();
        assert_eq!(
            back.audience_token("r:https://api.example")
                .unwrap()
                .access_token,
            "at-2"
        );
        assert!(!format!("{back:?}").contains("at-2"));
    }

    #[test]
    fn debug_redacts_every_token() {
        let s = sample(600);
        let shown = format!("{s:?}");
        assert!(!shown.contains(&s.access_token));
        assert!(!shown.contains(s.refresh_token.as_deref().unwrap()));
        assert!(!shown.contains(s.id_token.as_deref().unwrap()));
        assert!(shown.contains("<redacted"));
        assert!(shown.contains(&s.sub));
    }

    #[test]
    fn session_id_text_round_trip() {
        let id = SessionId::random();
        assert_eq!(SessionId::parse(&id.to_string()), Some(id));
        assert_eq!(SessionId::parse("short"), None);
        assert_eq!(SessionId::parse("!!!!!!!!!!!!!!!!!!!!!!"), None);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Session::decode(&bytes);
            let mut framed = vec![PAYLOAD_VERSION];
            framed.extend_from_slice(&bytes);
            let _ = Session::decode(&framed);
        }
    }
}

#[cfg(test)]
mod example {
    /// What the module does, in a few lines.
    #[test]
    fn module_example() {
        use crate::session::{Session, SessionId};

        let mut s = Session::new(
            SessionId::random(),
            "alice".into(),
            "at".into(),
            1_700_000_300,
            1_700_000_000,
        );
        s.refresh_token = Some("rt".into());
        let bytes = s.encode();
        assert_eq!(Session::decode(&bytes).unwrap(), s);
        // Debug never shows a token.
        assert!(!format!("{s:?}").contains("\"at\""));
    }
}
