//! The header rules of a forwarded request and its response, shared by every front
//! door: hop-by-hop headers removed, our cookies stripped, the Bearer token set, a
//! client `Authorization` dropped on authenticated routes, `X-Forwarded-*` set.

use std::net::IpAddr;

use http::header::{
    AUTHORIZATION, CONNECTION, COOKIE, GetAll, HOST, HeaderMap, HeaderName, HeaderValue, Keys,
    PROXY_AUTHENTICATE, PROXY_AUTHORIZATION, SET_COOKIE, TE, TRAILER, TRANSFER_ENCODING, UPGRADE,
};

use crate::bff::Forward;
use crate::net::IpNet;

/// `X-Forwarded-For`.
pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `X-Forwarded-Proto`.
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `X-Request-Id`.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// RFC 9449's proof header.
pub static DPOP: HeaderName = HeaderName::from_static("dpop");
/// `X-Forwarded-Host`.
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

// Header names are typed once, here: a lookup by `&str` parses and classifies the
// name again on every call (callgrind: ~10,000 instructions per proxied request
// when the rules below looked up their twenty names as strings).
static HOP_BY_HOP: [HeaderName; 9] = [
    CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    PROXY_AUTHENTICATE,
    PROXY_AUTHORIZATION,
    TE,
    TRAILER,
    TRANSFER_ENCODING,
    UPGRADE,
];

/// What the header rules need from a header collection: `http::HeaderMap` here, and
/// the pingora adapter's request and response headers, which keep their own
/// case-preserving maps and must be edited through their own methods.
pub trait HeaderEdit {
    /// The first value of a header.
    fn get(&self, name: &HeaderName) -> Option<&HeaderValue>;
    /// Every value of a header.
    fn get_all(&self, name: &HeaderName) -> GetAll<'_, HeaderValue>;
    /// Replaces a header's values with one.
    fn set(&mut self, name: HeaderName, value: HeaderValue);
    /// Adds a value to a header.
    fn append(&mut self, name: HeaderName, value: HeaderValue);
    /// Removes a header.
    fn remove(&mut self, name: &HeaderName);
    /// Every header's name, once.
    fn names(&self) -> Keys<'_, HeaderValue>;
}

impl HeaderEdit for HeaderMap {
    fn get(&self, name: &HeaderName) -> Option<&HeaderValue> {
        HeaderMap::get(self, name)
    }

    fn get_all(&self, name: &HeaderName) -> GetAll<'_, HeaderValue> {
        HeaderMap::get_all(self, name)
    }

    fn set(&mut self, name: HeaderName, value: HeaderValue) {
        self.insert(name, value);
    }

    fn append(&mut self, name: HeaderName, value: HeaderValue) {
        HeaderMap::append(self, name, value);
    }

    fn remove(&mut self, name: &HeaderName) {
        HeaderMap::remove(self, name);
    }

    fn names(&self) -> Keys<'_, HeaderValue> {
        self.keys()
    }
}

/// The names the rules act on, each a bit of [`Present`]. The first nine are
/// [`HOP_BY_HOP`]'s, in its order; the next eight [`CLIENT_MAY_NOT_SET`]'s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Watched {
    Connection,
    KeepAlive,
    ProxyConnection,
    ProxyAuthenticate,
    ProxyAuthorization,
    Te,
    Trailer,
    TransferEncoding,
    Upgrade,
    Forwarded,
    XRealIp,
    XClientIp,
    XForwardedPort,
    XForwardedPrefix,
    XForwardedServer,
    XOriginalUrl,
    XRewriteUrl,
    Cookie,
    Authorization,
    Dpop,
    Host,
    XForwardedFor,
    XForwardedProto,
    XForwardedHost,
    /// One of the route's identity headers (`Forward::strip_identity`).
    Identity,
}

