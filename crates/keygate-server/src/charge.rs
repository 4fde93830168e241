//! Charging a request to its client's quota ([`crate::quota`], README "Quotas"): the
//! request step that turns a [`Decision`] into a 429 `rate_limited`, a metric and an audit
//! event, or into the RateLimit header fields of the answer.

use crate::audit::{AuditEvent, AuditKind};
use crate::context::RequestCtx;
use crate::quota::Decision;
use crate::rejection::{Rejection, rate_limit_headers};

impl RequestCtx {
    /// Counts one request of `client_id` against its quota. `Ok(None)`: the client has
    /// none. Over quota: 429 `rate_limited` carrying the header fields, counted in
    /// `keygate_quota_refused_total` by endpoint and audited as `token.refused` (with the
    /// token's `jti` when a token was presented). The store unreachable:
    /// `store.on_unavailable` decides (deny: 503; allow: this replica's own counters).
    pub(crate) async fn charge(
        &self,
        client_id: &str,
        jti: Option<&str>,
    ) -> Result<Option<Decision>, Rejection> {
        let rt = &self.rt;
        let Some(limit) = rt.client_quota(client_id) else {
            return Ok(None);
        };
        let quotas = self.state.quotas();
        let outcome = match quotas.shared() {
            None => quotas.charge_locally(client_id, limit, rt.quotas.len()),
            Some(shared) => match shared.charge(client_id, limit.gcra()).await {
                Ok(outcome) => outcome,
                Err(e) => {
                    let what = "quota store unavailable";
                    self.store_unavailable(what, Some(&e), "counting on this replica")?;
                    quotas.charge_locally(client_id, limit, rt.quotas.len())
                }
            },
        };
        let decision = Decision { limit, outcome };
        if outcome.allowed {
            return Ok(Some(decision));
        }
        let route = self.endpoint.path();
        metrics::counter!("keygate_quota_refused_total", "route" => route).increment(1);
        let mut event = AuditEvent::new(AuditKind::TokenRefused)
            .client_id(client_id)
            .address(self.sender)
            .reason("rate_limited");
        if let Some(jti) = jti {
            event = event.jti(jti);
        }
        self.audit(&event);
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
