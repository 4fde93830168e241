//! Checking the bearer token of a request: signature and claims ([`keygate::token::Verifier`]),
//! the revocation list, and that its principal still exists, is not revoked, and is not
//! newer than the token (`not_before`).
//!
//! The signature and claims check is answered from the runtime's
//! [`crate::verified::VerifiedTokens`] for a token already verified under this runtime;
//! the revocation list and the directory are looked up on every request all the same.

use std::sync::Arc;
use std::time::Duration;

use axum::http::HeaderMap;
use keygate::token::Claims;

use crate::audit::{AuditEvent, AuditKind};
use crate::context::{RequestCtx, RevokedBy};
use crate::extract::{TokenSource, bearer_token};
use crate::rejection::Rejection;
use crate::store::{Revoke, Verdict};
use crate::verified::{Lookup, Window};

/// A request whose token passed every check.
#[derive(Debug)]
pub(crate) struct Authorized {
    /// Shared with the verified-token cache.
    pub(crate) claims: Arc<Claims>,
    pub(crate) source: TokenSource,
}

impl RequestCtx {
    /// The request's bearer token (header or cookie), checked by [`RequestCtx::check`].
    pub(crate) async fn authorize(&self, headers: &HeaderMap) -> Result<Authorized, Rejection> {
        let (token, source) =
            bearer_token(headers, &self.rt.config)?.ok_or(Rejection::MissingToken)?;
        let claims = self.check(token, false).await?;
        Ok(Authorized { claims, source })
    }

    /// Every check a token must pass at keygate: signature and claims, the revocation
    /// list, and a principal that still exists and is not revoked.
    pub(crate) async fn check_token(&self, token: &str) -> Result<Claims, Rejection> {
        self.check(token, false).await.map(Arc::unwrap_or_clone)
    }

    /// [`RequestCtx::authorize`] for `/logout`: a token whose revocation made here still
    /// waits for the store passes, so that the client answered 503 can repeat its logout
    /// (which writes the revocation again).
    pub(crate) async fn authorize_logout(
        &self,
        headers: &HeaderMap,
    ) -> Result<Authorized, Rejection> {
        let (token, source) =
            bearer_token(headers, &self.rt.config)?.ok_or(Rejection::MissingToken)?;
        let claims = self.check(token, true).await?;
        Ok(Authorized { claims, source })
    }

    async fn check(&self, token: &str, pending_passes: bool) -> Result<Arc<Claims>, Rejection> {
        let rt = &*self.rt;
        // One reading of the verifier's clock for every time-dependent check below: the
        // cache's window, the verifier's, and the principal's `not_before`.
        let now = rt.verifier.clock().now_utc();
        let unix_now = u64::try_from(now.unix_timestamp()).unwrap_or(0);
        // The signature and every claim, or the verdict already taken on this very token under
        // this runtime while its time window holds (see `verified.rs`).
        let (claims, cached) = match rt.verified.get(token, unix_now) {
            Lookup::Hit(claims) => (claims, true),
            Lookup::Miss => {
                let claims = rt.verifier.verify_at(token, unix_now).map_err(|e| {
                    refused(e.reason());
                    tracing::debug!(reason = e.reason(), "token refused");
                    Rejection::InvalidToken
                })?;
                (Arc::new(claims), false)
            }
        };
        let revocations = self.state.revocations();
        let verdict = match revocations.token(&claims.iss, &claims.jti).await {
            Verdict::Revoked
                if pending_passes && revocations.is_pending(&claims.iss, &claims.jti) =>
            {
                revocations.principal_token(&claims.sub, claims.iat)
            }
            Verdict::Clear => revocations.principal_token(&claims.sub, claims.iat),
            other => other,
        };
        self.store_verdict(verdict)?;
        // A removed or revoked principal's tokens stop working at once here (ASVS 7.4.2),
        // even though services verifying offline honour them until they expire. A token from
        // before the principal's `not_before` was issued to an earlier principal of that name,
        // or with a key revoked since: it never comes back.
        let active = rt
            .principal(&claims.sub)
            .is_some_and(|p| p.accepts_token_issued_at(claims.iat, now));
        if !active {
            refused("principal_gone");
            return Err(Rejection::InvalidToken);
        }
        crate::metrics::increment(
            "keygate_token_verifications_total",
            [("result", "valid"), ("reason", "")],
        );
        if cached {
            crate::metrics::increment("keygate_verified_cache_total", [("result", "hit")]);
        } else {
            // Kept only now that it has passed every check: each entry costs whoever fills
            // the cache a token issued at /login.
            let window = Window::of(&claims, rt.verifier.policy(), &rt.keys, unix_now);
            rt.verified.insert(token, claims.clone(), window);
            crate::metrics::increment("keygate_verified_cache_total", [("result", "miss")]);
        }
        // Only an id that names a principal of this deployment goes into a trace.
        if crate::telemetry::in_traced_request() && rt.principal(&claims.client_id).is_some() {
            crate::telemetry::record("keygate.client_id", &claims.client_id);
        }
        Ok(claims)
    }

