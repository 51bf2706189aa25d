//! The dev IdP's token and revocation endpoints: client authentication (secret
//! basic/post, `private_key_jwt`), the grants, and the quirks tests ask for.

#![allow(clippy::wildcard_imports)]

use std::collections::HashMap;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use bytes::Bytes;
use http::header::{AUTHORIZATION, CACHE_CONTROL, RETRY_AFTER};
use http::{Response, StatusCode};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Value, json};
use subtle::ConstantTimeEq as _;

use super::wire::*;

/// RFC 8693's grant type and the token type it exchanges here.
const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
use super::{DevClient, DevClientAuth, Inner};
use crate::devstate::grants::OAuthError;

pub(super) async fn token(
    inner: &Inner,
    headers: &http::HeaderMap,
    body: &Bytes,
) -> Response<Body> {
    let form = parse_form(body);
    let latency = {
        let mut state = inner.state();
        state.stats.token_requests += 1;
        match form
            .as_ref()
            .ok()
            .and_then(|f| f.get("grant_type"))
            .map(String::as_str)
        {
            Some("authorization_code") => state.stats.token_authorization_code += 1,
            Some("refresh_token") => state.stats.token_refresh += 1,
            _ => {}
        }
        state.faults.latency
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    {
        let mut state = inner.state();
        if state.faults.fail_next > 0 {
            state.faults.fail_next -= 1;
            state.stats.injected_failures += 1;
            let status = StatusCode::from_u16(state.faults.fail_status)
                .unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            let mut resp =
                text_response(status, "application/json", state.faults.fail_body.clone());
            if status == StatusCode::TOO_MANY_REQUESTS {
                resp.headers_mut()
                    .insert(RETRY_AFTER, http::HeaderValue::from_static("1"));
            }
            return resp;
        }
    }
    // RFC 9449: a proof binds what this request issues to its key; with
    // `dpop_nonce`, one without the current nonce is asked to come again with it
    // (before any grant is looked at, so nothing is consumed).
    let binding = match check_dpop(inner, headers) {
        Ok(binding) => binding,
        Err(refusal) => return refusal.response(),
    };
    let nonce_header = inner
        .settings
        .dpop_nonce
        .then(|| inner.state().dpop_nonce.clone());
    let result = form.and_then(|form| {
        let client = authenticate_client(inner, headers, &form)?;
        let get = |k: &str| form.get(k).map(String::as_str);
        let need = |k: &str| {
            get(k)
                .filter(|v| !v.is_empty())
                .ok_or_else(|| OAuthError::invalid_request(format!("{k} is required")))
        };
        match get("grant_type") {
            Some("authorization_code") => {
                let (code, redirect_uri, verifier) =
                    (need("code")?, need("redirect_uri")?, need("code_verifier")?);
                let mut state = inner.state();
                state.binding.clone_from(&binding);
                let result = state.redeem_code(
                    &inner.issuer,
                    &inner.settings,
                    client,
                    code,
                    redirect_uri,
                    verifier,
                );
                state.binding = None;
                result
            }
            Some("refresh_token") => {
                let token = need("refresh_token")?;
                let mut state = inner.state();
                state.binding.clone_from(&binding);
                let result = state.refresh(
                    &inner.issuer,
                    &inner.settings,
                    client,
                    token,
                    get("scope"),
                    get("resource"),
                );
                state.binding = None;
                result
            }
            Some(TOKEN_EXCHANGE) => {
                if get("subject_token_type") != Some(ACCESS_TOKEN_TYPE) {
                    return Err(OAuthError::invalid_request(
                        "subject_token_type must be an access token",
                    ));
                }
                let audience = need("audience")?;
                let subject = verify_own_token(inner, need("subject_token")?)
                    .filter(|c| c.get("client_id").is_some())
                    .ok_or_else(|| {
                        OAuthError::invalid_grant(
                            "the subject token is not an access token of this provider",
                        )
                    })?;
                let mut state = inner.state();
                state.binding.clone_from(&binding);
                let result = state.exchange(
                    &inner.issuer,
                    &inner.settings,
                    client,
                    &subject,
                    audience,
                    get("scope"),
                );
                state.binding = None;
                result
            }
            Some(_) => Err(OAuthError::new(
                400,
                "unsupported_grant_type",
                "grant_type must be authorization_code, refresh_token or token-exchange",
            )),
            None => Err(OAuthError::invalid_request("grant_type is required")),
        }
    });
    let result = result.and_then(|body| {
        let quirk = inner.state().faults.take_quirk();
        apply_quirk(inner, body, quirk)
    });
    match result {
        Ok(TokenBody::Json(body)) => {
            let mut resp = json_response(StatusCode::OK, &body);
            resp.headers_mut()
                .insert(CACHE_CONTROL, http::HeaderValue::from_static("no-store"));
            if let Some(n) = nonce_header.and_then(|n| http::HeaderValue::from_str(&n).ok()) {
                resp.headers_mut().insert("dpop-nonce", n);
            }
            resp
        }
        Ok(TokenBody::Text(text)) => text_response(StatusCode::OK, "application/json", text),
        Err(e) => {
            if e.error == "invalid_client" {
                inner.state().stats.invalid_client += 1;
            }
            let mut resp = oauth_error(&e);
            if e.status == 401 {
                resp.headers_mut().insert(
                    http::header::WWW_AUTHENTICATE,
                    http::HeaderValue::from_static("Basic realm=\"dev-idp\""),
                );
            }
            resp
        }
    }
}

/// Why a token request's DPoP proof was refused.
enum DpopRefusal {
    /// `invalid_dpop_proof`, with why.
    Invalid(&'static str),
    /// `use_dpop_nonce`, with the nonce to use.
    Nonce(String),
}

impl DpopRefusal {
    fn response(self) -> Response<Body> {
        match self {
            Self::Invalid(why) => oauth_error(&OAuthError::new(400, "invalid_dpop_proof", why)),
            Self::Nonce(nonce) => {
                let mut resp = oauth_error(&OAuthError::new(
                    400,
                    "use_dpop_nonce",
                    "the DPoP proof must carry the nonce of the DPoP-Nonce header",
                ));
                if let Ok(n) = http::HeaderValue::from_str(&nonce) {
                    resp.headers_mut().insert("dpop-nonce", n);
                }
                resp
            }
        }
    }
}

/// The DPoP proof of a token request, checked: the thumbprint to bind to, or none
/// without a proof.
fn check_dpop(inner: &Inner, headers: &http::HeaderMap) -> Result<Option<String>, DpopRefusal> {
    let mut proofs = headers.get_all("dpop").iter();
    let Some(proof) = proofs.next() else {
        return Ok(None);
    };
    if proofs.next().is_some() {
        return Err(DpopRefusal::Invalid("more than one DPoP proof"));
    }
    let url = format!("{}/token", inner.issuer);
    // Proofs are made on the wall clock, whatever `advance_clock` did to ours.
    let now = crate::dpop::now();
    let proof = proof
        .to_str()
        .map_err(|_| DpopRefusal::Invalid("the proof is not text"))?;
    let checked =
        crate::dpop::check_proof(proof, "POST", &url, None, now).map_err(DpopRefusal::Invalid)?;
    let mut state = inner.state();
    if inner.settings.dpop_nonce && checked.nonce.as_deref() != Some(state.dpop_nonce.as_str()) {
        state.stats.dpop_nonce_challenges += 1;
        return Err(DpopRefusal::Nonce(state.dpop_nonce.clone()));
    }
    if !state.dpop_jtis.insert(checked.jti) {
        return Err(DpopRefusal::Invalid("the proof's jti was seen before"));
    }
    state.stats.dpop_proofs += 1;
    Ok(Some(checked.jkt))
}

/// A token response body: JSON, or (a quirk) text that is not.
pub(super) enum TokenBody {
    Json(Value),
    Text(String),
}

/// Changes a successful token response as the quirk says.
pub(super) fn apply_quirk(
    inner: &Inner,
    mut body: Value,
    quirk: Option<super::TokenQuirk>,
) -> Result<TokenBody, OAuthError> {
    use super::TokenQuirk;
    match quirk {
        None => {}
        Some(TokenQuirk::EmptyRefreshToken) => body["refresh_token"] = json!(""),
        Some(TokenQuirk::ExpiresInString) => {
            let secs = body["expires_in"].as_u64().unwrap_or(300);
            body["expires_in"] = json!(secs.to_string());
        }
        Some(TokenQuirk::Unreadable(text)) => return Ok(TokenBody::Text(text)),
        Some(TokenQuirk::OtherSub(sub)) => {
            if let Some(id_token) = body["id_token"].as_str() {
                let payload = id_token.split('.').nth(1).unwrap_or_default();
                let mut claims: Value = URL_SAFE_NO_PAD
                    .decode(payload)
                    .ok()
                    .and_then(|b| serde_json::from_slice(&b).ok())
                    .unwrap_or(Value::Null);
                claims["sub"] = json!(sub);
                body["id_token"] = json!(inner.state().sign(&claims, "JWT")?);
            }
        }
    }
    Ok(TokenBody::Json(body))
}

pub(super) fn revoke(inner: &Inner, headers: &http::HeaderMap, body: &Bytes) -> Response<Body> {
    inner.state().stats.revocation += 1;
    let result = parse_form(body).and_then(|form| {
        let client = authenticate_client(inner, headers, &form)?;
        let token = form
            .get("token")
            .filter(|t| !t.is_empty())
            .ok_or_else(|| OAuthError::invalid_request("token is required"))?;
        inner.state().revoke(client, token);
        Ok(())
    });
    match result {
        // RFC 7009 2.2: 200 whether or not the token was known.
        Ok(()) => text_response(StatusCode::OK, "application/json", "{}".into()),
        Err(e) => {
            if e.error == "invalid_client" {
                inner.state().stats.invalid_client += 1;
            }
            oauth_error(&e)
        }
    }
}

/// Finds and authenticates the client of a token or revocation request.
pub(super) fn authenticate_client<'a>(
    inner: &'a Inner,
    headers: &http::HeaderMap,
    form: &HashMap<String, String>,
) -> Result<&'a DevClient, OAuthError> {
    let basic = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "));
    let methods = usize::from(basic.is_some())
        + usize::from(form.contains_key("client_secret"))
        + usize::from(form.contains_key("client_assertion"));
    if methods > 1 {
        return Err(OAuthError::invalid_request(
            "more than one client authentication method used",
        ));
    }
    let bad = || OAuthError::invalid_client("client authentication failed");
    if let Some(encoded) = basic {
        let decoded = STANDARD.decode(encoded.trim()).map_err(|_| bad())?;
        let text = String::from_utf8(decoded).map_err(|_| bad())?;
        let (id, secret) = text.split_once(':').ok_or_else(bad)?;
        // RFC 6749 2.3.1: both parts are form-urlencoded before Basic encoding.
        let id = form_decode(id);
        let secret = form_decode(secret);
        let client = client(inner, &id).ok_or_else(bad)?;
        return match &client.auth {
            DevClientAuth::SecretBasic(expected) if secret_eq(expected, &secret) => Ok(client),
            _ => Err(bad()),
        };
    }
    if let Some(assertion) = form.get("client_assertion") {
        if form.get("client_assertion_type").map(String::as_str) != Some(JWT_BEARER) {
            return Err(OAuthError::invalid_request(
                "client_assertion_type must be jwt-bearer",
            ));
        }
        let issuer = unverified_claim(assertion, "iss").ok_or_else(bad)?;
        let client = client(inner, &issuer).ok_or_else(bad)?;
        if form
            .get("client_id")
            .is_some_and(|id| *id != client.client_id)
        {
            return Err(bad());
        }
        let DevClientAuth::PrivateKeyJwt { public_key_pem } = &client.auth else {
            return Err(bad());
        };
        verify_assertion(inner, client, public_key_pem, assertion).map_err(|_| bad())?;
        return Ok(client);
    }
    let id = form
        .get("client_id")
        .ok_or_else(|| OAuthError::invalid_client("client authentication required"))?;
    let client = client(inner, id).ok_or_else(bad)?;
    match (&client.auth, form.get("client_secret")) {
        (DevClientAuth::SecretPost(expected), Some(secret)) if secret_eq(expected, secret) => {
            Ok(client)
        }
        (DevClientAuth::None, None) => Ok(client),
        _ => Err(bad()),
    }
}

