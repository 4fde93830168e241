//! One request's context: the state, the one [`Runtime`] the request runs under (loaded
//! once, so a reload mid-request changes nothing for it), the endpoint and the sender. Its
//! methods are the steps every handler takes — authenticate, charge, issue, authorize,
//! revoke, audit — each in `credentials.rs`, `charge.rs`, `issue.rs` or `authorize.rs`;
//! a handler reads top to bottom as a list of them (docs/architecture.md, "A /login").

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::audit::AuditEvent;
use crate::config::OnUnavailable;
use crate::rejection::Rejection;
use crate::runtime::Runtime;
use crate::state::AppState;

/// The endpoints that handle credentials and tokens: the `route` label of
/// `keygate_quota_refused_total` (the route's label in every metric) and the path in logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Endpoint {
    Login,
    Logout,
    Token,
    Verify,
    Userinfo,
    Revoke,
    Introspect,
    /// The admin API (docs/directory.md), by its prefix.
    Admin,
}

impl Endpoint {
    /// The path, as the metrics' `route` label names it.
    pub(crate) fn path(self) -> &'static str {
        match self {
            Endpoint::Login => "/login",
            Endpoint::Logout => "/logout",
            Endpoint::Token => "/token",
            Endpoint::Verify => "/verify",
            Endpoint::Userinfo => "/userinfo",
            Endpoint::Revoke => "/revoke",
            Endpoint::Introspect => "/introspect",
            Endpoint::Admin => "/admin/v1",
        }
    }
}

/// What a credential is checked for: the `grant` label of `keygate_tokens_issued_total`,
/// `keygate_tokens_refused_total` and `keygate_rate_limited_total`, and the `reason` of
/// the audit log's `token.issued` (docs/operations.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Grant {
    /// `/login` with an API key.
    ApiKey,
    /// `/token`, `grant_type=client_credentials`.
    ClientCredentials,
    /// `/token`, `grant_type=password` (its client authentication too).
    Password,
    /// Client authentication at `/revoke`.
    Revoke,
    /// Client authentication at `/introspect`.
    Introspect,
}

impl Grant {
    /// The label.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Grant::ApiKey => "api_key",
            Grant::ClientCredentials => "client_credentials",
            Grant::Password => "password",
            Grant::Revoke => "revoke",
            Grant::Introspect => "introspect",
        }
    }
}

/// Who revoked a token: the audit log's `reason` (`logout` or `revoke`) and the log's `by`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RevokedBy<'a> {
    /// The token's holder, at `/logout`.
    Logout,
    /// The client of this id, at `/revoke` (RFC 7009).
    Client(&'a str),
}

impl RevokedBy<'_> {
    /// The audit log's `reason`.
    pub(crate) fn reason(self) -> &'static str {
        match self {
            RevokedBy::Logout => "logout",
            RevokedBy::Client(_) => "revoke",
        }
    }
}

/// The log's `by`: `logout`, or the revoking client's id.
impl std::fmt::Display for RevokedBy<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RevokedBy::Logout => f.write_str("logout"),
            RevokedBy::Client(id) => f.write_str(id),
        }
    }
}

/// One request's context; see the module's documentation.
#[derive(Debug)]
pub(crate) struct RequestCtx {
    pub(crate) state: AppState,
    /// The runtime this request runs under, from start to end.
    pub(crate) rt: Arc<Runtime>,
    pub(crate) endpoint: Endpoint,
    /// The sender's address (`server.trusted_proxies` applied): set at the endpoints that
    /// check a credential, whose failures count against it; `None` at `/verify`,
    /// `/userinfo` and `/logout`, which check only a token.
    pub(crate) sender: Option<IpAddr>,
}

impl RequestCtx {
    /// The context of a request to `endpoint` that checks only a token.
    pub(crate) fn new(state: AppState, endpoint: Endpoint) -> Self {
        let rt = state.runtime();
        Self {
            state,
            rt,
            endpoint,
            sender: None,
        }
    }

    /// The context of a request to `endpoint` that checks a credential sent from `peer`
    /// (or, behind a trusted proxy, the address it forwards).
    pub(crate) fn with_sender(
        state: AppState,
        endpoint: Endpoint,
        peer: std::net::SocketAddr,
        headers: &axum::http::HeaderMap,
    ) -> Self {
        let mut ctx = Self::new(state, endpoint);
        ctx.sender = Some(crate::extract::client_ip(peer, headers, &ctx.rt.config));
        ctx
    }

    /// Writes `event` to the audit log (nothing when it is off).
    pub(crate) fn audit(&self, event: &AuditEvent) {
        self.state.audit().record(event);
    }

    /// What to do when the store cannot answer for `what` (`store.on_unavailable`,
    /// docs/scale-out.md): under `allow`, carry on with `fallback`, logged as a warning;
    /// under `deny`, 503 with `Retry-After: 1`.
    pub(crate) fn store_unavailable(
        &self,
        what: &str,
        error: Option<&(dyn std::error::Error + 'static)>,
        fallback: &str,
    ) -> Result<(), Rejection> {
        // The whole chain: an error's own text leaves its source out.
        let error = error.map(keygate::error::chain);
        if self.rt.config.store.on_unavailable == OnUnavailable::Allow {
            tracing::warn!(error, "{what}; {fallback} (store.on_unavailable = allow)");
            Ok(())
        } else {
            tracing::error!(error, "{what}; refusing (store.on_unavailable = deny)");
            Err(Rejection::Unavailable(Duration::from_secs(1)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_those_the_metrics_and_the_audit_log_document() {
        let grants = [
            Grant::ApiKey,
            Grant::ClientCredentials,
            Grant::Password,
            Grant::Revoke,
            Grant::Introspect,
        ]
        .map(Grant::label);
        assert_eq!(
            grants,
            [
                "api_key",
                "client_credentials",
                "password",
                "revoke",
                "introspect"
            ]
        );
        let paths = [
            Endpoint::Login,
            Endpoint::Logout,
            Endpoint::Token,
            Endpoint::Verify,
            Endpoint::Userinfo,
            Endpoint::Revoke,
            Endpoint::Introspect,
        ]
        .map(Endpoint::path);
        for path in paths {
            assert_eq!(
                crate::metrics::route_label(crate::metrics::route_index(path)),
                path,
                "a route the metrics know by this name"
            );
        }
        assert_eq!(RevokedBy::Logout.reason(), "logout");
        assert_eq!(RevokedBy::Client("billing").reason(), "revoke");
    }
}
