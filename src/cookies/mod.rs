//! Session cookies: reading them from a request, writing them into `Set-Cookie`
//! headers, and splitting values over the browser's ~4 KB limit into chunks.
//!
//! A sealed value that fits is sent as one cookie `NAME=value`. A longer one is split
//! into `NAME.0`, `NAME.1`, … (each `Set-Cookie` line, attributes included, stays under
//! [`SET_COOKIE_BUDGET`] bytes) and joined on read. Whenever a value is written, the
//! cookies of the other form that the request carried are cleared, so no stale chunk
//! outlives a shrinking session.
//!
//! The `Cookie` header is hostile input: before anything is parsed, a header longer
//! than [`MAX_COOKIE_HEADER_BYTES`] or with more than [`MAX_COOKIE_PAIRS`] cookies is
//! refused by counting bytes, without parsing it at length.

use std::fmt;
use std::time::Duration;

use cookie::Cookie;
use http::HeaderValue;
use http::header::{COOKIE, HeaderMap};

use crate::error::{Error, ErrorKind};
use crate::paths::percent_decode;
use crate::seal::KeyRing;
use crate::session::Session;

mod parse;

pub use parse::*;

/// The most bytes of `Cookie` header(s) a request may carry for us to read them.
pub const MAX_COOKIE_HEADER_BYTES: usize = 32 * 1024;
/// The most cookies a request may carry for us to read them (Chrome keeps at most
/// 180 per domain, so no real browser sends more).
pub const MAX_COOKIE_PAIRS: usize = 180;
/// The most chunks one value may be split into.
pub const MAX_CHUNKS: usize = 8;
/// The most bytes of one `Set-Cookie` value (name, value and attributes). Browsers
/// allow 4096 for name and value; staying lower keeps a margin for proxies.
pub const SET_COOKIE_BUDGET: usize = 4000;

/// The `SameSite` attribute of our cookies. `None` is not offered: a BFF's session
/// cookie has no reason to travel on cross-site requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SameSite {
    /// Sent on same-site requests only.
    Strict,
    /// Also sent on top-level cross-site navigations.
    Lax,
}

/// Name and attributes of one cookie family (the session cookie, or a login-state
/// cookie).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CookieSettings {
    name: String,
    secure: bool,
    same_site: SameSite,
}

impl CookieSettings {
    /// Settings for cookies named `name`. The name is assumed valid (the config checks
    /// it with [`check_cookie_name`]).
    #[must_use]
    pub fn new(name: impl Into<String>, secure: bool, same_site: SameSite) -> Self {
        Self {
            name: name.into(),
            secure,
            same_site,
        }
    }

