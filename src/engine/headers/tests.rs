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