    /// The answer to a revocation-list verdict: `Unknown` (the local copy is not in sync
    /// with the store) follows `store.on_unavailable`.
    fn store_verdict(&self, verdict: Verdict) -> Result<(), Rejection> {
        match verdict {
            Verdict::Clear => Ok(()),
            Verdict::Revoked => {
                refused("revoked");
                Err(Rejection::InvalidToken)
            }
            Verdict::Unknown => self.store_unavailable(
                "revocation list not in sync with the store",
                None,
                "answered from the local copy",
            ),
        }
    }

    /// Puts the token on the revocation list until it would be refused anyway: strictly
    /// longer than its `exp` plus the leeway verification allows (the verifier still
    /// accepts at exactly `exp + leeway`; one more second covers that and clock steps
    /// between replicas).
    pub(crate) async fn revoke(&self, claims: &Claims, by: RevokedBy<'_>) -> Result<(), Rejection> {
        let policy = self.rt.verifier.policy();
        let leeway = policy.leeway.as_secs();
        // Principal revocations (folds) are kept as long as a token verifies after its `iat`.
        let horizon = policy.ttl + policy.leeway + Duration::from_secs(1);
        let outcome = self
            .state
            .revocations()
            .revoke(
                &claims.iss,
                &claims.jti,
                claims.exp.saturating_add(leeway).saturating_add(1),
                &claims.sub,
                horizon,
            )
            .await;
        match outcome {
            Ok(()) => {}
            // Applied here and retried until the store takes it (`/readyz` answers
            // `revocations_pending` meanwhile): under `allow`, which answers from this copy
            // anyway, that is a revocation done; under `deny` the caller is told to retry.
            Err(Revoke::Pending(e)) => self.store_unavailable(
                "revocation not confirmed by the store",
                Some(&e),
                "applied here, pending for the store",
            )?,
            Err(e) => {
                tracing::error!(error = %e, "revocation not confirmed by the store");
                return Err(Rejection::Unavailable(Duration::from_secs(1)));
            }
        }
        tracing::info!(sub = %claims.sub, jti = %claims.jti, by = %by, "token revoked");
        let event = AuditEvent::new(AuditKind::TokenRevoked);
        let event = if self
            .rt
            .principal(&claims.sub)
            .is_some_and(|p| p.kind == keygate::principal::PrincipalKind::User)
        {
            event.username(&claims.sub)
        } else {
            event.client_id(&claims.client_id)
        };
        self.audit(&event.jti(&claims.jti).reason(by.reason()));
        Ok(())
    }
}

fn refused(reason: &'static str) {
    crate::metrics::increment(
        "keygate_token_verifications_total",
        [("result", "invalid"), ("reason", reason)],
    );
}
