//! A route's upstream, taken apart once at start: the doors get its scheme,
//! authority, `Host` value and (for an IP literal) its socket address ready to use.

use std::net::SocketAddr;

use http::HeaderValue;
use http::uri::{Authority, Scheme};

/// A route's upstream, taken apart once.
#[derive(Debug)]
pub struct Upstream {
    scheme: Scheme,
    authority: Authority,
    host: String,
    port: u16,
    addr: Option<SocketAddr>,
    /// The upstream's path, without a trailing `/` (requests' paths go below it).
    pub(super) base_path: String,
    host_header: HeaderValue,
}

impl Upstream {
    /// Takes an `http(s)://host[:port][/base]` URL apart.
    pub(crate) fn new(url: &url::Url) -> Result<Self, String> {
        let tls = match url.scheme() {
            "https" => true,
            "http" => false,
            other => return Err(format!("{other}: only http and https upstreams")),
        };
        let host = url.host_str().ok_or("the URL has no host")?.to_owned();
        let port = url
            .port_or_known_default()
            .unwrap_or(if tls { 443 } else { 80 });
        let authority_text = match url.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.clone(),
        };
        let authority: Authority = authority_text
            .parse()
            .map_err(|_| "the host is not a valid authority".to_owned())?;
        let host_header = HeaderValue::from_str(authority.as_str())
            .map_err(|_| "the host is not header-safe".to_owned())?;
        // An IP literal needs no resolver; `[::1]` loses its brackets to parse.
        let addr = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .ok()
            .map(|ip| SocketAddr::new(ip, port));
        Ok(Self {
            scheme: if tls { Scheme::HTTPS } else { Scheme::HTTP },
            authority,
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port,
            addr,
            base_path: url.path().trim_end_matches('/').to_owned(),
            host_header,
        })
    }

    /// `http` or `https`.
    #[must_use]
    pub fn scheme(&self) -> Scheme {
        self.scheme.clone()
    }

    /// Whether the upstream is reached over TLS.
    #[must_use]
    pub fn tls(&self) -> bool {
        self.scheme == Scheme::HTTPS
    }

    /// `host[:port]` as the URL gave it.
    #[must_use]
    pub fn authority(&self) -> &Authority {
        &self.authority
    }

    /// The host name (or IP, without brackets), for SNI and the resolver.
    #[must_use]
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port, the scheme's default when the URL has none.
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The socket address when the host is an IP literal (no lookup needed).
    #[must_use]
    pub fn addr(&self) -> Option<SocketAddr> {
        self.addr
    }

    /// The `Host` header the upstream is sent.
    #[must_use]
    pub fn host_header(&self) -> &HeaderValue {
        &self.host_header
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstreams_are_taken_apart_once() {
        let u = Upstream::new(&url::Url::parse("http://127.0.0.1:9/base/").unwrap()).unwrap();
        assert_eq!(u.addr(), Some("127.0.0.1:9".parse().unwrap()));
        assert_eq!(u.host_header(), "127.0.0.1:9");
        assert_eq!(u.base_path, "/base");
        let u = Upstream::new(&url::Url::parse("https://[::1]/").unwrap()).unwrap();
        assert_eq!(u.addr(), Some("[::1]:443".parse().unwrap()));
        assert_eq!(u.host(), "::1");
        assert_eq!(u.authority().as_str(), "[::1]");
        let u = Upstream::new(&url::Url::parse("https://api.example.com").unwrap()).unwrap();
        assert_eq!(u.addr(), None);
        assert_eq!(
            (u.host(), u.port(), u.tls()),
            ("api.example.com", 443, true)
        );
    }
}
