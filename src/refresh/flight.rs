//! One refresh per refresh token, however many requests race: in this process
//! (joined in flight, remembered for the grace window, tombstoned after rotation)
//! and across replicas (an owned lock in the shared store, the sealed result shared
//! there), with bounded retries of transient IdP failures.

#![allow(clippy::wildcard_imports)]

use super::*;

impl TokenRefresher {
    /// Keeps a result for the grace window and, when it rotated, a tombstone for
    /// the session lifetime.
    pub(super) fn remember(&self, key: [u8; 32], rotation: &Arc<Rotation>) {
        let inner = &self.inner;
        let now = inner.clock.now_ms();
        let grace = millis(inner.settings.grace) + BURST_WINDOW_MS;
        inner
            .results
            .insert(key, Arc::clone(rotation), now.saturating_add(grace), now);
        if rotation.rotated {
            self.tombstone(key, rotation.at_ms);
        }
    }

    pub(super) fn tombstone(&self, key: [u8; 32], at_ms: u64) {
        let inner = &self.inner;
        let now = inner.clock.now_ms();
        let lifetime = millis(inner.settings.absolute_lifetime.max(Duration::from_secs(1)));
        inner
            .tombstones
            .insert(key, at_ms, now.saturating_add(lifetime), now);
    }

    pub(super) fn join_or_start(&self, key: [u8; 32], grant: Grant) -> Joined {
        let inner = &self.inner;
        let mut map = inner
            .inflight
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(rx) = map.get(&key) {
            return Joined::Wait(rx.clone(), false);
        }
        // Checked under the lock: a finished refresh stores its result before it
        // leaves the in-flight map, so no caller can slip between the two and
        // present the old token again.
        if let Some(rotation) = inner.results.get(&key, inner.clock.now_ms()) {
            return Joined::Hit(rotation);
        }
        let (tx, rx) = watch::channel(None);
        map.insert(key, rx.clone());
        drop(map);
        let this = self.clone();
        tokio::spawn(async move {
            let result = this.run_refresh(key, &grant).await;
            let inner = &this.inner;
            if let Ok(rotation) = &result {
                this.remember(key, rotation);
            }
            inner
                .inflight
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .remove(&key);
            let _ = tx.send(Some(result));
        });
        Joined::Wait(rx, true)
    }

    /// One grant at the IdP, with retries, counted once.
    pub(super) async fn run_refresh(&self, key: [u8; 32], grant: &Grant) -> Shared {
        let inner = &self.inner;
        let started = Instant::now();
        if let Grant::Exchange { .. } = grant {
            // No refresh token is presented: nothing to coordinate across replicas.
            let result = self.refresh_with_retries(grant).await;
            match &result {
                Ok(_) => inner.metrics.refresh("resource"),
                Err(e) => {
                    inner.metrics.refresh("resource_error");
                    tracing::error!(error = %e, "the token exchange failed; the session is kept");
                }
            }
            return result;
        }
        let result = match &inner.shared {
            Some((store, ring)) => {
                match self.shared_refresh(store.as_ref(), ring, key, grant).await {
                    Ok(SharedOutcome::Done(result)) => result,
                    Ok(SharedOutcome::ByAnotherReplica(rotation)) => {
                        inner.metrics.refresh("coalesced");
                        return Ok(rotation);
                    }
                    Err(e) => {
                        inner.metrics.refresh("store_fallback");
                        tracing::warn!(error = %e, "shared store unavailable: refreshing with local single-flight only");
                        self.refresh_with_retries(grant).await
                    }
                }
            }
            None => self.refresh_with_retries(grant).await,
        };
        inner
            .metrics
            .refresh_duration(started.elapsed().as_secs_f64());
        match &result {
            Ok(rotation) => {
                for tokens in &rotation.tokens {
                    inner.metrics.refresh(if tokens.audience.is_some() {
                        "resource"
                    } else {
                        "ok"
                    });
                }
            }
            Err(TokenError::Dead { code }) => {
                inner.metrics.refresh("invalid_grant");
                inner.metrics.session_ended(EndReason::InvalidGrant.label());
                tracing::info!(reason = %code, "refresh token refused by the IdP: session ended");
            }
            Err(TokenError::Misconfigured { code }) => {
                inner.metrics.refresh("invalid_client");
                tracing::error!(reason = %code, "the IdP refused the BFF's own client credentials or request: check [oidc]; sessions are kept");
            }
            Err(TokenError::Unreadable { why }) => {
                inner.metrics.refresh("unreadable");
                tracing::error!(reason = %why, "the IdP answered a refresh with a 2xx the BFF cannot read; not retried (the token may be consumed); the session is kept");
            }
            Err(TokenError::Transient { why, .. }) => {
                inner.metrics.refresh("transient_error");
                tracing::warn!(reason = %why, "refresh failed after retries; sessions are kept");
            }
        }
        result
    }

