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
use crate::net::IpNet;

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

/// Whether a request asks to switch to WebSocket, the one protocol switch that is
/// forwarded. Other upgrades (`h2c` above all, which can smuggle requests past a
/// proxy's checks) lose their `Upgrade` header and go on as plain requests.
#[must_use]
pub fn is_upgrade<H: HeaderEdit + ?Sized>(headers: &H) -> bool {
    headers
        .get(UPGRADE.as_str())
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"))
        && connection_has(headers, "upgrade")
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

/// Headers a client may never set for the upstream: forwarding details other than
/// the three `X-Forwarded-*` the proxy sets, and the URL-rewrite headers some
/// frameworks route on (a second path the route check never saw).
const CLIENT_MAY_NOT_SET: &[&str] = &[
    "forwarded",
    "x-real-ip",
    "x-client-ip",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "x-forwarded-server",
    "x-original-url",
    "x-rewrite-url",
];

/// The hop a request takes: into an application behind the tower layer, or across
/// the proxy to an upstream.
#[derive(Debug, Clone, Copy)]
pub enum Hop<'a> {
    /// The tower layer in front of an application: the session headers and the
    /// client's forbidden headers only (the layer is not a proxy hop).
    Layer,
    /// The proxy: also `X-Forwarded-For/Proto/Host` and `Host`.
    Proxy {
        /// The client's address.
        peer: IpAddr,
        /// Whether it reached us over TLS.
        https: bool,
        /// `server.trusted_proxies`: peers whose forwarding headers are kept.
        trusted: &'a [IpNet],
    },
}

/// Applies a [`Forward`] decision to the headers of the request going on, in the one
/// order every front door uses: first the hop-by-hop headers and every header the
/// client's `Connection` names are removed, with the headers a client may not set;
/// only then are the proxy's own headers set (forwarding headers on a proxy hop,
/// then our `Cookie` and `Authorization`). So `Connection: authorization` removes the
/// client's copy, never the Bearer the proxy sets.
pub fn apply_to_request<H: HeaderEdit + ?Sized>(headers: &mut H, forward: &Forward, hop: Hop<'_>) {
    let upgrade = is_upgrade(headers);
    let original_host = headers.get(HOST.as_str()).cloned();
    remove_hop_by_hop(headers, upgrade);
    for name in CLIENT_MAY_NOT_SET {
        if headers.get(name).is_some() {
            headers.remove(name);
        }
    }
    if let Hop::Proxy {
        peer,
        https,
        trusted,
    } = hop
    {
        apply_forwarding(headers, peer, https, trusted, original_host);
    }
    apply_session(headers, forward);
}

