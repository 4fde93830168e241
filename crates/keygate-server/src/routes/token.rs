//! `POST /token`: the RFC 6749 token endpoint (`client_credentials`, `password`).

use std::collections::HashMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use keygate::principal::Principal;
use keygate::token::{Grant, IssuedToken};
use serde::Serialize;
use time::OffsetDateTime;

use crate::credentials::{self, check_limits, refuse};
use crate::extract::{Peer, client_ip, form};
use crate::rejection::Rejection;
use crate::state::AppState;

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

/// Builds the JSON token response with `Cache-Control: no-store` and `Pragma: no-cache`.
pub(crate) fn token_response(issued: &IssuedToken, set_cookie: Option<HeaderValue>) -> Response {
    let body = TokenResponse {
        access_token: issued.token.clone(),
        token_type: "Bearer",
        expires_in: issued.expires_in(),
        scope: issued.claims.scope.clone(),
    };
    let mut response = Json(body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    if let Some(cookie) = set_cookie {
        headers.insert(header::SET_COOKIE, cookie);
    }
    response
}

/// Signs a token for `principal` with the granted `scopes` and counts it.
pub(crate) fn issue(
    state: &AppState,
    principal: &Principal,
    scopes: &[String],
    grant_type: &'static str,
) -> Result<IssuedToken, Rejection> {
    let rt = state.runtime();
    let grant = Grant {
        subject: &principal.id,
        client_id: &principal.id,
        role: &principal.role,
        scopes,
    };
    let issued = rt.issuer.issue(&grant).map_err(|e| {
        tracing::error!(error = %e, "signing failed");
        Rejection::Internal
    })?;
    metrics::counter!("keygate_tokens_issued_total", "grant" => grant_type).increment(1);
    tracing::info!(sub = %principal.id, jti = %issued.claims.jti, grant = grant_type, "token issued");
    Ok(issued)
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

#[utoipa::path(
    post, path = "/token", tag = "tokens",
    summary = "RFC 6749 token endpoint",
    description = "`grant_type=client_credentials` (client authentication by HTTP Basic `client_id:api_key`, form `client_id`+`client_secret`, or the API-key header) or `grant_type=password` (on when users exist). `scope` narrows the grant.",
    request_body(content = super::openapi::TokenForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "A token", body = TokenResponse, headers(("cache-control" = String, description = "`no-store`"))),
        (status = 400, description = "`invalid_request`, `unsupported_grant_type`, `invalid_grant` or `invalid_scope`", body = crate::rejection::ErrorBody),
        (status = 401, description = "`invalid_client`", body = crate::rejection::ErrorBody, headers(("www-authenticate" = String, description = "`Basic realm=\"keygate\"`"))),
        (status = 429, description = "Too many failed attempts", body = crate::rejection::ErrorBody, headers(("retry-after" = u64))),
        (status = 503, description = "Password hashing queue full", body = crate::rejection::ErrorBody, headers(("retry-after" = u64))),
    ),
    security((), ("client_basic" = []), ("api_key_header" = []))
)]
pub(super) async fn token(
    State(state): State<AppState>,
    Peer(peer): Peer,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Rejection> {
    let params = form(&headers, &body)?;
    let rt = state.runtime();
    let ip = format!("ip:{}", client_ip(peer, &headers, &rt.config));
    match params.get("grant_type").map(String::as_str) {
        None => Err(Rejection::InvalidRequest("grant_type is required")),
        Some("client_credentials") => {
            let client = credentials::authenticate_client(
                &state,
                &ip,
                &headers,
                &params,
                "client_credentials",
            )
            .await?;
            let scopes = narrow_scopes(params.get("scope").map(String::as_str), &client.scopes)?;
            let issued = issue(&state, &client, &scopes, "client_credentials")?;
            Ok(token_response(&issued, None))
        }
        Some("password") if rt.directory.has_users() => password(&state, &params, &ip).await,
        Some(_) => Err(Rejection::UnsupportedGrantType),
    }
}

async fn password(
    state: &AppState,
    params: &HashMap<String, String>,
    ip: &str,
) -> Result<Response, Rejection> {
    let (Some(username), Some(password)) = (params.get("username"), params.get("password")) else {
        return Err(Rejection::InvalidRequest(
            "username and password are required",
        ));
    };
    let who = format!("id:{username}");
    let subjects = [ip, who.as_str()];
    check_limits(state, &subjects, "password").await?;
    let rt = state.runtime();
    let now = OffsetDateTime::now_utc();
    let user = match rt
        .directory
        .authenticate_user(username, password, state.passwords(), now)
        .await
    {
        Ok(user) => user,
        Err(e) => {
            return Err(refuse(state, &e, &subjects, "password", Rejection::InvalidGrant).await);
        }
    };
    let scopes = narrow_scopes(params.get("scope").map(String::as_str), &user.scopes)?;
    let issued = issue(state, &user, &scopes, "password")?;
    Ok(token_response(&issued, None))
}

#[cfg(test)]
mod tests {
    use super::*;

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
