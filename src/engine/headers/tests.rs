//! Unit tests of `headers`.

use super::*;
use crate::bff::Target;
use http::header::TRANSFER_ENCODING;

fn forward(bearer: Option<&'static str>, strip: bool) -> Forward {
    Forward {
        route: Some(0),
        target: Target::Application,
        authorization: bearer.map(HeaderValue::from_static),
        dpop: None,
        strip_authorization: strip,
        cookie: Some(HeaderValue::from_static("theme=dark")),
        set_cookies: vec![HeaderValue::from_static("s=1; Path=/")],
        session: None,
        static_file: None,
        sid: None,
        identity: Vec::new(),
        strip_identity: None,
    }
}

fn request_id() -> HeaderValue {
    HeaderValue::from_static("0123456789abcdef0123456789abcdef")
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
            apply_to_request(
                &mut h,
                &forward(Some("Bearer real"), true),
                hop,
                &request_id(),
            );
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
    apply_to_request(
        &mut h,
        &forward(None, false),
        proxy("10.0.0.7", false),
        &request_id(),
    );
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
    apply_to_request(&mut h, &forward(None, false), hop, &request_id());
    assert_eq!(h[&X_FORWARDED_FOR], "1.2.3.4, 10.0.0.7");
    assert_eq!(h[&X_FORWARDED_PROTO], "https");
    assert_eq!(h[&X_FORWARDED_HOST], "evil.example");
    for (k, _) in &spoofed[..8] {
        assert!(!h.contains_key(*k), "{k} passes even from a trusted proxy");
    }
    // The layer drops them too, and leaves X-Forwarded-* to the app's own proxy.
    let mut h = request();
    apply_to_request(&mut h, &forward(None, false), Hop::Layer, &request_id());
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
        &request_id(),
    );
    assert_eq!(h[AUTHORIZATION], "Bearer real");
    assert_eq!(h[COOKIE], "theme=dark");
    assert_eq!(
        h[&X_FORWARDED_FOR], "127.0.0.1",
        "replaced: the peer is not trusted"
    );
    assert_eq!(h[&X_FORWARDED_PROTO], "http");
    assert_eq!(h[&X_FORWARDED_HOST], "app.example");
    assert!(!h.contains_key(HOST) && !h.contains_key(CONNECTION) && !h.contains_key("keep-alive"));

    // Authenticated route without a session (optional): the forged one is dropped.
    let mut h = HeaderMap::new();
    h.insert(AUTHORIZATION, HeaderValue::from_static("Bearer forged"));
    apply_to_request(
        &mut h,
        &forward(None, true),
        proxy("::1", true),
        &request_id(),
    );
    assert!(!h.contains_key(AUTHORIZATION));
    assert_eq!(h[&X_FORWARDED_PROTO], "https");
    // auth = "none": the client's own Authorization passes.
    let mut h = HeaderMap::new();
    h.insert(AUTHORIZATION, HeaderValue::from_static("Basic abc"));
    apply_to_request(
        &mut h,
        &forward(None, false),
        proxy("::1", true),
        &request_id(),
    );
    assert_eq!(h[AUTHORIZATION], "Basic abc");
}

