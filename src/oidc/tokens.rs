//! The token endpoint: its answers read leniently but safely, its errors sorted into
//! what they mean for a session (dead, transient, our misconfiguration), and the
//! grants the BFF makes (code exchange, refresh, revocation).

#![allow(clippy::wildcard_imports)]

use super::*;

/// A token-endpoint answer. `Debug` redacts the tokens.
#[derive(Clone, Deserialize)]
pub struct TokenResponse {
    /// The access token.
    pub access_token: String,
    /// Its type (`Bearer`).
    #[serde(default)]
    pub token_type: String,
    /// Lifetime in seconds: a number or a numeric string (Azure AD v1 and ADFS send
    /// `"3599"`); anything else counts as absent.
    #[serde(default, deserialize_with = "lenient_seconds")]
    pub expires_in: Option<u64>,
    /// A (possibly rotated) refresh token; `""` counts as none returned.
    #[serde(default, deserialize_with = "non_empty")]
    pub refresh_token: Option<String>,
    /// An ID token.
    #[serde(default)]
    pub id_token: Option<String>,
    /// The granted scope.
    #[serde(default)]
    pub scope: Option<String>,
}

impl fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenResponse")
            .field("token_type", &self.token_type)
            .field("expires_in", &self.expires_in)
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "<redacted>"),
            )
            .field("id_token", &self.id_token.as_ref().map(|_| "<redacted>"))
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

/// The longest `expires_in` believed (ten years): more is a mistake, and would
/// overflow clock arithmetic.
pub(super) const MAX_EXPIRES_IN: u64 = 10 * 365 * 24 * 3600;

pub(super) fn lenient_seconds<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<u64>, D::Error> {
    let value = Option::<Value>::deserialize(d)?;
    let secs = match &value {
        Some(Value::Number(n)) => n.as_u64().or_else(|| {
            n.as_f64()
                .filter(|f| f.is_finite() && *f >= 0.0)
                .map(|f| f as u64)
        }),
        Some(Value::String(text)) => text.trim().parse::<u64>().ok().or_else(|| {
            text.trim()
                .parse::<f64>()
                .ok()
                .filter(|f| f.is_finite() && *f >= 0.0)
                .map(|f| f as u64)
        }),
        _ => None,
    };
    Ok(secs.map(|s| s.min(MAX_EXPIRES_IN)))
}

pub(super) fn non_empty<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<String>, D::Error> {
    Ok(Option::<String>::deserialize(d)?.filter(|t| !t.is_empty()))
}

/// Whether an error answer asks for a DPoP nonce (RFC 9449 section 8).
fn asks_for_dpop_nonce(resp: &IdpResponse) -> bool {
    (resp.status == http::StatusCode::BAD_REQUEST || resp.status == http::StatusCode::UNAUTHORIZED)
        && serde_json::from_slice::<Value>(&resp.body)
            .ok()
            .and_then(|v| v.get("error")?.as_str().map(|e| e == "use_dpop_nonce"))
            .unwrap_or(false)
}

/// Reads a 2xx token-endpoint body. An answer without an access token, or one that
/// is not the JSON of RFC 6749 5.1, is unreadable. For a request with a DPoP proof
/// (`dpop`) the token must be DPoP-bound (`token_type` `DPoP`, RFC 9449 section
/// 5), never a Bearer token the upstream would take without a proof; otherwise it
/// must be a Bearer token.
pub fn parse_token_response_as(body: &[u8], dpop: bool) -> Result<TokenResponse, TokenError> {
    let tokens: TokenResponse =
        serde_json::from_slice(body).map_err(|e| TokenError::Unreadable {
            why: format!("unreadable token response: {}", e.classify_text()),
        })?;
    if tokens.access_token.is_empty() {
        return Err(TokenError::Unreadable {
            why: "token response without an access token".into(),
        });
    }
    if dpop {
        if !tokens.token_type.eq_ignore_ascii_case("dpop") {
            return Err(TokenError::Misconfigured {
                code: format!(
                    "token_type {:?} is not DPoP: the IdP did not bind the token (oidc.dpop needs an IdP with DPoP)",
                    tokens.token_type
                ),
            });
        }
    } else if !tokens.token_type.is_empty() && !tokens.token_type.eq_ignore_ascii_case("bearer") {
        return Err(TokenError::Misconfigured {
            code: format!("token_type {:?} is not Bearer", tokens.token_type),
        });
    }
    Ok(tokens)
}