    /// A tombstone another replica left for this token.
    pub(super) async fn shared_tombstone(&self, key: &[u8; 32]) -> Option<u64> {
        let (store, _) = self.inner.shared.as_ref()?;
        let bytes = store
            .get(&format!("tomb:{}", crate::store::hex(key)))
            .await
            .ok()??;
        let at = u64::from_be_bytes(bytes.try_into().ok()?);
        self.tombstone(*key, at);
        Some(at)
    }

    /// The refresh across replicas: a result another replica stored is used as it
    /// is; otherwise whoever takes the lock asks the IdP (renewing the lock while the
    /// request is in flight, so a slow IdP never lets a second replica in) and
    /// stores the sealed result; the others wait for it.
    pub(super) async fn shared_refresh(
        &self,
        store: &dyn SharedStore,
        ring: &KeyRing,
        key: [u8; 32],
        grant: &Grant,
    ) -> Result<SharedOutcome, StoreError> {
        let inner = &self.inner;
        let name = crate::store::hex(&key);
        let result_name = format!("rotation:{name}");
        let lock_name = format!("lock:{name}");
        let deadline = Instant::now() + inner.settings.timeout + LOCK_TTL;
        loop {
            if let Some(bytes) = store.get(&result_name).await? {
                if let Some(rotation) = open_rotation(ring, &bytes) {
                    let rotation = Arc::new(rotation);
                    if rotation.rotated {
                        self.tombstone(key, rotation.at_ms);
                    }
                    return Ok(SharedOutcome::ByAnotherReplica(rotation));
                }
            }
            let owner = crate::random::random_text(12);
            if store.try_lock(&lock_name, &owner, LOCK_TTL).await? {
                let renewer = {
                    let (store, _) = inner
                        .shared
                        .clone()
                        .ok_or_else(|| StoreError::Unavailable("no store".into()))?;
                    let (lock_name, owner) = (lock_name.clone(), owner.clone());
                    tokio::spawn(async move {
                        loop {
                            tokio::time::sleep(LOCK_TTL / 4).await;
                            // A failed renewal is tried again (the lock still has
                            // time); only a lock that is gone ends the renewals.
                            match store.renew_lock(&lock_name, &owner, LOCK_TTL).await {
                                Ok(true) => {}
                                Ok(false) => {
                                    tracing::warn!(
                                        "the refresh lock expired while its token request was under way"
                                    );
                                    break;
                                }
                                Err(e) => {
                                    tracing::warn!(error = %e, "could not renew the refresh lock; trying again");
                                }
                            }
                        }
                    })
                };
                let result = self.refresh_with_retries(grant).await;
                if let Ok(rotation) = &result {
                    let keep = inner.settings.grace + Duration::from_millis(BURST_WINDOW_MS);
                    let sealed = seal_rotation(ring, rotation);
                    if let Err(e) = store.put(&result_name, &sealed, keep).await {
                        tracing::warn!(error = %e, "could not share a refresh result");
                    }
                    if rotation.rotated {
                        let lifetime = inner.settings.absolute_lifetime.max(Duration::from_secs(1));
                        let _ = store
                            .put(
                                &format!("tomb:{name}"),
                                &rotation.at_ms.to_be_bytes(),
                                lifetime,
                            )
                            .await;
                    }
                }
                renewer.abort();
                let _ = store.unlock(&lock_name, &owner).await;
                return Ok(SharedOutcome::Done(result));
            }
            // Another replica holds the lock: its result will appear. Never fall back
            // to asking the IdP ourselves while it may still be in flight.
            if Instant::now() >= deadline {
                return Ok(SharedOutcome::Done(Err(TokenError::Transient {
                    why: "another replica's refresh did not finish in time".into(),
                    retry_after: None,
                })));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The grant at the IdP, each request retried on transient failures within
    /// `refresh.timeout`. A refresh grant's steps go in order, each with the
    /// refresh token the one before returned; when a later step fails, what the
    /// earlier ones obtained is the result (their refresh tokens are spent).
    pub(super) async fn refresh_with_retries(&self, grant: &Grant) -> Shared {
        let deadline = Instant::now() + self.inner.settings.timeout;
        match grant {
            Grant::Exchange {
                subject,
                audience,
                scope,
                key,
                dpop,
            } => {
                let dpop = dpop.as_deref().and_then(crate::dpop::DpopKey::from_pkcs8);
                let dpop = dpop.as_ref();
                let tokens = self
                    .with_retries(deadline, |oidc, remaining| async move {
                        oidc.exchange(subject, audience, scope.as_deref(), dpop, remaining)
                            .await
                    })
                    .await?;
                let now_ms = self.inner.clock.now_ms();
                // Only the access token counts: what else an exchange returns is
                // not the session's.
                Ok(Arc::new(Rotation {
                    tokens: vec![NewTokens {
                        access_expires_at: access_expiry(&tokens, now_ms / 1000),
                        access_token: tokens.access_token,
                        refresh_token: None,
                        id_token: None,
                        idp_sid: None,
                        scope: None,
                        id_iss: None,
                        id_sub: None,
                        audience: Some(key.clone()),
                        exchanged: true,
                    }],
                    at_ms: now_ms,
                    rotated: false,
                }))
            }
            Grant::Refresh { token, steps, dpop } => {
                let dpop = dpop.as_deref().and_then(crate::dpop::DpopKey::from_pkcs8);
                let dpop = dpop.as_ref();
                let mut current = token.clone();
                let mut done = Vec::with_capacity(steps.len());
                for step in steps {
                    let resource = step.as_ref().map(|(r, _)| r.as_str());
                    let asked = {
                        let current = &current;
                        self.with_retries(deadline, |oidc, remaining| async move {
                            oidc.refresh_for(current, resource, dpop, remaining).await
                        })
                        .await
                    };
                    match asked {
                        Ok(tokens) => {
                            let new = self.new_tokens(step, tokens).await;
                            if let Some(rt) = &new.refresh_token {
                                rt.clone_into(&mut current);
                            }
                            done.push(new);
                        }
                        Err(e) if done.is_empty() => return Err(e),
                        Err(e) => {
                            tracing::warn!(error = %e, "a further grant of a refresh failed; the tokens obtained before it are used");
                            break;
                        }
                    }
                }
                Ok(Arc::new(Rotation {
                    tokens: done,
                    at_ms: self.inner.clock.now_ms(),
                    rotated: current != *token,
                }))
            }
        }
    }

    /// One request, retried with backoff on transient failures until `deadline`.
    async fn with_retries<'a, F, Fut>(
        &'a self,
        deadline: Instant,
        ask: F,
    ) -> Result<TokenResponse, TokenError>
    where
        F: Fn(&'a Oidc, Duration) -> Fut,
        Fut: std::future::Future<Output = Result<TokenResponse, TokenError>>,
    {
        let mut attempt: u32 = 0;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(TokenError::Transient {
                    why: "refresh.timeout reached".into(),
                    retry_after: None,
                });
            }
            match ask(&self.inner.oidc, remaining).await {
                Ok(tokens) => return Ok(tokens),
                Err(TokenError::Transient { why, retry_after }) => {
                    attempt += 1;
                    let mut wait = backoff(attempt);
                    if let Some(asked) = retry_after {
                        wait = wait.max(asked);
                    }
                    if Instant::now() + wait >= deadline {
                        return Err(TokenError::Transient { why, retry_after });
                    }
                    tokio::time::sleep(wait).await;
                }
                Err(other) => return Err(other),
            }
        }
    }

    /// What one refresh grant (for the session's own token, or a resource's)
    /// returned, its ID token validated.
    async fn new_tokens(
        &self,
        step: &Option<(String, String)>,
        tokens: TokenResponse,
    ) -> NewTokens {
        let inner = &self.inner;
        let now = inner.clock.now_ms() / 1000;
        let (id_token, idp_sid, id_iss, id_sub) = match &tokens.id_token {
            Some(id) => match inner.oidc.validate_id_token(id, None).await {
                Ok(claims) => (
                    Some(id.clone()),
                    claims.sid,
                    claims.all["iss"].as_str().map(str::to_owned),
                    Some(claims.sub),
                ),
                Err(e) => {
                    tracing::warn!(error = %e, "the refreshed ID token did not validate; keeping the previous one");
                    (None, None, None, None)
                }
            },
            None => (None, None, None, None),
        };
        NewTokens {
            access_expires_at: access_expiry(&tokens, now),
            access_token: tokens.access_token,
            refresh_token: tokens.refresh_token.filter(|t| !t.is_empty()),
            id_token,
            idp_sid,
            // A resource token's scope is not the session's.
            scope: tokens.scope.filter(|_| step.is_none()),
            id_iss,
            id_sub,
            audience: step.as_ref().map(|(_, key)| key.clone()),
            exchanged: false,
        }
    }
}

/// What a kept rotation means for a request.
pub(super) enum Grace {
    /// Its tokens, applied: use them.
    Use(Session),
    /// Applied, but near expiry too: refresh from there.
    Chain(Session),
    /// Its ID token names someone else.
    Ended,
}

/// What one flight asks the IdP for.
#[derive(Clone)]
pub(super) enum Grant {
    /// Refresh grants with `token`, in order: each step for the session's own
    /// access token (none) or (RFC 8707) a resource's (the resource and its
    /// audience key). The first is what the leader needs; the others are the
    /// session's other stale tokens, so that a burst of requests after an expiry
    /// ends with one session state however many audiences it needed.
    Refresh {
        token: String,
        steps: Vec<Option<(String, String)>>,
        /// The session's DPoP key (PKCS#8), for the proofs.
        dpop: Option<Vec<u8>>,
    },
    /// A token exchange (RFC 8693) of the session's access token.
    Exchange {
        subject: String,
        audience: String,
        scope: Option<String>,
        key: String,
        dpop: Option<Vec<u8>>,
    },
}

pub(super) enum Joined {
    Hit(Arc<Rotation>),
    Wait(watch::Receiver<Option<Shared>>, bool),
}

/// How the shared path ended.
pub(super) enum SharedOutcome {
    /// This replica asked the IdP (or gave up waiting): the result.
    Done(Shared),
    /// Another replica refreshed: its result.
    ByAnotherReplica(Arc<Rotation>),
}

/// How long a replica's refresh lock lives unless renewed (renewed every quarter
/// of it while the token request is in flight).
pub(super) const LOCK_TTL: Duration = Duration::from_secs(2);
/// The name refresh results are sealed under (associated data of the seal). The
/// layout of [`Rotation`] changed with per-route audiences (several grants per
/// result): results of the earlier layout, sealed under [`ROTATION_SEAL_NAME_V1`]
/// by a replica not yet upgraded, are still read, so a rolling upgrade never makes
/// a replica present a refresh token another already used.
pub(super) const ROTATION_SEAL_NAME: &str = "bff-shared-rotation-2";
/// The name of the earlier layout.
pub(super) const ROTATION_SEAL_NAME_V1: &str = "bff-shared-rotation";

pub(super) fn seal_rotation(ring: &KeyRing, rotation: &Rotation) -> Vec<u8> {
    let bytes = postcard::to_allocvec(rotation).unwrap_or_default();
    ring.seal(ROTATION_SEAL_NAME, &bytes).into_bytes()
}

/// The earlier layout of a shared result: one grant's tokens.
#[derive(serde::Deserialize)]
struct RotationV1 {
    tokens: NewTokensV1,
    at_ms: u64,
    rotated: bool,
}

#[derive(serde::Deserialize)]
struct NewTokensV1 {
    access_token: String,
    access_expires_at: u64,
    refresh_token: Option<String>,
    id_token: Option<String>,
    idp_sid: Option<String>,
    scope: Option<String>,
    id_iss: Option<String>,
    id_sub: Option<String>,
}

pub(super) fn open_rotation(ring: &KeyRing, sealed: &[u8]) -> Option<Rotation> {
    let text = std::str::from_utf8(sealed).ok()?;
    if let Ok(Some(rotation)) = ring.open_map(ROTATION_SEAL_NAME, text, |plain| {
        postcard::from_bytes(plain).ok()
    }) {
        return Some(rotation);
    }
    let old: RotationV1 = ring
        .open_map(ROTATION_SEAL_NAME_V1, text, |plain| {
            postcard::from_bytes(plain).ok()
        })
        .ok()
        .flatten()?;
    let t = old.tokens;
    Some(Rotation {
        tokens: vec![NewTokens {
            access_token: t.access_token,
            access_expires_at: t.access_expires_at,
            refresh_token: t.refresh_token,
            id_token: t.id_token,
            idp_sid: t.idp_sid,
            scope: t.scope,
            id_iss: t.id_iss,
            id_sub: t.id_sub,
            audience: None,
            exchanged: false,
        }],
        at_ms: old.at_ms,
        rotated: old.rotated,
    })
}

/// Exponential backoff with ±50 % jitter.
pub(super) fn backoff(attempt: u32) -> Duration {
    use rand::Rng as _;
    let exp = BACKOFF_BASE.saturating_mul(1u32 << attempt.min(8).saturating_sub(1));
    let capped = exp.min(BACKOFF_CAP);
    capped.mul_f64(rand::thread_rng().gen_range(0.5..1.5))
}
