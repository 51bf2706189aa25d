//! The BFF's own endpoints under `server.prefix`, one file each: `login`,
//! `callback`, `user`, `logout`, `backchannel-logout`, and `auth` (forward-auth,
//! when enabled).

mod auth;
mod backchannel;
mod callback;
mod login;
mod logout;
mod sessions;
mod user;

use bytes::Bytes;
use http::request::Parts;
use http::{Method, Response, Uri};

use crate::bff::Core;
use crate::bff::error_response;
use crate::cookies::RequestCookies;
use crate::error::{Error, ErrorKind};

/// The query's parameters, decoded.
fn query_params(uri: &Uri) -> Vec<(String, String)> {
    uri.query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default()
}

/// The first value of a parameter.
fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

impl Core {
    /// Answers `{prefix}/<name>`.
    pub(crate) async fn endpoint(
        &self,
        name: &str,
        parts: &Parts,
        cookies: &RequestCookies<'_>,
        body: Option<Bytes>,
    ) -> Response<Bytes> {
        let method = &parts.method;
        // Forward-auth: any method (Envoy sends the original one), and Envoy's
        // `path_prefix` puts the original path after `auth/`.
        if name == "auth" || name.starts_with("auth/") {
            if !self.config.forward_auth.enabled {
                return error_response(&Error::new(ErrorKind::NotFound), Vec::new());
            }
            return self.forward_auth(parts, cookies).await;
        }
        let result = match (name, method) {
            ("login", &Method::GET) => self.login(parts, cookies).await,
            ("callback", &Method::GET) => self.callback(parts, cookies).await,
            ("user", &Method::GET) => self.user(parts, cookies).await,
            ("logout", &Method::GET | &Method::POST) => self.logout(parts, cookies).await,
            ("backchannel-logout", &Method::POST) => self.backchannel_logout(body).await,
            ("sessions", &Method::GET) => self.list_sessions(cookies).await,
            (other, &Method::DELETE) if other.starts_with("sessions/") => {
                self.end_one_session(parts, cookies, &other["sessions/".len()..])
                    .await
            }
            ("login" | "callback" | "user" | "logout" | "backchannel-logout" | "sessions", _) => {
                Err(Error::new(ErrorKind::MethodNotAllowed))
            }
            _ => Err(Error::new(ErrorKind::NotFound)),
        };
        result.unwrap_or_else(|e| {
            if matches!(
                e.kind(),
                ErrorKind::Internal(_) | ErrorKind::Misconfigured(_)
            ) {
                tracing::error!(error = %e, endpoint = name, "BFF endpoint failed");
            }
            error_response(&e, Vec::new())
        })
    }
}
