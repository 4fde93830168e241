//! Checking the bearer token of a request: signature and claims ([`keygate::token::Verifier`]),
//! the revocation list, and that its principal still exists, is not revoked, and is not
//! newer than the token (`not_before`).

use std::time::Duration;

use axum::http::HeaderMap;
use keygate::token::Claims;
use time::OffsetDateTime;

use crate::config::{OnUnavailable, Runtime};
use crate::extract::{TokenSource, bearer_token};
use crate::rejection::Rejection;
use crate::state::AppState;

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
    match state
        .revocations()
        .is_revoked(&claims.iss, &claims.jti)
        .await
    {
        Ok(false) => {}
        Ok(true) => {
            refused("revoked");
            return Err(Rejection::InvalidToken);
        }
        Err(e) if rt.config.store.on_unavailable == OnUnavailable::Allow => {
            tracing::warn!(error = %e, "revocation store unavailable; allowed by store.on_unavailable");
        }
        Err(e) => {
            tracing::error!(error = %e, "revocation store unavailable; refusing (store.on_unavailable = deny)");
            return Err(Rejection::Unavailable(Duration::from_secs(1)));
        }
    }
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
    metrics::counter!("keygate_token_verifications_total", "result" => "valid", "reason" => "")
        .increment(1);
    Ok(claims)
}

fn refused(reason: &'static str) {
    metrics::counter!("keygate_token_verifications_total", "result" => "invalid", "reason" => reason)
        .increment(1);
}

/// Puts the token on the revocation list until it would be refused anyway: its `exp`
/// plus the leeway verification allows. `by` says who asked, for the log.
pub(crate) async fn revoke(
    state: &AppState,
    rt: &Runtime,
    claims: &Claims,
    by: &str,
) -> Result<(), Rejection> {
    let leeway = rt.verifier.policy().leeway.as_secs();
    state
        .revocations()
        .revoke(&claims.iss, &claims.jti, claims.exp.saturating_add(leeway))
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "revocation failed");
            Rejection::Unavailable(Duration::from_secs(1))
        })?;
    tracing::info!(sub = %claims.sub, jti = %claims.jti, by, "token revoked");
    Ok(())
}
