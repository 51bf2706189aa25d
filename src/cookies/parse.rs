//! The one parser of the request's `Cookie` header: pairs split as browsers send
//! them, each name classified (ours, a login cookie, a lookalike, another site's),
//! and the session cookie or its chunks picked out once per request.

#![allow(clippy::wildcard_imports)]

use super::*;

/// One `name=value` pair of a `Cookie` header. Pairs are split at `;`, and only the
/// spaces and tabs RFC 6265 allows are removed around the pair, its name and its
/// value: nothing else is trimmed, decoded or case-folded. A pair without `=` has an
/// empty name and the whole pair as its value (RFC 6265bis).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct CookiePair<'h> {
    /// The name, exactly as sent.
    pub name: &'h [u8],
    /// The value, exactly as sent (quotes included).
    pub value: &'h [u8],
    /// The whole pair as it appeared (what is forwarded when it is not ours).
    pub raw: &'h [u8],
}

impl fmt::Debug for CookiePair<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Names are not secret; values may be.
        f.debug_struct("CookiePair")
            .field("name", &String::from_utf8_lossy(self.name))
            .field("value_len", &self.value.len())
            .finish()
    }
}

pub(super) fn trim_ows(mut bytes: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = bytes {
        bytes = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = bytes {
        bytes = rest;
    }
    bytes
}

/// The pairs of one `Cookie` header value. The one tokenizer of the Cookie header:
/// reading our cookies, finding login attempts and stripping them all go through it.
pub fn cookie_pairs(header: &[u8]) -> impl Iterator<Item = CookiePair<'_>> {
    let mut rest = Some(header);
    std::iter::from_fn(move || {
        loop {
            let text = rest?;
            let piece = match memchr::memchr(b';', text) {
                Some(at) => {
                    rest = Some(&text[at + 1..]);
                    &text[..at]
                }
                None => {
                    rest = None;
                    text
                }
            };
            let raw = trim_ows(piece);
            if raw.is_empty() {
                continue;
            }
            return Some(match memchr::memchr(b'=', raw) {
                Some(at) => CookiePair {
                    name: trim_ows(&raw[..at]),
                    value: trim_ows(&raw[at + 1..]),
                    raw,
                },
                None => CookiePair {
                    name: b"",
                    value: raw,
                    raw,
                },
            });
        }
    })
}

/// What one cookie of a request is to this BFF.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CookieKind {
    /// The session cookie, `NAME`.
    Session,
    /// A chunk of a long session value, `NAME.0` … `NAME.7`.
    Chunk(u8),
    /// A login attempt, `NAME-login-<16 characters>`.
    Login,
    /// A name that is not exactly one of ours but would be after some other trimming,
    /// decoding or case folding (`\u{2000}NAME`, `name`, `NAME.x`, `%5F_NAME`…). It is
    /// never opened, and it is removed before the request goes upstream, because
    /// another parser could read it as ours.
    Lookalike,
    /// Another application's cookie: it passes upstream untouched.
    Other,
}

impl CookieKind {
    /// Whether the cookie is removed before the request goes upstream.
    #[must_use]
    pub fn is_stripped(self) -> bool {
        self != Self::Other
    }
}

/// Characters that other parsers drop or fold without a trace: white space of any
/// kind, controls, and the default-ignorable code points (zero-width spaces and
/// joiners, bidi marks, variation selectors, the BOM), plus quotes.
pub(super) fn is_ignorable(c: char) -> bool {
    c.is_whitespace()
        || c.is_control()
        || matches!(
            c,
            '"' | '\u{00AD}'
                | '\u{034F}'
                | '\u{061C}'
                | '\u{115F}'
                | '\u{1160}'
                | '\u{17B4}'
                | '\u{17B5}'
                | '\u{180B}'..='\u{180F}'
                | '\u{200B}'..='\u{200F}'
                | '\u{202A}'..='\u{202E}'
                | '\u{2060}'..='\u{206F}'
                | '\u{3164}'
                | '\u{FE00}'..='\u{FE0F}'
                | '\u{FEFF}'
                | '\u{FFA0}'
                | '\u{FFF0}'..='\u{FFFD}'
        )
}

/// A cookie name as a lenient parser might see it: percent-decoded (twice) and cut
/// at an `=` that decoding produced, the ignorable characters removed, full-width
/// ASCII folded, lower case.
pub(super) fn loose_form(name: &[u8]) -> String {
    let decoded = percent_decode(&percent_decode(name));
    let decoded = decoded.split(|&b| b == b'=').next().unwrap_or(&decoded);
    String::from_utf8_lossy(decoded)
        .chars()
        .filter(|&c| !is_ignorable(c))
        .map(|c| match c {
            // Full-width forms of ASCII (U+FF01..U+FF5E) fold onto ASCII.
            '\u{FF01}'..='\u{FF5E}' => char::from_u32(u32::from(c) - 0xFEE0).unwrap_or(c),
            c => c,
        })
        .flat_map(char::to_lowercase)
        .collect()
}