/// A serde_json error's category, without the excerpt of the input (which could hold
/// a token).
pub(super) trait ClassifyText {
    fn classify_text(&self) -> &'static str;
}

impl ClassifyText for serde_json::Error {
    fn classify_text(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "I/O error",
            serde_json::error::Category::Syntax => "not JSON",
            serde_json::error::Category::Data => "JSON of the wrong shape",
            serde_json::error::Category::Eof => "truncated JSON",
        }
    }
}

/// How a token request failed, in the terms the refresh engine acts on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The grant is dead (`invalid_grant`, or a 400/403 that is not an OAuth error):
    /// the session ends.
    #[error("the IdP refused the grant ({code})")]
    Dead {
        /// The OAuth error, or a description of the non-OAuth answer.
        code: String,
    },
    /// The IdP refused *us* (`invalid_client`, `unauthorized_client`, or another
    /// error about our request): the session is kept, and the operator must act.
    #[error("the IdP refused the client's request ({code}): check the client configuration")]
    Misconfigured {
        /// The OAuth error or status.
        code: String,
    },
    /// A 2xx answer that cannot be read. The IdP may have consumed the refresh token,
    /// so it is never sent again for this request: 503, never a retry.
    #[error("the IdP answered 2xx but the answer is unusable: {why}")]
    Unreadable {
        /// What was wrong with it.
        why: String,
    },
    /// Worth retrying: connect error, time-out, 5xx, 429.
    #[error("transient IdP failure: {why}")]
    Transient {
        /// What happened.
        why: String,
        /// The IdP's `Retry-After`, if it sent one.
        retry_after: Option<Duration>,
    },
}

/// Classifies a non-2xx token-endpoint answer (DESIGN.md "Classifying
/// token-endpoint answers").
#[must_use]
pub fn classify_token_error(
    status: StatusCode,
    body: &[u8],
    retry_after: Option<Duration>,
) -> TokenError {
    let oauth_code = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("error")?.as_str().map(str::to_owned))
        .filter(|c| !c.is_empty() && c.len() <= 64 && c.bytes().all(|b| b.is_ascii_graphic()));
    if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
        return TokenError::Transient {
            why: format!("HTTP {}", status.as_u16()),
            retry_after,
        };
    }
    match oauth_code.as_deref() {
        Some("invalid_grant") => TokenError::Dead {
            code: "invalid_grant".into(),
        },
        Some("temporarily_unavailable") => TokenError::Transient {
            why: "temporarily_unavailable".into(),
            retry_after,
        },
        Some(code) => TokenError::Misconfigured { code: code.into() },
        None if status == StatusCode::BAD_REQUEST || status == StatusCode::FORBIDDEN => {
            TokenError::Dead {
                code: format!("HTTP {} without an OAuth error", status.as_u16()),
            }
        }
        None => TokenError::Misconfigured {
            code: format!("HTTP {}", status.as_u16()),
        },
    }
}