impl Watched {
    /// The watched name `name` is, if any (names are lower case in `http`).
    fn of(name: &HeaderName) -> Option<Self> {
        Some(match name.as_str() {
            "connection" => Self::Connection,
            "keep-alive" => Self::KeepAlive,
            "proxy-connection" => Self::ProxyConnection,
            "proxy-authenticate" => Self::ProxyAuthenticate,
            "proxy-authorization" => Self::ProxyAuthorization,
            "te" => Self::Te,
            "trailer" => Self::Trailer,
            "transfer-encoding" => Self::TransferEncoding,
            "upgrade" => Self::Upgrade,
            "forwarded" => Self::Forwarded,
            "x-real-ip" => Self::XRealIp,
            "x-client-ip" => Self::XClientIp,
            "x-forwarded-port" => Self::XForwardedPort,
            "x-forwarded-prefix" => Self::XForwardedPrefix,
            "x-forwarded-server" => Self::XForwardedServer,
            "x-original-url" => Self::XOriginalUrl,
            "x-rewrite-url" => Self::XRewriteUrl,
            "cookie" => Self::Cookie,
            "authorization" => Self::Authorization,
            "dpop" => Self::Dpop,
            "host" => Self::Host,
            "x-forwarded-for" => Self::XForwardedFor,
            "x-forwarded-proto" => Self::XForwardedProto,
            "x-forwarded-host" => Self::XForwardedHost,
            _ => return None,
        })
    }

    const fn bit(self) -> u32 {
        1 << self as u32
    }
}

/// Bits of [`Present`] for the [`HOP_BY_HOP`] names.
const HOP_BY_HOP_BITS: u32 = (1 << HOP_BY_HOP.len()) - 1;
/// Bits of [`Present`] for the [`CLIENT_MAY_NOT_SET`] names.
const CLIENT_MAY_NOT_SET_BITS: u32 = ((1 << CLIENT_MAY_NOT_SET.len()) - 1) << HOP_BY_HOP.len();

/// Which watched names a header collection holds, found in one pass over its names:
/// each rule then asks the map only about a header that is there (callgrind: the
/// ~35 lookups by name it made on every proxied request and response cost ~4,000
/// instructions). Taken before any edit; an edit only removes watched headers
/// before they are read, so a clear bit stays true.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Present(u32);

impl Present {
    /// The watched names in `headers`; [`Watched::Identity`] when one of
    /// `identity` is there.
    fn of<H: HeaderEdit + ?Sized>(headers: &H, identity: &[HeaderName]) -> Self {
        let mut bits = 0;
        for name in headers.names() {
            if let Some(w) = Watched::of(name) {
                bits |= w.bit();
            }
            if !identity.is_empty() && identity.contains(name) {
                bits |= Watched::Identity.bit();
            }
        }
        Self(bits)
    }

    fn has(self, w: Watched) -> bool {
        self.0 & w.bit() != 0
    }
}

/// Whether a request asks to switch to WebSocket, the one protocol switch that is
/// forwarded. Other upgrades (`h2c` above all, which can smuggle requests past a
/// proxy's checks) lose their `Upgrade` header and go on as plain requests.
#[must_use]
pub fn is_upgrade<H: HeaderEdit + ?Sized>(headers: &H) -> bool {
    is_upgrade_with(headers, Present::of(headers, &[]))
}

fn is_upgrade_with<H: HeaderEdit + ?Sized>(headers: &H, present: Present) -> bool {
    if !present.has(Watched::Upgrade) || !present.has(Watched::Connection) {
        return false;
    }
    headers
        .get(&UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"))
        && connection_has(headers, b"upgrade")
}

/// The tokens of the `Connection` header(s), trimmed, each given to `each` (no
/// copies: this runs on every request and response).
fn connection_tokens<H: HeaderEdit + ?Sized>(headers: &H, mut each: impl FnMut(&[u8])) {
    for value in headers.get_all(&CONNECTION) {
        for token in value.as_bytes().split(|b| *b == b',') {
            let token = token.trim_ascii();
            if !token.is_empty() {
                each(token);
            }
        }
    }
}

fn connection_has<H: HeaderEdit + ?Sized>(headers: &H, token: &[u8]) -> bool {
    let mut found = false;
    connection_tokens(headers, |t| found |= t.eq_ignore_ascii_case(token));
    found
}

/// Removes hop-by-hop headers (RFC 9110 7.6.1), including those a `Connection`
/// header names. With `keep_upgrade`, `Connection: upgrade` and `Upgrade` stay, for a
/// protocol switch that must reach the other side.
fn remove_hop_by_hop<H: HeaderEdit + ?Sized>(
    headers: &mut H,
    keep_upgrade: bool,
    present: Present,
) {
    if present.0 & HOP_BY_HOP_BITS == 0 {
        return;
    }
    let upgrade = if keep_upgrade && present.has(Watched::Upgrade) {
        headers.get(&UPGRADE).cloned()
    } else {
        None
    };
    if present.has(Watched::Connection) {
        let mut named = Vec::new();
        connection_tokens(headers, |token| {
            // The fixed hop-by-hop headers go below anyway (`keep-alive`, `upgrade`:
            // the usual tokens); a token that is no header name names no header.
            if HOP_BY_HOP
                .iter()
                .any(|h| h.as_str().as_bytes().eq_ignore_ascii_case(token))
            {
                return;
            }
            if let Ok(name) = HeaderName::from_bytes(token) {
                named.push(name);
            }
        });
        for name in &named {
            headers.remove(name);
        }
    }
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        if present.0 & (1 << i) != 0 {
            headers.remove(name);
        }
    }
    if let Some(up) = upgrade {
        headers.set(CONNECTION, HeaderValue::from_static("upgrade"));
        headers.set(UPGRADE, up);
    }
}