pub(super) fn starts_with_ignore_case(name: &[u8], prefix: &[u8]) -> bool {
    name.len() >= prefix.len() && name[..prefix.len()].eq_ignore_ascii_case(prefix)
}

/// The characters of a login attempt's id.
pub(crate) const LOGIN_ID_CHARS: usize = 16;

pub(super) fn is_login_id(id: &[u8]) -> bool {
    id.len() == LOGIN_ID_CHARS
        && id
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The names of this BFF's cookies, and the one parser of a request's `Cookie`
/// header against them.
#[derive(Debug, Clone)]
pub struct CookieNames {
    session: String,
    chunk_prefix: String,
    login_prefix: String,
    loose_session: String,
    loose_chunk_prefix: String,
    loose_login_prefix: String,
}

impl CookieNames {
    /// The names of the family whose session cookie is `session` (a checked RFC 6265
    /// token): chunks `session.N` and login attempts `session-login-ID`.
    #[must_use]
    pub fn new(session: &str) -> Self {
        let chunk_prefix = format!("{session}.");
        let login_prefix = format!("{session}-login-");
        Self {
            loose_session: loose_form(session.as_bytes()),
            loose_chunk_prefix: loose_form(chunk_prefix.as_bytes()),
            loose_login_prefix: loose_form(login_prefix.as_bytes()),
            session: session.to_owned(),
            chunk_prefix,
            login_prefix,
        }
    }

    /// The prefix of every login attempt's cookie name.
    #[must_use]
    pub fn login_prefix(&self) -> &str {
        &self.login_prefix
    }

    /// What a cookie named `name` is. Ours only on an exact, byte-for-byte match.
    #[must_use]
    pub fn classify(&self, name: &[u8]) -> CookieKind {
        if name == self.session.as_bytes() {
            return CookieKind::Session;
        }
        if let Some(rest) = name.strip_prefix(self.chunk_prefix.as_bytes()) {
            return match rest {
                [d @ b'0'..=b'9'] if usize::from(d - b'0') < MAX_CHUNKS => {
                    CookieKind::Chunk(d - b'0')
                }
                _ => CookieKind::Lookalike,
            };
        }
        if let Some(id) = name.strip_prefix(self.login_prefix.as_bytes()) {
            return if is_login_id(id) {
                CookieKind::Login
            } else {
                CookieKind::Lookalike
            };
        }
        if self.looks_like_ours(name) {
            CookieKind::Lookalike
        } else {
            CookieKind::Other
        }
    }

    fn looks_like_ours(&self, name: &[u8]) -> bool {
        let plain = name
            .iter()
            .all(|&b| b.is_ascii_graphic() && b != b'%' && b != b'"');
        if plain {
            // Plain ASCII: only case folding can make it ours (no allocation on the
            // usual path).
            return name.eq_ignore_ascii_case(self.session.as_bytes())
                || starts_with_ignore_case(name, self.chunk_prefix.as_bytes())
                || starts_with_ignore_case(name, self.login_prefix.as_bytes());
        }
        let loose = loose_form(name);
        loose == self.loose_session
            || loose.starts_with(&self.loose_chunk_prefix)
            || loose.starts_with(&self.loose_login_prefix)
    }

    /// What a pair is: by its name, or for a pair without `=` (whose name is empty)
    /// by its whole text, which some parsers take as a name.
    fn classify_pair(&self, pair: &CookiePair<'_>) -> CookieKind {
        if pair.name.is_empty() {
            return match self.classify(pair.value) {
                CookieKind::Other => CookieKind::Other,
                _ => CookieKind::Lookalike,
            };
        }
        self.classify(pair.name)
    }

    /// Parses the request's `Cookie` header(s) once. Refuses, by counting bytes and
    /// `;` before any parsing, a header longer than [`MAX_COOKIE_HEADER_BYTES`] or
    /// with more than [`MAX_COOKIE_PAIRS`] cookies.
    pub fn parse<'h>(&self, headers: &'h HeaderMap) -> Result<RequestCookies<'h>, Error> {
        let mut total = 0usize;
        let mut pairs = 0usize;
        for value in headers.get_all(COOKIE) {
            total += value.len();
            if total > MAX_COOKIE_HEADER_BYTES {
                return Err(Error::new(ErrorKind::CookieHeaderTooLarge));
            }
            // At most MAX_COOKIE_PAIRS counted: that many `;` make one pair too many.
            pairs += 1 + count_semicolons(value.as_bytes(), MAX_COOKIE_PAIRS);
            if pairs > MAX_COOKIE_PAIRS {
                return Err(Error::new(ErrorKind::CookieHeaderTooLarge));
            }
        }
        let mut parsed = Vec::with_capacity(pairs);
        for value in headers.get_all(COOKIE) {
            for pair in cookie_pairs(value.as_bytes()) {
                parsed.push((self.classify_pair(&pair), pair));
            }
        }
        Ok(RequestCookies { pairs: parsed })
    }

    /// The names of the valid login-attempt cookies in a request's `Cookie`
    /// header(s), however large (at most [`MAX_LOGIN_EXPIRIES`]): a 431 answer
    /// expires them, so a browser is never locked out by our own cookies.
    #[must_use]
    pub fn login_names(&self, headers: &HeaderMap) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for value in headers.get_all(COOKIE) {
            for pair in cookie_pairs(value.as_bytes()) {
                if names.len() >= MAX_LOGIN_EXPIRIES {
                    return names;
                }
                if self.classify(pair.name) == CookieKind::Login {
                    // Valid login names are ASCII.
                    let name = String::from_utf8_lossy(pair.name).into_owned();
                    if !names.contains(&name) {
                        names.push(name);
                    }
                }
            }
        }
        names
    }
}

