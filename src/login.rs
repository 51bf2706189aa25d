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
    /// What the callback checks the ID token against (`acr_values`, `max_age`).
    pub required: AuthRequirement,
    /// The login was silent (`prompt=none`): an IdP answer that it needs the user
    /// goes back to the SPA as `?error=login_required`.
    pub silent: bool,
}

impl std::fmt::Debug for LoginState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginState")
            .field("return_url", &self.return_url)
            .field("created_at", &self.created_at)
            .finish_non_exhaustive()
    }
}

/// How far an ID token's `auth_time` may look older than `max_age` allows: clocks
/// of the IdP and the BFF differ a little.
pub const AUTH_TIME_LEEWAY: u64 = 30;

/// An authentication the session must show (step-up, RFC 9470): one of the `acr`
/// values, and an `auth_time` no older than `max_age` seconds. Empty means none.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthRequirement {
    /// Accepted `acr` values; empty: any.
    pub acr: Vec<String>,
    /// The longest time since the user authenticated, in seconds.
    pub max_age: Option<u64>,
}

impl AuthRequirement {
    /// Whether anything is required.
    #[must_use]
    pub fn any(&self) -> bool {
        !self.acr.is_empty() || self.max_age.is_some()
    }

    /// Whether ID token `claims` meet it at `now` (Unix seconds). A required claim
    /// that is missing or not of its type fails.
    #[must_use]
    pub fn is_met(&self, claims: Option<&serde_json::Value>, now: u64) -> bool {
        if !self.acr.is_empty() {
            let acr = claims.and_then(|c| c.get("acr")).and_then(|v| v.as_str());
            if !acr.is_some_and(|a| self.acr.iter().any(|want| want == a)) {
                return false;
            }
        }
        if let Some(max_age) = self.max_age {
            let auth_time = claims
                .and_then(|c| c.get("auth_time"))
                .and_then(serde_json::Value::as_u64);
            let Some(auth_time) = auth_time else {
                return false;
            };
            if auth_time
                .saturating_add(max_age)
                .saturating_add(AUTH_TIME_LEEWAY)
                < now
            {
                return false;
            }
        }
        true
    }

    /// The `acr_values` parameter: the values separated by spaces, or None.
    #[must_use]
    pub fn acr_values(&self) -> Option<String> {
        (!self.acr.is_empty()).then(|| self.acr.join(" "))
    }
}

/// The longest `acr_values` or `login_hint` accepted on `/login`.
pub const MAX_LOGIN_PARAM: usize = 256;

/// The step-up and silent-login parameters of `/login` (DESIGN.md's `/bff/login`
/// row), checked: they go to the IdP as given, and the callback holds the ID token
/// to `acr_values` and `max_age`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoginParams {
    /// `prompt`: `none`, or any of `login`, `consent`, `select_account`.
    pub prompt: Option<String>,
    /// `acr_values` and `max_age`.
    pub required: AuthRequirement,
    /// `login_hint`, passed on as is.
    pub login_hint: Option<String>,
}

impl LoginParams {
    /// Reads them from the request's query pairs; each at most once.
    pub fn parse(pairs: &[(String, String)]) -> Result<Self, &'static str> {
        let one = |name: &str| -> Result<Option<&str>, &'static str> {
            let mut values = pairs.iter().filter(|(k, _)| k == name).map(|(_, v)| v);
            let first = values.next().map(String::as_str);
            if values.next().is_some() {
                return Err("prompt, acr_values, max_age and login_hint may each be given once");
            }
            Ok(first)
        };
        let mut out = Self::default();
        if let Some(prompt) = one("prompt")? {
            let words: Vec<&str> = prompt.split(' ').collect();
            let known = words
                .iter()
                .all(|w| ["none", "login", "consent", "select_account"].contains(w));
            if !known || (words.contains(&"none") && words.len() > 1) {
                return Err(
                    "prompt must be none, or any of login, consent and select_account separated by spaces",
                );
            }
            out.prompt = Some(prompt.to_owned());
        }
        if let Some(acr) = one("acr_values")? {
            if acr.len() > MAX_LOGIN_PARAM || !is_token_list(acr) {
                return Err(
                    "acr_values must be up to 256 visible ASCII characters, values separated by single spaces",
                );
            }
            out.required.acr = acr.split(' ').map(str::to_owned).collect();
        }
        if let Some(max_age) = one("max_age")? {
            let secs = (1..=10)
                .contains(&max_age.len())
                .then(|| max_age.parse::<u64>().ok())
                .flatten()
                .filter(|_| max_age.bytes().all(|b| b.is_ascii_digit()))
                .ok_or("max_age must be a number of seconds")?;
            out.required.max_age = Some(secs);
        }
        if let Some(hint) = one("login_hint")? {
            if hint.is_empty() || hint.len() > MAX_LOGIN_PARAM || hint.chars().any(char::is_control)
            {
                return Err("login_hint must be 1 to 256 characters without control characters");
            }
            out.login_hint = Some(hint.to_owned());
        }
        Ok(out)
    }

    /// The parameter names read here.
    pub const NAMES: [&'static str; 4] = ["prompt", "acr_values", "max_age", "login_hint"];

    /// Whether the login is silent (`prompt=none`).
    #[must_use]
    pub fn silent(&self) -> bool {
        self.prompt.as_deref() == Some("none")
    }

    /// These, each one that is unset taken from `defaults`.
    #[must_use]
    pub fn or(self, defaults: &Self) -> Self {
        Self {
            prompt: self.prompt.or_else(|| defaults.prompt.clone()),
            required: AuthRequirement {
                acr: if self.required.acr.is_empty() {
                    defaults.required.acr.clone()
                } else {
                    self.required.acr
                },
                max_age: self.required.max_age.or(defaults.required.max_age),
            },
            login_hint: self.login_hint.or_else(|| defaults.login_hint.clone()),
        }
    }

    /// The authorization request's query pairs for what is set.
    #[must_use]
    pub fn pairs(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if let Some(p) = &self.prompt {
            out.push(("prompt", p.clone()));
        }
        if let Some(acr) = self.required.acr_values() {
            out.push(("acr_values", acr));
        }
        if let Some(m) = self.required.max_age {
            out.push(("max_age", m.to_string()));
        }
        if let Some(h) = &self.login_hint {
            out.push(("login_hint", h.clone()));
        }
        out
    }
}

