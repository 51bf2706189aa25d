//! A cookie jar as a browser keeps one: Set-Cookie applied, removals included.
//! Shared by the integration tests and the layer tests (`tests/layer`).

use http::header::{HeaderMap, SET_COOKIE};

#[derive(Clone, Default, Debug)]
pub struct Jar(pub Vec<(String, String)>);

impl Jar {
    pub fn apply(&mut self, headers: &HeaderMap) {
        for sc in headers.get_all(SET_COOKIE) {
            let c = cookie::Cookie::parse(sc.to_str().unwrap().to_owned()).unwrap();
            self.0.retain(|(n, _)| n != c.name());
            if c.max_age() != Some(cookie::time::Duration::ZERO) {
                self.0.push((c.name().to_owned(), c.value().to_owned()));
            }
        }
    }

    /// Applies `Set-Cookie` values given on their own (a forward's `set_cookies`).
    pub fn apply_values(&mut self, values: &[http::HeaderValue]) {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append(SET_COOKIE, v.clone());
        }
        self.apply(&headers);
    }

    pub fn header(&self) -> Option<String> {
        (!self.0.is_empty()).then(|| {
            self.0
                .iter()
                .map(|(n, v)| format!("{n}={v}"))
                .collect::<Vec<_>>()
                .join("; ")
        })
    }

    pub fn has_session(&self) -> bool {
        self.0
            .iter()
            .any(|(n, _)| n.starts_with("__Host-Http-bff") && !n.contains("-login-"))
    }
}