    /// The cookie name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    fn build<'c>(&self, name: String, value: &'c str) -> Cookie<'c> {
        Cookie::build((name, value))
            .path("/")
            .http_only(true)
            .secure(self.secure)
            .same_site(match self.same_site {
                SameSite::Strict => cookie::SameSite::Strict,
                SameSite::Lax => cookie::SameSite::Lax,
            })
            .build()
    }

    fn set_cookie(&self, name: String, value: &str, max_age: Option<Duration>) -> HeaderValue {
        let mut c = self.build(name, value);
        if let Some(age) = max_age {
            c.set_max_age(cookie::time::Duration::seconds(
                i64::try_from(age.as_secs()).unwrap_or(i64::MAX),
            ));
        }
        header_value(&c)
    }

    /// The `Set-Cookie` value that expires the cookie `name` of this family.
    pub(crate) fn removal(&self, name: String) -> HeaderValue {
        let mut c = self.build(name, "");
        c.make_removal();
        header_value(&c)
    }

    /// The bytes every `Set-Cookie` of this family spends on attributes.
    fn attributes_len(&self, max_age: Option<Duration>) -> usize {
        let mut c = self.build(String::new(), "");
        if let Some(age) = max_age {
            c.set_max_age(cookie::time::Duration::seconds(
                i64::try_from(age.as_secs()).unwrap_or(i64::MAX),
            ));
        }
        // "=" plus the attributes, as the cookie crate renders them.
        c.to_string().len()
    }

    /// `Set-Cookie` values that store `value`, with `Max-Age` when given, and clear the
    /// cookies of this family in `present` that the new value does not overwrite.
    /// Fails when the value needs more than [`MAX_CHUNKS`] chunks.
    pub fn write(
        &self,
        value: &str,
        max_age: Option<Duration>,
        present: &Present,
    ) -> Result<Vec<HeaderValue>, Error> {
        let attrs = self.attributes_len(max_age);
        let mut out = Vec::new();
        if self.name.len() + attrs + value.len() <= SET_COOKIE_BUDGET {
            out.push(self.set_cookie(self.name.clone(), value, max_age));
            out.extend(self.clear_chunks_from(0, present));
            return Ok(out);
        }
        // Chunk names are NAME.d: two more bytes than the name.
        let room = SET_COOKIE_BUDGET.saturating_sub(self.name.len() + 2 + attrs);
        let count = value.len().div_ceil(room.max(1));
        if room == 0 || count > MAX_CHUNKS {
            return Err(Error::new(ErrorKind::Internal(
                "session too large for cookies: use session.mode = \"server\"",
            )));
        }
        // Values are base64url (ASCII), so any byte offset is a character boundary.
        for (i, part) in value.as_bytes().chunks(room).enumerate() {
            let part = std::str::from_utf8(part)
                .map_err(|_| Error::new(ErrorKind::Internal("cookie value is not ASCII")))?;
            out.push(self.set_cookie(format!("{}.{i}", self.name), part, max_age));
        }
        if present.whole {
            out.push(self.removal(self.name.clone()));
        }
        out.extend(self.clear_chunks_from(count, present));
        Ok(out)
    }

    /// `Set-Cookie` values that clear every cookie of this family in `present`.
    #[must_use]
    pub fn clear(&self, present: &Present) -> Vec<HeaderValue> {
        let mut out = Vec::new();
        if present.whole {
            out.push(self.removal(self.name.clone()));
        }
        out.extend(self.clear_chunks_from(0, present));
        out
    }

    fn clear_chunks_from<'a>(
        &'a self,
        from: usize,
        present: &'a Present,
    ) -> impl Iterator<Item = HeaderValue> + 'a {
        (from..MAX_CHUNKS)
            .filter(|i| present.chunks & (1 << i) != 0)
            .map(|i| self.removal(format!("{}.{i}", self.name)))
    }
}

/// The `;` in `bytes`, counted up to `limit`: a header with that many is refused
/// whatever the exact count. memchr's SIMD search skips a session cookie's few KB
/// in a few hundred instructions (a byte-wise count took ~1,300), and a header of
/// nothing but `;` stops after `limit` steps.
fn count_semicolons(bytes: &[u8], limit: usize) -> usize {
    memchr::memchr_iter(b';', bytes).take(limit).count()
}

fn header_value(c: &Cookie<'_>) -> HeaderValue {
    // Names and values are checked tokens and base64url, so this cannot fail; an
    // empty header is the harmless fallback.
    HeaderValue::from_str(&c.to_string()).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Which cookies of one family a request carried, so a response can clear the stale
/// ones.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Present {
    /// The unchunked cookie `NAME`.
    pub whole: bool,
    /// Bit `i` set: chunk `NAME.i`.
    pub chunks: u16,
}

impl Present {
    /// True when the request carried no cookie of the family.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        !self.whole && self.chunks == 0
    }
}

/// Checks a cookie name: an RFC 6265 token (visible ASCII without separators).
pub fn check_cookie_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    if name.len() > 64 {
        return Err(format!("is {} bytes long; keep it under 64", name.len()));
    }
    if let Some(bad) = name
        .chars()
        .find(|&c| !c.is_ascii_graphic() || "()<>@,;:\\\"/[]?={}".contains(c))
    {
        return Err(format!("contains {bad:?}, which a cookie name cannot hold"));
    }
    Ok(())
}