pub(super) fn form_decode(text: &str) -> String {
    url::form_urlencoded::parse(format!("x={text}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

pub(super) fn secret_eq(expected: &str, given: &str) -> bool {
    expected.as_bytes().ct_eq(given.as_bytes()).into()
}

/// Reads one claim of a JWT without verifying it (only to find which key verifies).
pub(super) fn unverified_claim(jwt: &str, claim: &str) -> Option<String> {
    crate::oidc::unverified_claims(jwt)?
        .get(claim)?
        .as_str()
        .map(str::to_owned)
}

pub(super) fn verify_assertion(
    inner: &Inner,
    client: &DevClient,
    public_key_pem: &str,
    assertion: &str,
) -> Result<(), String> {
    let (key, alg) = if public_key_pem.contains("BEGIN EC")
        || public_key_pem.contains("BEGIN PUBLIC KEY") && !public_key_pem.contains("RSA")
    {
        match DecodingKey::from_ec_pem(public_key_pem.as_bytes()) {
            Ok(k) => (k, Algorithm::ES256),
            Err(_) => (
                DecodingKey::from_rsa_pem(public_key_pem.as_bytes()).map_err(|e| e.to_string())?,
                Algorithm::RS256,
            ),
        }
    } else {
        (
            DecodingKey::from_rsa_pem(public_key_pem.as_bytes()).map_err(|e| e.to_string())?,
            Algorithm::RS256,
        )
    };
    let mut validation = Validation::new(alg);
    validation.set_audience(&[format!("{}/token", inner.issuer), inner.issuer.clone()]);
    validation.set_issuer(&[&client.client_id]);
    validation.sub = Some(client.client_id.clone());
    validation.set_required_spec_claims(&["exp", "iss", "sub", "aud"]);
    let data =
        jsonwebtoken::decode::<Value>(assertion, &key, &validation).map_err(|e| e.to_string())?;
    let jti = data
        .claims
        .get("jti")
        .and_then(Value::as_str)
        .ok_or("jti is required")?
        .to_owned();
    if !inner.state().used_assertions.insert(jti) {
        return Err("assertion replayed".into());
    }
    Ok(())
}
