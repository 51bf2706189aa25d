//! The `[oidc]` checks: the issuer and endpoints, the client's authentication, the
//! extra authorization parameters, and the secrets resolved from files and the
//! environment.

#![allow(clippy::wildcard_imports)]

use super::*;

/// Query parameters the BFF sets itself; `auth_params` may not override them.
pub(super) const RESERVED_AUTH_PARAMS: &[&str] = &[
    "client_id",
    "redirect_uri",
    "response_type",
    "response_mode",
    "scope",
    "state",
    "nonce",
    "code_challenge",
    "code_challenge_method",
];

pub(super) fn check_oidc(
    c: &Sections,
    problems: &mut Vec<Problem>,
    warnings: &mut Vec<Problem>,
) -> Option<Url> {
    let o = &c.oidc;
    let issuer = http_url(&o.issuer, "oidc.issuer", problems, UrlRules::ABSOLUTE);
    if let Some(url) = &issuer {
        if url.scheme() == "http" && !is_loopback(url) {
            problems.push(Problem::new(
                "oidc.issuer",
                format!(
                    "{:?} must be https (http is allowed only for loopback development IdPs)",
                    o.issuer
                ),
            ));
        }
    }
    if o.client_id.trim().is_empty() {
        problems.push(Problem::new("oidc.client_id", "must not be empty"));
    }
    match o.client_auth {
        ClientAuth::ClientSecretBasic | ClientAuth::ClientSecretPost => {
            if o.client_secret.is_none() {
                problems.push(Problem::new(
                    "oidc.client_secret",
                    "is required by client_auth = client_secret_basic / client_secret_post",
                ));
            }
            if o.private_key.is_some() {
                problems.push(Problem::new(
                    "oidc.private_key",
                    "is only used with client_auth = \"private_key_jwt\"; remove it or change client_auth",
                ));
            }
        }
        ClientAuth::PrivateKeyJwt => {
            if o.private_key.is_none() {
                problems.push(Problem::new(
                    "oidc.private_key",
                    "is required by client_auth = \"private_key_jwt\"",
                ));
            }
            if o.client_secret.is_some() {
                problems.push(Problem::new(
                    "oidc.client_secret",
                    "is not used with client_auth = \"private_key_jwt\"; remove it",
                ));
            }
        }
        ClientAuth::None => {
            for (set, at) in [
                (o.client_secret.is_some(), "oidc.client_secret"),
                (o.private_key.is_some(), "oidc.private_key"),
            ] {
                if set {
                    problems.push(Problem::new(
                        at,
                        "is not used with client_auth = \"none\"; remove it",
                    ));
                }
            }
            warnings.push(Problem::new(
                "oidc.client_auth",
                "\"none\" makes the BFF a public client; the browser-based-apps BCP requires a BFF to be a confidential client",
            ));
        }
    }
    if !o.scopes.iter().any(|s| s == "openid") {
        problems.push(Problem::new("oidc.scopes", "must include \"openid\""));
    }
    for (i, scope) in o.scopes.iter().enumerate() {
        if scope.is_empty()
            || scope
                .chars()
                .any(|ch| !ch.is_ascii_graphic() || ch == '"' || ch == '\\')
        {
            problems.push(Problem::new(
                format!("oidc.scopes[{i}]"),
                format!("{scope:?} is not a valid scope token"),
            ));
        }
    }
    if !o.scopes.iter().any(|s| s == "offline_access") {
        warnings.push(Problem::new(
            "oidc.scopes",
            "has no \"offline_access\": many IdPs then issue no refresh token, and sessions end when the access token expires",
        ));
    }
    for (key, value) in &o.auth_params {
        if RESERVED_AUTH_PARAMS.contains(&key.as_str()) {
            problems.push(Problem::new(
                format!("oidc.auth_params.{key}"),
                "is set by the BFF itself and cannot be overridden",
            ));
        }
        if crate::login::LoginParams::NAMES.contains(&key.as_str()) {
            // Checked as /login checks them: the callback holds the ID token to them.
            if let Err(why) = crate::login::LoginParams::parse(&[(key.clone(), value.clone())]) {
                problems.push(Problem::new(format!("oidc.auth_params.{key}"), why));
            }
        }
    }
    issuer
}

pub(super) type Secrets = (
    Vec<[u8; KEY_LEN]>,
    Option<Secret>,
    Option<Secret>,
    Option<Secret>,
);

pub(super) fn resolve_secrets(
    c: &Sections,
    base_dir: &Path,
    env: &Env,
    problems: &mut Vec<Problem>,
) -> Option<Secrets> {
    let before = problems.len();
    let mut resolve = |source: &Option<SecretSource>, at: &str| -> Option<Secret> {
        let source = source.as_ref()?;
        match source.resolve(env, base_dir) {
            Ok(secret) if secret.expose().is_empty() => {
                problems.push(Problem::new(at, "is empty"));
                None
            }
            Ok(secret) => Some(secret),
            Err(why) => {
                problems.push(Problem::new(at, why));
                None
            }
        }
    };
    let client_secret = resolve(&c.oidc.client_secret, "oidc.client_secret");
    let private_key = resolve(&c.oidc.private_key, "oidc.private_key");
    let store_url = resolve(&c.store.url, "store.url");
    // TLS files are read to prove they are there; the engine reads them again.
    resolve(&c.server.tls_cert, "server.tls_cert");
    resolve(&c.server.tls_key, "server.tls_key");

    if let Some(pem) = &private_key {
        if let Err(why) = crate::client_key::parse_private_key(pem.expose()) {
            problems.push(Problem::new("oidc.private_key", why));
        }
    }

    let mut keys = Vec::new();
    if c.session.keys.is_empty() {
        problems.push(Problem::new(
            "session.keys",
            "needs at least one key (generate one with `bff-proxy keygen`)",
        ));
    }
    for (i, source) in c.session.keys.iter().enumerate() {
        let at = format!("session.keys[{i}]");
        match source.resolve(env, base_dir) {
            Ok(secret) => match KeyRing::parse_key(secret.expose()) {
                Ok(key) => {
                    if keys.contains(&key) {
                        problems.push(Problem::new(at, "repeats an earlier key"));
                    } else {
                        keys.push(key);
                    }
                }
                Err(why) => problems.push(Problem::new(at, why.to_string())),
            },
            Err(why) => problems.push(Problem::new(at, why)),
        }
    }
    (problems.len() == before).then_some((keys, client_secret, private_key, store_url))
}
