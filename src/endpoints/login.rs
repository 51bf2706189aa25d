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
use crate::login::{LoginParams, LoginState, check_return_url};
use crate::oidc::TokenError;

/// Time allowed for a pushed authorization request (RFC 9126).
const PAR_TIMEOUT: Duration = Duration::from_secs(10);

impl Core {
    pub(super) async fn login(
        &self,
        parts: &Parts,
        cookies: &RequestCookies<'_>,
    ) -> Result<Response<Bytes>, Error> {
        let params = query_params(&parts.uri);
        // Step-up and silent login: the request's parameters, else the configured
        // `auth_params` of the same names (checked at load).
        let asked =
            LoginParams::parse(&params).map_err(|why| Error::new(ErrorKind::BadRequest(why)))?;
        let configured: Vec<(String, String)> = self
            .config
            .oidc
            .auth_params
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let asked = asked.or(&LoginParams::parse(&configured).unwrap_or_default());
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
            required: asked.required.clone(),
            silent: asked.silent(),
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
        let mut request: Vec<(String, String)> = [
            ("response_type", "code"),
            ("client_id", self.oidc.client_id()),
            ("redirect_uri", self.config.resolved.redirect_uri.as_str()),
            ("scope", &self.config.oidc.scopes.join(" ")),
            ("state", &login.state),
            ("nonce", &login.nonce),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        for (k, v) in &self.config.oidc.auth_params {
            if !LoginParams::NAMES.contains(&k.as_str()) {
                request.push((k.clone(), v.clone()));
            }
        }
        request.extend(asked.pairs().into_iter().map(|(k, v)| (k.to_owned(), v)));
        // RFC 8707 section 2.1: the grant covers every route's resource, so the
        // refresh token can later be used for each (IdPs such as oidc-provider
        // refuse a resource the authorization did not name).
        let mut resources: Vec<&str> = self
            .config
            .routes
            .iter()
            .filter_map(|r| r.resource.as_deref())
            .collect();
        resources.sort_unstable();
        resources.dedup();
        request.extend(
            resources
                .into_iter()
                .map(|r| ("resource".to_owned(), r.to_owned())),
        );
        if self.config.oidc.par || meta.require_pushed_authorization_requests {
            // RFC 9126: the parameters go to the IdP directly; the browser carries
            // only client_id and the request_uri.
            let request_uri = self.push(&meta, &request).await?;
            url.query_pairs_mut()
                .append_pair("client_id", self.oidc.client_id())
                .append_pair("request_uri", &request_uri);
        } else {
            url.query_pairs_mut().extend_pairs(&request);
        }
        Ok(redirect(url.as_str(), set_cookies))
    }

    /// The pushed authorization request of a login: its `request_uri`.
    async fn push(
        &self,
        meta: &crate::oidc::ProviderMetadata,
        request: &[(String, String)],
    ) -> Result<String, Error> {
        let Some(endpoint) = meta.pushed_authorization_request_endpoint.as_deref() else {
            tracing::error!(
                "PAR is on ([oidc] par or the IdP's discovery) but the IdP's discovery names no pushed_authorization_request_endpoint"
            );
            return Err(Error::new(ErrorKind::Misconfigured(
                "the IdP has no pushed authorization request endpoint",
            )));
        };
        let unavailable = || {
            Error::new(ErrorKind::IdpUnavailable {
                retry_after: Duration::from_secs(5),
            })
        };
        match self
            .oidc
            .push_authorization(endpoint, request, PAR_TIMEOUT)
            .await
        {
            Ok(uri) => Ok(uri),
            Err(TokenError::Transient { why, .. }) => {
                tracing::warn!(reason = %why, "the pushed authorization request failed");
                Err(unavailable())
            }
            Err(TokenError::Unreadable { why }) => {
                tracing::error!(reason = %why, "the IdP's answer to the pushed authorization request is unreadable");
                Err(unavailable())
            }
            Err(TokenError::Dead { code } | TokenError::Misconfigured { code }) => {
                tracing::error!(reason = %code, "the IdP refused the pushed authorization request: check [oidc]");
                Err(Error::new(ErrorKind::Misconfigured(
                    "the IdP refused the pushed authorization request",
                )))
            }
        }
    }
}
