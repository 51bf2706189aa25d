//! What every dev IdP endpoint reads and answers with: bounded forms, the client
//! table, JSON and OAuth error answers, and the check of its own tokens.

use std::collections::HashMap;

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{Response, StatusCode};
use http_body_util::Full;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Value, json};

use super::{DevClient, Inner};
use crate::devstate::grants::OAuthError;

/// The largest request body the IdP reads.
pub(super) const MAX_BODY: usize = 64 * 1024;

pub(super) const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

pub(super) type Body = Full<Bytes>;

/// Parses `application/x-www-form-urlencoded` text; a parameter given twice is an
/// error (RFC 6749 3.1), except `resource` (RFC 8707), whose values are kept
/// separated by spaces.
pub(super) fn parse_form(text: &[u8]) -> Result<HashMap<String, String>, OAuthError> {
    let mut out: HashMap<String, String> = HashMap::new();
    for (k, v) in url::form_urlencoded::parse(text) {
        if k == "resource" {
            if let Some(kept) = out.get_mut("resource") {
                kept.push(' ');
                kept.push_str(&v);
                continue;
            }
        }
        if out.insert(k.to_string(), v.into_owned()).is_some() {
            return Err(OAuthError::invalid_request(format!(
                "parameter {k} given more than once"
            )));
        }
    }
    Ok(out)
}

pub(super) fn client<'a>(inner: &'a Inner, client_id: &str) -> Option<&'a DevClient> {
    inner
        .settings
        .clients
        .iter()
        .find(|c| c.client_id == client_id)
}

pub(super) fn json_response(status: StatusCode, body: &Value) -> Response<Body> {
    text_response(status, "application/json", body.to_string())
}

pub(super) fn oauth_error(e: &OAuthError) -> Response<Body> {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST);
    let mut resp = json_response(
        status,
        &json!({"error": e.error, "error_description": e.description}),
    );
    resp.headers_mut()
        .insert(CACHE_CONTROL, http::HeaderValue::from_static("no-store"));
    resp
}

pub(super) fn text_response(
    status: StatusCode,
    content_type: &'static str,
    body: String,
) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, http::HeaderValue::from_static(content_type));
    resp
}

/// Verifies a token this IdP signed (any of its keys), ignoring expiry, as an
/// `id_token_hint` may be expired.
pub(super) fn verify_own_token(inner: &Inner, token: &str) -> Option<Value> {
    let header = jsonwebtoken::decode_header(token).ok()?;
    let jwks = inner.state().jwks();
    let key = jwks["keys"]
        .as_array()?
        .iter()
        .find(|k| k["kid"].as_str() == header.kid.as_deref())?
        .clone();
    let key = DecodingKey::from_rsa_components(key["n"].as_str()?, key["e"].as_str()?).ok()?;
    let mut validation = Validation::new(Algorithm::RS256);
    validation.validate_exp = false;
    validation.validate_aud = false;
    validation.set_issuer(&[&inner.issuer]);
    validation.set_required_spec_claims(&["iss"]);
    jsonwebtoken::decode::<Value>(token, &key, &validation)
        .ok()
        .map(|d| d.claims)
}
