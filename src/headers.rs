//! The header rules of a forwarded request and its response, shared by every front
//! door: hop-by-hop headers removed, our cookies stripped, the Bearer token set, a
//! client `Authorization` dropped on authenticated routes, `X-Forwarded-*` set.
//!
//! ```
//! use bff_proxy::headers::remove_hop_by_hop;
//! use http::{HeaderMap, HeaderValue};
//!
//! let mut h = HeaderMap::new();
//! h.insert("connection", HeaderValue::from_static("keep-alive, x-private"));
//! h.insert("x-private", HeaderValue::from_static("1"));
//! h.insert("accept", HeaderValue::from_static("*/*"));
//! remove_hop_by_hop(&mut h, false);
//! assert_eq!(h.len(), 1);
//! ```

use std::net::IpAddr;

use http::header::{
    AUTHORIZATION, CONNECTION, COOKIE, HOST, HeaderMap, HeaderName, HeaderValue, SET_COOKIE,
    UPGRADE,
};

use crate::bff::Forward;

/// `X-Forwarded-For`.
pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `X-Forwarded-Proto`.
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `X-Forwarded-Host`.
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// What the header rules need from a header collection: `http::HeaderMap` here, and
/// the pingora adapter's request and response headers, which keep their own
/// case-preserving maps and must be edited through their own methods.
pub trait HeaderEdit {
    /// The first value of a header.
    fn get(&self, name: &str) -> Option<&HeaderValue>;
    /// Every value of a header.
    fn get_all(&self, name: &str) -> Vec<&HeaderValue>;
    /// Replaces a header's values with one.
    fn set(&mut self, name: HeaderName, value: HeaderValue);
    /// Adds a value to a header.
    fn append(&mut self, name: HeaderName, value: HeaderValue);
    /// Removes a header.
    fn remove(&mut self, name: &str);
}

impl HeaderEdit for HeaderMap {
    fn get(&self, name: &str) -> Option<&HeaderValue> {
        HeaderMap::get(self, name)
    }

    fn get_all(&self, name: &str) -> Vec<&HeaderValue> {
        HeaderMap::get_all(self, name).iter().collect()
    }

    fn set(&mut self, name: HeaderName, value: HeaderValue) {
        self.insert(name, value);
    }

    fn append(&mut self, name: HeaderName, value: HeaderValue) {
        HeaderMap::append(self, name, value);
    }

    fn remove(&mut self, name: &str) {
        HeaderMap::remove(self, name);
    }
}

/// Whether a request asks to switch protocols (a WebSocket upgrade).
#[must_use]
pub fn is_upgrade<H: HeaderEdit + ?Sized>(headers: &H) -> bool {
    headers.get(UPGRADE.as_str()).is_some() && connection_has(headers, "upgrade")
}

fn connection_tokens<H: HeaderEdit + ?Sized>(headers: &H) -> Vec<String> {
    headers
        .get_all(CONNECTION.as_str())
        .into_iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect()
}

fn connection_has<H: HeaderEdit + ?Sized>(headers: &H, token: &str) -> bool {
    connection_tokens(headers).iter().any(|t| t == token)
}

/// Removes hop-by-hop headers (RFC 9110 7.6.1), including those a `Connection`
/// header names. With `keep_upgrade`, `Connection: upgrade` and `Upgrade` stay, for a
/// protocol switch that must reach the other side.
pub fn remove_hop_by_hop<H: HeaderEdit + ?Sized>(headers: &mut H, keep_upgrade: bool) {
    let upgrade = headers.get(UPGRADE.as_str()).cloned();
    for name in connection_tokens(headers) {
        headers.remove(&name);
    }
    for name in HOP_BY_HOP {
        if headers.get(name).is_some() {
            headers.remove(name);
        }
    }
    if keep_upgrade {
        if let Some(up) = upgrade {
            headers.set(CONNECTION, HeaderValue::from_static("upgrade"));
            headers.set(UPGRADE, up);
        }
    }
}

/// Applies a [`Forward`] decision to the headers of the request going upstream:
/// the session part ([`apply_session`]) and the proxy part ([`apply_proxy`]).
/// `peer` is the client's address, `https` whether it reached us over TLS.
pub fn apply_to_request<H: HeaderEdit + ?Sized>(
    headers: &mut H,
    forward: &Forward,
    peer: IpAddr,
    https: bool,
) {
    apply_proxy(headers, peer, https);
    apply_session(headers, forward);
}

/// The session part, which the tower layer applies in front of any application:
/// the `Cookie` header without our cookies, a client `Authorization` dropped on
/// authenticated routes, the Bearer token set.
pub fn apply_session<H: HeaderEdit + ?Sized>(headers: &mut H, forward: &Forward) {
    match &forward.cookie {
        Some(c) => headers.set(COOKIE, c.clone()),
        None => {
            if headers.get(COOKIE.as_str()).is_some() {
                headers.remove(COOKIE.as_str());
            }
        }
    }
    if let Some(bearer) = &forward.authorization {
        headers.set(AUTHORIZATION, bearer.clone());
    } else if forward.strip_authorization && headers.get(AUTHORIZATION.as_str()).is_some() {
        headers.remove(AUTHORIZATION.as_str());
    }
}

