//! `GET {prefix}/logout?sid=…` or `POST` with the CSRF header: ends the session
//! here (revoked everywhere, refresh token revoked at the IdP), then sends the
//! browser to the IdP's end-session endpoint or the `returnUrl`.

use bytes::Bytes;
use http::request::Parts;
use http::{Method, Response};
use subtle::ConstantTimeEq as _;

use super::{param, query_params};
use crate::bff::Core;
use crate::bff::Current;
use crate::bff::{error_response, redirect};
use crate::cookies::RequestCookies;
use crate::error::{Error, ErrorKind};
use crate::login::check_return_url;

impl Core {
    pub(super) async fn logout(
        &self,
        parts: &Parts,
        cookies: &RequestCookies<'_>,
    ) -> Result<Response<Bytes>, Error> {
        let params = query_params(&parts.uri);
        if parts.method == Method::POST && !self.csrf_ok(&parts.headers) {
            return Err(Error::new(ErrorKind::Csrf));
        }
        // A bad returnUrl is refused only after the logout itself has happened: a
        // user who asked to log out is logged out.
        let return_url = check_return_url(param(&params, "returnUrl").unwrap_or(""));
        let Current {
            session,
            present,
            handle,
            ..
        } = self.current_session(cookies).await?;
        let clear = self.storage.clear(&present);
        let Some(session) = session else {
            return Ok(match return_url {
                Ok(url) => redirect(&url, clear),
                Err(why) => error_response(&Error::new(ErrorKind::BadRequest(why)), clear),
            });
        };
        if parts.method == Method::GET {
            // The sid in the link is what makes a GET logout safe from cross-site
            // requests: only the page that read /bff/user knows it.
            let given = param(&params, "sid").unwrap_or("");
            let expected = session.sid.to_string();
            if !bool::from(given.as_bytes().ct_eq(expected.as_bytes())) {
                return Err(Error::new(ErrorKind::BadRequest(
                    "sid does not match the session",
                )));
            }
        }
        self.revocations.revoke_sid_everywhere(session.sid).await;
        self.storage.forget(handle).await;
        if let Err(e) = self.index.remove(&session.sub, session.sid).await {
            tracing::warn!(error = %e, "the session could not be taken out of the user's index");
        }
        self.metrics.session_ended("logout");
        self.revoke_at_idp(session.refresh_token.as_deref(), session.sid)
            .await;
        tracing::info!(sid = %session.sid.short_hash(), "logout");
        let end_session = self
            .oidc
            .metadata()
            .await
            .ok()
            .and_then(|m| m.end_session_endpoint.clone());
        let return_url = match return_url {
            Ok(url) => url,
            Err(why) => {
                tracing::info!(sid = %session.sid.short_hash(), "logout with an unusable returnUrl: logged out, answered 400");
                return Ok(error_response(
                    &Error::new(ErrorKind::BadRequest(why)),
                    clear,
                ));
            }
        };
        let location = match end_session.and_then(|e| url::Url::parse(&e).ok()) {
            Some(mut url) => {
                {
                    let mut q = url.query_pairs_mut();
                    if let Some(id) = &session.id_token {
                        q.append_pair("id_token_hint", id);
                    }
                    q.append_pair("client_id", self.oidc.client_id());
                    if let Some(uri) = &self.config.resolved.post_logout_redirect_uri {
                        q.append_pair("post_logout_redirect_uri", uri.as_str());
                    }
                }
                url.to_string()
            }
            None => return_url,
        };
        Ok(redirect(&location, clear))
    }
}
