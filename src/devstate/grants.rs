//! The provider's state and the OAuth rules it enforces, apart from HTTP.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rsa::pkcs1::EncodeRsaPrivateKey as _;
use rsa::traits::PublicKeyParts as _;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use super::{DevClient, DevIdpSettings, RefreshPolicy};

/// Counters of what the provider saw and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DevIdpStats {
    /// Discovery document requests.
    pub discovery: u64,
    /// JWKS requests.
    pub jwks: u64,
    /// Authorization requests.
    pub authorize: u64,
    /// Token requests, any grant.
    pub token_requests: u64,
    /// Token requests with `grant_type=authorization_code`.
    pub token_authorization_code: u64,
    /// Token requests with `grant_type=refresh_token`.
    pub token_refresh: u64,
    /// Successful refreshes that named a `resource` (RFC 8707).
    pub refresh_resource: u64,
    /// Successful token exchanges (RFC 8693).
    pub token_exchange: u64,
    /// Presentations of a refresh token that had been presented before (whatever
    /// the policy made of them).
    pub refresh_token_presented_again: u64,
    /// Token requests with a valid DPoP proof.
    pub dpop_proofs: u64,
    /// Token requests answered `use_dpop_nonce`.
    pub dpop_nonce_challenges: u64,
    /// Revocation requests.
    pub revocation: u64,
    /// End-session requests.
    pub end_session: u64,
    /// Refreshes that succeeded.
    pub refresh_ok: u64,
    /// Refreshes refused with `invalid_grant`.
    pub refresh_invalid_grant: u64,
    /// Requests refused with `invalid_client`.
    pub invalid_client: u64,
    /// Token requests answered by fault injection.
    pub injected_failures: u64,
    /// Rotated refresh tokens presented after the grace window.
    pub reuse_detected: u64,
    /// Token families revoked (reuse, revocation, code replay, logout).
    pub families_revoked: u64,
    /// Tokens revoked through the revocation endpoint.
    pub revocations: u64,
    /// Back-channel logout tokens delivered (2xx answer).
    pub backchannel_sent: u64,
    /// Back-channel logout deliveries that failed.
    pub backchannel_failed: u64,
    /// Pushed authorization requests accepted (RFC 9126).
    pub par: u64,
    /// Authorization requests that came with a pushed `request_uri`.
    pub authorize_par: u64,
}

/// An RS256 signing key.
pub(crate) struct SigningKey {
    pub(crate) kid: String,
    encoding: EncodingKey,
    n: String,
    e: String,
}

impl SigningKey {
    pub(crate) fn generate(bits: usize) -> Result<Self, String> {
        let key = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, bits)
            .map_err(|e| format!("RSA key generation failed: {e}"))?;
        let der = key
            .to_pkcs1_der()
            .map_err(|e| format!("RSA key encoding failed: {e}"))?;
        let n = URL_SAFE_NO_PAD.encode(key.n().to_bytes_be());
        let e = URL_SAFE_NO_PAD.encode(key.e().to_bytes_be());
        let kid = URL_SAFE_NO_PAD.encode(&Sha256::digest(n.as_bytes())[..12]);
        Ok(Self {
            kid,
            encoding: EncodingKey::from_rsa_der(der.as_bytes()),
            n,
            e,
        })
    }

    fn jwk(&self, anonymous: bool) -> Value {
        if anonymous {
            return json!({"kty": "RSA", "use": "sig", "n": self.n, "e": self.e});
        }
        json!({"kty": "RSA", "use": "sig", "alg": "RS256", "kid": self.kid, "n": self.n, "e": self.e})
    }
}

/// Fault injection.
#[derive(Default)]
pub(crate) struct Faults {
    pub(crate) fail_next: u32,
    pub(crate) fail_status: u16,
    pub(crate) fail_body: String,
    pub(crate) latency: Duration,
    pub(crate) quirk_next: u32,
    pub(crate) quirk: Option<super::TokenQuirk>,
}

impl Faults {
    /// The quirk for the next successful token response, if one is due.
    pub(crate) fn take_quirk(&mut self) -> Option<super::TokenQuirk> {
        if self.quirk_next == 0 {
            return None;
        }
        self.quirk_next -= 1;
        self.quirk.clone()
    }
}

