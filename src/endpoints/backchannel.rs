//! `POST {prefix}/backchannel-logout`: an OIDC back-channel logout token, verified,
//! used once, ending the IdP session's sessions (by `sid`, else by `sub`).

use std::time::Duration;

use bytes::Bytes;
use http::{Response, StatusCode};

use crate::bff::json_response;
use crate::bff::{Core, MAX_BACKCHANNEL_BODY};
use crate::error::{Error, ErrorKind};

impl Core {
    pub(super) async fn backchannel_logout(
        &self,
        body: Option<Bytes>,
    ) -> Result<Response<Bytes>, Error> {
        let body = body.ok_or(Error::new(ErrorKind::BadRequest("logout_token is missing")))?;
        if body.len() > MAX_BACKCHANNEL_BODY {
            return Err(Error::new(ErrorKind::BadRequest("body too large")));
        }
        let token = url::form_urlencoded::parse(&body)
            .find(|(k, _)| k == "logout_token")
            .map(|(_, v)| v.into_owned())
            .ok_or(Error::new(ErrorKind::BadRequest("logout_token is missing")))?;
        // The token's iat is the IdP's wall-clock time.
        let now_ms = crate::clock::wall_ms();
        let claims = self
            .oidc
            .validate_logout_token(&token, now_ms / 1000)
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "back-channel logout token rejected");
                Error::new(ErrorKind::BadRequest("invalid logout_token"))
            })?;
        // Remembered for as long as the token could be valid: its iat window plus
        // the clock skew.
        let valid_until = claims
            .iat
            .saturating_add(crate::oidc::LOGOUT_TOKEN_MAX_AGE.as_secs() + 60);
        let ttl = Duration::from_secs(valid_until.saturating_sub(now_ms / 1000).max(1));
        if !self
            .revocations
            .first_use_of_logout_token(&claims.iss, &claims.jti, ttl)
            .await
        {
            tracing::warn!("back-channel logout token replayed: refused");
            return Err(Error::new(ErrorKind::BadRequest(
                "logout_token already used",
            )));
        }
        match &claims.sid {
            Some(sid) => self.revocations.revoke_idp_sid_everywhere(sid).await,
            None => {
                // Sessions created up to the token's iat, not up to our clock: a
                // login after the logout survives it. iat has whole seconds, so the
                // cutoff is the end of that second, or now if that comes first.
                let cutoff = claims
                    .iat
                    .saturating_mul(1000)
                    .saturating_add(999)
                    .min(now_ms);
                self.revocations
                    .revoke_sub_everywhere(&claims.sub, cutoff)
                    .await;
            }
        }
        self.metrics.session_ended("backchannel_logout");
        tracing::info!(idp_sid = ?claims.sid, "back-channel logout");
        Ok(json_response(StatusCode::OK, "{}"))
    }
}
