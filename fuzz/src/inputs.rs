//! Where inputs come from: a dictionary of tokens each target's parser cares about,
//! mutations of earlier inputs, and generators that build well-formed-looking
//! inputs (cookie headers, paths, token responses, logout tokens, configs).

use arbitrary::Unstructured;
use bff_proxy::fuzzing::{seeds, sign_logout_token};
use rand::rngs::StdRng;
use rand::{Rng as _, RngCore as _};

/// Tokens that mean something to a target, spliced in by mutations.
pub(crate) fn dictionary(target: &str) -> Vec<&'static [u8]> {
    let words: &[&str] = match target {
        "cookie_header" | "sealed_cookie" => &[
            "__Host-Http-bff",
            "__Host-Http-bff.0",
            "__Host-Http-bff.7",
            "__Host-Http-bff-login-",
            "ABCDEFGHIJKLMNOP",
            "=",
            "; ",
            ";",
            "\t",
            " ",
            "\"",
            "%5F",
            "%25",
            "\u{2000}",
            "\u{00A0}",
            "\u{3000}",
            "\u{0085}",
            "\u{200B}",
            "\u{FEFF}",
            "\u{FF3F}",
            "__HOST-HTTP-BFF",
            "AQ",
            "A",
        ],
        "path" => &[
            "/", "..", ".", "%2e", "%2E", "%2f", "%2F", "%5c", "%5C", "%00", "%0a", ";", "%3b",
            "%25", "%252e", "\\", "api", "%", "//", "%u002e",
        ],
        "token_response" => &[
            "\"access_token\"",
            "\"refresh_token\"",
            "\"expires_in\"",
            "\"token_type\"",
            "\"id_token\"",
            "\"scope\"",
            "\"Bearer\"",
            ":",
            ",",
            "\"\"",
            "null",
            "true",
            "1e400",
            "-1",
            "\"3599\"",
            "18446744073709551616",
            "{",
            "}",
            "[",
            "]",
        ],
        "logout_token" => &[
            "\"iss\"",
            "\"aud\"",
            "\"iat\"",
            "\"exp\"",
            "\"jti\"",
            "\"sid\"",
            "\"sub\"",
            "\"nonce\"",
            "\"events\"",
            "\"http://schemas.openid.net/event/backchannel-logout\"",
            "1900000000",
            "1899999700",
            "{}",
            ".",
            "eyJ",
            "null",
        ],
        "config" => &[
            "[server]\n",
            "[oidc]\n",
            "[session]\n",
            "[refresh]\n",
            "[store]\n",
            "[[routes]]\n",
            " = ",
            "\"1001y\"",
            "\"0s\"",
            "\"18446744073709551615s\"",
            "\"file:/dev/zero\"",
            "\"file:/\"",
            "\"env:NOPE\"",
            "\"rediss://x\"",
            "-1",
            "99999999999999999999",
            "[]",
            "{}",
            "\"\"",
            "\n",
        ],
        _ => &[],
    };
    words.iter().map(|w| w.as_bytes()).collect()
}

/// One to eight stacked mutations of `parent`.
pub(crate) fn mutate(parent: &[u8], pool: &[Vec<u8>], dict: &[&[u8]], rng: &mut StdRng) -> Vec<u8> {
    const INTERESTING: &[u8] = &[0, 1, 0x7f, 0x80, 0xff, b'%', b'.', b'/', b';', b'=', b' '];
    let mut out = parent.to_vec();
    for _ in 0..rng.gen_range(1..=8) {
        let len = out.len();
        match rng.gen_range(0..8) {
            0 if len > 0 => {
                let at = rng.gen_range(0..len);
                out[at] ^= 1 << rng.gen_range(0..8);
            }
            1 if len > 0 => {
                let at = rng.gen_range(0..len);
                out[at] = INTERESTING[rng.gen_range(0..INTERESTING.len())];
            }
            2 => {
                let at = rng.gen_range(0..=len);
                let mut bytes = vec![0u8; rng.gen_range(1..8)];
                rng.fill_bytes(&mut bytes);
                out.splice(at..at, bytes);
            }
            3 if len > 0 => {
                let from = rng.gen_range(0..len);
                let to = (from + rng.gen_range(1..=16)).min(len);
                out.drain(from..to);
            }
            4 if len > 0 => {
                let from = rng.gen_range(0..len);
                let to = (from + rng.gen_range(1..=32)).min(len);
                let copy = out[from..to].to_vec();
                let at = rng.gen_range(0..=out.len());
                out.splice(at..at, copy);
            }
            5 if !pool.is_empty() => {
                let other = &pool[rng.gen_range(0..pool.len())];
                if !other.is_empty() {
                    let from = rng.gen_range(0..other.len());
                    let to = (from + rng.gen_range(1..=64)).min(other.len());
                    let at = rng.gen_range(0..=out.len());
                    out.splice(at..at, other[from..to].iter().copied());
                }
            }
            _ if !dict.is_empty() => {
                let word = dict[rng.gen_range(0..dict.len())];
                let at = rng.gen_range(0..=out.len());
                if rng.gen_bool(0.5) || out.is_empty() {
                    out.splice(at..at, word.iter().copied());
                } else {
                    let to = (at + word.len()).min(out.len());
                    out.splice(at..to, word.iter().copied());
                }
            }
            _ => {}
        }
        if out.len() > 16 * 1024 {
            out.truncate(16 * 1024);
        }
    }
    out
}

