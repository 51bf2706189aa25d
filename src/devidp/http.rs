//! The dev IdP's HTTP side: the server loop (with "down" mode), the endpoints, client
//! authentication and back-channel logout delivery.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, LOCATION};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::Inner;
use crate::devstate::grants::{ACR_MFA, ACR_PASSWORD, OAuthError, random_token};

use super::token::{revoke, token};
use super::wire::*;

pub(crate) const BACKCHANNEL_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

/// Serves until `stop`; while `down` is true the listener is closed and every open
/// connection cut, so clients see connections refused.
pub(crate) async fn serve(
    inner: Arc<Inner>,
    listener: TcpListener,
    addr: SocketAddr,
    mut down: watch::Receiver<bool>,
    mut stop: watch::Receiver<bool>,
) {
    let mut listener = Some(listener);
    let mut conns = JoinSet::new();
    loop {
        if *stop.borrow() {
            break;
        }
        if *down.borrow_and_update() {
            listener = None;
            conns.abort_all();
            inner.state().listening = false;
            tokio::select! {
                changed = down.changed() => if changed.is_err() { break },
                _ = stop.changed() => break,
            }
            continue;
        }
        let Some(l) = &listener else {
            match TcpListener::bind(addr).await {
                Ok(l) => {
                    listener = Some(l);
                    inner.state().listening = true;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
            continue;
        };
        tokio::select! {
            accepted = l.accept() => {
                if let Ok((stream, _)) = accepted {
                    let inner = Arc::clone(&inner);
                    conns.spawn(async move {
                        let svc = service_fn(move |req| {
                            let inner = Arc::clone(&inner);
                            async move { Ok::<_, Infallible>(handle(&inner, req).await) }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), svc)
                            .await;
                    });
                }
            }
            changed = down.changed() => if changed.is_err() { break },
            _ = stop.changed() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    conns.abort_all();
}

pub(super) async fn handle(inner: &Inner, req: Request<Incoming>) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let query = parts.uri.query().unwrap_or("").to_owned();
    let body = if parts.method == Method::POST {
        match Limited::new(body, MAX_BODY).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(_) => {
                return oauth_error(&OAuthError::invalid_request(
                    "request body too large or unreadable",
                ));
            }
        }
    } else {
        Bytes::new()
    };
    match (&parts.method, parts.uri.path()) {
        (&Method::GET, "/.well-known/openid-configuration") => {
            inner.state().stats.discovery += 1;
            let mut meta = discovery(&inner.issuer, &inner.settings);
            if inner.settings.revocation_in_rfc8414_only {
                if let Some(m) = meta.as_object_mut() {
                    m.remove("revocation_endpoint");
                }
            }
            json_response(StatusCode::OK, &meta)
        }
        (&Method::GET, "/.well-known/oauth-authorization-server")
            if inner.settings.revocation_in_rfc8414_only =>
        {
            json_response(StatusCode::OK, &discovery(&inner.issuer, &inner.settings))
        }
        (&Method::GET, "/jwks") => {
            let mut state = inner.state();
            state.stats.jwks += 1;
            json_response(StatusCode::OK, &state.jwks())
        }
        (&Method::GET, "/authorize") => authorize(inner, &parts.headers, &query, None),
        (&Method::POST, "/authorize") => authorize(inner, &parts.headers, "", Some(&body)),
        (&Method::POST, "/token") => token(inner, &parts.headers, &body).await,
        (&Method::POST, "/par") => push(inner, &parts.headers, &body),
        (&Method::POST, "/revoke") => revoke(inner, &parts.headers, &body),
        (&Method::GET, "/end_session") => end_session(inner, &query).await,
        (&Method::POST, "/end_session") => {
            end_session(inner, &String::from_utf8_lossy(&body)).await
        }
        _ => text_response(StatusCode::NOT_FOUND, "text/plain", "not found".into()),
    }
}

pub(super) fn discovery(issuer: &str, settings: &crate::devstate::DevIdpSettings) -> Value {
    json!({
        "pushed_authorization_request_endpoint": format!("{issuer}/par"),
        "require_pushed_authorization_requests": settings.require_par,
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/authorize"),
        "token_endpoint": format!("{issuer}/token"),
        "jwks_uri": format!("{issuer}/jwks"),
        "revocation_endpoint": format!("{issuer}/revoke"),
        "end_session_endpoint": format!("{issuer}/end_session"),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token",
            "urn:ietf:params:oauth:grant-type:token-exchange"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "token_endpoint_auth_methods_supported":
            ["client_secret_basic", "client_secret_post", "private_key_jwt", "none"],
        "token_endpoint_auth_signing_alg_values_supported": ["RS256", "ES256"],
        "revocation_endpoint_auth_methods_supported":
            ["client_secret_basic", "client_secret_post", "private_key_jwt", "none"],
        "code_challenge_methods_supported": ["S256"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "acr_values_supported": [ACR_PASSWORD, ACR_MFA],
        "dpop_signing_alg_values_supported": ["ES256"],
        "claims_supported": ["sub", "iss", "aud", "exp", "iat", "auth_time", "acr", "nonce", "sid",
            "name", "email", "preferred_username"],
        "backchannel_logout_supported": true,
        "backchannel_logout_session_supported": true,
        "authorization_response_iss_parameter_supported": true,
    })
}

/// The dev IdP's browser session cookie. `Path=/authorize`: the BFF on the same
/// host (cookies ignore ports) never receives it.
const SESSION_COOKIE: &str = "devidp_session";

/// The IdP session id in the browser's cookie, if any.
fn session_cookie(headers: &http::HeaderMap) -> Option<String> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == SESSION_COOKIE)
        .map(|(_, v)| v.to_owned())
}

/// The authentication an authorization request can use without the user, if its
/// browser has an IdP session that meets `acr_values` and `max_age`.
fn usable_session(
    inner: &Inner,
    headers: &http::HeaderMap,
    acr_values: &[&str],
    max_age: Option<u64>,
) -> Result<crate::devstate::grants::Authentication, &'static str> {
    let state = inner.state();
    let user = session_cookie(headers)
        .and_then(|sid| state.existing(&sid))
        .ok_or("login_required")?;
    if max_age.is_some_and(|m| user.auth_time.saturating_add(m) < state.unix_now()) {
        return Err("login_required");
    }
    if !acr_values.is_empty() && !acr_values.contains(&user.acr) {
        return Err("interaction_required");
    }
    Ok(user)
}

