//! Login state: `state`, `nonce` and the PKCE verifier of one login attempt, sealed in
//! a short-lived cookie of its own, so several tabs can log in at once; and the
//! checks on `returnUrl` that keep redirects on this site.

use std::time::Duration;

use http::HeaderValue;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq as _;

use crate::cookies::{
    CookieNames, CookieSettings, LOGIN_ID_CHARS, Present, RequestCookies, SameSite,
};
use crate::seal::KeyRing;

/// How long a login attempt may take, from `/login` to `/callback`.
pub const LOGIN_TTL: Duration = Duration::from_secs(600);
/// The longest `returnUrl` accepted: it travels in a login cookie, and four of those
/// must stay well inside the browser's cookie budget.
pub const MAX_RETURN_URL: usize = 512;

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

/// The most login attempts one browser keeps pending: a new `/login` beyond it evicts
/// the oldest. Any site can start a login with a top-level navigation, so without a
/// bound it could fill the browser's cookie jar until the session stops working.
pub const MAX_PENDING_LOGINS: usize = 4;

/// The cookies that carry login attempts: `<session cookie name>-login-<id>`,
/// `SameSite=Lax` (the callback is a cross-site navigation from the IdP, on which a
/// `Strict` cookie would not be sent), ten minutes. They are read from the one parse
/// of the request's cookies ([`RequestCookies`]).
#[derive(Debug, Clone)]
pub struct LoginCookies {
    prefix: String,
    secure: bool,
}

impl LoginCookies {
    /// Login cookies named after the session cookie `base`.
    #[must_use]
    pub fn new(base: &str, secure: bool) -> Self {
        Self {
            prefix: CookieNames::new(base).login_prefix().to_owned(),
            secure,
        }
    }

    fn named(&self, name: &str) -> CookieSettings {
        CookieSettings::new(name, self.secure, SameSite::Lax)
    }

    /// The cookie name of the attempt with this `state` (its first characters).
    fn name_of(&self, state: &str) -> Option<String> {
        let id = state.get(..LOGIN_ID_CHARS)?;
        let valid = id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        valid.then(|| format!("{}{id}", self.prefix))
    }

    fn open(ring: &KeyRing, name: &str, sealed: &str) -> Option<LoginState> {
        ring.open_map(name, sealed, |bytes| {
            postcard::from_bytes::<LoginState>(bytes).ok()
        })
        .ok()
        .flatten()
    }

    /// The `Set-Cookie` value that stores a login attempt.
    #[must_use]
    pub fn set(&self, ring: &KeyRing, login: &LoginState) -> Option<HeaderValue> {
        let name = self.name_of(&login.state)?;
        let settings = self.named(&name);
        let bytes = postcard::to_allocvec(login).ok()?;
        let sealed = ring.seal(&name, &bytes);
        settings
            .write(&sealed, Some(LOGIN_TTL), &Present::default())
            .ok()?
            .into_iter()
            .next()
    }

    /// `Set-Cookie` values that make room for a new attempt: the pending attempts
    /// that are expired or do not open, and the oldest beyond
    /// [`MAX_PENDING_LOGINS`]` - 1`, are removed.
    #[must_use]
    pub fn evict_for_new(
        &self,
        ring: &KeyRing,
        cookies: &RequestCookies<'_>,
        now: u64,
    ) -> Vec<HeaderValue> {
        let mut pending: Vec<(u64, &str)> = Vec::new();
        let mut dead: Vec<&str> = Vec::new();
        for (name, value) in cookies.logins() {
            if pending.iter().any(|(_, n)| *n == name) || dead.contains(&name) {
                continue;
            }
            match Self::open(ring, name, value) {
                Some(l) if now <= l.created_at.saturating_add(LOGIN_TTL.as_secs()) => {
                    pending.push((l.created_at, name));
                }
                _ => dead.push(name),
            }
        }
        // Newest first; what does not fit goes.
        pending.sort_by(|a, b| b.cmp(a));
        let over = pending.iter().skip(MAX_PENDING_LOGINS - 1).map(|(_, n)| *n);
        dead.into_iter()
            .chain(over)
            .map(|name| self.removal(name))
            .collect()
    }

    /// Finds the attempt that `state` names and checks it. None when it is missing,
    /// sent twice, expired, tampered with or for another state.
    #[must_use]
    pub fn take(
        &self,
        ring: &KeyRing,
        cookies: &RequestCookies<'_>,
        state: &str,
        now: u64,
    ) -> Option<LoginState> {
        let name = self.name_of(state)?;
        let sealed = cookies.login(&name)?;
        Self::open(ring, &name, sealed)
            .filter(|l| bool::from(l.state.as_bytes().ct_eq(state.as_bytes())))
            .filter(|l| now <= l.created_at.saturating_add(LOGIN_TTL.as_secs()))
    }

