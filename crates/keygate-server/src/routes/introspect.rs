//! `POST /revoke` (RFC 7009) and `POST /introspect` (RFC 7662). Both require client
//! authentication.
//!
//! Rules: any authenticated client may introspect any token — that is how a resource
//! server checks a token presented to it (RFC 7662 §2.1). A client may revoke only tokens
//! issued to it, unless its role is one of `token.admin_roles` (RFC 7009 §2.1).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use keygate::principal::Principal;
use serde_json::{Value, json};

use crate::authorize::{check_token, revoke as revoke_claims};
use crate::credentials::authenticate_client;
use crate::extract::{Peer, client_ip, form};
use crate::rejection::Rejection;
use crate::state::AppState;

/// The authenticated calling client and the `token` parameter of the form body.
async fn client_and_token(
    state: &AppState,
    peer: SocketAddr,
    headers: &HeaderMap,
    body: &[u8],
    label: &'static str,
) -> Result<(Arc<Principal>, String), Rejection> {
    let mut params = form(headers, body)?;
    let ip = format!("ip:{}", client_ip(peer, headers, &state.runtime().config));
    let client = authenticate_client(state, &ip, headers, &params, label).await?;
    let token = params
        .remove("token")
        .ok_or(Rejection::InvalidRequest("token is required"))?;
    Ok((client, token))
}

fn no_store(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// 200 for a revoked token and also for an invalid, expired or unknown one: the answer
/// says nothing about the token (RFC 7009 §2.2).
#[utoipa::path(
    post, path = "/revoke", tag = "tokens",
    summary = "RFC 7009 token revocation",
    description = "A client revokes tokens issued to it; a client whose role is in `token.admin_roles` revokes any token. 200 also for invalid or unknown tokens.",
    request_body(content = super::openapi::TokenParam, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "Revoked, or nothing to revoke"),
        (status = 400, description = "`invalid_request` (not a form, no `token`, a repeated parameter, two client authentication methods at once), or `unauthorized_client` for another client's token", body = crate::rejection::ErrorBody),
        (status = 401, description = "`invalid_client`", body = crate::rejection::ErrorBody),
        (status = 429, description = "Too many failed attempts", body = crate::rejection::ErrorBody, headers(("retry-after" = u64))),
    ),
    security(("client_basic" = []), ("api_key_header" = []))
)]
pub(super) async fn revoke(
    State(state): State<AppState>,
    Peer(peer): Peer,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Rejection> {
    let (client, token) = client_and_token(&state, peer, &headers, &body, "revoke").await?;
    let rt = state.runtime();
    // `token_type_hint` may be ignored (RFC 7009 §2.1): keygate has access tokens only.
    let Ok(claims) = rt.verifier.verify(&token) else {
        return Ok(no_store(StatusCode::OK.into_response()));
    };
    let is_admin = rt.config.token.admin_roles.contains(&client.role);
    if claims.client_id != client.id && !is_admin {
        tracing::info!(client = %client.id, jti = %claims.jti, "revocation of another client's token refused");
        return Err(Rejection::UnauthorizedClient);
    }
    revoke_claims(&state, &claims, &client.id).await?;
    Ok(no_store(StatusCode::OK.into_response()))
}

/// `{"active": true, …claims}` for a token keygate would accept now, else exactly
/// `{"active": false}` (RFC 7662 §2.2).
#[utoipa::path(
    post, path = "/introspect", tag = "verification",
    summary = "RFC 7662 token introspection",
    description = "Any authenticated client may introspect any token. An inactive token gets exactly `{\"active\": false}`.",
    request_body(content = super::openapi::TokenParam, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "`active` with the claims, or `{\"active\": false}`", body = super::openapi::Introspection),
        (status = 400, description = "`invalid_request`: not a form, no `token`, a repeated parameter, or two client authentication methods at once", body = crate::rejection::ErrorBody),
        (status = 401, description = "`invalid_client`", body = crate::rejection::ErrorBody),
        (status = 429, description = "Too many failed attempts", body = crate::rejection::ErrorBody, headers(("retry-after" = u64))),
    ),
    security(("client_basic" = []), ("api_key_header" = []))
)]
pub(super) async fn introspect(
    State(state): State<AppState>,
    Peer(peer): Peer,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Rejection> {
    let (_, token) = client_and_token(&state, peer, &headers, &body, "introspect").await?;
    let body = match check_token(&state, &token).await {
        Ok(claims) => {
            let mut v = serde_json::to_value(&claims).unwrap_or(Value::Null);
            if let Value::Object(map) = &mut v {
                map.insert("active".into(), Value::Bool(true));
                map.insert("token_type".into(), json!("Bearer"));
            }
            v
        }
        Err(Rejection::Unavailable(after)) => return Err(Rejection::Unavailable(after)),
        Err(_) => json!({"active": false}),
    };
    Ok(no_store(Json(body).into_response()))
}
