//! Checking the bearer token of a request: signature and claims ([`keygate::token::Verifier`]),
//! the revocation list, and that its principal still exists, is not revoked, and is not
//! newer than the token (`not_before`).

use std::time::Duration;

use axum::http::HeaderMap;
use keygate::token::Claims;
use time::OffsetDateTime;

use crate::audit::{AuditEvent, AuditKind};
use crate::config::{OnUnavailable, Runtime};
use crate::extract::{TokenSource, bearer_token};
use crate::rejection::Rejection;
use crate::state::AppState;
use crate::store::Verdict;

/// A request whose token passed every check.
#[derive(Debug)]
pub(crate) struct Authorized {
    pub(crate) claims: Claims,
    pub(crate) source: TokenSource,
}

pub(crate) async fn authorize(
    state: &AppState,
    rt: &Runtime,
    headers: &HeaderMap,
) -> Result<Authorized, Rejection> {
    let (token, source) = bearer_token(headers, &rt.config)?.ok_or(Rejection::MissingToken)?;
    let claims = check_token(state, rt, token).await?;
    Ok(Authorized { claims, source })
}

/// Every check a token must pass at keygate: signature and claims, the revocation list,
/// and a principal that still exists and is not revoked.
pub(crate) async fn check_token(
    state: &AppState,
    rt: &Runtime,
    token: &str,
) -> Result<Claims, Rejection> {
    let claims = rt.verifier.verify(token).map_err(|e| {
        refused(e.reason());
        tracing::debug!(reason = e.reason(), "token refused");
        Rejection::InvalidToken
    })?;
    let revocations = state.revocations();
    let verdict = match revocations.token(&claims.iss, &claims.jti).await {
        Verdict::Clear => revocations.principal_token(&claims.sub, claims.iat),
        other => other,
    };
    store_verdict(rt, verdict)?;
    // A removed or revoked principal's tokens stop working at once here (ASVS 7.4.2),
    // even though services verifying offline honour them until they expire. A token from
    // before the principal's `not_before` was issued to an earlier principal of that name,
    // or with a key revoked since: it never comes back.
    let now = OffsetDateTime::now_utc();
    let active = rt
        .directory
        .get(&claims.sub)
        .is_some_and(|p| p.accepts_token_issued_at(claims.iat, now));
    if !active {
        refused("principal_gone");
        return Err(Rejection::InvalidToken);
    }
    crate::metrics::increment(
        "keygate_token_verifications_total",
        [("result", "valid"), ("reason", "")],
    );
    // Only an id that names a principal of this deployment goes into a trace.
    if crate::telemetry::enabled() && rt.directory.get(&claims.client_id).is_some() {
        crate::telemetry::record("keygate.client_id", &claims.client_id);
    }
    Ok(claims)
}

/// The answer to a revocation-list verdict: `Unknown` (the local copy is not in sync
/// with the store) follows `store.on_unavailable`.
pub(crate) fn store_verdict(rt: &Runtime, verdict: Verdict) -> Result<(), Rejection> {
    match verdict {
        Verdict::Clear => Ok(()),
        Verdict::Revoked => {
            refused("revoked");
            Err(Rejection::InvalidToken)
        }
        Verdict::Unknown if rt.config.store.on_unavailable == OnUnavailable::Allow => {
            tracing::warn!(
                "revocation list not in sync with the store; answered from the local copy (store.on_unavailable = allow)"
            );
            Ok(())
        }
        Verdict::Unknown => {
            tracing::error!(
                "revocation list not in sync with the store; refusing (store.on_unavailable = deny)"
            );
            Err(Rejection::Unavailable(Duration::from_secs(1)))
        }
    }
}

fn refused(reason: &'static str) {
    crate::metrics::increment(
        "keygate_token_verifications_total",
        [("result", "invalid"), ("reason", reason)],
    );
}

/// Puts the token on the revocation list until it would be refused anyway: strictly
/// longer than its `exp` plus the leeway verification allows (the verifier still accepts
/// at exactly `exp + leeway`; one more second covers that and clock steps between
/// replicas). `by` says who asked, for the log.
pub(crate) async fn revoke(
    state: &AppState,
    rt: &Runtime,
    claims: &Claims,
    by: &str,
) -> Result<(), Rejection> {
    let leeway = rt.verifier.policy().leeway.as_secs();
    state
        .revocations()
        .revoke(
            &claims.iss,
            &claims.jti,
            claims.exp.saturating_add(leeway).saturating_add(1),
        )
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "revocation failed");
            Rejection::Unavailable(Duration::from_secs(1))
        })?;
    tracing::info!(sub = %claims.sub, jti = %claims.jti, by, "token revoked");
    let event = AuditEvent::new(AuditKind::TokenRevoked);
    let event = if rt
        .directory
        .get(&claims.sub)
        .is_some_and(|p| p.kind == keygate::principal::PrincipalKind::User)
    {
        event.username(&claims.sub)
    } else {
        event.client_id(&claims.client_id)
    };
    // `by` is "logout", or the id of the client that called /revoke.
    let reason = if by == "logout" { "logout" } else { "revoke" };
    state.audit().record(&event.jti(&claims.jti).reason(reason));
    Ok(())
}