pub(super) fn authorize(
    inner: &Inner,
    headers: &http::HeaderMap,
    query: &str,
    form: Option<&Bytes>,
) -> Response<Body> {
    inner.state().stats.authorize += 1;
    let submitted = form.is_some();
    let mut params = match parse_form(form.map_or(query.as_bytes(), |b| b.as_ref())) {
        Ok(p) => p,
        Err(e) => return page(StatusCode::BAD_REQUEST, "Bad request", &e.description),
    };
    // RFC 9126: a pushed request's parameters replace the browser's (which carry
    // only client_id and request_uri, plus the login form's fields).
    let request_uri = params.get("request_uri").cloned();
    if let Some(uri) = &request_uri {
        let mut state = inner.state();
        let now = state.now();
        let pushed = state
            .pushed
            .get(uri)
            .filter(|p| p.expires_at >= now)
            .filter(|p| params.get("client_id") == Some(&p.client_id));
        let Some(pushed) = pushed else {
            return page(
                StatusCode::BAD_REQUEST,
                "Bad request_uri",
                "request_uri is unknown, expired, used or for another client",
            );
        };
        for (k, v) in &pushed.params {
            params.insert(k.clone(), v.clone());
        }
        state.stats.authorize_par += 1;
    } else if inner.settings.require_par {
        return page(
            StatusCode::BAD_REQUEST,
            "PAR required",
            "this provider takes authorization requests only through its PAR endpoint",
        );
    }
    let get = |k: &str| params.get(k).map(String::as_str);
    // Without a known client and a registered redirect URI, errors cannot be sent
    // back to the client: they are shown here (RFC 6749 4.1.2.1).
    let Some(client) = get("client_id").and_then(|id| client(inner, id)) else {
        return page(
            StatusCode::BAD_REQUEST,
            "Unknown client",
            "client_id is missing or unknown",
        );
    };
    let Some(redirect_uri) =
        get("redirect_uri").filter(|r| client.redirect_uris.iter().any(|u| u == r))
    else {
        return page(
            StatusCode::BAD_REQUEST,
            "Bad redirect_uri",
            "redirect_uri is missing or not registered for this client",
        );
    };
    let state_param = get("state").map(str::to_owned);
    let back = |error: &str, description: &str| {
        let mut url = match url::Url::parse(redirect_uri) {
            Ok(u) => u,
            Err(_) => return page(StatusCode::BAD_REQUEST, "Bad redirect_uri", "unparseable"),
        };
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("error", error);
            q.append_pair("error_description", description);
            if let Some(s) = &state_param {
                q.append_pair("state", s);
            }
            q.append_pair("iss", &inner.issuer);
        }
        redirect(url.as_str())
    };
    if get("response_type") != Some("code") {
        return back(
            "unsupported_response_type",
            "only response_type=code is supported",
        );
    }
    let Some(challenge) = get("code_challenge").filter(|c| !c.is_empty()) else {
        return back("invalid_request", "PKCE is required: send code_challenge");
    };
    if get("code_challenge_method") != Some("S256") {
        return back("invalid_request", "code_challenge_method must be S256");
    }
    let scope = get("scope").unwrap_or("");
    if !scope.split(' ').any(|s| s == "openid") {
        return back("invalid_scope", "scope must include openid");
    }
    if let Some(error) = inner.state().deny_next_authorization.take() {
        return back(&error_code(&error), "refused by the dev IdP on request");
    }
    let acr_values: Vec<&str> = get("acr_values")
        .map(|a| a.split(' ').filter(|v| !v.is_empty()).collect())
        .unwrap_or_default();
    let max_age = match get("max_age").map(str::parse::<u64>) {
        None => None,
        Some(Ok(m)) => Some(m),
        Some(Err(_)) => return back("invalid_request", "max_age must be a number of seconds"),
    };
    let prompt: Vec<&str> = get("prompt").map_or_else(Vec::new, |p| p.split(' ').collect());
    // The second level when the client asks for it, else the first.
    let level = if acr_values.contains(&ACR_MFA) {
        ACR_MFA
    } else {
        ACR_PASSWORD
    };
    let (user, new_cookie) = if prompt.contains(&"none") {
        // Silent: the browser's IdP session, or the error that says the user is needed.
        match usable_session(inner, headers, &acr_values, max_age) {
            Ok(user) => (user, None),
            Err(error) => return back(error, "the user must log in at the dev IdP"),
        }
    } else {
        if inner.settings.login_form {
            let second_factor = level == ACR_MFA;
            let otp_ok =
                get("otp").is_some_and(|o| o.len() == 6 && o.bytes().all(|b| b.is_ascii_digit()));
            if !submitted || (second_factor && !otp_ok) {
                return login_form(
                    &params,
                    &inner.settings.user.preferred_username,
                    second_factor,
                );
            }
        }
        let user = inner.state().authenticate(&inner.settings, level);
        let cookie = format!(
            "{SESSION_COOKIE}={}; Path=/authorize; HttpOnly; SameSite=Lax",
            user.sid
        );
        (user, Some(cookie))
    };
    if let Some(uri) = &request_uri {
        // Used once.
        inner.state().pushed.remove(uri);
    }
    let code = inner.state().issue_code(
        &inner.settings,
        (&client.client_id, redirect_uri, scope),
        get("nonce").map(str::to_owned),
        challenge,
        &user,
    );
    let mut url = match url::Url::parse(redirect_uri) {
        Ok(u) => u,
        Err(_) => return page(StatusCode::BAD_REQUEST, "Bad redirect_uri", "unparseable"),
    };
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("code", &code);
        if let Some(s) = &state_param {
            q.append_pair("state", s);
        }
        q.append_pair("iss", &inner.issuer);
    }
    let mut response = redirect(url.as_str());
    if let Some(v) = new_cookie.and_then(|c| http::HeaderValue::from_str(&c).ok()) {
        response.headers_mut().append(http::header::SET_COOKIE, v);
    }
    response
}