/// Headers a client may never set for the upstream: forwarding details other than
/// the three `X-Forwarded-*` the proxy sets, and the URL-rewrite headers some
/// frameworks route on (a second path the route check never saw).
static CLIENT_MAY_NOT_SET: [HeaderName; 8] = [
    HeaderName::from_static("forwarded"),
    HeaderName::from_static("x-real-ip"),
    HeaderName::from_static("x-client-ip"),
    HeaderName::from_static("x-forwarded-port"),
    HeaderName::from_static("x-forwarded-prefix"),
    HeaderName::from_static("x-forwarded-server"),
    HeaderName::from_static("x-original-url"),
    HeaderName::from_static("x-rewrite-url"),
];

/// The hop a request takes: into an application behind the tower layer, or across
/// the proxy to an upstream.
#[derive(Debug, Clone, Copy)]
pub enum Hop<'a> {
    /// The tower layer in front of an application: the session headers and the
    /// client's forbidden headers only (the layer is not a proxy hop).
    #[cfg_attr(not(feature = "tower"), allow(dead_code))]
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
/// The request's id (`request_id`, the value of `X-Request-Id`) replaces any the
/// client sent (a trusted proxy's was taken into it already, see
/// `engine::access::RequestId`).
pub fn apply_to_request<H: HeaderEdit + ?Sized>(
    headers: &mut H,
    forward: &Forward,
    hop: Hop<'_>,
    request_id: &HeaderValue,
) {
    let identity = forward.strip_identity.as_deref().unwrap_or_default();
    let present = Present::of(headers, identity);
    let upgrade = is_upgrade_with(headers, present);
    let original_host = if present.has(Watched::Host) {
        headers.get(&HOST).cloned()
    } else {
        None
    };
    remove_hop_by_hop(headers, upgrade, present);
    if present.0 & CLIENT_MAY_NOT_SET_BITS != 0 {
        for (i, name) in CLIENT_MAY_NOT_SET.iter().enumerate() {
            if present.0 & (1 << (HOP_BY_HOP.len() + i)) != 0 {
                headers.remove(name);
            }
        }
    }
    if present.has(Watched::Identity) {
        for name in identity {
            if headers.get(name).is_some() {
                headers.remove(name);
            }
        }
    }
    if let Hop::Proxy {
        peer,
        https,
        trusted,
    } = hop
    {
        apply_forwarding(headers, peer, https, trusted, original_host, present);
    }
    headers.set(X_REQUEST_ID.clone(), request_id.clone());
    apply_session(headers, forward, present);
}