pub(super) fn retry_after(headers: &http::HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?;
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

impl Oidc {
    /// Adds client authentication to a token or revocation request.
    pub(super) fn authenticate(
        &self,
        form: &mut Vec<(&'static str, String)>,
        audience: &str,
    ) -> Result<Option<HeaderValue>, TokenError> {
        let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
        match &self.credentials {
            ClientCredentials::Basic { secret } => {
                let creds = STANDARD.encode(format!("{}:{}", enc(&self.client_id), enc(secret)));
                HeaderValue::from_str(&format!("Basic {creds}"))
                    .map(Some)
                    .map_err(|_| TokenError::Misconfigured {
                        code: "client credentials are not header-safe".into(),
                    })
            }
            ClientCredentials::Post { secret } => {
                form.push(("client_id", self.client_id.clone()));
                form.push(("client_secret", secret.clone()));
                Ok(None)
            }
            ClientCredentials::PrivateKeyJwt { key, alg } => {
                let now = unix_now();
                let claims = serde_json::json!({
                    "iss": self.client_id, "sub": self.client_id, "aud": audience,
                    "iat": now, "exp": now + 60, "jti": crate::random::random_text(16),
                });
                let assertion =
                    jsonwebtoken::encode(&jsonwebtoken::Header::new(*alg), &claims, key).map_err(
                        |e| TokenError::Misconfigured {
                            code: format!("cannot sign the client assertion: {e}"),
                        },
                    )?;
                form.push(("client_id", self.client_id.clone()));
                form.push((
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".into(),
                ));
                form.push(("client_assertion", assertion));
                Ok(None)
            }
            ClientCredentials::None => {
                form.push(("client_id", self.client_id.clone()));
                Ok(None)
            }
        }
    }

    /// One token request (no retries): `grant` pairs plus client authentication,
    /// and a DPoP proof made with `dpop` when given. An answer asking for a DPoP
    /// nonce (`use_dpop_nonce`: the grant was not used) is retried once with it.
    pub(super) async fn token_request(
        &self,
        grant: Vec<(&'static str, String)>,
        dpop: Option<&crate::dpop::DpopKey>,
        timeout: Duration,
    ) -> Result<TokenResponse, TokenError> {
        let meta = self.metadata().await.map_err(|e| TokenError::Transient {
            why: e.to_string(),
            retry_after: None,
        })?;
        let deadline = tokio::time::Instant::now() + timeout;
        let mut nonce = self.latest_dpop_nonce();
        for attempt in 0..2 {
            let mut form = grant.clone();
            let mut headers = Vec::new();
            if let Some(auth) = self.authenticate(&mut form, &meta.token_endpoint)? {
                headers.push((AUTHORIZATION, auth));
            }
            if let Some(key) = dpop {
                let proof = key
                    .proof(
                        "POST",
                        &meta.token_endpoint,
                        None,
                        nonce.as_deref(),
                        unix_now(),
                    )
                    .map_err(|code| TokenError::Misconfigured { code })?;
                headers.push((
                    http::HeaderName::from_static("dpop"),
                    HeaderValue::from_str(&proof).map_err(|_| TokenError::Misconfigured {
                        code: "the DPoP proof is not header-safe".into(),
                    })?,
                ));
            }
            let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            let resp = self
                .post_raw("token", &meta.token_endpoint, &pairs, headers, remaining)
                .await?;
            let offered = resp
                .headers
                .get("dpop-nonce")
                .and_then(|v| v.to_str().ok())
                .filter(|n| !n.is_empty() && n.len() <= 512)
                .map(str::to_owned);
            if let (Some(_), Some(n)) = (dpop, &offered) {
                *self
                    .dpop_nonce
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(n.clone());
            }
            if dpop.is_some() && attempt == 0 && asks_for_dpop_nonce(&resp) && offered.is_some() {
                nonce = offered;
                continue;
            }
            return parse_token_response_as(&Self::success(resp)?.body, dpop.is_some());
        }
        Err(TokenError::Misconfigured {
            code: "the IdP asked for a new DPoP nonce twice in a row".into(),
        })
    }

    /// The DPoP nonce to send, if the IdP gave one.
    fn latest_dpop_nonce(&self) -> Option<String> {
        self.dpop_nonce
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// A form POST to one of the IdP's endpoints, counted under `label`: its
    /// answer whatever the status (a failed request is transient).
    async fn post_raw(
        &self,
        label: &str,
        url: &str,
        pairs: &[(&str, &str)],
        headers: Vec<(http::HeaderName, HeaderValue)>,
        timeout: Duration,
    ) -> Result<IdpResponse, TokenError> {
        let resp = self.http.post_form(url, pairs, headers, timeout).await;
        self.count(label, &resp);
        resp.map_err(|e| TokenError::Transient {
            why: e.to_string(),
            retry_after: None,
        })
    }

    /// A 2xx answer, or the error an error status means (classified as a
    /// token-endpoint error).
    fn success(resp: IdpResponse) -> Result<IdpResponse, TokenError> {
        if !resp.status.is_success() {
            return Err(classify_token_error(
                resp.status,
                &resp.body,
                retry_after(&resp.headers),
            ));
        }
        Ok(resp)
    }

    /// A form POST to one of the IdP's endpoints, counted under `label`: its 2xx
    /// answer, or the error it means (a failed request is transient; an error
    /// status is classified as a token-endpoint error).
    async fn post_to_idp(
        &self,
        label: &str,
        url: &str,
        pairs: &[(&str, &str)],
        auth: Option<HeaderValue>,
        timeout: Duration,
    ) -> Result<IdpResponse, TokenError> {
        let headers = auth.map(|a| (AUTHORIZATION, a)).into_iter().collect();
        Self::success(self.post_raw(label, url, pairs, headers, timeout).await?)
    }

    /// Exchanges an authorization code (with its PKCE verifier).
    pub async fn exchange_code(
        &self,
        code: &str,
        verifier: &str,
        redirect_uri: &str,
        dpop: Option<&crate::dpop::DpopKey>,
        timeout: Duration,
    ) -> Result<TokenResponse, TokenError> {
        self.token_request(
            vec![
                ("grant_type", "authorization_code".into()),
                ("code", code.into()),
                ("redirect_uri", redirect_uri.into()),
                ("code_verifier", verifier.into()),
            ],
            dpop,
            timeout,
        )
        .await
    }

    /// One refresh-token request (the refresh engine retries).
    pub async fn refresh(
        &self,
        refresh_token: &str,
        timeout: Duration,
    ) -> Result<TokenResponse, TokenError> {
        self.refresh_for(refresh_token, None, None, timeout).await
    }

    /// One refresh-token request, for the access token of `resource` (RFC 8707)
    /// when one is named.
    pub async fn refresh_for(
        &self,
        refresh_token: &str,
        resource: Option<&str>,
        dpop: Option<&crate::dpop::DpopKey>,
        timeout: Duration,
    ) -> Result<TokenResponse, TokenError> {
        let mut form = vec![
            ("grant_type", "refresh_token".into()),
            ("refresh_token", refresh_token.into()),
        ];
        if let Some(r) = resource {
            form.push(("resource", r.to_owned()));
        }
        self.token_request(form, dpop, timeout).await
    }

    /// One token exchange (RFC 8693): the access token `subject` for one for
    /// `audience`, with `scope` when given.
    pub async fn exchange(
        &self,
        subject: &str,
        audience: &str,
        scope: Option<&str>,
        dpop: Option<&crate::dpop::DpopKey>,
        timeout: Duration,
    ) -> Result<TokenResponse, TokenError> {
        const ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";
        let mut form = vec![
            (
                "grant_type",
                "urn:ietf:params:oauth:grant-type:token-exchange".into(),
            ),
            ("subject_token", subject.to_owned()),
            ("subject_token_type", ACCESS_TOKEN.into()),
            ("requested_token_type", ACCESS_TOKEN.into()),
            ("audience", audience.to_owned()),
        ];
        if let Some(scope) = scope {
            form.push(("scope", scope.to_owned()));
        }
        self.token_request(form, dpop, timeout).await
    }

    /// Pushes an authorization request (RFC 9126) to `endpoint`: the `request_uri`
    /// the browser takes to the authorization endpoint instead of the parameters.
    pub async fn push_authorization(
        &self,
        endpoint: &str,
        params: &[(String, String)],
        timeout: Duration,
    ) -> Result<String, TokenError> {
        // RFC 9126 section 2: the issuer is the audience of a client assertion.
        let mut credentials = Vec::new();
        let auth = self.authenticate(&mut credentials, &self.issuer)?;
        let mut pairs: Vec<(&str, &str)> = params
            .iter()
            .filter(|(k, _)| k != "client_id")
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        if !credentials.iter().any(|(k, _)| *k == "client_id") {
            pairs.push(("client_id", self.client_id.as_str()));
        }
        pairs.extend(credentials.iter().map(|(k, v)| (*k, v.as_str())));
        let resp = self
            .post_to_idp("par", endpoint, &pairs, auth, timeout)
            .await?;
        #[derive(Deserialize)]
        struct Pushed {
            request_uri: String,
        }
        let pushed: Pushed =
            serde_json::from_slice(&resp.body).map_err(|_| TokenError::Unreadable {
                why: "the PAR answer has no request_uri".into(),
            })?;
        let uri = pushed.request_uri;
        if uri.is_empty() || uri.len() > 2048 || uri.chars().any(char::is_control) {
            return Err(TokenError::Unreadable {
                why: "the PAR answer's request_uri is empty, too long or not text".into(),
            });
        }
        Ok(uri)
    }

    /// Revokes a refresh token (RFC 7009). Ok(false) when the IdP has no revocation
    /// endpoint.
    pub async fn revoke(&self, refresh_token: &str, timeout: Duration) -> Result<bool, TokenError> {
        let meta = self.metadata().await.map_err(|e| TokenError::Transient {
            why: e.to_string(),
            retry_after: None,
        })?;
        let Some(endpoint) = meta.revocation_endpoint.clone() else {
            return Ok(false);
        };
        let mut form = vec![
            ("token", refresh_token.to_owned()),
            ("token_type_hint", "refresh_token".to_owned()),
        ];
        let auth = self.authenticate(&mut form, &endpoint)?;
        let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
        self.post_to_idp("revocation", &endpoint, &pairs, auth, timeout)
            .await?;
        Ok(true)
    }
}