/// Values of visible ASCII (no `"` or `\`) separated by single spaces.
#[must_use]
pub fn is_token_list(text: &str) -> bool {
    !text.is_empty()
        && text.split(' ').all(|v| {
            !v.is_empty()
                && v.bytes()
                    .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
        })
}

/// Where a login that the IdP answered with an error goes: the checked `returnUrl`
/// with `error=CODE` added to its query (before any fragment).
#[must_use]
pub fn return_with_error(return_url: &str, code: &str) -> String {
    let (path, fragment) = match return_url.split_once('#') {
        Some((p, f)) => (p, Some(f)),
        None => (return_url, None),
    };
    let pair: String = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("error", code)
        .finish();
    let sep = if path.contains('?') { '&' } else { '?' };
    let mut out = format!("{path}{sep}{pair}");
    if let Some(f) = fragment {
        out.push('#');
        out.push_str(f);
    }
    out
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

    #[test]
    fn auth_requirements() {
        let claims = serde_json::json!({"acr": "urn:example:mfa", "auth_time": 1000});
        let none = AuthRequirement::default();
        assert!(!none.any() && none.is_met(None, 99_999));
        let mfa = AuthRequirement {
            acr: vec!["urn:example:hwk".into(), "urn:example:mfa".into()],
            max_age: None,
        };
        assert!(mfa.is_met(Some(&claims), 99_999));
        assert!(!mfa.is_met(None, 0));
        assert!(!mfa.is_met(Some(&serde_json::json!({"acr": 1})), 0));
        assert!(!mfa.is_met(Some(&serde_json::json!({"acr": "urn:example:password"})), 0));
        assert_eq!(mfa.acr_values().unwrap(), "urn:example:hwk urn:example:mfa");
        let recent = AuthRequirement {
            acr: Vec::new(),
            max_age: Some(300),
        };
        // auth_time + max_age, plus the leeway for clocks.
        assert!(recent.is_met(Some(&claims), 1000 + 300 + AUTH_TIME_LEEWAY));
        assert!(!recent.is_met(Some(&claims), 1000 + 300 + AUTH_TIME_LEEWAY + 1));
        assert!(!recent.is_met(Some(&serde_json::json!({"auth_time": "1000"})), 1000));
        assert!(!recent.is_met(Some(&serde_json::json!({})), 0));
    }

    #[test]
    fn errors_go_back_on_the_return_url() {
        assert_eq!(
            return_with_error("/", "login_required"),
            "/?error=login_required"
        );
        assert_eq!(
            return_with_error("/a?b=c#frag", "access_denied"),
            "/a?b=c&error=access_denied#frag"
        );
        assert_eq!(return_with_error("/a#x?y", "e"), "/a?error=e#x?y");
    }

    #[test]
    fn login_parameters() {
        let pairs = |q: &str| -> Vec<(String, String)> {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        };
        let p = LoginParams::parse(&pairs("prompt=none&max_age=60&acr_values=a+b")).unwrap();
        assert!(p.silent());
        assert_eq!(p.required.acr, ["a", "b"]);
        assert_eq!(p.required.max_age, Some(60));
        let configured = LoginParams::parse(&pairs("prompt=consent&login_hint=x")).unwrap();
        let merged = p.or(&configured);
        assert_eq!(merged.prompt.as_deref(), Some("none"));
        assert_eq!(merged.login_hint.as_deref(), Some("x"));
        assert_eq!(
            merged.pairs(),
            [
                ("prompt", "none".to_owned()),
                ("acr_values", "a b".to_owned()),
                ("max_age", "60".to_owned()),
                ("login_hint", "x".to_owned())
            ]
        );
        for bad in [
            "prompt=none+login",
            "prompt=Login",
            "max_age=+5",
            "max_age=",
            "acr_values=a%5Cb",
            "acr_values=+a",
            "login_hint=",
            "max_age=1&max_age=1",
        ] {
            assert!(LoginParams::parse(&pairs(bad)).is_err(), "{bad}");
        }
        assert!(LoginParams::parse(&pairs("prompt=login+consent+select_account")).is_ok());
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
            required: AuthRequirement::default(),
            silent: false,
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