#[test]
fn upgrades_keep_their_headers() {
    let mut h = HeaderMap::new();
    h.insert(CONNECTION, HeaderValue::from_static("keep-alive, Upgrade"));
    h.insert(UPGRADE, HeaderValue::from_static("websocket"));
    assert!(is_upgrade(&h));
    apply_to_request(
        &mut h,
        &forward(None, false),
        proxy("::1", false),
        &request_id(),
    );
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

/// The request id replaces the client's, and a `Connection` header naming it
/// removes only the client's copy.
#[test]
fn the_request_id_replaces_the_clients() {
    let id = request_id();
    for hop in [proxy("127.0.0.1", false), Hop::Layer] {
        let mut h = HeaderMap::new();
        h.insert("x-request-id", HeaderValue::from_static("forged"));
        h.insert(CONNECTION, HeaderValue::from_static("x-request-id"));
        apply_to_request(&mut h, &forward(None, false), hop, &id);
        assert_eq!(h.get_all("x-request-id").iter().count(), 1);
        assert_eq!(h["x-request-id"], id);
    }
}

#[test]
fn our_dpop_proof_replaces_the_clients() {
    let mut headers = HeaderMap::new();
    headers.insert("dpop", HeaderValue::from_static("client-proof"));
    headers.insert(AUTHORIZATION, HeaderValue::from_static("DPoP client-token"));
    let mut ours = forward(Some("DPoP our-token"), true);
    ours.dpop = Some(HeaderValue::from_static("our-proof"));
    apply_to_request(&mut headers, &ours, Hop::Layer, &request_id());
    assert_eq!(headers["dpop"], "our-proof");
    assert_eq!(headers[AUTHORIZATION], "DPoP our-token");
    // An authenticated route without DPoP: the client's proof is dropped too.
    let mut headers = HeaderMap::new();
    headers.insert("dpop", HeaderValue::from_static("client-proof"));
    apply_to_request(
        &mut headers,
        &forward(Some("Bearer t"), true),
        Hop::Layer,
        &request_id(),
    );
    assert!(headers.get("dpop").is_none());
    // A public route leaves it alone.
    let mut headers = HeaderMap::new();
    headers.insert("dpop", HeaderValue::from_static("client-proof"));
    apply_to_request(
        &mut headers,
        &forward(None, false),
        Hop::Layer,
        &request_id(),
    );
    assert_eq!(headers["dpop"], "client-proof");
}

/// The client's address in `X-Forwarded-For` reads as `IpAddr`'s own text.
#[test]
fn peer_addresses_are_written_as_std_writes_them() {
    for ip in [
        "0.0.0.0",
        "9.10.99.100",
        "127.0.0.1",
        "255.255.255.255",
        "1.2.3.4",
        "192.168.100.9",
        "::1",
        "2001:db8::8a2e:370:7334",
        "::ffff:10.1.2.3",
    ] {
        let ip: IpAddr = ip.parse().unwrap();
        assert_eq!(
            ip_value(ip).unwrap(),
            ip.to_canonical().to_string().as_str(),
            "{ip}"
        );
    }
    for octets in [[0, 0, 0, 0], [1, 20, 199, 250], [10, 100, 101, 9]] {
        let ip = IpAddr::from(octets);
        assert_eq!(ip_value(ip).unwrap(), ip.to_string().as_str());
    }
}

/// Every header a `Connection` header names goes, whatever its case or spacing,
/// over several `Connection` lines; the fixed hop-by-hop ones go too.
#[test]
fn connection_names_the_headers_that_go() {
    let mut h = HeaderMap::new();
    h.append(
        CONNECTION,
        HeaderValue::from_static("Close, X-Foo ,, x-bar"),
    );
    h.append(CONNECTION, HeaderValue::from_static("KEEP-ALIVE,\tX-Baz"));
    for name in ["x-foo", "x-bar", "x-baz", "keep-alive", "x-stays"] {
        h.insert(HeaderName::from_static(name), HeaderValue::from_static("1"));
    }
    // A value with a byte outside ASCII still names the headers it names.
    h.append(
        CONNECTION,
        HeaderValue::from_bytes(b"x-qux, caf\xe9").unwrap(),
    );
    h.insert(
        HeaderName::from_static("x-qux"),
        HeaderValue::from_static("1"),
    );
    assert!(!is_upgrade(&h));
    clean_response(&mut h, false);
    let left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
    assert_eq!(left, ["x-stays"]);
}

/// The header rules as they were before [`Present`] (every rule asking the map by
/// name): the oracle the one-pass rules are checked against.
#[allow(clippy::pedantic)]
mod reference {
    use super::super::{
        CLIENT_MAY_NOT_SET, DPOP, HOP_BY_HOP, HeaderEdit, Hop, X_FORWARDED_FOR, X_FORWARDED_HOST,
        X_FORWARDED_PROTO, X_REQUEST_ID, ip_value,
    };
    use crate::bff::Forward;
    use crate::net::IpNet;
    use http::header::{AUTHORIZATION, CONNECTION, COOKIE, HOST, HeaderName, HeaderValue, UPGRADE};
    use std::net::IpAddr;

    pub(super) fn is_upgrade<H: HeaderEdit + ?Sized>(headers: &H) -> bool {
        headers
            .get(&UPGRADE)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"))
            && connection_has(headers, b"upgrade")
    }

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

    pub(super) fn remove_hop_by_hop<H: HeaderEdit + ?Sized>(headers: &mut H, keep_upgrade: bool) {
        let upgrade = if keep_upgrade {
            headers.get(&UPGRADE).cloned()
        } else {
            None
        };
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
        for name in &HOP_BY_HOP {
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

    pub(super) fn apply_to_request<H: HeaderEdit + ?Sized>(
        headers: &mut H,
        forward: &Forward,
        hop: Hop<'_>,
        request_id: &HeaderValue,
    ) {
        let upgrade = is_upgrade(headers);
        let original_host = headers.get(&HOST).cloned();
        remove_hop_by_hop(headers, upgrade);
        for name in CLIENT_MAY_NOT_SET
            .iter()
            .chain(forward.strip_identity.iter().flat_map(|n| n.iter()))
        {
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
        headers.set(X_REQUEST_ID.clone(), request_id.clone());
        apply_session(headers, forward);
    }

    fn apply_session<H: HeaderEdit + ?Sized>(headers: &mut H, forward: &Forward) {
        match &forward.cookie {
            Some(c) => headers.set(COOKIE, c.clone()),
            None => {
                if headers.get(&COOKIE).is_some() {
                    headers.remove(&COOKIE);
                }
            }
        }
        if let Some(bearer) = &forward.authorization {
            headers.set(AUTHORIZATION, bearer.clone());
        } else if forward.strip_authorization && headers.get(&AUTHORIZATION).is_some() {
            headers.remove(&AUTHORIZATION);
        }
        // A client's DPoP proof goes where its Authorization goes: never beside ours.
        if forward.strip_authorization && headers.get(&DPOP).is_some() {
            headers.remove(&DPOP);
        }
        if let Some(proof) = &forward.dpop {
            headers.set(DPOP.clone(), proof.clone());
        }
        for (name, value) in &forward.identity {
            headers.set(name.clone(), value.clone());
        }
    }

    fn apply_forwarding<H: HeaderEdit + ?Sized>(
        headers: &mut H,
        peer: IpAddr,
        https: bool,
        trusted: &[IpNet],
        original_host: Option<HeaderValue>,
    ) {
        let trusted_peer = trusted.iter().any(|net| net.contains(peer));
        let prior = if trusted_peer {
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
        let client_proto = headers
            .get(&X_FORWARDED_PROTO)
            .filter(|v| trusted_peer && matches!(v.as_bytes(), b"http" | b"https"))
            .cloned();
        headers.set(
            X_FORWARDED_PROTO.clone(),
            client_proto
                .unwrap_or_else(|| HeaderValue::from_static(if https { "https" } else { "http" })),
        );
        let client_host = headers
            .get(&X_FORWARDED_HOST)
            .filter(|_| trusted_peer)
            .cloned();
        match client_host.or(original_host) {
            Some(host) => headers.set(X_FORWARDED_HOST.clone(), host),
            None => {
                if headers.get(&X_FORWARDED_HOST).is_some() {
                    headers.remove(&X_FORWARDED_HOST);
                }
            }
        }
        if headers.get(&HOST).is_some() {
            headers.remove(&HOST);
        }
    }
}

/// Header names the oracle test draws from: every name a rule acts on, in both
/// cases, one the route's identity list holds, and others.
const NAMES: [&str; 30] = [
    "connection",
    "Connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "forwarded",
    "x-real-ip",
    "x-client-ip",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "x-forwarded-server",
    "x-original-url",
    "X-Rewrite-Url",
    "cookie",
    "authorization",
    "dpop",
    "host",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-request-id",
    "x-user",
    "x-foo",
    "accept",
    "content-length",
];

/// Values: `Connection` tokens naming other headers, `Upgrade`'s, forwarding
/// values, a byte outside ASCII.
const VALUES: [&[u8]; 12] = [
    b"1",
    b"websocket",
    b"upgrade",
    b"Upgrade, x-foo",
    b"keep-alive, X-User ,cookie",
    b"authorization, dpop, x-forwarded-for",
    b"close,,te",
    b"https",
    b"http",
    b"10.9.8.7",
    b"app.example",
    b"caf\xe9, host",
];

/// A header map's content, order aside (`http` keeps each name's values in order).
fn content(h: &HeaderMap) -> Vec<(String, Vec<Vec<u8>>)> {
    let mut all: Vec<_> = h
        .keys()
        .map(|k| {
            let values = h.get_all(k).iter().map(|v| v.as_bytes().to_vec()).collect();
            (k.as_str().to_owned(), values)
        })
        .collect();
    all.sort();
    all
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4096))]

    /// The one-pass rules leave every request and response exactly as the rules
    /// that asked the map about each name did.
    #[test]
    fn one_pass_rules_match_the_lookup_rules(
        pairs in proptest::collection::vec((0..NAMES.len(), 0..VALUES.len()), 0..12),
        bearer in proptest::bool::ANY,
        strip in proptest::bool::ANY,
        cookie in proptest::bool::ANY,
        dpop in proptest::bool::ANY,
        identity in proptest::bool::ANY,
        hop in 0..3u8,
        switching in proptest::bool::ANY,
    ) {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(
                HeaderName::from_bytes(NAMES[n].as_bytes()).unwrap(),
                HeaderValue::from_bytes(VALUES[v]).unwrap(),
            );
        }
        let mut f = forward(bearer.then_some("Bearer real"), strip);
        if !cookie {
            f.cookie = None;
        }
        if dpop {
            f.dpop = Some(HeaderValue::from_static("proof"));
        }
        if identity {
            let names = [HeaderName::from_static("x-user"), X_FORWARDED_HOST.clone()];
            f.strip_identity = Some(std::sync::Arc::from(names));
            f.identity = vec![(HeaderName::from_static("x-user"), HeaderValue::from_static("alice"))];
        }
        let trusted = [crate::net::IpNet::parse("10.0.0.0/8").unwrap()];
        let hop = match hop {
            0 => Hop::Layer,
            1 => proxy("192.0.2.1", true),
            _ => Hop::Proxy { peer: "10.0.0.7".parse().unwrap(), https: false, trusted: &trusted },
        };
        let (mut new, mut old) = (h.clone(), h.clone());
        apply_to_request(&mut new, &f, hop, &request_id());
        reference::apply_to_request(&mut old, &f, hop, &request_id());
        proptest::prop_assert_eq!(content(&new), content(&old));
        proptest::prop_assert_eq!(is_upgrade(&h), reference::is_upgrade(&h));

        let (mut new, mut old) = (h.clone(), h);
        clean_response(&mut new, switching);
        reference::remove_hop_by_hop(&mut old, switching);
        proptest::prop_assert_eq!(content(&new), content(&old));
    }
}

/// Each watched name's bit: the hop-by-hop names' and the forbidden names' bits
/// follow their lists' order (the rules index the lists by bit).
#[test]
fn watched_bits_follow_the_lists() {
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        assert_eq!(Watched::of(name).map(Watched::bit), Some(1 << i), "{name}");
    }
    for (i, name) in CLIENT_MAY_NOT_SET.iter().enumerate() {
        let bit = 1 << (HOP_BY_HOP.len() + i);
        assert_eq!(Watched::of(name).map(Watched::bit), Some(bit), "{name}");
    }
    for name in [
        &COOKIE,
        &AUTHORIZATION,
        &DPOP,
        &HOST,
        &X_FORWARDED_FOR,
        &X_FORWARDED_PROTO,
        &X_FORWARDED_HOST,
    ] {
        let w = Watched::of(name).unwrap();
        assert!(
            w.bit() & (HOP_BY_HOP_BITS | CLIENT_MAY_NOT_SET_BITS) == 0,
            "{name}"
        );
    }
    assert_eq!(Watched::of(&HeaderName::from_static("x-user")), None);
}
