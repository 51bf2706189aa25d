//! The embedded development OpenID provider: real flows over real HTTP on loopback,
//! with the refresh-token behaviours of real providers as settings, fault injection
//! and counters. Tests, examples and the root `config.toml` demo use it.
//!
//! It is not a mock: authorization code + PKCE, RS256-signed JWTs, rotation with
//! reuse detection that revokes a whole token family, grace windows, lifetimes,
//! revocation (RFC 7009), RP-initiated logout and back-channel logout all run as a
//! real provider would run them. Its clock can be moved forward so tests of
//! lifetimes and grace windows need not sleep.
//!
//! ```no_run
//! use bff_proxy::devidp::{DevClient, DevClientAuth, DevIdp, DevIdpSettings};
//!
//! # async fn demo() -> std::io::Result<()> {
//! let mut settings = DevIdpSettings::default();
//! settings.clients.push(DevClient::new(
//!     "bff",
//!     DevClientAuth::SecretBasic("s3cret".into()),
//!     "http://127.0.0.1:8080/bff/callback",
//! ));
//! let idp = DevIdp::start(settings).await?;
//! println!("discovery at {}/.well-known/openid-configuration", idp.issuer());
//! idp.fail_next_token_requests(2, 503); // the next two token requests fail
//! idp.shutdown().await;
//! # Ok(())
//! # }
//! ```

mod http;
mod token;
mod wire;

use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;

use crate::devstate::grants as state;
pub use crate::devstate::grants::{ACR_MFA, ACR_PASSWORD};
pub use crate::devstate::{
    DevClient, DevClientAuth, DevIdpSettings, DevIdpStats, DevUser, RefreshPolicy, TokenQuirk,
};

/// Random URL-safe text from `bytes` random bytes (PKCE verifiers, states, nonces).
#[must_use]
pub fn random_text(bytes: usize) -> String {
    crate::random::random_text(bytes)
}

/// A running dev IdP. Dropping it does not stop it; call [`DevIdp::shutdown`].
pub struct DevIdp {
    inner: Arc<Inner>,
    addr: SocketAddr,
    issuer: String,
    down: watch::Sender<bool>,
    stop: watch::Sender<bool>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl fmt::Debug for DevIdp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DevIdp")
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

/// Shared between the server task and the handle.
pub(crate) struct Inner {
    pub(crate) issuer: String,
    pub(crate) settings: DevIdpSettings,
    pub(crate) state: Mutex<state::State>,
    pub(crate) backchannel: http::BackchannelClient,
}

impl Inner {
    pub(crate) fn state(&self) -> MutexGuard<'_, state::State> {
        // A panic while holding the lock would be a bug in the IdP; its state is
        // still consistent enough for tests to go on.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl DevIdp {
    /// Binds, generates the first signing key and starts serving.
    pub async fn start(settings: DevIdpSettings) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(settings.listen).await?;
        Self::start_with_listener(settings, listener).await
    }

    /// Like [`DevIdp::start`] on a listener already bound (its address wins over
    /// `settings.listen`).
    pub async fn start_with_listener(
        settings: DevIdpSettings,
        listener: tokio::net::TcpListener,
    ) -> std::io::Result<Self> {
        let addr = listener.local_addr()?;
        let issuer = format!("http://{addr}");
        let bits = settings.key_bits;
        let key = tokio::task::spawn_blocking(move || state::SigningKey::generate(bits))
            .await
            .map_err(std::io::Error::other)?
            .map_err(std::io::Error::other)?;
        let state = state::State::new(&settings, key);
        let inner = Arc::new(Inner {
            issuer: issuer.clone(),
            settings,
            state: Mutex::new(state),
            backchannel: http::BackchannelClient::new(),
        });
        let (down, down_rx) = watch::channel(false);
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(http::serve(
            Arc::clone(&inner),
            listener,
            addr,
            down_rx,
            stop_rx,
        ));
        Ok(Self {
            inner,
            addr,
            issuer,
            down,
            stop,
            task: Mutex::new(Some(task)),
        })
    }

    /// The issuer URL (`http://127.0.0.1:PORT`).
    #[must_use]
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The bound address.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A snapshot of the counters.
    #[must_use]
    pub fn stats(&self) -> DevIdpStats {
        self.inner.state().stats.clone()
    }

    /// Zeroes the counters.
    pub fn reset_stats(&self) {
        self.inner.state().stats = DevIdpStats::default();
    }

    /// The next `n` token requests answer `status` (with `Retry-After: 1` for 429)
    /// and an OAuth error body fitting the status.
    pub fn fail_next_token_requests(&self, n: u32, status: u16) {
        let body = match status {
            400 => r#"{"error":"invalid_grant"}"#,
            401 => r#"{"error":"invalid_client"}"#,
            429 | 503 => r#"{"error":"temporarily_unavailable"}"#,
            _ => r#"{"error":"server_error"}"#,
        };
        self.fail_next_token_requests_with(n, status, body);
    }