/// The session part: the `Cookie` header without our cookies, a client
/// `Authorization` dropped on authenticated routes, the Bearer token set.
fn apply_session<H: HeaderEdit + ?Sized>(headers: &mut H, forward: &Forward, present: Present) {
    match &forward.cookie {
        Some(c) => headers.set(COOKIE, c.clone()),
        None => {
            if present.has(Watched::Cookie) {
                headers.remove(&COOKIE);
            }
        }
    }
    if let Some(bearer) = &forward.authorization {
        headers.set(AUTHORIZATION, bearer.clone());
    } else if forward.strip_authorization && present.has(Watched::Authorization) {
        headers.remove(&AUTHORIZATION);
    }
    // A client's DPoP proof goes where its Authorization goes: never beside ours.
    if forward.strip_authorization && present.has(Watched::Dpop) {
        headers.remove(&DPOP);
    }
    if let Some(proof) = &forward.dpop {
        headers.set(DPOP.clone(), proof.clone());
    }
    for (name, value) in &forward.identity {
        headers.set(name.clone(), value.clone());
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
    present: Present,
) {
    let trusted_peer = trusted.iter().any(|net| net.contains(peer));
    let prior = if trusted_peer && present.has(Watched::XForwardedFor) {
        headers
            .get_all(&X_FORWARDED_FOR)
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
        ip_value(peer)
    } else {
        HeaderValue::from_str(&format!("{prior}, {}", peer.to_canonical()))
    };
    match xff {
        Ok(v) => headers.set(X_FORWARDED_FOR.clone(), v),
        Err(_) => headers.remove(&X_FORWARDED_FOR),
    }
    let client_proto = if trusted_peer && present.has(Watched::XForwardedProto) {
        headers
            .get(&X_FORWARDED_PROTO)
            .filter(|v| matches!(v.as_bytes(), b"http" | b"https"))
            .cloned()
    } else {
        None
    };
    headers.set(
        X_FORWARDED_PROTO.clone(),
        client_proto
            .unwrap_or_else(|| HeaderValue::from_static(if https { "https" } else { "http" })),
    );
    let client_host = if trusted_peer && present.has(Watched::XForwardedHost) {
        headers.get(&X_FORWARDED_HOST).cloned()
    } else {
        None
    };
    match client_host.or(original_host) {
        Some(host) => headers.set(X_FORWARDED_HOST.clone(), host),
        None => {
            if present.has(Watched::XForwardedHost) {
                headers.remove(&X_FORWARDED_HOST);
            }
        }
    }
    if present.has(Watched::Host) {
        headers.remove(&HOST);
    }
}

/// A client's address as a header value (an IPv4-mapped IPv6 address as IPv4), an
/// IPv4 address written without `fmt` (callgrind: ~1,300 instructions per request).
fn ip_value(ip: IpAddr) -> Result<HeaderValue, http::header::InvalidHeaderValue> {
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            let mut text = [0u8; 15];
            let mut len = 0;
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    text[len] = b'.';
                    len += 1;
                }
                let digits = [octet / 100, octet / 10 % 10, octet % 10];
                let skip = if octet >= 100 {
                    0
                } else if octet >= 10 {
                    1
                } else {
                    2
                };
                for d in &digits[skip..] {
                    text[len] = b'0' + d;
                    len += 1;
                }
            }
            HeaderValue::from_bytes(&text[..len])
        }
        IpAddr::V6(v6) => HeaderValue::from_str(&v6.to_string()),
    }
}

/// An HTTP/2 request as the core and the HTTP/1.1 upstream expect it: its
/// `:authority` as `Host` (h2 carries no Host header; the core and the forwarding
/// headers read it). Other versions are left as they are.
pub fn host_from_authority<H: HeaderEdit + ?Sized>(
    headers: &mut H,
    version: http::Version,
    uri: &http::Uri,
) {
    if version != http::Version::HTTP_2 {
        return;
    }
    if let Some(host) = uri
        .authority()
        .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    {
        headers.set(HOST, host);
    }
}

/// Cleans an upstream's response headers: hop-by-hop headers removed (kept on a
/// 101 switch).
pub fn clean_response<H: HeaderEdit + ?Sized>(headers: &mut H, switching: bool) {
    let present = Present::of(headers, &[]);
    remove_hop_by_hop(headers, switching, present);
}

/// Adds the session's `Set-Cookie` values to a response.
pub fn add_set_cookies<H: HeaderEdit + ?Sized>(headers: &mut H, forward: &Forward) {
    for c in &forward.set_cookies {
        headers.append(SET_COOKIE, c.clone());
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod example {
    /// What the module does, in a few lines.
    #[test]
    fn module_example() {
        use crate::engine::headers::clean_response;
        use http::{HeaderMap, HeaderValue};

        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, x-private"),
        );
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert("accept", HeaderValue::from_static("*/*"));
        clean_response(&mut h, false);
        assert_eq!(h.len(), 1);
    }
}
