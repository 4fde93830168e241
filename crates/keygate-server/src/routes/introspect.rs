//! `POST /revoke` (RFC 7009) and `POST /introspect` (RFC 7662). Both require client
//! authentication.
//!
//! Rules: any authenticated client may introspect any token — that is how a resource
//! server checks a token presented to it (RFC 7662 §2.1). A client may revoke only tokens
//! issued to it, unless its role is one of `token.admin_roles` (RFC 7009 §2.1).

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use keygate::token::Claims;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::context::{Endpoint, Grant, RequestCtx, RevokedBy};
use crate::credentials::FormSecret;
use crate::directory::Found;
use crate::extract::Peer;
use crate::form::Form;
use crate::rejection::Rejection;
use crate::state::AppState;

/// Form body of `POST /revoke` and `POST /introspect`.
#[derive(Debug, Deserialize, ToSchema)]
pub(super) struct TokenParam {
    /// The token.
    #[schema(required = true, value_type = String, min_length = 1)]
    token: Option<String>,
    /// `access_token` (accepted and ignored: keygate has access tokens only, and RFC 7009
    /// §2.1 lets a server ignore the hint).
    #[serde(rename = "token_type_hint")]
    _token_type_hint: Option<String>,
    /// Client credentials in the body, instead of HTTP Basic.
    client_id: Option<String>,
    /// The client's API key, with `client_id`.
    client_secret: Option<String>,
}

/// RFC 7662 response: `active`, and when active `token_type` and the members of `Claims`.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct Introspection {
    /// False for any token keygate would refuse; then no other member is present.
    active: bool,
    /// `Bearer`, when active.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String)]
    token_type: Option<&'static str>,
    /// The claims, as members of this object, when active.
    #[serde(flatten)]
    #[schema(ignore)]
    claims: Option<Claims>,
}

/// The authenticated calling client and the `token` parameter.
async fn client_and_token<'c>(
    ctx: &'c RequestCtx,
    headers: &HeaderMap,
    form: TokenParam,
    grant: Grant,
) -> Result<(Found<'c>, String), Rejection> {
    let secret = FormSecret {
        client_id: form.client_id.as_deref(),
        client_secret: form.client_secret.as_deref(),
    };
    let client = ctx.authenticate_client(headers, secret, grant).await?;
    let token = form
        .token
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
    request_body(content = TokenParam, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "Revoked, or nothing to revoke"),
        (status = 400, description = "`invalid_request` (not a form, no `token`, a repeated parameter, two client authentication methods at once), or `unauthorized_client` for another client's token", body = crate::rejection::ErrorBody),
        (status = 401, description = "`invalid_client`", body = crate::rejection::ErrorBody),
        (status = 429, description = "Too many failed attempts", body = crate::rejection::ErrorBody, headers(("retry-after" = u64))),
        (status = 503, description = "With a store and `store.on_unavailable = \"deny\"`: the store did not confirm the revocation (it is applied on this replica and retried until the store has it; repeating the request is accepted)", body = crate::rejection::ErrorBody, headers(("retry-after" = u64))),
    ),
    security(("client_basic" = []), ("api_key_header" = []))
)]
pub(super) async fn revoke(
    State(state): State<AppState>,
    Peer(peer): Peer,
    headers: HeaderMap,
    Form(form): Form<TokenParam>,
) -> Result<Response, Rejection> {
    let ctx = RequestCtx::with_sender(state, Endpoint::Revoke, peer, &headers);
    let (client, token) = client_and_token(&ctx, &headers, form, Grant::Revoke).await?;
    let rt = &ctx.rt;
    // `token_type_hint` may be ignored (RFC 7009 §2.1): keygate has access tokens only.
    let Ok(claims) = rt.verifier.verify(&token) else {
        return Ok(no_store(StatusCode::OK.into_response()));
    };
    let is_admin = rt
        .config
        .token
        .admin_roles
        .iter()
        .any(|r| r == client.role());
    if *claims.client_id != *client.id && !is_admin {
        tracing::info!(client = %client.id, jti = %claims.jti, "revocation of another client's token refused");
        return Err(Rejection::UnauthorizedClient);
    }
    ctx.revoke(&claims, RevokedBy::Client(&client.id)).await?;
    Ok(no_store(StatusCode::OK.into_response()))
}

/// `{"active": true, …claims}` for a token keygate would accept now, else exactly
/// `{"active": false}` (RFC 7662 §2.2).
#[utoipa::path(
    post, path = "/introspect", tag = "verification",
    summary = "RFC 7662 token introspection",
    description = "Any authenticated client may introspect any token. An inactive token gets exactly `{\"active\": false}`.",
    request_body(content = TokenParam, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "`active` with the claims, or `{\"active\": false}`", body = Introspection),
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
    Form(form): Form<TokenParam>,
) -> Result<Response, Rejection> {
    let ctx = RequestCtx::with_sender(state, Endpoint::Introspect, peer, &headers);
    let (_, token) = client_and_token(&ctx, &headers, form, Grant::Introspect).await?;
    let body = match ctx.check_token(&token).await {
        Ok(claims) => Introspection {
            active: true,
            token_type: Some("Bearer"),
            claims: Some(claims),
        },
        Err(Rejection::Unavailable(after)) => return Err(Rejection::Unavailable(after)),
        Err(_) => Introspection {
            active: false,
            token_type: None,
            claims: None,
        },
    };
    Ok(no_store(Json(body).into_response()))
}
