//! What every dev IdP endpoint reads and answers with: bounded forms, the client
//! table, JSON and OAuth error answers.

use std::collections::HashMap;

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{Response, StatusCode};
use http_body_util::Full;
use serde_json::{Value, json};

use super::{DevClient, Inner};
use crate::devstate::grants::OAuthError;

/// The largest request body the IdP reads.
pub(super) const MAX_BODY: usize = 64 * 1024;

pub(super) const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

pub(super) type Body = Full<Bytes>;

/// Parses `application/x-www-form-urlencoded` text; a parameter given twice is an
/// error (RFC 6749 3.1).
pub(super) fn parse_form(text: &[u8]) -> Result<HashMap<String, String>, OAuthError> {
    let mut out = HashMap::new();
    for (k, v) in url::form_urlencoded::parse(text) {
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