    fn removal(&self, name: &str) -> HeaderValue {
        self.named(name).removal(name.to_owned())
    }

    /// The `Set-Cookie` value that clears the attempt `state` names (if it names one).
    #[must_use]
    pub fn clear_one(&self, state: &str) -> Vec<HeaderValue> {
        self.name_of(state)
            .map(|name| vec![self.removal(&name)])
            .unwrap_or_default()
    }

    /// `Set-Cookie` values that clear every login attempt the request carried.
    #[must_use]
    pub fn clear_all(&self, cookies: &RequestCookies<'_>) -> Vec<HeaderValue> {
        let mut names: Vec<&str> = cookies.logins().map(|(n, _)| n).collect();
        names.sort_unstable();
        names.dedup();
        names.into_iter().map(|n| self.removal(n)).collect()
    }

    /// `Set-Cookie` values that expire these login cookies (a 431 answer's, from
    /// [`CookieNames::login_names`]).
    #[must_use]
    pub fn expire(&self, names: &[String]) -> Vec<HeaderValue> {
        names.iter().map(|n| self.removal(n)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderMap;
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
        assert!(check_return_url(&format!("/{}", "a".repeat(511))).is_ok());
        assert!(check_return_url(&format!("/{}", "a".repeat(512))).is_err());
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
        let names = CookieNames::new("__Host-Http-bff");
        let parsed = names.parse(&headers).unwrap();
        for a in &attempts {
            let found = cookies.take(&ring, &parsed, &a.state, 1001);
            assert_eq!(found.as_ref(), Some(a));
            assert_eq!(cookies.clear_one(&a.state).len(), 1);
        }
        assert_eq!(cookies.clear_all(&parsed).len(), 3);
        // Expired, or a state that is not ours.
        assert!(
            cookies
                .take(&ring, &parsed, &attempts[0].state, 1000 + 601)
                .is_none()
        );
        let mut forged = attempts[0].state.clone();
        forged.push('x');
        assert!(cookies.take(&ring, &parsed, &forged, 1001).is_none());
        assert!(cookies.take(&ring, &parsed, "short", 1001).is_none());
    }

    #[test]
    fn at_most_four_attempts_stay_pending() {
        let ring = KeyRing::new(vec![KeyRing::generate_key()]).unwrap();
        let cookies = LoginCookies::new("__Host-Http-bff", true);
        let names = CookieNames::new("__Host-Http-bff");
        let mut jar: Vec<(String, String)> = vec![("other".into(), "1".into())];
        for n in 0..10u8 {
            let mut attempt = state(n);
            attempt.created_at = 1000 + u64::from(n);
            let mut headers = HeaderMap::new();
            let text: Vec<String> = jar.iter().map(|(k, v)| format!("{k}={v}")).collect();
            headers.insert(COOKIE, HeaderValue::from_str(&text.join("; ")).unwrap());
            let parsed = names.parse(&headers).unwrap();
            let mut set = cookies.evict_for_new(&ring, &parsed, 1010);
            set.push(cookies.set(&ring, &attempt).unwrap());
            for sc in set {
                let c = cookie::Cookie::parse(sc.to_str().unwrap().to_owned()).unwrap();
                jar.retain(|(k, _)| k != c.name());
                if c.max_age() != Some(cookie::time::Duration::ZERO) {
                    jar.push((c.name().to_owned(), c.value().to_owned()));
                }
            }
            let pending = jar.iter().filter(|(k, _)| k.contains("-login-")).count();
            assert_eq!(
                pending,
                usize::from(n + 1).min(MAX_PENDING_LOGINS),
                "after {n}"
            );
        }
        // The newest four are the ones kept.
        let mut headers = HeaderMap::new();
        let text: Vec<String> = jar.iter().map(|(k, v)| format!("{k}={v}")).collect();
        headers.insert(COOKIE, HeaderValue::from_str(&text.join("; ")).unwrap());
        let parsed = names.parse(&headers).unwrap();
        for n in 6..10u8 {
            assert!(
                cookies
                    .take(&ring, &parsed, &state(n).state, 1011)
                    .is_some(),
                "{n}"
            );
        }
        assert!(
            cookies
                .take(&ring, &parsed, &state(5).state, 1011)
                .is_none()
        );
        assert!(jar.iter().any(|(k, _)| k == "other"));
        // An expired attempt is evicted whatever the count.
        assert_eq!(cookies.evict_for_new(&ring, &parsed, 1000 + 700).len(), 4);
    }
}

#[cfg(test)]
mod example {
    /// What the module does, in a few lines.
    #[test]
    fn module_example() {
        use crate::login::check_return_url;

        assert_eq!(check_return_url("/app?tab=2").unwrap(), "/app?tab=2");
        assert!(check_return_url("//evil.example/").is_err());
        assert!(check_return_url("https://evil.example/").is_err());
    }
}