/// A structured input for `target`, built with `arbitrary` from random bytes.
pub(crate) fn generate(target: &str, rng: &mut StdRng) -> Vec<u8> {
    let mut raw = vec![0u8; rng.gen_range(16..512)];
    rng.fill_bytes(&mut raw);
    let mut u = Unstructured::new(&raw);
    match target {
        "cookie_header" => gen_cookie_header(&mut u),
        "path" => gen_path(&mut u),
        "token_response" => gen_token_response(&mut u),
        "logout_token" => gen_logout(&mut u, rng),
        "config" => gen_config(&mut u),
        _ => {
            let mode: u8 = u.arbitrary().unwrap_or(0);
            let mut out = vec![mode];
            let text: String = u.arbitrary().unwrap_or_default();
            out.extend_from_slice(text.as_bytes());
            out
        }
    }
}

fn pick<'a>(u: &mut Unstructured<'_>, from: &[&'a str]) -> &'a str {
    u.choose(from).copied().unwrap_or("")
}

fn gen_cookie_header(u: &mut Unstructured<'_>) -> Vec<u8> {
    const NAMES: &[&str] = &[
        "__Host-Http-bff",
        "__Host-Http-bff.0",
        "__Host-Http-bff.1",
        "__Host-Http-bff.2",
        "__Host-Http-bff.9",
        "__Host-Http-bff.x",
        "__Host-Http-bff-login-ABCDEFGHIJKLMNOP",
        "__Host-Http-bff-login-short",
        "__host-http-bff",
        "%5F_Host-Http-bff",
        "\"__Host-Http-bff\"",
        "theme",
        "",
    ];
    const SPACES: &[&str] = &[
        "", " ", "\t", "\u{2000}", "\u{00A0}", "\u{3000}", "\u{0085}", "\u{200B}", "\u{FEFF}",
    ];
    const SEPARATORS: &[&str] = &["; ", ";", ";\t", " ; ", "\n"];
    let mut out = String::new();
    let count = u.int_in_range(0..=12).unwrap_or(1);
    for i in 0..count {
        if i > 0 {
            out.push_str(pick(u, SEPARATORS));
        }
        out.push_str(pick(u, SPACES));
        out.push_str(pick(u, NAMES));
        out.push_str(pick(u, SPACES));
        if u.ratio(9, 10).unwrap_or(true) {
            out.push('=');
        }
        let value: String = u.arbitrary().unwrap_or_default();
        out.push_str(&value);
    }
    out.into_bytes()
}

fn gen_path(u: &mut Unstructured<'_>) -> Vec<u8> {
    const SEGMENTS: &[&str] = &[
        "api",
        "a",
        "",
        ".",
        "..",
        "%2e",
        "%2E%2e",
        ".%2e",
        "..;x",
        ".;",
        "%2e%2e%3b",
        "a%2fb",
        "..%2f",
        "a%5cb",
        "a\\b",
        "a%00",
        "%252e%252e",
        "%25252e",
        "...",
        "..a",
        "%",
        "%zz",
    ];
    let mut out = String::from("/");
    let count = u.int_in_range(0..=8).unwrap_or(1);
    for i in 0..count {
        if i > 0 {
            out.push('/');
        }
        out.push_str(pick(u, SEGMENTS));
    }
    out.into_bytes()
}

fn json_value(u: &mut Unstructured<'_>) -> String {
    match u.int_in_range(0..=9).unwrap_or(0) {
        0 => "null".into(),
        1 => "\"\"".into(),
        2 => format!("{}", u.arbitrary::<u64>().unwrap_or(0)),
        3 => format!("{}", u.arbitrary::<i64>().unwrap_or(0)),
        4 => format!("{:?}", u.arbitrary::<f64>().unwrap_or(0.0)),
        5 => format!("\"{}\"", u.arbitrary::<u32>().unwrap_or(0)),
        6 => "[]".into(),
        7 => "{}".into(),
        8 => "true".into(),
        _ => serde_json_string(&u.arbitrary::<String>().unwrap_or_default()),
    }
}

fn serde_json_string(text: &str) -> String {
    let escaped: String = text
        .chars()
        .flat_map(|c| match c {
            '"' => vec!['\\', '"'],
            '\\' => vec!['\\', '\\'],
            c if (c as u32) < 0x20 => format!("\\u{:04x}", c as u32).chars().collect(),
            c => vec![c],
        })
        .collect();
    format!("\"{escaped}\"")
}

fn gen_token_response(u: &mut Unstructured<'_>) -> Vec<u8> {
    const FIELDS: &[&str] = &[
        "access_token",
        "refresh_token",
        "expires_in",
        "token_type",
        "id_token",
        "scope",
        "error",
    ];
    let mut parts = Vec::new();
    let count = u.int_in_range(0..=7).unwrap_or(2);
    for _ in 0..count {
        let field = pick(u, FIELDS);
        parts.push(format!("\"{field}\":{}", json_value(u)));
    }
    format!("{{{}}}", parts.join(",")).into_bytes()
}

fn gen_logout(u: &mut Unstructured<'_>, rng: &mut StdRng) -> Vec<u8> {
    const FIELDS: &[&str] = &[
        "iss", "aud", "iat", "exp", "jti", "sid", "sub", "nonce", "events",
    ];
    let mut claims = serde_json::Map::new();
    claims.insert("iss".into(), "https://idp.example.com".into());
    claims.insert("aud".into(), "bff".into());
    claims.insert(
        "iat".into(),
        (1_900_000_000 - u64::from(u.int_in_range(0..=400u32).unwrap_or(0))).into(),
    );
    claims.insert("jti".into(), "j".into());
    claims.insert(
        "events".into(),
        serde_json::json!({"http://schemas.openid.net/event/backchannel-logout": {}}),
    );
    let count = u.int_in_range(0..=4).unwrap_or(1);
    for _ in 0..count {
        let field = pick(u, FIELDS);
        let value: serde_json::Value =
            serde_json::from_str(&json_value(u)).unwrap_or(serde_json::Value::Null);
        if u.ratio(1, 3).unwrap_or(false) {
            claims.remove(field);
        } else {
            claims.insert(field.into(), value);
        }
    }
    let claims = serde_json::Value::Object(claims);
    // Signing is slow: a signed token one time in fifty, the claim rules otherwise.
    if rng.gen_range(0..50) == 0 {
        let mut out = vec![0u8];
        out.extend_from_slice(sign_logout_token(&claims).as_bytes());
        out
    } else {
        let mut out = vec![1u8];
        out.extend_from_slice(claims.to_string().as_bytes());
        out
    }
}

/// `key = value` in `[section]` of a TOML text: the existing line replaced, or a
/// line added under the section header, or the section added.
fn set_in_section(text: &str, section: &str, key: &str, value: &str) -> String {
    let header = format!("[{section}]");
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let Some(start) = lines.iter().position(|l| l.trim() == header) else {
        return format!("{text}\n{header}\n{key} = {value}\n");
    };
    let end = lines[start + 1..]
        .iter()
        .position(|l| l.trim_start().starts_with('['))
        .map_or(lines.len(), |i| start + 1 + i);
    let line = format!("{key} = {value}");
    match lines[start + 1..end]
        .iter()
        .position(|l| l.split('=').next().is_some_and(|k| k.trim() == key))
    {
        Some(i) => lines[start + 1 + i] = line,
        None => lines.insert(start + 1, line),
    }
    lines.join("\n")
}

fn gen_config(u: &mut Unstructured<'_>) -> Vec<u8> {
    const SETTINGS: &[&str] = &[
        "server.listen",
        "server.public_url",
        "server.prefix",
        "server.shutdown_timeout",
        "server.threads",
        "server.header_timeout",
        "server.idle_timeout",
        "server.max_connections",
        "server.trusted_proxies",
        "server.path_check",
        "oidc.issuer",
        "oidc.client_auth",
        "oidc.scopes",
        "oidc.auth_params",
        "oidc.revocation_endpoint",
        "session.cookie_name",
        "session.keys",
        "session.absolute_lifetime",
        "session.max_refreshes",
        "session.mode",
        "refresh.skew",
        "refresh.grace",
        "refresh.timeout",
        "store.kind",
        "store.url",
        "store.timeout",
        "csrf.header",
        "dev.access_token_lifetime",
    ];
    const VALUES: &[&str] = &[
        "\"1001y\"",
        "\"400d\"",
        "\"0s\"",
        "\"1ms\"",
        "\"12h\"",
        "\"18446744073709551615s\"",
        "-1",
        "0",
        "99999999999999999999",
        "\"\"",
        "[]",
        "[\"10.0.0.0/33\"]",
        "[\"::1\"]",
        "{}",
        "true",
        "\"env:NOPE\"",
        "\"file:/dev/zero\"",
        "\"file:/\"",
        "\"rediss://x\"",
        "\"http://0.0.0.0:1\"",
        "\"strict\"",
        "\"allow_encoded_slash\"",
        "\"__Host-\\u2000bff\"",
    ];
    let base = seeds("config").into_iter().nth(2).unwrap_or_default();
    let mut text = String::from_utf8(base).unwrap_or_default();
    let count = u.int_in_range(1..=4).unwrap_or(1);
    for _ in 0..count {
        let setting = pick(u, SETTINGS);
        let value = if u.ratio(1, 4).unwrap_or(false) {
            json_value(u)
        } else {
            pick(u, VALUES).to_owned()
        };
        let (section, key) = setting.split_once('.').unwrap_or(("server", setting));
        text = set_in_section(&text, section, key, &value);
    }
    text.into_bytes()
}
