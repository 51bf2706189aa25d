//! `GET {prefix}/callback`: the IdP's answer. The login cookie named by `state` is
//! taken, the code exchanged, the ID token verified, and the session sealed.

use std::time::Duration;

use bytes::Bytes;
use http::Response;
use http::request::Parts;

use super::{param, query_params};
use crate::bff::Core;
use crate::bff::Current;
use crate::bff::{error_response, redirect};
use crate::cookies::RequestCookies;
use crate::error::{Error, ErrorKind};
use crate::login::return_with_error;
use crate::oidc::TokenError;
use crate::session::{Session, SessionId};

/// The IdP's answers to a silent login (`prompt=none`) that mean it needs the user.
const NEEDS_THE_USER: [&str; 4] = [
    "login_required",
    "interaction_required",
    "consent_required",
    "account_selection_required",
];

/// Time allowed for the code exchange at the IdP.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(10);

impl Core {
    pub(super) async fn callback(
        &self,
        parts: &Parts,
        cookies: &RequestCookies<'_>,
    ) -> Result<Response<Bytes>, Error> {
        let params = query_params(&parts.uri);
        let state =
            param(&params, "state").ok_or(Error::new(ErrorKind::BadRequest("state is missing")))?;
        let login = self.login_cookies.take(
            self.storage.sealer.ring(),
            cookies,
            state,
            self.clock.now_secs(),
        );
        // A failed attempt clears its own cookie; a finished login clears them all.
        let clear_login = self.login_cookies.clear_one(state);
        let fail = |kind: ErrorKind| {
            let e = Error::new(kind);
            Ok(error_response(&e, clear_login.clone()))
        };
        let Some(login) = login else {
            // Another tab's login finished first and cleared every pending attempt:
            // this browser is logged in already, so this tab goes to the app.
            if let Ok(Current {
                session: Some(_), ..
            }) = self.current_session(cookies).await
            {
                return Ok(redirect("/", clear_login));
            }
            return fail(ErrorKind::BadRequest(
                "the login expired or was started in another browser: start it again",
            ));
        };
        if let Some(error) = param(&params, "error") {
            // The login cookie is valid: the SPA decides what to show. A silent
            // login the IdP cannot finish without the user is `login_required`.
            let mut code: String = error
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
                .take(64)
                .collect();
            if login.silent && NEEDS_THE_USER.contains(&code.as_str()) {
                "login_required".clone_into(&mut code);
            }
            if code.is_empty() {
                return fail(ErrorKind::LoginRefused { code });
            }
            tracing::info!(error = %code, silent = login.silent, "the IdP answered the login with an error");
            return Ok(redirect(
                &return_with_error(&login.return_url, &code),
                clear_login,
            ));
        }
        if let Some(iss) = param(&params, "iss") {
            // RFC 9207: the answer must come from our issuer (mix-up defence).
            if iss.trim_end_matches('/') != self.oidc.issuer() {
                return fail(ErrorKind::BadRequest("the iss parameter is not our issuer"));
            }
        }
        let Some(code) = param(&params, "code").filter(|c| !c.is_empty()) else {
            return fail(ErrorKind::BadRequest("code is missing"));
        };
        // RFC 9449: the session's DPoP key, made now and kept sealed in it.
        let dpop = if self.config.oidc.dpop {
            match crate::dpop::DpopKey::generate() {
                Ok(key) => Some(key),
                Err(_) => return fail(ErrorKind::Internal("cannot make a DPoP key")),
            }
        } else {
            None
        };
        let tokens = match self
            .oidc
            .exchange_code(
                code,
                &login.verifier,
                self.config.resolved.redirect_uri.as_str(),
                dpop.as_ref(),
                EXCHANGE_TIMEOUT,
            )
            .await
        {
            Ok(t) => t,
            Err(TokenError::Transient { .. }) => {
                return fail(ErrorKind::IdpUnavailable {
                    retry_after: Duration::from_secs(5),
                });
            }
            Err(TokenError::Unreadable { why }) => {
                tracing::error!(reason = %why, "the IdP answered the code exchange with a 2xx the BFF cannot read");
                return fail(ErrorKind::IdpUnavailable {
                    retry_after: Duration::from_secs(5),
                });
            }
            Err(TokenError::Dead { .. }) => {
                return fail(ErrorKind::BadRequest(
                    "the IdP refused the authorization code: log in again",
                ));
            }
            Err(TokenError::Misconfigured { code }) => {
                tracing::error!(reason = %code, "the IdP refused the code exchange: check [oidc]");
                return fail(ErrorKind::Misconfigured(
                    "the IdP refused the client's credentials",
                ));
            }
        };
        let Some(id_token) = tokens.id_token.clone() else {
            return fail(ErrorKind::BadRequest("the IdP returned no ID token"));
        };
        let claims = match self
            .oidc
            .validate_id_token(&id_token, Some(&login.nonce))
            .await
        {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "ID token rejected at login");
                return fail(ErrorKind::BadRequest("the ID token did not validate"));
            }
        };
        // Step-up: the authentication the login asked for, as of when it started.
        if !login.required.is_met(Some(&claims.all), login.created_at) {
            tracing::warn!(
                acr_values = ?login.required.acr_values(),
                max_age = ?login.required.max_age,
                "the ID token does not show the authentication the login asked for"
            );
            return fail(ErrorKind::NotSteppedUp);
        }
        let now_ms = self.clock.now_ms();
        let now = now_ms / 1000;
        let mut session = Session::new(
            SessionId::random(),
            claims.sub,
            tokens.access_token.clone(),
            crate::refresh::access_expiry(&tokens, now),
            now,
        );
        session.created_ms = now_ms;
        session.refresh_token = tokens.refresh_token.clone().filter(|t| !t.is_empty());
        session.id_token = Some(id_token);
        session.dpop_key = dpop.map(|k| k.to_pkcs8().to_vec());
        session.idp_sid = claims.sid;
        session.scope = tokens
            .scope
            .clone()
            .unwrap_or_else(|| self.config.oidc.scopes.join(" "));
        let present = cookies.session().present;
        let mut set_cookies = self.storage.save(&session, &present, None).await?;
        set_cookies.extend(self.login_cookies.clear_all(cookies));
        self.index
            .add(
                &session.sub,
                crate::bff::IndexEntry {
                    sid: session.sid,
                    created: now,
                    last_seen: now,
                    user_agent: crate::bff::user_agent(&parts.headers),
                    refresh_token: session.refresh_token.clone(),
                },
            )
            .await;
        tracing::info!(sid = %session.sid.short_hash(), "login");
        Ok(redirect(&login.return_url, set_cookies))
    }
}