pub(crate) struct CodeGrant {
    client_id: String,
    redirect_uri: String,
    scope: String,
    nonce: Option<String>,
    code_challenge: String,
    sid: String,
    auth_time: u64,
    acr: &'static str,
    expires_at: Instant,
    /// Set once redeemed; a replay revokes what it issued.
    redeemed_family: Option<Option<u64>>,
}

struct Family {
    client_id: String,
    sid: String,
    scope: String,
    auth_time: u64,
    acr: &'static str,
    created_at: Instant,
    refreshes: u32,
    revoked: bool,
}

struct RefreshRecord {
    family: u64,
    issued_at: Instant,
    rotated_at: Option<Instant>,
    /// How many times it was presented.
    presented: u32,
}

/// An IdP login session (`sid`): which clients got tokens through it.
pub(crate) struct IdpSession {
    pub(crate) sub: String,
    pub(crate) clients: HashSet<String>,
    /// When the user authenticated (Unix seconds).
    pub(crate) auth_time: u64,
    /// At which level ([`ACR_PASSWORD`] or [`ACR_MFA`]).
    pub(crate) acr: &'static str,
}

/// The dev IdP's first authentication level: the user's name (no password).
pub const ACR_PASSWORD: &str = "urn:example:password";
/// Its second level: a second factor, asked for with `acr_values`.
pub const ACR_MFA: &str = "urn:example:mfa";

/// How the user of an authorization request authenticated.
#[derive(Debug, Clone)]
pub(crate) struct Authentication {
    /// The IdP session it belongs to (its browser cookie).
    pub(crate) sid: String,
    pub(crate) auth_time: u64,
    pub(crate) acr: &'static str,
}

/// A pushed authorization request (RFC 9126), until used once or expired.
pub(crate) struct PushedRequest {
    pub(crate) client_id: String,
    pub(crate) params: HashMap<String, String>,
    pub(crate) expires_at: Instant,
}

/// An OAuth error answer: status and `error` code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OAuthError {
    pub(crate) status: u16,
    pub(crate) error: &'static str,
    pub(crate) description: String,
}

impl OAuthError {
    pub(crate) fn new(status: u16, error: &'static str, description: impl Into<String>) -> Self {
        Self {
            status,
            error,
            description: description.into(),
        }
    }

    pub(crate) fn invalid_grant(description: impl Into<String>) -> Self {
        Self::new(400, "invalid_grant", description)
    }

    pub(crate) fn invalid_request(description: impl Into<String>) -> Self {
        Self::new(400, "invalid_request", description)
    }

    pub(crate) fn invalid_client(description: impl Into<String>) -> Self {
        Self::new(401, "invalid_client", description)
    }
}

pub(crate) struct State {
    pub(crate) keys: Vec<SigningKey>,
    codes: HashMap<String, CodeGrant>,
    families: HashMap<u64, Family>,
    next_family: u64,
    refresh_tokens: HashMap<String, RefreshRecord>,
    pub(crate) sessions: HashMap<String, IdpSession>,
    pub(crate) used_assertions: HashSet<String>,
    pub(crate) faults: Faults,
    pub(crate) deny_next_authorization: Option<String>,
    /// Pushed authorization requests by `request_uri`: client, parameters, expiry.
    pub(crate) pushed: HashMap<String, PushedRequest>,
    /// The DPoP key thumbprint the token request being answered proved, which its
    /// access tokens are bound to (`cnf.jkt`); set and cleared around each grant.
    pub(crate) binding: Option<String>,
    /// The current DPoP nonce (with `dpop_nonce`).
    pub(crate) dpop_nonce: String,
    /// DPoP proof `jti`s seen, against replays.
    pub(crate) dpop_jtis: HashSet<String>,
    /// Answer refreshes with this (narrower) scope, as providers that downgrade a
    /// grant do.
    pub(crate) refresh_scope: Option<String>,
    pub(crate) policy: RefreshPolicy,
    pub(crate) access_token_ttl: Duration,
    pub(crate) clock_offset: Duration,
    pub(crate) listening: bool,
    pub(crate) stats: DevIdpStats,
    /// Keys without `kid`/`alg` (`DevIdpSettings::anonymous_keys`).
    anonymous_keys: bool,
}

