//! Issuing: a token for an authenticated principal, and the RFC 6749 §5.1 response that
//! carries it. The partner of `authorize.rs`, which checks the tokens issued here.

use axum::body::Body;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use keygate::principal::Principal;
use keygate::token::IssuedToken;
use serde::Serialize;

use crate::audit::{AuditEvent, AuditKind};
use crate::context::{Grant, RequestCtx};
use crate::rejection::Rejection;

/// The successful token response (RFC 6749 §5.1).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TokenResponse {
    /// The JWT.
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// Seconds until expiry.
    pub expires_in: u64,
    /// Granted scopes, space-separated.
    pub scope: String,
}

/// Builds the JSON token response with `Cache-Control: no-store` and `Pragma: no-cache`:
/// [`TokenResponse`]'s serialization, written with `keygate::json` (every token pays for it).
pub(crate) fn token_response(issued: &IssuedToken, set_cookie: Option<HeaderValue>) -> Response {
    use keygate::json::{push_str, push_u64};
    let (token, scope) = (&issued.token, &issued.claims.scope);
    // Sized once: the token and scope plus the member names and punctuation.
    let mut json = Vec::with_capacity(token.len() + scope.len() + 96);
    json.extend_from_slice(b"{\"access_token\":");
    push_str(&mut json, token);
    json.extend_from_slice(b",\"token_type\":\"Bearer\",\"expires_in\":");
    push_u64(&mut json, issued.expires_in());
    json.extend_from_slice(b",\"scope\":");
    push_str(&mut json, scope);
    json.push(b'}');
    let mut response = Response::new(Body::from(json));
    let headers = response.headers_mut();
    headers.reserve(8);
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    if let Some(cookie) = set_cookie {
        headers.insert(header::SET_COOKIE, cookie);
    }
    response
}

impl RequestCtx {
    /// Signs a token for `principal` with the granted `scopes`, counts it and audits it.
    /// `client_id` is the claim of that name, the OAuth client that requested the token
    /// (RFC 9068 §2.2): the principal itself at `/login` and for `client_credentials`, the
    /// authenticated client or `token.public_client_id` for the password grant; the audit
    /// event names both when they differ.
    pub(crate) fn issue(
        &self,
        principal: &Principal,
        client_id: &str,
        scopes: &[String],
        grant: Grant,
    ) -> Result<IssuedToken, Rejection> {
        let rt = &self.rt;
        let grant_type = grant.label();
        let claims = keygate::token::Grant {
            subject: &principal.id,
            client_id,
            role: principal.role(),
            scopes,
        };
        let issued = rt.issuer.issue(&claims).map_err(|e| {
            tracing::error!(error = %keygate::error::chain(&e), "signing failed");
            Rejection::Internal
        })?;
        crate::metrics::increment("keygate_tokens_issued_total", [("grant", grant_type)]);
        crate::telemetry::record("keygate.grant", grant_type);
        crate::telemetry::record("keygate.client_id", &principal.id);
        // At debug: one line per token would cost every request a formatted line. The
        // record of each token issued is the audit log's `token.issued`.
        tracing::debug!(sub = %principal.id, jti = %issued.claims.jti, grant = grant_type, "token issued");
        self.state
            .audit()
            .record_with(AuditKind::TokenIssued, |event| {
                let event = about(event, principal);
                // The requesting client, when one authenticated: neither the principal
                // itself nor the public client (no configured principal has its id).
                let event = if client_id == &*principal.id
                    || client_id == rt.config.token.public_client_id
                {
                    event
                } else {
                    event.client_id(client_id)
                };
                event
                    .address(self.sender)
                    .jti(&issued.claims.jti)
                    .reason(grant_type)
            });
        Ok(issued)
    }
}

/// `event`, naming `principal` as a client or as a user.
fn about(event: AuditEvent, principal: &Principal) -> AuditEvent {
    match principal.kind {
        keygate::principal::PrincipalKind::User => event.username(&principal.id),
        _ => event.client_id(&principal.id),
    }
}

/// The scopes to grant: all the principal has when none are asked for, else exactly
/// those asked for, each of which must be allowed.
pub(crate) fn narrow_scopes(
    requested: Option<&str>,
    allowed: &[String],
) -> Result<Vec<String>, Rejection> {
    let Some(requested) = requested else {
        return Ok(allowed.to_vec());
    };
    let mut granted: Vec<String> = Vec::new();
    for s in requested.split(' ').filter(|s| !s.is_empty()) {
        if !allowed.iter().any(|a| a == s) {
            return Err(Rejection::InvalidScope);
        }
        if !granted.iter().any(|g| g == s) {
            granted.push(s.to_owned());
        }
    }
    Ok(granted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_token_response_is_token_responses_serialization() {
        for scope in ["", "orders:read orders:write", "odd \"scope\"\\"] {
            let issued = IssuedToken {
                token: "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln".into(),
                claims: keygate::token::Claims {
                    iss: "https://keygate.example".into(),
                    sub: "billing".into(),
                    aud: None,
                    exp: 1_800,
                    iat: 0,
                    nbf: 0,
                    jti: "j".into(),
                    client_id: "billing".into(),
                    role: "service".into(),
                    scope: scope.into(),
                },
            };
            let response = token_response(&issued, None);
            let body = axum::body::to_bytes(response.into_body(), 4096)
                .await
                .unwrap();
            let expected = serde_json::to_vec(&TokenResponse {
                access_token: issued.token.clone(),
                token_type: "Bearer",
                expires_in: 1_800,
                scope: scope.into(),
            })
            .unwrap();
            assert_eq!(body, expected);
        }
    }

    #[test]
    fn scopes_narrow_to_what_is_allowed() {
        let allowed = vec!["a".to_owned(), "b".to_owned()];
        assert_eq!(narrow_scopes(None, &allowed).unwrap(), allowed);
        assert_eq!(
            narrow_scopes(Some("b"), &allowed).unwrap(),
            vec!["b".to_owned()]
        );
        assert_eq!(
            narrow_scopes(Some("b  b a"), &allowed).unwrap(),
            vec!["b".to_owned(), "a".to_owned()]
        );
        assert_eq!(
            narrow_scopes(Some("c"), &allowed),
            Err(Rejection::InvalidScope)
        );
    }
}