    /// The next `n` token requests answer `status` with exactly this body (an empty
    /// or non-JSON body imitates providers that answer that way).
    pub fn fail_next_token_requests_with(&self, n: u32, status: u16, body: &str) {
        let mut state = self.inner.state();
        state.faults.fail_next = n;
        state.faults.fail_status = status;
        state.faults.fail_body = body.to_owned();
    }

    /// The next `n` successful token responses (any grant) come with `quirk`.
    pub fn quirk_next_token_responses(&self, n: u32, quirk: TokenQuirk) {
        let mut state = self.inner.state();
        state.faults.quirk_next = n;
        state.faults.quirk = Some(quirk);
    }

    /// A back-channel logout token for the IdP session `sid`, signed like the ones
    /// the IdP sends, after `edit` changed its claims (tests of replay, age and
    /// `sub`-only tokens).
    pub fn logout_token(&self, sid: &str, edit: impl FnOnce(&mut serde_json::Value)) -> String {
        let client_id = self
            .inner
            .settings
            .clients
            .first()
            .map(|c| c.client_id.clone())
            .unwrap_or_default();
        let state = self.inner.state();
        let iat = state.unix_now();
        let mut claims = serde_json::json!({
            "iss": self.inner.issuer, "aud": client_id, "iat": iat, "exp": iat + 120,
            "jti": random_text(12), "sub": self.inner.settings.user.sub, "sid": sid,
            "events": { (http::BACKCHANNEL_EVENT): {} },
        });
        edit(&mut claims);
        state.sign(&claims, "logout+jwt").unwrap_or_default()
    }

    /// Every token request waits this long before it is handled.
    pub fn set_token_latency(&self, latency: Duration) {
        self.inner.state().faults.latency = latency;
    }

    /// Down: the listener closes and open connections are cut, so connects are
    /// refused. Up again: it listens on the same address. Returns once the change
    /// has taken effect.
    pub async fn set_down(&self, down: bool) {
        if self.down.send_replace(down) == down {
            return;
        }
        // The server acknowledges by flipping the state's `listening` flag.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while self.inner.state().listening == down && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// The next authorization request is answered with this OAuth `error`.
    pub fn deny_next_authorization(&self, error: &str) {
        self.inner.state().deny_next_authorization = Some(error.to_owned());
    }

    /// Changes the refresh-token policy from now on.
    pub fn set_refresh_policy(&self, policy: RefreshPolicy) {
        self.inner.state().policy = policy;
    }

    /// Refreshes from now on grant this narrower scope (None: the granted one).
    pub fn set_refresh_scope(&self, scope: Option<&str>) {
        self.inner.state().refresh_scope = scope.map(str::to_owned);
    }

    /// Changes the access-token lifetime from now on.
    pub fn set_access_token_ttl(&self, ttl: Duration) {
        self.inner.state().access_token_ttl = ttl;
    }

    /// A new DPoP nonce (with `dpop_nonce`): the next proof with the old one is
    /// answered `use_dpop_nonce`.
    pub fn rotate_dpop_nonce(&self) {
        self.inner.state().dpop_nonce = random_text(16);
    }

    /// Moves the provider's clock forward: lifetimes, grace windows and token
    /// timestamps all see the later time.
    pub fn advance_clock(&self, by: Duration) {
        self.inner.state().clock_offset += by;
    }

    /// Generates a new signing key (new `kid`) and signs with it from now on; the
    /// JWKS then lists both. Returns the new `kid`.
    pub async fn rotate_signing_key(&self) -> std::io::Result<String> {
        let bits = self.inner.settings.key_bits;
        let key = tokio::task::spawn_blocking(move || state::SigningKey::generate(bits))
            .await
            .map_err(std::io::Error::other)?
            .map_err(std::io::Error::other)?;
        let kid = key.kid.clone();
        self.inner.state().keys.push(key);
        Ok(kid)
    }

    /// Ends the IdP session `sid` as a logout at the IdP would, and sends
    /// back-channel logout tokens to its clients. Returns how many were delivered.
    pub async fn logout_session(&self, sid: &str) -> usize {
        http::end_idp_session(&self.inner, sid).await
    }

    /// Sends a back-channel logout token for the IdP session `sid` to `uri` on behalf
    /// of the first registered client (tests of replicas point it at one of them).
    /// True when it answered 2xx.
    pub async fn backchannel_logout_to(&self, sid: &str, uri: &str) -> bool {
        let Some(client) = self.inner.settings.clients.first() else {
            return false;
        };
        let sub = self.inner.settings.user.sub.clone();
        http::send_logout_token(&self.inner, &client.client_id, &sub, sid, uri).await
    }

    /// Stops serving and waits for the server task.
    pub async fn shutdown(&self) {
        let _ = self.stop.send(true);
        let task = self
            .task
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(task) = task {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
    }
}
