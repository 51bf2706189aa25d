//! The request path check: the one place every front door's path goes through before
//! a route is chosen. The route is chosen on the path the upstream will act on, and
//! what is forwarded is exactly the path that was checked, so a path that another
//! parser could read differently (`/api/../admin`, `%2e%2e`, `..;x`, `%2F`, `\`) is
//! refused with 400 instead of being "normalised" here and read again there.

use serde::Deserialize;

/// How strict the path check is (`server.path_check`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum PathCheck {
    /// Every rule: no dot segments in any encoding, no `%2F`, `%5C`, `\`, `%00` or
    /// control characters.
    #[default]
    Strict,
    /// As strict, but `%2F` passes (for upstreams that need encoded slashes); a
    /// dot segment it would form once decoded is still refused.
    AllowEncodedSlash,
}

/// Why a path was refused (words safe to show).
pub type PathError = &'static str;

/// How many rounds of percent-decoding are checked: an upstream that decodes twice
/// must not find a dot segment either.
const DECODE_ROUNDS: usize = 3;

/// Checks a request path (without the query). Ok when it may be routed and
/// forwarded as it is.
pub fn check_path(path: &str, mode: PathCheck) -> Result<(), PathError> {
    if !path.starts_with('/') {
        return Err("the request path must start with /");
    }
    let mut current: Vec<u8> = path.as_bytes().to_vec();
    for _ in 0..=DECODE_ROUNDS {
        check_bytes(&current, mode)?;
        if !current.contains(&b'%') {
            break;
        }
        let decoded = percent_decode(&current);
        if decoded == current {
            break;
        }
        current = decoded;
    }
    Ok(())
}

/// One round of the rules, on the path as received or as decoded so far.
fn check_bytes(path: &[u8], mode: PathCheck) -> Result<(), PathError> {
    if path
        .iter()
        .any(|&b| b == b'\\' || b == 0 || b.is_ascii_control())
    {
        return Err("the request path holds a backslash or a control character");
    }
    for window in path.windows(3) {
        if window[0] != b'%' {
            continue;
        }
        let code = [
            window[1].to_ascii_uppercase(),
            window[2].to_ascii_uppercase(),
        ];
        match &code {
            b"5C" | b"00" => return Err("the request path holds %5C or %00"),
            b"2F" if mode == PathCheck::Strict => {
                return Err("the request path holds an encoded slash (%2F)");
            }
            // An encoded control character.
            [b'0' | b'1', _] | b"7F" if code[1].is_ascii_hexdigit() => {
                return Err("the request path holds an encoded control character");
            }
            _ => {}
        }
    }
    for segment in path.split(|&b| b == b'/') {
        // `..;x` and `.;x`: a path parameter (Tomcat and others) after a dot segment.
        let base = segment
            .iter()
            .position(|&b| b == b';')
            .map_or(segment, |at| &segment[..at]);
        if base == b"." || base == b".." || is_encoded_dot_segment(base) {
            return Err("the request path holds a . or .. segment");
        }
    }
    Ok(())
}

/// `%2e`, `.%2E`, `%2e%2e`…: a dot segment spelt with percent-encoding.
fn is_encoded_dot_segment(segment: &[u8]) -> bool {
    let mut dots = 0;
    let mut rest = segment;
    while !rest.is_empty() {
        match rest {
            [b'.', tail @ ..] => rest = tail,
            [b'%', b'2', e, tail @ ..] if e.eq_ignore_ascii_case(&b'e') => rest = tail,
            _ => return false,
        }
        dots += 1;
    }
    (1..=2).contains(&dots)
}

/// Percent-decodes what decodes (`%5F` → `_`) and keeps the rest as it is: how a
/// lenient reader of paths and cookie names sees them.
pub(crate) fn percent_decode(bytes: &[u8]) -> Vec<u8> {
    let hex = |b: u8| char::from(b).to_digit(16);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if let [b'%', h, l, ..] = bytes[i..] {
            if let (Some(h), Some(l)) = (hex(h), hex(l)) {
                out.push(u8::try_from(h * 16 + l).unwrap_or(b'%'));
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_paths_pass() {
        for ok in [
            "/",
            "/api/items",
            "/api/items/",
            "/a.b/c..d/...",
            "/files/%20name",
            "/q%3Fx",
            "/%E2%82%AC",
            "/.well-known/x",
            "/a/.hidden",
            "/a/..b",
            "/a;b=c/d",
        ] {
            assert_eq!(check_path(ok, PathCheck::Strict), Ok(()), "{ok}");
        }
    }

    #[test]
    fn escapes_are_refused_in_every_spelling() {
        for bad in [
            "/sp/../admin",
            "/sp/..",
            "/sp/./x",
            "/raw/../pub/x",
            "/%2e%2e/x",
            "/%2E%2E/x",
            "/.%2e/x",
            "/%2e./x",
            "/%2e/x",
            "/a/..%2fadmin",
            "/a/..%2Fadmin",
            "/a/%2e%2e%2fadmin",
            "/a/..;/admin",
            "/a/..;x=1/admin",
            "/a/.;/admin",
            "/a/%2e%2e;/admin",
            "/a/..%3b/admin",
            "/a/%252e%252e/admin",
            "/a/%25252e%25252e/admin",
            "/a%5c..%5cadmin",
            "/a%5Cb",
            "/a\\b",
            "/a%00b",
            "/a%0ab",
            "/a%0Db",
            "/a%7fb",
            "/a%2Fb",
            "/a%252Fb",
            "api",
            "",
        ] {
            assert!(check_path(bad, PathCheck::Strict).is_err(), "{bad}");
        }
    }

    #[test]
    fn encoded_slashes_only_when_allowed_and_never_into_a_dot_segment() {
        let allow = PathCheck::AllowEncodedSlash;
        assert_eq!(check_path("/files/a%2Fb%2fc", allow), Ok(()));
        for bad in ["/a/..%2fadmin", "/a%2f..%2fadmin", "/a/%2e%2e%2f", "/a%5Cb"] {
            assert!(check_path(bad, allow).is_err(), "{bad}");
        }
    }
}

#[cfg(test)]
mod example {
    /// What the module does, in a few lines.
    #[test]
    fn module_example() {
        use crate::paths::{PathCheck, check_path};

        assert!(check_path("/api/items/42", PathCheck::Strict).is_ok());
        assert!(check_path("/sp/../admin", PathCheck::Strict).is_err());
        assert!(check_path("/api/%2E%2e/admin", PathCheck::Strict).is_err());
        assert!(check_path("/files/a%2Fb", PathCheck::Strict).is_err());
        assert!(check_path("/files/a%2Fb", PathCheck::AllowEncodedSlash).is_ok());
    }
}