/// How long a pushed authorization request's `request_uri` stays usable.
const PUSHED_TTL: Duration = Duration::from_secs(60);

/// `POST /par` (RFC 9126): an authenticated client pushes its authorization request
/// and gets a one-time `request_uri` for the browser.
pub(super) fn push(inner: &Inner, headers: &http::HeaderMap, body: &Bytes) -> Response<Body> {
    let form = match parse_form(body) {
        Ok(f) => f,
        Err(e) => return oauth_error(&e),
    };
    let client = match super::token::authenticate_client(inner, headers, &form) {
        Ok(c) => c,
        Err(e) => {
            inner.state().stats.invalid_client += 1;
            return oauth_error(&e);
        }
    };
    if form.contains_key("request_uri") {
        return oauth_error(&OAuthError::invalid_request(
            "request_uri may not be pushed",
        ));
    }
    if form
        .get("client_id")
        .is_some_and(|id| *id != client.client_id)
    {
        return oauth_error(&OAuthError::invalid_request(
            "client_id is not the authenticated client",
        ));
    }
    let registered = form
        .get("redirect_uri")
        .is_some_and(|r| client.redirect_uris.iter().any(|u| u == r));
    if !registered {
        return oauth_error(&OAuthError::invalid_request(
            "redirect_uri is missing or not registered for this client",
        ));
    }
    let params: HashMap<String, String> = form
        .into_iter()
        .filter(|(k, _)| !k.starts_with("client_assertion") && k != "client_secret")
        .collect();
    let uri = format!("urn:ietf:params:oauth:request_uri:{}", random_token(24));
    let mut state = inner.state();
    let expires_at = state.now() + PUSHED_TTL;
    state
        .pushed
        .retain(|_, p| p.expires_at >= expires_at - PUSHED_TTL);
    state.pushed.insert(
        uri.clone(),
        crate::devstate::grants::PushedRequest {
            client_id: client.client_id.clone(),
            params,
            expires_at,
        },
    );
    state.stats.par += 1;
    json_response(
        StatusCode::CREATED,
        &json!({ "request_uri": uri, "expires_in": PUSHED_TTL.as_secs() }),
    )
}

