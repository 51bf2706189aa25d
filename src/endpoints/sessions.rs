//! `GET {prefix}/sessions` and `DELETE {prefix}/sessions/{sid}`: the signed-in
//! user's own sessions (sid, created, last seen, user agent, which one is this
//! one), and ending one of them (CSRF header required): its refresh token is
//! revoked at the IdP first, then its sid, on every replica.

use bytes::Bytes;
use http::request::Parts;
use http::{Response, StatusCode};
use serde_json::json;

use crate::bff::{Core, Current, IndexEntry, json_response};
use crate::cookies::RequestCookies;
use crate::error::{Error, ErrorKind};
use crate::session::SessionId;

impl Core {
    pub(super) async fn list_sessions(
        &self,
        cookies: &RequestCookies<'_>,
    ) -> Result<Response<Bytes>, Error> {
        let Current {
            session: Some(session),
            ..
        } = self.current_session(cookies).await?
        else {
            return Err(Error::new(ErrorKind::Unauthenticated));
        };
        let mut entries = self
            .index
            .list(&session.sub)
            .await
            .map_err(|_| Error::new(ErrorKind::StoreUnavailable))?;
        // Sessions known here to have ended otherwise (a back-channel logout, a
        // detected replay) are not listed.
        entries.retain(|e| {
            e.sid == session.sid
                || !self.revocations.is_revoked(
                    e.sid,
                    None,
                    &session.sub,
                    e.created.saturating_mul(1000),
                )
        });
        if !entries.iter().any(|e| e.sid == session.sid) {
            // Made before the index, or its entry lost with a store outage.
            let created = session.created_ms / 1000;
            entries.push(IndexEntry {
                sid: session.sid,
                created,
                last_seen: created,
                user_agent: String::new(),
                refresh_token: None,
            });
        }
        entries.sort_by_key(|e| std::cmp::Reverse(e.last_seen));
        let list: Vec<_> = entries
            .iter()
            .map(|e| {
                json!({
                    "sid": e.sid.to_string(),
                    "created": e.created,
                    "last_seen": e.last_seen,
                    "user_agent": e.user_agent,
                    "current": e.sid == session.sid,
                })
            })
            .collect();
        Ok(json_response(
            StatusCode::OK,
            &json!({ "sessions": list }).to_string(),
        ))
    }

    pub(super) async fn end_one_session(
        &self,
        parts: &Parts,
        cookies: &RequestCookies<'_>,
        sid: &str,
    ) -> Result<Response<Bytes>, Error> {
        if !self.csrf_ok(&parts.headers) {
            return Err(Error::new(ErrorKind::Csrf));
        }
        let Current {
            session: Some(session),
            present,
            handle,
            ..
        } = self.current_session(cookies).await?
        else {
            return Err(Error::new(ErrorKind::Unauthenticated));
        };
        // Only a session of the same user, and only one the index holds.
        let sid = SessionId::parse(sid).ok_or(Error::new(ErrorKind::NotFound))?;
        let entry = self
            .index
            .remove(&session.sub, sid)
            .await
            .map_err(|_| Error::new(ErrorKind::StoreUnavailable))?
            .ok_or(Error::new(ErrorKind::NotFound))?;
        self.end_indexed(&entry).await;
        let mut resp = Response::new(Bytes::new());
        *resp.status_mut() = StatusCode::NO_CONTENT;
        if sid == session.sid {
            // Ending this one: its cookie goes too.
            self.storage.forget(handle).await;
            for c in self.storage.clear(&present) {
                resp.headers_mut().append(http::header::SET_COOKIE, c);
            }
        }
        Ok(resp)
    }

    /// Ends a session known from the index: its refresh token revoked at the IdP
    /// first, then its sid everywhere.
    pub(crate) async fn end_indexed(&self, entry: &IndexEntry) {
        self.revoke_at_idp(entry.refresh_token.as_deref(), entry.sid)
            .await;
        self.revocations.revoke_sid_everywhere(entry.sid).await;
        self.metrics.session_ended("logout");
        tracing::info!(sid = %entry.sid.short_hash(), "session ended on request");
    }

    /// Revokes a session's refresh token at the IdP (RFC 7009), never relying on
    /// end-session to do it; a failure is logged (never the token).
    pub(crate) async fn revoke_at_idp(&self, refresh_token: Option<&str>, sid: SessionId) {
        let Some(rt) = refresh_token else {
            return;
        };
        if let Err(e) = self.oidc.revoke(rt, self.config.refresh.timeout).await {
            tracing::warn!(error = %e, sid = %sid.short_hash(), "refresh token revocation failed");
        }
    }
}