/// Random URL-safe text of `bytes` random bytes.
pub(crate) fn random_token(bytes: usize) -> String {
    crate::random::random_text(bytes)
}

/// The PKCE S256 transform.
pub(crate) fn pkce_s256(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

impl State {
    pub(crate) fn new(settings: &DevIdpSettings, key: SigningKey) -> Self {
        Self {
            keys: vec![key],
            codes: HashMap::new(),
            families: HashMap::new(),
            next_family: 1,
            refresh_tokens: HashMap::new(),
            sessions: HashMap::new(),
            used_assertions: HashSet::new(),
            faults: Faults::default(),
            deny_next_authorization: None,
            pushed: HashMap::new(),
            binding: None,
            dpop_nonce: random_token(16),
            dpop_jtis: HashSet::new(),
            refresh_scope: None,
            policy: settings.refresh.clone(),
            access_token_ttl: settings.access_token_ttl,
            clock_offset: Duration::ZERO,
            listening: true,
            stats: DevIdpStats::default(),
            anonymous_keys: settings.anonymous_keys,
        }
    }

    pub(crate) fn now(&self) -> Instant {
        Instant::now() + self.clock_offset
    }

    pub(crate) fn unix_now(&self) -> u64 {
        (SystemTime::now() + self.clock_offset)
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    }

    pub(crate) fn jwks(&self) -> Value {
        let anonymous = self.anonymous_keys;
        json!({"keys": self.keys.iter().map(|k| k.jwk(anonymous)).collect::<Vec<_>>()})
    }

    /// Signs claims with the newest key.
    pub(crate) fn sign(&self, claims: &Value, typ: &str) -> Result<String, OAuthError> {
        let key = self
            .keys
            .last()
            .ok_or_else(|| OAuthError::new(500, "server_error", "no signing key"))?;
        let mut header = Header::new(Algorithm::RS256);
        header.kid = (!self.anonymous_keys).then(|| key.kid.clone());
        header.typ = Some(typ.to_owned());
        jsonwebtoken::encode(&header, claims, &key.encoding)
            .map_err(|e| OAuthError::new(500, "server_error", format!("signing failed: {e}")))
    }

    /// A new IdP session: the user just authenticated at level `acr`.
    pub(crate) fn authenticate(
        &mut self,
        settings: &DevIdpSettings,
        acr: &'static str,
    ) -> Authentication {
        let sid = random_token(16);
        let auth_time = self.unix_now();
        self.sessions.insert(
            sid.clone(),
            IdpSession {
                sub: settings.user.sub.clone(),
                clients: HashSet::new(),
                auth_time,
                acr,
            },
        );
        Authentication {
            sid,
            auth_time,
            acr,
        }
    }

    /// The IdP session a browser cookie names, if it is still there.
    pub(crate) fn existing(&self, sid: &str) -> Option<Authentication> {
        self.sessions.get(sid).map(|s| Authentication {
            sid: sid.to_owned(),
            auth_time: s.auth_time,
            acr: s.acr,
        })
    }

    /// Issues a code for an authenticated user.
    pub(crate) fn issue_code(
        &mut self,
        settings: &DevIdpSettings,
        request: (&str, &str, &str),
        nonce: Option<String>,
        code_challenge: &str,
        user: &Authentication,
    ) -> String {
        let (client_id, redirect_uri, scope) = request;
        let (sid, auth_time, acr) = (user.sid.clone(), user.auth_time, user.acr);
        let code = random_token(32);
        let expires_at = self.now() + settings.code_ttl;
        self.codes.insert(
            code.clone(),
            CodeGrant {
                client_id: client_id.into(),
                redirect_uri: redirect_uri.into(),
                scope: scope.into(),
                nonce,
                code_challenge: code_challenge.into(),
                sid,
                auth_time,
                acr,
                expires_at,
                redeemed_family: None,
            },
        );
        code
    }

    /// `grant_type=authorization_code`.
    pub(crate) fn redeem_code(
        &mut self,
        issuer: &str,
        settings: &DevIdpSettings,
        client: &DevClient,
        code: &str,
        redirect_uri: &str,
        code_verifier: &str,
    ) -> Result<Value, OAuthError> {
        let now = self.now();
        let grant = self
            .codes
            .get_mut(code)
            .ok_or_else(|| OAuthError::invalid_grant("unknown authorization code"))?;
        if let Some(family) = grant.redeemed_family {
            // RFC 6749 4.1.2: a code used twice revokes what it issued.
            if let Some(family) = family {
                self.revoke_family(family);
            }
            return Err(OAuthError::invalid_grant(
                "authorization code already used; the tokens it issued are revoked",
            ));
        }
        if grant.expires_at < now {
            return Err(OAuthError::invalid_grant("authorization code expired"));
        }
        if grant.client_id != client.client_id {
            return Err(OAuthError::invalid_grant(
                "authorization code was issued to another client",
            ));
        }
        if grant.redirect_uri != redirect_uri {
            return Err(OAuthError::invalid_grant("redirect_uri does not match"));
        }
        if !(43..=128).contains(&code_verifier.len())
            || pkce_s256(code_verifier) != grant.code_challenge
        {
            return Err(OAuthError::invalid_grant("PKCE verification failed"));
        }
        let (scope, nonce, sid, auth_time, acr) = (
            grant.scope.clone(),
            grant.nonce.clone(),
            grant.sid.clone(),
            grant.auth_time,
            grant.acr,
        );
        let wants_refresh = scope.split(' ').any(|s| s == "offline_access");
        let family = wants_refresh.then(|| {
            let id = self.next_family;
            self.next_family += 1;
            self.families.insert(
                id,
                Family {
                    client_id: client.client_id.clone(),
                    sid: sid.clone(),
                    scope: scope.clone(),
                    auth_time,
                    acr,
                    created_at: now,
                    refreshes: 0,
                    revoked: false,
                },
            );
            id
        });
        if let Some(grant) = self.codes.get_mut(code) {
            grant.redeemed_family = Some(family);
        }
        if let Some(session) = self.sessions.get_mut(&sid) {
            session.clients.insert(client.client_id.clone());
        }
        let refresh_token = family.map(|f| self.new_refresh_token(f));
        self.token_response(
            issuer,
            settings,
            &client.client_id,
            &sid,
            &scope,
            (auth_time, acr),
            nonce.as_deref(),
            true,
            refresh_token,
        )
    }

    fn new_refresh_token(&mut self, family: u64) -> String {
        let token = random_token(32);
        self.refresh_tokens.insert(
            token.clone(),
            RefreshRecord {
                family,
                issued_at: self.now(),
                rotated_at: None,
                presented: 0,
            },
        );
        token
    }

    pub(crate) fn revoke_family(&mut self, family: u64) {
        if let Some(f) = self.families.get_mut(&family) {
            if !f.revoked {
                f.revoked = true;
                self.stats.families_revoked += 1;
            }
        }
    }

    /// `grant_type=refresh_token`: the refresh-token rules of [`RefreshPolicy`].
    pub(crate) fn refresh(
        &mut self,
        issuer: &str,
        settings: &DevIdpSettings,
        client: &DevClient,
        token: &str,
        requested_scope: Option<&str>,
        resource: Option<&str>,
    ) -> Result<Value, OAuthError> {
        if let Some(r) = resource {
            // RFC 8707 section 2: an absolute URI without a fragment.
            let ok = url::Url::parse(r).is_ok_and(|u| u.fragment().is_none());
            if !ok {
                return Err(OAuthError::new(
                    400,
                    "invalid_target",
                    "resource must be an absolute URI without a fragment",
                ));
            }
        }
        let result =
            self.refresh_inner(issuer, settings, client, token, (requested_scope, resource));
        match &result {
            Ok(_) if resource.is_some() => {
                self.stats.refresh_ok += 1;
                self.stats.refresh_resource += 1;
            }
            Ok(_) => self.stats.refresh_ok += 1,
            Err(e) if e.error == "invalid_grant" => self.stats.refresh_invalid_grant += 1,
            Err(_) => {}
        }
        result
    }

    fn refresh_inner(
        &mut self,
        issuer: &str,
        settings: &DevIdpSettings,
        client: &DevClient,
        token: &str,
        (requested_scope, resource): (Option<&str>, Option<&str>),
    ) -> Result<Value, OAuthError> {
        let now = self.now();
        let policy = self.policy.clone();
        let record = self
            .refresh_tokens
            .get_mut(token)
            .ok_or_else(|| OAuthError::invalid_grant("unknown refresh token"))?;
        record.presented += 1;
        if record.presented > 1 {
            self.stats.refresh_token_presented_again += 1;
        }
        let family_id = record.family;
        let (issued_at, rotated_at) = (record.issued_at, record.rotated_at);
        let family = self
            .families
            .get(&family_id)
            .ok_or_else(|| OAuthError::invalid_grant("unknown refresh token"))?;
        if family.client_id != client.client_id {
            return Err(OAuthError::invalid_grant(
                "refresh token was issued to another client",
            ));
        }
        if family.revoked {
            return Err(OAuthError::invalid_grant("refresh token revoked"));
        }
        if let Some(rotated) = rotated_at {
            if now.saturating_duration_since(rotated) > policy.grace {
                if policy.reuse_detection {
                    self.stats.reuse_detected += 1;
                    self.revoke_family(family_id);
                    return Err(OAuthError::invalid_grant(
                        "refresh token reuse detected; the token family is revoked",
                    ));
                }
                return Err(OAuthError::invalid_grant("refresh token already rotated"));
            }
        }
        if policy
            .token_lifetime
            .is_some_and(|l| now.saturating_duration_since(issued_at) > l)
        {
            return Err(OAuthError::invalid_grant("refresh token expired"));
        }
        if policy
            .max_lifetime
            .is_some_and(|l| now.saturating_duration_since(family.created_at) > l)
        {
            return Err(OAuthError::invalid_grant(
                "maximum lifetime of the login reached",
            ));
        }
        if policy.max_refreshes.is_some_and(|m| family.refreshes >= m) {
            return Err(OAuthError::invalid_grant(
                "maximum number of refreshes reached",
            ));
        }
        let scope = match requested_scope.or(self.refresh_scope.as_deref()) {
            None => family.scope.clone(),
            Some(req) => {
                let granted: HashSet<&str> = family.scope.split(' ').collect();
                if req.split(' ').any(|s| !granted.contains(s)) {
                    return Err(OAuthError::new(
                        400,
                        "invalid_scope",
                        "requested scope exceeds the granted scope",
                    ));
                }
                req.to_owned()
            }
        };
        let (sid, auth_time, acr) = (family.sid.clone(), family.auth_time, family.acr);
        if let Some(f) = self.families.get_mut(&family_id) {
            f.refreshes += 1;
        }
        let refresh_token = if policy.rotate {
            if let Some(r) = self.refresh_tokens.get_mut(token) {
                r.rotated_at.get_or_insert(now);
            }
            Some(self.new_refresh_token(family_id))
        } else if policy.return_unrotated {
            Some(token.to_owned())
        } else {
            None
        };
        let mut body = self.token_response(
            issuer,
            settings,
            &client.client_id,
            &sid,
            &scope,
            (auth_time, acr),
            None,
            settings.id_token_on_refresh,
            refresh_token,
        )?;
        if let Some(resource) = resource {
            // The access token is for the resource (its `aud`), not the client.
            body["access_token"] = json!(self.access_token(
                issuer,
                settings,
                resource,
                &client.client_id,
                &sid,
                &scope
            )?);
        }
        Ok(body)
    }

    /// An RS256 access token for `aud`.
    fn access_token(
        &mut self,
        issuer: &str,
        settings: &DevIdpSettings,
        aud: &str,
        client_id: &str,
        sid: &str,
        scope: &str,
    ) -> Result<String, OAuthError> {
        let iat = self.unix_now();
        let ttl = self.access_token_ttl.as_secs();
        let mut claims = json!({
            "iss": issuer, "sub": settings.user.sub, "aud": aud, "client_id": client_id,
            "scope": scope, "iat": iat, "exp": iat + ttl, "jti": random_token(12), "sid": sid,
        });
        if let Some(jkt) = &self.binding {
            claims["cnf"] = json!({ "jkt": jkt });
        }
        self.sign(&claims, "at+jwt")
    }

    /// `grant_type=urn:ietf:params:oauth:grant-type:token-exchange` (RFC 8693): the
    /// access token `subject` (its verified claims), issued to this client and not
    /// expired, for one whose `aud` is `audience`.
    pub(crate) fn exchange(
        &mut self,
        issuer: &str,
        settings: &DevIdpSettings,
        client: &DevClient,
        subject: &Value,
        audience: &str,
        scope: Option<&str>,
    ) -> Result<Value, OAuthError> {
        let bad = |why: &str| OAuthError::invalid_grant(why.to_owned());
        if subject["client_id"].as_str() != Some(client.client_id.as_str()) {
            return Err(bad("the subject token was issued to another client"));
        }
        if subject["exp"]
            .as_u64()
            .is_none_or(|exp| exp <= self.unix_now())
        {
            return Err(bad("the subject token has expired"));
        }
        let sid = subject["sid"].as_str().unwrap_or_default().to_owned();
        let scope = scope
            .or(subject["scope"].as_str())
            .unwrap_or_default()
            .to_owned();
        let access =
            self.access_token(issuer, settings, audience, &client.client_id, &sid, &scope)?;
        self.stats.token_exchange += 1;
        Ok(json!({
            "access_token": access,
            "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
            "token_type": if self.binding.is_some() { "DPoP" } else { "Bearer" },
            "expires_in": self.access_token_ttl.as_secs(),
            "scope": scope,
        }))
    }

    #[allow(clippy::too_many_arguments)]
    fn token_response(
        &mut self,
        issuer: &str,
        settings: &DevIdpSettings,
        client_id: &str,
        sid: &str,
        scope: &str,
        (auth_time, acr): (u64, &str),
        nonce: Option<&str>,
        with_id_token: bool,
        refresh_token: Option<String>,
    ) -> Result<Value, OAuthError> {
        let iat = self.unix_now();
        let ttl = self.access_token_ttl.as_secs();
        let user = &settings.user;
        let mut access_claims = json!({
            "iss": issuer, "sub": user.sub, "aud": client_id, "client_id": client_id,
            "scope": scope, "iat": iat, "exp": iat + ttl, "jti": random_token(12), "sid": sid,
        });
        if let Some(jkt) = &self.binding {
            access_claims["cnf"] = json!({ "jkt": jkt });
        }
        let access = self.sign(&access_claims, "at+jwt")?;
        let mut body = json!({
            "access_token": access,
            "token_type": if self.binding.is_some() { "DPoP" } else { "Bearer" },
            "expires_in": ttl,
            "scope": scope,
        });
        if with_id_token {
            let mut claims = json!({
                "iss": issuer, "sub": user.sub, "aud": client_id, "azp": client_id,
                "iat": iat, "exp": iat + settings.id_token_ttl.as_secs(),
                "auth_time": auth_time, "acr": acr, "sid": sid,
                "name": user.name, "email": user.email,
                "preferred_username": user.preferred_username,
            });
            if let Some(nonce) = nonce {
                claims["nonce"] = json!(nonce);
            }
            for (name, value) in &user.claims {
                claims[name.as_str()] = value.clone();
            }
            body["id_token"] = json!(self.sign(&claims, "JWT")?);
        }
        if let Some(rt) = refresh_token {
            body["refresh_token"] = json!(rt);
        }
        Ok(body)
    }

    /// RFC 7009: revokes a refresh token's family; unknown tokens are ignored.
    pub(crate) fn revoke(&mut self, client: &DevClient, token: &str) {
        let family = self.refresh_tokens.get(token).map(|r| r.family);
        if let Some(family) = family {
            let owned = self
                .families
                .get(&family)
                .is_some_and(|f| f.client_id == client.client_id);
            if owned {
                self.stats.revocations += 1;
                self.revoke_family(family);
            }
        }
    }

    /// Ends an IdP session; returns its clients. Token families stay alive, as at
    /// the providers that leave refresh tokens valid after end-session.
    pub(crate) fn end_session(&mut self, sid: &str) -> Option<IdpSession> {
        self.sessions.remove(sid)
    }
}