/// Keeps an injected error code to the OAuth error alphabet.
pub(super) fn error_code(text: &str) -> String {
    text.chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .take(64)
        .collect()
}

/// The login page; with `second_factor`, a second step asks for a one-time code
/// (any six digits: this is a development IdP).
pub(super) fn login_form(
    params: &HashMap<String, String>,
    username: &str,
    second_factor: bool,
) -> Response<Body> {
    let mut hidden = String::new();
    let mut keys: Vec<&String> = params
        .keys()
        .filter(|k| !["username", "otp"].contains(&k.as_str()))
        .collect();
    keys.sort();
    for k in keys {
        hidden.push_str(&format!(
            "<input type=\"hidden\" name=\"{}\" value=\"{}\">\n",
            escape_html(k),
            escape_html(&params[k])
        ));
    }
    let otp = if second_factor {
        "<p>Step-up: this login asks for the second factor (acr urn:example:mfa).</p>\
         <label>One-time code (any six digits) <input name=\"otp\" id=\"otp\" inputmode=\"numeric\" \
         pattern=\"[0-9]{6}\" required></label>"
    } else {
        ""
    };
    let html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Dev IdP login</title></head>\
         <body><h1>Development IdP</h1><p>No password: this provider is for local development only.</p>\
         <form method=\"post\" action=\"/authorize\">\n{hidden}\
         <label>User <input name=\"username\" value=\"{}\" readonly></label>{otp}\
         <button type=\"submit\" id=\"login\">Log in</button></form></body></html>",
        escape_html(username)
    );
    text_response(StatusCode::OK, "text/html; charset=utf-8", html)
}

pub(super) fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

