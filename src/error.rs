//! The one error type of the request path.
//!
//! Every variant knows the HTTP status it answers with and the short public code that
//! goes into the JSON body (`{"error": "<code>"}`). Neither ever carries a token, key,
//! secret or cookie value: the detail that is safe to log lives in the `Display` text,
//! which is written with the same care.
//!
//! ```
//! use bff_proxy::error::{Error, ErrorKind};
//! use http::StatusCode;
//!
//! let err = Error::new(ErrorKind::Csrf);
//! assert_eq!(err.status(), StatusCode::FORBIDDEN);
//! assert_eq!(err.code(), "csrf");
//! assert_eq!(err.json_body(), r#"{"error":"csrf"}"#);
//! ```

use std::fmt;
use std::time::Duration;

use http::StatusCode;

/// What went wrong, with enough detail to answer the client and to log safely.
///
/// Boxed inside [`Error`] so the error stays one pointer wide on the hot path.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// No session, or a session cookie that did not open.
    Unauthenticated,
    /// The session ended: refresh refused, revoked, reuse detected or lifetime over.
    SessionExpired,
    /// The CSRF header is missing or wrong.
    Csrf,
    /// The session's claims do not meet the route's `require_claims`.
    Forbidden,
    /// The route needs a stronger or more recent authentication than the session's
    /// (RFC 9470): 401 with `WWW-Authenticate`, the SPA steps up through `/login`.
    StepUpRequired {
        /// The `acr` values the route accepts, separated by spaces (checked at load
        /// to be visible ASCII without quotes).
        acr_values: Option<String>,
        /// The route's `max_age`, in seconds.
        max_age: Option<u64>,
    },
    /// The ID token of a login does not show the `acr_values` or `max_age` the login
    /// asked for: 403.
    NotSteppedUp,
    /// The identity provider could not be reached in time and the access token is
    /// no longer usable. The session is kept.
    IdpUnavailable {
        /// How long the client should wait before retrying.
        retry_after: Duration,
    },
    /// The request is malformed; the text says what is wrong in words safe to show.
    BadRequest(&'static str),
    /// The identity provider refused the login; `code` is its OAuth `error` value
    /// (already checked to be a short token of safe characters).
    LoginRefused {
        /// The OAuth `error` code sent by the provider.
        code: String,
    },
    /// The method is not in the route's allowlist.
    MethodNotAllowed,
    /// Nothing is served at this path.
    NotFound,
    /// The request's cookie header is too large or holds too many cookies to read.
    CookieHeaderTooLarge,
    /// The session store (server-side sessions) did not answer.
    StoreUnavailable,
    /// The upstream could not be reached.
    BadGateway,
    /// The upstream did not answer in time.
    GatewayTimeout,
    /// Our own configuration is wrong (for example the IdP refused our client
    /// credentials). Logged loudly; the session is kept.
    Misconfigured(&'static str),
    /// A bug or an unexpected state; the text is for the log only.
    Internal(&'static str),
}

/// The error of the request path: a boxed [`ErrorKind`].
#[derive(Clone, PartialEq, Eq)]
pub struct Error(Box<ErrorKind>);

impl Error {
    /// Wraps a kind.
    #[must_use]
    pub fn new(kind: ErrorKind) -> Self {
        Self(Box::new(kind))
    }

    /// The kind of error.
    #[must_use]
    pub fn kind(&self) -> &ErrorKind {
        &self.0
    }

    /// The HTTP status the client is answered with.
    #[must_use]
    pub fn status(&self) -> StatusCode {
        match *self.0 {
            ErrorKind::Unauthenticated
            | ErrorKind::SessionExpired
            | ErrorKind::StepUpRequired { .. } => StatusCode::UNAUTHORIZED,
            ErrorKind::Csrf | ErrorKind::Forbidden | ErrorKind::NotSteppedUp => {
                StatusCode::FORBIDDEN
            }
            ErrorKind::IdpUnavailable { .. }
            | ErrorKind::Misconfigured(_)
            | ErrorKind::StoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::BadRequest(_) => StatusCode::BAD_REQUEST,
            ErrorKind::LoginRefused { ref code } => match code.as_str() {
                "access_denied"
                | "unauthorized_client"
                | "consent_required"
                | "login_required"
                | "interaction_required"
                | "account_selection_required" => StatusCode::FORBIDDEN,
                _ => StatusCode::BAD_REQUEST,
            },
            ErrorKind::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::CookieHeaderTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ErrorKind::BadGateway => StatusCode::BAD_GATEWAY,
            ErrorKind::GatewayTimeout => StatusCode::GATEWAY_TIMEOUT,
            ErrorKind::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The short public code of the JSON body, stable for clients to match on.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match *self.0 {
            ErrorKind::Unauthenticated => "unauthenticated",
            ErrorKind::SessionExpired => "session_expired",
            ErrorKind::Csrf => "csrf",
            ErrorKind::Forbidden => "forbidden",
            ErrorKind::StepUpRequired { .. } | ErrorKind::NotSteppedUp => {
                "insufficient_user_authentication"
            }
            ErrorKind::IdpUnavailable { .. } => "idp_unavailable",
            ErrorKind::BadRequest(_) => "bad_request",
            ErrorKind::LoginRefused { .. } => "login_refused",
            ErrorKind::MethodNotAllowed => "method_not_allowed",
            ErrorKind::NotFound => "not_found",
            ErrorKind::CookieHeaderTooLarge => "cookie_header_too_large",
            ErrorKind::StoreUnavailable => "session_store_unavailable",
            ErrorKind::BadGateway => "bad_gateway",
            ErrorKind::GatewayTimeout => "gateway_timeout",
            ErrorKind::Misconfigured(_) => "misconfigured",
            ErrorKind::Internal(_) => "internal",
        }
    }

    /// The JSON body: `{"error":"<code>"}`; a step-up adds what the route needs
    /// (`acr_values`, `max_age`).
    #[must_use]
    pub fn json_body(&self) -> String {
        if let ErrorKind::StepUpRequired {
            acr_values,
            max_age,
        } = &*self.0
        {
            let mut body = serde_json::json!({ "error": self.code() });
            if let Some(acr) = acr_values {
                body["acr_values"] = acr.as_str().into();
            }
            if let Some(m) = max_age {
                body["max_age"] = (*m).into();
            }
            return body.to_string();
        }
        format!(r#"{{"error":"{}"}}"#, self.code())
    }

    /// The `WWW-Authenticate` value of a step-up answer (RFC 9470 section 3).
    #[must_use]
    pub fn www_authenticate(&self) -> Option<String> {
        let ErrorKind::StepUpRequired {
            acr_values,
            max_age,
        } = &*self.0
        else {
            return None;
        };
        let mut value = String::from(r#"Bearer error="insufficient_user_authentication""#);
        if let Some(acr) = acr_values {
            value.push_str(&format!(r#", acr_values="{acr}""#));
        }
        if let Some(m) = max_age {
            value.push_str(&format!(r#", max_age="{m}""#));
        }
        Some(value)
    }

    /// The value of a `Retry-After` header (whole seconds, at least 1), when the
    /// client should retry later.
    #[must_use]
    pub fn retry_after_secs(&self) -> Option<u64> {
        match *self.0 {
            ErrorKind::IdpUnavailable { retry_after } => Some(retry_after.as_secs().max(1)),
            ErrorKind::StoreUnavailable => Some(1),
            _ => None,
        }
    }
}

impl From<ErrorKind> for Error {
    fn from(kind: ErrorKind) -> Self {
        Self::new(kind)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &*self.0 {
            ErrorKind::Unauthenticated => f.write_str("no valid session"),
            ErrorKind::SessionExpired => f.write_str("the session has ended"),
            ErrorKind::Csrf => f.write_str("the CSRF header is missing or wrong"),
            ErrorKind::Forbidden => f.write_str("the session's claims do not allow this route"),
            ErrorKind::StepUpRequired { .. } => {
                f.write_str("the route needs a stronger or more recent authentication")
            }
            ErrorKind::NotSteppedUp => {
                f.write_str("the ID token does not show the authentication the login asked for")
            }
            ErrorKind::IdpUnavailable { retry_after } => write!(
                f,
                "the identity provider is unavailable; retry after {}s",
                retry_after.as_secs().max(1)
            ),
            ErrorKind::BadRequest(why) => write!(f, "bad request: {why}"),
            ErrorKind::LoginRefused { code } => {
                write!(f, "the identity provider refused the login: {code}")
            }
            ErrorKind::MethodNotAllowed => f.write_str("method not allowed on this route"),
            ErrorKind::NotFound => f.write_str("not found"),
            ErrorKind::CookieHeaderTooLarge => {
                f.write_str("the cookie header is too large to read")
            }
            ErrorKind::StoreUnavailable => f.write_str("the session store did not answer"),
            ErrorKind::BadGateway => f.write_str("the upstream could not be reached"),
            ErrorKind::GatewayTimeout => f.write_str("the upstream did not answer in time"),
            ErrorKind::Misconfigured(why) => write!(f, "misconfiguration: {why}"),
            ErrorKind::Internal(why) => write!(f, "internal error: {why}"),
        }
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_is_one_pointer_wide() {
        assert_eq!(std::mem::size_of::<Error>(), std::mem::size_of::<usize>());
    }

    #[test]
    fn statuses_and_codes_match_the_design() {
        let cases = [
            (ErrorKind::Unauthenticated, 401, "unauthenticated"),
            (ErrorKind::SessionExpired, 401, "session_expired"),
            (ErrorKind::Csrf, 403, "csrf"),
            (
                ErrorKind::IdpUnavailable {
                    retry_after: Duration::from_secs(5),
                },
                503,
                "idp_unavailable",
            ),
            (ErrorKind::MethodNotAllowed, 405, "method_not_allowed"),
            (
                ErrorKind::CookieHeaderTooLarge,
                431,
                "cookie_header_too_large",
            ),
        ];
        for (kind, status, code) in cases {
            let err = Error::new(kind);
            assert_eq!(err.status().as_u16(), status, "{err}");
            assert_eq!(err.code(), code);
        }
    }

    #[test]
    fn retry_after_is_at_least_one_second() {
        let err = Error::new(ErrorKind::IdpUnavailable {
            retry_after: Duration::from_millis(10),
        });
        assert_eq!(err.retry_after_secs(), Some(1));
        assert_eq!(Error::new(ErrorKind::Csrf).retry_after_secs(), None);
    }

    #[test]
    fn login_refusals_pick_403_for_denials() {
        let denied = Error::new(ErrorKind::LoginRefused {
            code: "access_denied".into(),
        });
        assert_eq!(denied.status(), StatusCode::FORBIDDEN);
        let other = Error::new(ErrorKind::LoginRefused {
            code: "invalid_scope".into(),
        });
        assert_eq!(other.status(), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn a_step_up_names_what_the_route_needs() {
        let both = Error::new(ErrorKind::StepUpRequired {
            acr_values: Some("urn:example:mfa urn:example:hwk".into()),
            max_age: Some(300),
        });
        assert_eq!(both.status(), StatusCode::UNAUTHORIZED);
        let body: serde_json::Value = serde_json::from_str(&both.json_body()).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"error": "insufficient_user_authentication",
                "acr_values": "urn:example:mfa urn:example:hwk", "max_age": 300})
        );
        assert_eq!(
            both.www_authenticate().unwrap(),
            r#"Bearer error="insufficient_user_authentication", acr_values="urn:example:mfa urn:example:hwk", max_age="300""#
        );
        let age = Error::new(ErrorKind::StepUpRequired {
            acr_values: None,
            max_age: Some(60),
        });
        assert_eq!(
            age.json_body(),
            r#"{"error":"insufficient_user_authentication","max_age":60}"#
        );
        let failed = Error::new(ErrorKind::NotSteppedUp);
        assert_eq!(failed.status(), StatusCode::FORBIDDEN);
        assert_eq!(failed.www_authenticate(), None);
        assert_eq!(
            failed.json_body(),
            r#"{"error":"insufficient_user_authentication"}"#
        );
    }
}