/// The session part: the `Cookie` header without our cookies, a client
/// `Authorization` dropped on authenticated routes, the Bearer token set.
fn apply_session<H: HeaderEdit + ?Sized>(headers: &mut H, forward: &Forward) {
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

/// `X-Forwarded-For/Proto/Host` replaced (kept and appended to when the peer is a
/// trusted proxy), `Host` removed (the client fills it from the upstream URI;
/// pingora's adapter sets it).
fn apply_forwarding<H: HeaderEdit + ?Sized>(
    headers: &mut H,
    peer: IpAddr,
    https: bool,
    trusted: &[IpNet],
    original_host: Option<HeaderValue>,
) {
    let trusted_peer = trusted.iter().any(|net| net.contains(peer));
    let peer_text = peer.to_canonical().to_string();
    let prior = if trusted_peer {
        headers
            .get_all(X_FORWARDED_FOR.as_str())
            .into_iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .collect::<Vec<_>>()
            .join(", ")
    } else {
        String::new()
    };
    let xff = if prior.is_empty() {
        peer_text
    } else {
        format!("{prior}, {peer_text}")
    };
    match HeaderValue::from_str(&xff) {
        Ok(v) => headers.set(X_FORWARDED_FOR.clone(), v),
        Err(_) => headers.remove(X_FORWARDED_FOR.as_str()),
    }
    let client_proto = headers
        .get(X_FORWARDED_PROTO.as_str())
        .filter(|v| trusted_peer && matches!(v.as_bytes(), b"http" | b"https"))
        .cloned();
    headers.set(
        X_FORWARDED_PROTO.clone(),
        client_proto
            .unwrap_or_else(|| HeaderValue::from_static(if https { "https" } else { "http" })),
    );
    let client_host = headers
        .get(X_FORWARDED_HOST.as_str())
        .filter(|_| trusted_peer)
        .cloned();
    match client_host.or(original_host) {
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

    fn proxy(peer: &str, https: bool) -> Hop<'static> {
        Hop::Proxy {
            peer: peer.parse().unwrap(),
            https,
            trusted: &[],
        }
    }

    #[test]
    fn connection_cannot_remove_what_the_proxy_sets() {
        for hop in [proxy("10.1.2.3", false), Hop::Layer] {
            for named in [
                "authorization",
                "Authorization, cookie",
                "x-forwarded-for, x-forwarded-proto, x-forwarded-host",
                "keep-alive, AUTHORIZATION",
            ] {
                let mut h = HeaderMap::new();
                h.insert(CONNECTION, HeaderValue::from_str(named).unwrap());
                h.insert(AUTHORIZATION, HeaderValue::from_static("Bearer forged"));
                h.insert(HOST, HeaderValue::from_static("app.example"));
                apply_to_request(&mut h, &forward(Some("Bearer real"), true), hop);
                assert_eq!(h[AUTHORIZATION], "Bearer real", "{named}");
                assert_eq!(h[COOKIE], "theme=dark", "{named}");
                if let Hop::Proxy { .. } = hop {
                    assert_eq!(h[&X_FORWARDED_FOR], "10.1.2.3", "{named}");
                    assert_eq!(h[&X_FORWARDED_PROTO], "http", "{named}");
                    assert_eq!(h[&X_FORWARDED_HOST], "app.example", "{named}");
                }
                assert!(!h.contains_key(CONNECTION));
            }
        }
    }

    #[test]
    fn spoofable_forwarding_headers_are_dropped_and_replaced() {
        let spoofed = [
            ("forwarded", "for=1.2.3.4;proto=https"),
            ("x-real-ip", "1.2.3.4"),
            ("x-client-ip", "1.2.3.4"),
            ("x-forwarded-port", "443"),
            ("x-forwarded-prefix", "/admin"),
            ("x-forwarded-server", "evil"),
            ("x-original-url", "/admin"),
            ("x-rewrite-url", "/admin"),
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil.example"),
        ];
        let request = || {
            let mut h = HeaderMap::new();
            for (k, v) in spoofed {
                h.insert(HeaderName::from_static(k), HeaderValue::from_static(v));
            }
            h.insert(HOST, HeaderValue::from_static("app.example"));
            h
        };
        let mut h = request();
        apply_to_request(&mut h, &forward(None, false), proxy("10.0.0.7", false));
        for (k, _) in &spoofed[..8] {
            assert!(!h.contains_key(*k), "{k} reached the upstream");
        }
        assert_eq!(h[&X_FORWARDED_FOR], "10.0.0.7");
        assert_eq!(h[&X_FORWARDED_PROTO], "http");
        assert_eq!(h[&X_FORWARDED_HOST], "app.example");

        // Behind a trusted load balancer: its X-Forwarded-* are kept and extended.
        let trusted = [IpNet::parse("10.0.0.0/8").unwrap()];
        let mut h = request();
        let hop = Hop::Proxy {
            peer: "10.0.0.7".parse().unwrap(),
            https: false,
            trusted: &trusted,
        };
        apply_to_request(&mut h, &forward(None, false), hop);
        assert_eq!(h[&X_FORWARDED_FOR], "1.2.3.4, 10.0.0.7");
        assert_eq!(h[&X_FORWARDED_PROTO], "https");
        assert_eq!(h[&X_FORWARDED_HOST], "evil.example");
        for (k, _) in &spoofed[..8] {
            assert!(!h.contains_key(*k), "{k} passes even from a trusted proxy");
        }
        // The layer drops them too, and leaves X-Forwarded-* to the app's own proxy.
        let mut h = request();
        apply_to_request(&mut h, &forward(None, false), Hop::Layer);
        assert!(!h.contains_key("x-original-url") && !h.contains_key("forwarded"));
        assert_eq!(h[&X_FORWARDED_FOR], "1.2.3.4");
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
            proxy("127.0.0.1", false),
        );
        assert_eq!(h[AUTHORIZATION], "Bearer real");
        assert_eq!(h[COOKIE], "theme=dark");
        assert_eq!(
            h[&X_FORWARDED_FOR], "127.0.0.1",
            "replaced: the peer is not trusted"
        );
        assert_eq!(h[&X_FORWARDED_PROTO], "http");
        assert_eq!(h[&X_FORWARDED_HOST], "app.example");
        assert!(
            !h.contains_key(HOST) && !h.contains_key(CONNECTION) && !h.contains_key("keep-alive")
        );

        // Authenticated route without a session (optional): the forged one is dropped.
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_static("Bearer forged"));
        apply_to_request(&mut h, &forward(None, true), proxy("::1", true));
        assert!(!h.contains_key(AUTHORIZATION));
        assert_eq!(h[&X_FORWARDED_PROTO], "https");
        // auth = "none": the client's own Authorization passes.
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        apply_to_request(&mut h, &forward(None, false), proxy("::1", true));
        assert_eq!(h[AUTHORIZATION], "Basic abc");
    }

    #[test]
    fn upgrades_keep_their_headers() {
        let mut h = HeaderMap::new();
        h.insert(CONNECTION, HeaderValue::from_static("keep-alive, Upgrade"));
        h.insert(UPGRADE, HeaderValue::from_static("websocket"));
        assert!(is_upgrade(&h));
        apply_to_request(&mut h, &forward(None, false), proxy("::1", false));
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