pub(super) async fn end_session(inner: &Inner, query: &str) -> Response<Body> {
    inner.state().stats.end_session += 1;
    let params = match parse_form(query.as_bytes()) {
        Ok(p) => p,
        Err(e) => return page(StatusCode::BAD_REQUEST, "Bad request", &e.description),
    };
    let hint = params
        .get("id_token_hint")
        .and_then(|t| verify_own_token(inner, t));
    let client_id = params.get("client_id").cloned().or_else(|| {
        hint.as_ref()
            .and_then(|c| c.get("aud")?.as_str().map(str::to_owned))
    });
    if let Some(uri) = params.get("post_logout_redirect_uri") {
        let registered = client_id
            .as_deref()
            .and_then(|id| client(inner, id))
            .is_some_and(|c| c.post_logout_redirect_uris.iter().any(|u| u == uri));
        if !registered {
            return page(
                StatusCode::BAD_REQUEST,
                "Bad post_logout_redirect_uri",
                "post_logout_redirect_uri is not registered for this client (send id_token_hint or client_id)",
            );
        }
    }
    if let Some(sid) = hint
        .as_ref()
        .and_then(|c| c.get("sid")?.as_str().map(str::to_owned))
    {
        end_idp_session(inner, &sid).await;
    }
    match params.get("post_logout_redirect_uri") {
        Some(uri) => {
            let Ok(mut url) = url::Url::parse(uri) else {
                return page(
                    StatusCode::BAD_REQUEST,
                    "Bad post_logout_redirect_uri",
                    "unparseable",
                );
            };
            if let Some(state) = params.get("state") {
                url.query_pairs_mut().append_pair("state", state);
            }
            redirect(url.as_str())
        }
        None => page(
            StatusCode::OK,
            "Logged out",
            "You are logged out of the development IdP.",
        ),
    }
}

/// Ends an IdP session and delivers back-channel logout tokens to its clients.
/// Returns how many deliveries succeeded.
pub(crate) async fn end_idp_session(inner: &Inner, sid: &str) -> usize {
    let Some(session) = inner.state().end_session(sid) else {
        return 0;
    };
    let mut delivered = 0;
    for client_id in &session.clients {
        let Some(uri) = client(inner, client_id).and_then(|c| c.backchannel_logout_uri.clone())
        else {
            continue;
        };
        let ok = send_logout_token(inner, client_id, &session.sub, sid, &uri).await;
        let mut state = inner.state();
        if ok {
            state.stats.backchannel_sent += 1;
            delivered += 1;
        } else {
            state.stats.backchannel_failed += 1;
        }
    }
    delivered
}

/// Signs a back-channel logout token for (`sub`, `sid`) and posts it to `uri`;
/// true when the client answered 2xx.
pub(crate) async fn send_logout_token(
    inner: &Inner,
    client_id: &str,
    sub: &str,
    sid: &str,
    uri: &str,
) -> bool {
    let token = {
        let state = inner.state();
        let iat = state.unix_now();
        state.sign(
            &json!({
                "iss": inner.issuer, "aud": client_id, "iat": iat, "exp": iat + 120,
                "jti": random_token(12), "sub": sub, "sid": sid,
                "events": { BACKCHANNEL_EVENT: {} },
            }),
            "logout+jwt",
        )
    };
    match token {
        Ok(token) => inner.backchannel.deliver(uri, &token).await,
        Err(_) => false,
    }
}

/// Sends back-channel logout tokens (plain http, loopback).
pub(crate) struct BackchannelClient {
    client: Client<HttpConnector, Body>,
}

impl BackchannelClient {
    pub(crate) fn new() -> Self {
        Self {
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    async fn deliver(&self, uri: &str, token: &str) -> bool {
        let body: String = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("logout_token", token)
            .finish();
        let Ok(req) = Request::post(uri)
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Full::new(Bytes::from(body)))
        else {
            return false;
        };
        match tokio::time::timeout(Duration::from_secs(5), self.client.request(req)).await {
            Ok(Ok(resp)) => resp.status().is_success(),
            _ => false,
        }
    }
}

pub(super) fn page(status: StatusCode, title: &str, text: &str) -> Response<Body> {
    let html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{0}</title></head>\
         <body><h1>{0}</h1><p>{1}</p></body></html>",
        escape_html(title),
        escape_html(text)
    );
    text_response(status, "text/html; charset=utf-8", html)
}

pub(super) fn redirect(location: &str) -> Response<Body> {
    let mut resp = text_response(StatusCode::FOUND, "text/plain", String::new());
    if let Ok(v) = http::HeaderValue::from_str(location) {
        resp.headers_mut().insert(LOCATION, v);
    }
    resp
}