/// The proxy part, for a request that crosses to an upstream: hop-by-hop headers
/// removed (an upgrade's kept), `X-Forwarded-For/Proto/Host` set, `Host` removed
/// (the client fills it from the upstream URI; pingora's adapter sets it).
pub fn apply_proxy<H: HeaderEdit + ?Sized>(headers: &mut H, peer: IpAddr, https: bool) {
    let upgrade = is_upgrade(headers);
    let original_host = headers.get(HOST.as_str()).cloned();
    remove_hop_by_hop(headers, upgrade);
    // Appended to what the client sent, as proxies chain it; upstreams decide how far
    // back to trust.
    let peer = peer.to_string();
    let xff = match headers
        .get(X_FORWARDED_FOR.as_str())
        .and_then(|v| v.to_str().ok())
    {
        Some(prior) if !prior.trim().is_empty() => format!("{prior}, {peer}"),
        _ => peer,
    };
    if let Ok(v) = HeaderValue::from_str(&xff) {
        headers.set(X_FORWARDED_FOR.clone(), v);
    }
    headers.set(
        X_FORWARDED_PROTO.clone(),
        HeaderValue::from_static(if https { "https" } else { "http" }),
    );
    match original_host {
        Some(host) => headers.set(X_FORWARDED_HOST.clone(), host),
        None => {
            if headers.get(X_FORWARDED_HOST.as_str()).is_some() {
                headers.remove(X_FORWARDED_HOST.as_str());
            }
        }
    }
    if headers.get(HOST.as_str()).is_some() {
        headers.remove(HOST.as_str());
    }
}

/// Cleans an upstream's response headers: hop-by-hop headers removed (kept on a
/// 101 switch).
pub fn clean_response<H: HeaderEdit + ?Sized>(headers: &mut H, switching: bool) {
    remove_hop_by_hop(headers, switching);
}

/// Adds the session's `Set-Cookie` values to a response.
pub fn add_set_cookies<H: HeaderEdit + ?Sized>(headers: &mut H, forward: &Forward) {
    for c in &forward.set_cookies {
        headers.append(SET_COOKIE, c.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bff::Target;
    use http::header::TRANSFER_ENCODING;

    fn forward(bearer: Option<&'static str>, strip: bool) -> Forward {
        Forward {
            route: Some(0),
            target: Target::Application,
            authorization: bearer.map(HeaderValue::from_static),
            strip_authorization: strip,
            cookie: Some(HeaderValue::from_static("theme=dark")),
            set_cookies: vec![HeaderValue::from_static("s=1; Path=/")],
            id_token: None,
        }
    }

    #[test]
    fn request_rules() {
        let mut h = HeaderMap::new();
        h.insert(HOST, HeaderValue::from_static("app.example"));
        h.insert(
            COOKIE,
            HeaderValue::from_static("theme=dark; __Host-Http-bff=x"),
        );
        h.insert(AUTHORIZATION, HeaderValue::from_static("Bearer forged"));
        h.insert(CONNECTION, HeaderValue::from_static("keep-alive"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(
            X_FORWARDED_FOR.clone(),
            HeaderValue::from_static("10.0.0.1"),
        );
        apply_to_request(
            &mut h,
            &forward(Some("Bearer real"), true),
            "127.0.0.1".parse().unwrap(),
            false,
        );
        assert_eq!(h[AUTHORIZATION], "Bearer real");
        assert_eq!(h[COOKIE], "theme=dark");
        assert_eq!(h[&X_FORWARDED_FOR], "10.0.0.1, 127.0.0.1");
        assert_eq!(h[&X_FORWARDED_PROTO], "http");
        assert_eq!(h[&X_FORWARDED_HOST], "app.example");
        assert!(
            !h.contains_key(HOST) && !h.contains_key(CONNECTION) && !h.contains_key("keep-alive")
        );

        // Authenticated route without a session (optional): the forged one is dropped.
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_static("Bearer forged"));
        apply_to_request(&mut h, &forward(None, true), "::1".parse().unwrap(), true);
        assert!(!h.contains_key(AUTHORIZATION));
        assert_eq!(h[&X_FORWARDED_PROTO], "https");
        // auth = "none": the client's own Authorization passes.
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        apply_to_request(&mut h, &forward(None, false), "::1".parse().unwrap(), true);
        assert_eq!(h[AUTHORIZATION], "Basic abc");
    }

    #[test]
    fn upgrades_keep_their_headers() {
        let mut h = HeaderMap::new();
        h.insert(CONNECTION, HeaderValue::from_static("keep-alive, Upgrade"));
        h.insert(UPGRADE, HeaderValue::from_static("websocket"));
        assert!(is_upgrade(&h));
        apply_to_request(&mut h, &forward(None, false), "::1".parse().unwrap(), false);
        assert_eq!(h[CONNECTION], "upgrade");
        assert_eq!(h[UPGRADE], "websocket");
    }

    #[test]
    fn response_rules() {
        let mut h = HeaderMap::new();
        h.insert(TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        h.insert(SET_COOKIE, HeaderValue::from_static("app=1"));
        clean_response(&mut h, false);
        add_set_cookies(&mut h, &forward(None, false));
        assert!(!h.contains_key(TRANSFER_ENCODING));
        assert_eq!(h.get_all(SET_COOKIE).iter().count(), 2);
    }
}