/// The most login cookies one 431 answer expires.
pub const MAX_LOGIN_EXPIRIES: usize = 32;

/// A request's cookies, parsed once by [`CookieNames::parse`].
#[derive(Debug, Default)]
pub struct RequestCookies<'h> {
    pairs: Vec<(CookieKind, CookiePair<'h>)>,
}

/// The session family's value(s) in a request.
#[derive(Default, Clone, PartialEq, Eq)]
pub struct SessionCookie<'h> {
    /// The unchunked value, when exactly one cookie carried it.
    pub whole: Option<&'h [u8]>,
    /// The chunks joined, when they run 0..n without a gap or a repeat.
    pub chunked: Option<Vec<u8>>,
    /// Which cookies were there (to clear them).
    pub present: Present,
}

impl fmt::Debug for SessionCookie<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionCookie")
            .field("whole", &self.whole.map(<[u8]>::len))
            .field("chunked", &self.chunked.as_ref().map(Vec::len))
            .field("present", &self.present)
            .finish()
    }
}

impl SessionCookie<'_> {
    /// The sealed values to try, whole first. Bytes as they came: opening checks
    /// they are base64url (no UTF-8 check first, on every request).
    pub fn candidates(&self) -> impl Iterator<Item = &[u8]> {
        [self.whole, self.chunked.as_deref()].into_iter().flatten()
    }
}

impl<'h> RequestCookies<'h> {
    /// Every pair with its kind, in order.
    #[cfg(any(test, feature = "fuzzing"))]
    pub fn pairs(&self) -> impl Iterator<Item = (CookieKind, &CookiePair<'h>)> {
        self.pairs.iter().map(|(k, p)| (*k, p))
    }

    /// The session cookie or its chunks. A name sent twice is ambiguous (another
    /// site or path may have planted one): it is no value.
    #[must_use]
    pub fn session(&self) -> SessionCookie<'h> {
        let mut out = SessionCookie::default();
        let mut whole_count = 0;
        let mut chunks: [Option<&'h [u8]>; MAX_CHUNKS] = [None; MAX_CHUNKS];
        let mut repeated_chunk = false;
        for (kind, pair) in &self.pairs {
            match *kind {
                CookieKind::Session => {
                    out.present.whole = true;
                    whole_count += 1;
                    out.whole = Some(pair.value);
                }
                CookieKind::Chunk(i) => {
                    let i = usize::from(i);
                    out.present.chunks |= 1 << i;
                    repeated_chunk |= chunks[i].is_some();
                    chunks[i] = Some(pair.value);
                }
                _ => {}
            }
        }
        if whole_count != 1 {
            out.whole = None;
        }
        let count = chunks.iter().take_while(|c| c.is_some()).count();
        if !repeated_chunk && count > 0 && chunks[count..].iter().all(Option::is_none) {
            let mut joined = Vec::with_capacity(count * SET_COOKIE_BUDGET);
            for chunk in chunks.iter().take(count).flatten() {
                joined.extend_from_slice(chunk);
            }
            out.chunked = Some(joined);
        }
        out
    }

    /// The login-attempt cookies: (name, value), values that are not UTF-8 left out.
    pub fn logins(&self) -> impl Iterator<Item = (&'h str, &'h str)> + '_ {
        self.pairs.iter().filter_map(|(kind, pair)| {
            if *kind != CookieKind::Login {
                return None;
            }
            Some((
                std::str::from_utf8(pair.name).ok()?,
                std::str::from_utf8(pair.value).ok()?,
            ))
        })
    }

    /// The value of the login cookie `name`, when exactly one was sent.
    #[must_use]
    pub fn login(&self, name: &str) -> Option<&'h str> {
        let mut found = self.logins().filter(|(n, _)| *n == name).map(|(_, v)| v);
        let first = found.next()?;
        found.next().is_none().then_some(first)
    }

    /// The `Cookie` header to send upstream: every pair that is not ours or a
    /// lookalike, byte for byte. None when nothing is left.
    #[must_use]
    pub fn forwarded(&self) -> Option<HeaderValue> {
        let mut kept: Vec<u8> = Vec::new();
        for (kind, pair) in &self.pairs {
            if kind.is_stripped() {
                continue;
            }
            if !kept.is_empty() {
                kept.extend_from_slice(b"; ");
            }
            kept.extend_from_slice(pair.raw);
        }
        if kept.is_empty() {
            None
        } else {
            HeaderValue::from_bytes(&kept).ok()
        }
    }
}
