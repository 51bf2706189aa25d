//! Login state: `state`, `nonce` and the PKCE verifier of one login attempt, sealed in
//! a short-lived cookie of its own, so several tabs can log in at once; and the
//! checks on `returnUrl` that keep redirects on this site.
//!
//! ```
//! use bff_proxy::login::check_return_url;
//!
//! assert_eq!(check_return_url("/app?tab=2").unwrap(), "/app?tab=2");
//! assert!(check_return_url("//evil.example/").is_err());
//! assert!(check_return_url("https://evil.example/").is_err());
//! ```

use std::time::Duration;

use http::HeaderMap;
use http::HeaderValue;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq as _;

use crate::cookies::{CookieSettings, Present, SameSite};
use crate::seal::KeyRing;

/// How long a login attempt may take, from `/login` to `/callback`.
pub const LOGIN_TTL: Duration = Duration::from_secs(600);
/// The longest `returnUrl` accepted.
const MAX_RETURN_URL: usize = 2048;
/// Characters of `state` that name the login cookie.
const NAME_CHARS: usize = 16;

/// One login attempt.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginState {
    /// The `state` parameter.
    pub state: String,
    /// The `nonce` expected in the ID token.
    pub nonce: String,
    /// The PKCE code verifier.
    pub verifier: String,
    /// Where to go after login (checked local path).
    pub return_url: String,
    /// When the attempt started (Unix seconds).
    pub created_at: u64,
}

impl std::fmt::Debug for LoginState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginState")
            .field("return_url", &self.return_url)
            .field("created_at", &self.created_at)
            .finish_non_exhaustive()
    }
}

/// Checks a `returnUrl`: a local path (`/…`), not `//host` or `/\host`, no scheme, no
/// control characters or backslashes, bounded length. Empty means `/`.
pub fn check_return_url(raw: &str) -> Result<String, &'static str> {
    if raw.is_empty() {
        return Ok("/".into());
    }
    if raw.len() > MAX_RETURN_URL {
        return Err("returnUrl is too long");
    }
    if !raw.starts_with('/') {
        return Err("returnUrl must be a local path starting with /");
    }
    if raw.starts_with("//") || raw.contains('\\') {
        return Err("returnUrl must not name another host");
    }
    if raw.chars().any(|c| c.is_control() || c == ' ') {
        return Err("returnUrl must not contain control characters or spaces");
    }
    Ok(raw.to_owned())
}

/// The cookies that carry login attempts: `<session cookie name>-login-<id>`,
/// `SameSite=Lax` (the callback is a cross-site navigation from the IdP, on which a
/// `Strict` cookie would not be sent), ten minutes.
#[derive(Debug, Clone)]
pub struct LoginCookies {
    base: String,
    secure: bool,
}

impl LoginCookies {
    /// Login cookies named after the session cookie `base`.
    #[must_use]
    pub fn new(base: &str, secure: bool) -> Self {
        Self {
            base: base.to_owned(),
            secure,
        }
    }

    /// The prefix every login cookie name starts with.
    #[must_use]
    pub fn prefix(&self) -> String {
        format!("{}-login-", self.base)
    }

    fn settings(&self, state: &str) -> Option<CookieSettings> {
        let id: String = state.chars().take(NAME_CHARS).collect();
        let valid = id.len() == NAME_CHARS
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        valid.then(|| {
            CookieSettings::new(format!("{}{id}", self.prefix()), self.secure, SameSite::Lax)
        })
    }

    /// The `Set-Cookie` value that stores a login attempt.
    #[must_use]
    pub fn set(&self, ring: &KeyRing, login: &LoginState) -> Option<HeaderValue> {
        let settings = self.settings(&login.state)?;
        let bytes = postcard::to_allocvec(login).ok()?;
        let sealed = ring.seal(settings.name(), &bytes);
        settings
            .write(&sealed, Some(LOGIN_TTL), &Present::default())
            .ok()?
            .into_iter()
            .next()
    }

    /// Finds the attempt that `state` names, checks it, and returns it with the
    /// `Set-Cookie` value that clears its cookie. None when it is missing, expired,
    /// tampered with or for another state.
    pub fn take(
        &self,
        ring: &KeyRing,
        headers: &HeaderMap,
        state: &str,
        now: u64,
    ) -> (Option<LoginState>, Vec<HeaderValue>) {
        let Some(settings) = self.settings(state) else {
            return (None, Vec::new());
        };
        let Ok(read) = settings.read(headers) else {
            return (None, Vec::new());
        };
        let clear = settings.clear(&read.present);
        let login = read
            .whole
            .and_then(|sealed| ring.open(settings.name(), sealed).ok())
            .and_then(|bytes| postcard::from_bytes::<LoginState>(&bytes).ok())
            .filter(|l| bool::from(l.state.as_bytes().ct_eq(state.as_bytes())))
            .filter(|l| now <= l.created_at.saturating_add(LOGIN_TTL.as_secs()));
        (login, clear)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::COOKIE;

    #[test]
    fn return_urls() {
        for ok in ["/", "/a", "/a/b?c=d#e", "/%2F%2Fencoded-is-a-path"] {
            assert_eq!(check_return_url(ok).unwrap(), ok);
        }
        assert_eq!(check_return_url("").unwrap(), "/");
        for bad in [
            "//evil.example",
            "/\\evil.example",
            "\\\\evil",
            "https://evil.example/",
            "javascript:alert(1)",
            "evil.example",
            "/a\nb",
            "/a\u{0}",
            "/a b",
        ] {
            assert!(check_return_url(bad).is_err(), "{bad:?}");
        }
        assert!(check_return_url(&format!("/{}", "a".repeat(3000))).is_err());
    }

    fn state(n: u8) -> LoginState {
        LoginState {
            state: format!(
                "{}{}",
                char::from(b'A' + n),
                "bcdefghijklmnopqrstuvwxyz0123456789"
            ),
            nonce: "n".into(),
            verifier: "v".repeat(43),
            return_url: format!("/tab{n}"),
            created_at: 1000,
        }
    }

    #[test]
    fn several_attempts_live_side_by_side() {
        let ring = KeyRing::new(vec![KeyRing::generate_key()]).unwrap();
        let cookies = LoginCookies::new("__Host-Http-bff", true);
        let attempts: Vec<LoginState> = (0..3).map(state).collect();
        let pairs: Vec<String> = attempts
            .iter()
            .map(|a| {
                let sc = cookies.set(&ring, a).unwrap();
                let text = sc.to_str().unwrap();
                assert!(
                    text.contains("SameSite=Lax") && text.contains("Max-Age=600"),
                    "{text}"
                );
                text.split(';').next().unwrap().to_owned()
            })
            .collect();
        let mut headers = HeaderMap::new();
        headers.insert(COOKIE, HeaderValue::from_str(&pairs.join("; ")).unwrap());
        for a in &attempts {
            let (found, clear) = cookies.take(&ring, &headers, &a.state, 1001);
            assert_eq!(found.as_ref(), Some(a));
            assert_eq!(clear.len(), 1);
        }
        // Expired, or a state that is not ours.
        assert!(
            cookies
                .take(&ring, &headers, &attempts[0].state, 1000 + 601)
                .0
                .is_none()
        );
        let mut forged = attempts[0].state.clone();
        forged.push('x');
        assert!(cookies.take(&ring, &headers, &forged, 1001).0.is_none());
        assert!(cookies.take(&ring, &headers, "short", 1001).0.is_none());
    }
}
