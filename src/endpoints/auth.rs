//! `{prefix}/auth`: forward-auth for gateways (nginx `auth_request`, Envoy
//! `ext_authz` HTTP service, Traefik `forwardAuth`), when `[forward_auth] enabled`.
//!
//! The gateway asks whether the request it holds may pass: its method and path come
//! in `X-Forwarded-Method` and `X-Forwarded-Uri` (or `X-Original-URI`), its cookies
//! and other headers as this request's own. The request is checked against
//! `[[routes]]` by the same code as a proxied one (path check, methods, navigation,
//! CSRF, session, refresh with its single flight and grace, claim rules). The answer
//! never proxies:
//! - 200 with `Authorization: Bearer …`, the route's identity headers and, when the
//!   session changed, `Set-Cookie`, for the gateway to copy;
//! - 401 JSON (a navigation's 401 also has `Location:` the login URL), 403 `csrf` /
//!   `forbidden`, 503 `idp_unavailable` with `Retry-After`, as a proxied request
//!   would get.

use bytes::Bytes;
use http::header::{AUTHORIZATION, CACHE_CONTROL, HeaderName, HeaderValue, LOCATION, SET_COOKIE};
use http::request::Parts;
use http::{Method, Response, StatusCode, Uri};

use crate::bff::{Core, Matched, error_response, json_response};
use crate::cookies::RequestCookies;
use crate::error::{Error, ErrorKind};

static X_FORWARDED_METHOD: HeaderName = HeaderName::from_static("x-forwarded-method");
static X_FORWARDED_URI: HeaderName = HeaderName::from_static("x-forwarded-uri");
static X_ORIGINAL_URI: HeaderName = HeaderName::from_static("x-original-uri");

/// The original request's head as the gateway describes it: its method (else this
/// request's own: Envoy sends the original one), its path and query, and this
/// request's headers.
fn original(parts: &Parts) -> Result<Parts, Error> {
    let method = match parts.headers.get(&X_FORWARDED_METHOD) {
        Some(m) => Method::from_bytes(m.as_bytes())
            .map_err(|_| Error::new(ErrorKind::BadRequest("X-Forwarded-Method is not a method")))?,
        None => parts.method.clone(),
    };
    let uri = parts
        .headers
        .get(&X_FORWARDED_URI)
        .or_else(|| parts.headers.get(&X_ORIGINAL_URI))
        .ok_or(Error::new(ErrorKind::BadRequest(
            "forward-auth needs X-Forwarded-Uri (or X-Original-URI) with the original path",
        )))?;
    // Origin form only ("/path?query"): the gateway's request, never a URL that
    // names another host.
    let uri: Uri = uri
        .to_str()
        .ok()
        .filter(|u| u.starts_with('/') && !u.starts_with("//"))
        .and_then(|u| u.parse().ok())
        .filter(|u: &Uri| u.scheme().is_none() && u.authority().is_none())
        .ok_or(Error::new(ErrorKind::BadRequest(
            "X-Forwarded-Uri must be the original request's path (and query)",
        )))?;
    let (mut head, ()) = http::Request::new(()).into_parts();
    head.method = method;
    head.uri = uri;
    head.headers = parts.headers.clone();
    Ok(head)
}

impl Core {
    /// Answers a gateway's forward-auth request (the module's doc); counted in
    /// `bff_forward_auth_total{outcome}`.
    pub(super) async fn forward_auth(
        &self,
        parts: &Parts,
        cookies: &RequestCookies<'_>,
    ) -> Response<Bytes> {
        let (outcome, resp) = self.check_for_gateway(parts, cookies).await;
        self.metrics.forward_auth(outcome);
        resp
    }

    async fn check_for_gateway(
        &self,
        parts: &Parts,
        cookies: &RequestCookies<'_>,
    ) -> (&'static str, Response<Bytes>) {
        let refuse = |e: Error| (e.code(), error_response(&e, Vec::new()));
        let original = match original(parts) {
            Ok(head) => head,
            Err(e) => return refuse(e),
        };
        let route = match self.routes.find(original.uri.path()) {
            Ok(Matched::Route(route)) => route,
            Ok(_) => return refuse(Error::new(ErrorKind::NotFound)),
            Err(e) => return refuse(e),
        };
        match self.proxied(route, &original, cookies).await {
            Ok(forward) => {
                let mut resp = Response::new(Bytes::new());
                let h = resp.headers_mut();
                h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
                if let Some(bearer) = forward.authorization {
                    h.insert(AUTHORIZATION, bearer);
                }
                // DPoP: the proof made for the route's upstream URL.
                if let Some(proof) = forward.dpop {
                    h.insert(HeaderName::from_static("dpop"), proof);
                }
                for (name, value) in forward.identity {
                    h.insert(name, value);
                }
                for c in forward.set_cookies {
                    h.append(SET_COOKIE, c);
                }
                ("ok", resp)
            }
            // A navigation without a session: 401 (a gateway passes a 401, and
            // nginx's `error_page 401` can send the browser to the Location).
            // A navigation on a step-up route: the same, to the login at that level.
            Err(rejection)
                if rejection.outcome == "login_redirect"
                    || rejection.outcome == crate::bff::STEP_UP_REDIRECT =>
            {
                let (body, outcome) = if rejection.outcome == "login_redirect" {
                    (r#"{"error":"unauthenticated"}"#, "unauthenticated")
                } else {
                    (
                        r#"{"error":"insufficient_user_authentication"}"#,
                        "insufficient_user_authentication",
                    )
                };
                let mut resp = json_response(StatusCode::UNAUTHORIZED, body);
                if outcome != "unauthenticated" {
                    let step_up = Error::new(ErrorKind::StepUpRequired {
                        acr_values: route.step_up.acr_values(),
                        max_age: route.step_up.max_age,
                    });
                    if let Some(v) = step_up
                        .www_authenticate()
                        .and_then(|v| HeaderValue::from_str(&v).ok())
                    {
                        resp.headers_mut().insert(http::header::WWW_AUTHENTICATE, v);
                    }
                }
                let (head, _) = rejection.response.into_parts();
                if let Some(location) = head.headers.get(LOCATION) {
                    resp.headers_mut().insert(LOCATION, location.clone());
                }
                for c in head.headers.get_all(SET_COOKIE) {
                    resp.headers_mut().append(SET_COOKIE, c.clone());
                }
                (outcome, resp)
            }
            Err(rejection) => (rejection.outcome, rejection.response),
        }
    }
}