/// The session as read from a request.
#[derive(Debug, Default)]
pub struct SessionRead {
    /// The session, when a cookie opened and decoded.
    pub session: Option<Session>,
    /// Which session cookies the request carried (to clear stale ones).
    pub present: Present,
}

/// Seals sessions into cookies and opens them again: the key ring plus the cookie
/// settings.
#[derive(Debug, Clone)]
pub struct SessionSealer {
    ring: KeyRing,
    cookie: CookieSettings,
}

impl SessionSealer {
    /// A sealer for the given ring and cookie settings.
    #[must_use]
    pub fn new(ring: KeyRing, cookie: CookieSettings) -> Self {
        Self { ring, cookie }
    }

    /// The cookie settings.
    #[must_use]
    pub fn cookie(&self) -> &CookieSettings {
        &self.cookie
    }

    /// The key ring.
    #[must_use]
    pub fn ring(&self) -> &KeyRing {
        &self.ring
    }

    /// Opens the session among a request's cookies. A cookie that does not open or
    /// decode (tampered, foreign key, truncated, bad encoding) is no session.
    #[must_use]
    pub fn open(&self, cookie: &SessionCookie<'_>) -> Option<Session> {
        let name = self.cookie.name();
        cookie.candidates().find_map(|sealed| {
            self.ring
                .open_map(name, sealed, |plain| Session::decode(plain).ok())
                .ok()
                .flatten()
        })
    }

    /// Parses a request's cookies with [`CookieNames`] and opens the session: a
    /// convenience for tools and tests (the core parses once and calls
    /// [`SessionSealer::open`]). Only an oversized cookie header is an error.
    pub fn read(&self, headers: &HeaderMap) -> Result<SessionRead, Error> {
        let cookies = CookieNames::new(self.cookie.name()).parse(headers)?;
        let cookie = cookies.session();
        Ok(SessionRead {
            session: self.open(&cookie),
            present: cookie.present,
        })
    }

    /// Seals `session` and returns the `Set-Cookie` values that store it (clearing
    /// stale chunks listed in `present`).
    pub fn set_cookies(
        &self,
        session: &Session,
        max_age: Option<Duration>,
        present: &Present,
    ) -> Result<Vec<HeaderValue>, Error> {
        let sealed = self.ring.seal(self.cookie.name(), &session.encode());
        self.cookie.write(&sealed, max_age, present)
    }

    /// The `Set-Cookie` values that end the session in the browser.
    #[must_use]
    pub fn clear_cookies(&self, present: &Present) -> Vec<HeaderValue> {
        self.cookie.clear(present)
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod example {
    /// What the module does, in a few lines.
    #[test]
    fn module_example() {
        use crate::cookies::{CookieSettings, SameSite, SessionSealer};
        use crate::seal::KeyRing;
        use crate::session::{Session, SessionId};
        use http::header::{COOKIE, HeaderMap, HeaderValue};

        let settings = CookieSettings::new("__Host-Http-bff", true, SameSite::Strict);
        let sealer = SessionSealer::new(
            KeyRing::new(vec![KeyRing::generate_key()]).unwrap(),
            settings,
        );
        let session = Session::new(
            SessionId::random(),
            "alice".into(),
            "at".into(),
            2_000_000_000,
            1_999_999_000,
        );

        // Write, then send back what the browser would.
        let set_cookies = sealer
            .set_cookies(&session, None, &Default::default())
            .unwrap();
        let mut request = HeaderMap::new();
        let pairs: Vec<&str> = set_cookies
            .iter()
            .map(|v| v.to_str().unwrap().split(';').next().unwrap())
            .collect();
        request.insert(COOKIE, HeaderValue::from_str(&pairs.join("; ")).unwrap());
        let read = sealer.read(&request).unwrap();
        assert_eq!(read.session, Some(session));
    }
}
