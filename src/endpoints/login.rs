//! `GET {prefix}/login?returnUrl=…`: starts an authorization-code login with PKCE,
//! a fresh state and nonce in a sealed login cookie (at most a few per browser).

use std::time::Duration;

use bytes::Bytes;
use http::Response;
use http::request::Parts;

use super::{param, query_params};
use crate::bff::Core;
use crate::bff::redirect;
use crate::cookies::RequestCookies;
use crate::error::{Error, ErrorKind};
use crate::login::{LoginState, check_return_url};

impl Core {
    pub(super) async fn login(
        &self,
        parts: &Parts,
        cookies: &RequestCookies<'_>,
    ) -> Result<Response<Bytes>, Error> {
        let params = query_params(&parts.uri);
        // Step-up and silent login (DESIGN.md's `/bff/login` row) are not built
        // yet: refused, never silently dropped (a `prompt=none` turned into a login
        // page would surprise the SPA).
        if ["prompt", "acr_values", "max_age", "login_hint"]
            .iter()
            .any(|p| param(&params, p).is_some())
        {
            return Err(Error::new(ErrorKind::BadRequest(
                "prompt, acr_values, max_age and login_hint are not supported yet",
            )));
        }
        let return_url = check_return_url(param(&params, "returnUrl").unwrap_or(""))
            .map_err(|why| Error::new(ErrorKind::BadRequest(why)))?;
        let meta = self.oidc.metadata().await.map_err(|e| {
            tracing::warn!(error = %e, "discovery failed; login unavailable");
            Error::new(ErrorKind::IdpUnavailable {
                retry_after: Duration::from_secs(5),
            })
        })?;
        let login = LoginState {
            state: crate::random::random_text(32),
            nonce: crate::random::random_text(32),
            verifier: crate::random::random_text(48),
            return_url,
            created_at: self.clock.now_secs(),
        };
        let challenge = {
            use base64::Engine as _;
            use sha2::Digest as _;
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(sha2::Sha256::digest(login.verifier.as_bytes()))
        };
        let cookie = self
            .login_cookies
            .set(self.storage.sealer.ring(), &login)
            .ok_or_else(|| Error::new(ErrorKind::Internal("cannot seal the login state")))?;
        // At most MAX_PENDING_LOGINS attempts per browser: the oldest make room.
        let mut set_cookies =
            self.login_cookies
                .evict_for_new(self.storage.sealer.ring(), cookies, login.created_at);
        set_cookies.push(cookie);
        let mut url = url::Url::parse(&meta.authorization_endpoint).map_err(|_| {
            Error::new(ErrorKind::Misconfigured(
                "the IdP's authorization_endpoint is not a URL",
            ))
        })?;
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("response_type", "code")
                .append_pair("client_id", self.oidc.client_id())
                .append_pair("redirect_uri", self.config.resolved.redirect_uri.as_str())
                .append_pair("scope", &self.config.oidc.scopes.join(" "))
                .append_pair("state", &login.state)
                .append_pair("nonce", &login.nonce)
                .append_pair("code_challenge", &challenge)
                .append_pair("code_challenge_method", "S256");
            for (k, v) in &self.config.oidc.auth_params {
                q.append_pair(k, v);
            }
        }
        Ok(redirect(url.as_str(), set_cookies))
    }
}
