//! The signed-in user as the application behind the layer sees it: [`Session`], a
//! request extension the layer adds to every request it passes on with a session.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::de::DeserializeOwned;

use crate::bff::SessionView;

/// The session of a request that passed the BFF: who the user is (`sub`, the ID
/// token's claims), which session it is (`sid`), and until when its access token
/// holds. The layer adds it as a request extension whenever the request came with a
/// live session (on a route, or on a path no route matches); with the `axum`
/// feature it is also an extractor (`bff_proxy::axum::Session`).
///
/// Cheap to clone. `Debug` shows `sub` and `sid`, never a token.
#[derive(Clone)]
pub struct Session {
    inner: Arc<Inner>,
}

struct Inner {
    sid: String,
    sub: String,
    access_token: String,
    access_expires_at: u64,
    id_token: Option<String>,
    /// The ID token's payload, decoded once, on the first `claims` call.
    payload: OnceLock<Option<Vec<u8>>>,
}

/// Why [`Session::claims`] could not give the claims as the type asked for.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClaimsError {
    /// The session holds no ID token (the IdP issued none), or its payload is not
    /// base64url JSON.
    #[error("the session has no readable ID token")]
    NoIdToken,
    /// The claims do not fit the type: which claim, and why.
    #[error("the ID token's claims do not fit: {0}")]
    Mismatch(#[from] serde_json::Error),
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("sub", &self.inner.sub)
            .field("sid", &self.inner.sid)
            .field("access_token_expires_at", &self.inner.access_expires_at)
            .finish_non_exhaustive()
    }
}

impl Session {
    pub(crate) fn new(view: SessionView) -> Self {
        Self {
            inner: Arc::new(Inner {
                sid: view.sid.to_string(),
                sub: view.sub,
                access_token: view.access_token,
                access_expires_at: view.access_expires_at,
                id_token: view.id_token,
                payload: OnceLock::new(),
            }),
        }
    }

    /// The user's subject: the `sub` claim of the ID token, the IdP's stable id for
    /// the user.
    #[must_use]
    pub fn sub(&self) -> &str {
        &self.inner.sub
    }

    /// The BFF's id of this session (22 characters of base64url): the one
    /// `/bff/user` shows and logout links carry. Not a secret, but unguessable.
    #[must_use]
    pub fn sid(&self) -> &str {
        &self.inner.sid
    }

    /// When the access token expires. The layer refreshes it before a request is
    /// passed on when it expires within `refresh.skew`, so a handler normally sees
    /// a token with at least that long to live.
    #[must_use]
    pub fn access_token_expires_at(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(self.inner.access_expires_at)
    }

    /// The ID token's claims (verified at login) as `T`, for example a struct with
    /// the claims the app uses:
    ///
    /// ```
    /// # fn demo(session: &bff_proxy::tower::Session) -> Result<(), bff_proxy::tower::ClaimsError> {
    /// #[derive(serde::Deserialize)]
    /// struct Claims {
    ///     email: String,
    ///     #[serde(default)]
    ///     groups: Vec<String>,
    /// }
    /// let claims: Claims = session.claims()?;
    /// # let _ = (claims.email, claims.groups);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// `serde_json::Value` gives them all. The token's payload is decoded once per
    /// request, on the first call.
    pub fn claims<T: DeserializeOwned>(&self) -> Result<T, ClaimsError> {
        let payload = self
            .inner
            .payload
            .get_or_init(|| {
                self.inner
                    .id_token
                    .as_deref()
                    .and_then(crate::oidc::unverified_payload)
            })
            .as_deref()
            .ok_or(ClaimsError::NoIdToken)?;
        Ok(serde_json::from_slice(payload)?)
    }

    /// The access token itself, for a handler that calls another API on the user's
    /// behalf (requests on a route already carry it as `Authorization: Bearer …`).
    ///
    /// It is a credential: never log it, never put it in a response to the browser
    /// (keeping it away from the browser is what the BFF is for).
    #[must_use]
    pub fn access_token(&self) -> &str {
        &self.inner.access_token
    }
}
