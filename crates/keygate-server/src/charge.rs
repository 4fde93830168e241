//! Charging a request to its client's quota ([`crate::quota`], README "Quotas"): the
//! request step that turns a [`Decision`] into a 429 `rate_limited`, a metric and an audit
//! event, or into the RateLimit header fields of the answer.

use std::time::Duration;

use crate::audit::{AuditEvent, AuditKind};
use crate::config::OnUnavailable;
use crate::quota::Decision;
use crate::rejection::{Rejection, rate_limit_headers};
use crate::runtime::Runtime;
use crate::state::AppState;

/// Counts one request of `client_id` against its quota. `Ok(None)`: the client has none.
/// Over quota: 429 `rate_limited` carrying the header fields. Redis unreachable:
/// `store.on_unavailable` decides (deny: 503; allow: this replica's own counters).
pub(crate) async fn charge(
    state: &AppState,
    rt: &Runtime,
    client_id: &str,
    route: &'static str,
    ip: Option<std::net::IpAddr>,
    jti: Option<&str>,
) -> Result<Option<Decision>, Rejection> {
    let Some(limit) = rt.client_quota(client_id) else {
        return Ok(None);
    };
    let quotas = state.quotas();
    let outcome = match quotas.shared() {
        None => quotas.charge_locally(client_id, limit, rt.quotas.len()),
        Some(shared) => match shared.charge(client_id, limit.gcra()).await {
            Ok(outcome) => outcome,
            Err(e) if rt.config.store.on_unavailable == OnUnavailable::Allow => {
                tracing::warn!(error = %e, "quota store unavailable; counting on this replica (store.on_unavailable = allow)");
                quotas.charge_locally(client_id, limit, rt.quotas.len())
            }
            Err(e) => {
                tracing::error!(error = %e, "quota store unavailable; refusing (store.on_unavailable = deny)");
                return Err(Rejection::Unavailable(Duration::from_secs(1)));
            }
        },
    };
    let decision = Decision { limit, outcome };
    if outcome.allowed {
        Ok(Some(decision))
    } else {
        metrics::counter!("keygate_quota_refused_total", "route" => route).increment(1);
        let mut event = AuditEvent::new(AuditKind::TokenRefused)
            .client_id(client_id)
            .address(ip)
            .reason("rate_limited");
        if let Some(jti) = jti {
            event = event.jti(jti);
        }
        state.audit().record(&event);
        Err(Rejection::RateLimited(Box::new(decision)))
    }
}

/// Sets the header fields of `decision` (if any) on an answer, whether it succeeded or not.
pub(crate) fn with_headers(
    decision: Option<&Decision>,
    mut response: axum::response::Response,
) -> axum::response::Response {
    if let Some(d) = decision {
        rate_limit_headers(d, response.headers_mut());
    }
    response
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::http::HeaderMap;

    use super::*;
    use crate::quota::RateLimit;

    #[test]
    fn headers_count_what_is_left_and_when_it_is_whole() {
        let limit = RateLimit {
            limit: 50,
            period: Duration::from_secs(60),
        };
        let (outcome, _) = limit.gcra().decide(None, 1);
        let d = Decision { limit, outcome };
        let mut h = HeaderMap::new();
        rate_limit_headers(&d, &mut h);
        assert_eq!(h["ratelimit-policy"], "\"default\";q=50;w=60");
        assert_eq!(h["ratelimit"], "\"default\";r=49;t=2");
    }
}
