//! `GET {prefix}/user`: the session's ID-token claims and its logout link (CSRF
//! header required).

use bytes::Bytes;
use http::request::Parts;
use http::{Response, StatusCode};
use serde_json::json;

use crate::bff::Core;
use crate::bff::Current;
use crate::bff::{error_response, json_response};
use crate::cookies::RequestCookies;
use crate::error::{Error, ErrorKind};

impl Core {
    pub(super) async fn user(
        &self,
        parts: &Parts,
        cookies: &RequestCookies<'_>,
    ) -> Result<Response<Bytes>, Error> {
        if !self.csrf_ok(&parts.headers) {
            return Err(Error::new(ErrorKind::Csrf));
        }
        let Current {
            session,
            present,
            ended,
            ..
        } = self.current_session(cookies).await?;
        let Some(session) = session else {
            let kind = if ended {
                ErrorKind::SessionExpired
            } else {
                ErrorKind::Unauthenticated
            };
            return Ok(error_response(
                &Error::new(kind),
                self.storage.clear(&present),
            ));
        };
        let claims = session
            .id_token
            .as_deref()
            .and_then(crate::oidc::unverified_claims)
            .unwrap_or_else(|| json!({ "sub": session.sub }));
        let body = json!({
            "claims": claims,
            "session": {
                "sid": session.sid.to_string(),
                "expires_at": session.created_at + self.config.session.absolute_lifetime.as_secs(),
                "logout_url": format!("{}/logout?sid={}", self.routes.prefix(), session.sid),
            }
        });
        Ok(json_response(StatusCode::OK, &body.to_string()))
    }
}
