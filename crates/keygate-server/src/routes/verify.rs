//! `GET /verify` (forward auth for nginx `auth_request`, Traefik ForwardAuth) and
//! `GET /userinfo`.

use axum::Json;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, header};
use axum::response::{IntoResponse, Response};

use keygate::token::Demands;

use crate::charge::with_headers;
use crate::context::{Endpoint, RequestCtx};
use crate::rejection::Rejection;
use crate::state::AppState;

/// 200 with `X-Auth-Subject`, `X-Auth-Role`, `X-Auth-Scope` and `X-Auth-Client-Id`.
///
/// `?role=a,b` demands one of the roles; `?scope=x y` (or `x,y`) demands every scope.
/// Unmet demands answer 403 `insufficient_scope`.
#[utoipa::path(
    get, path = "/verify", tag = "verification",
    summary = "Forward auth (nginx auth_request, Traefik ForwardAuth)",
    params(
        ("role" = Option<String>, Query, description = "Demand one of these roles (comma-separated)"),
        ("scope" = Option<String>, Query, description = "Demand every one of these scopes (space- or comma-separated)"),
    ),
    responses(
        (status = 200, description = "Valid", headers(
            ("x-auth-subject" = String), ("x-auth-role" = String), ("x-auth-scope" = String), ("x-auth-client-id" = String)
        )),
        (status = 401, description = "No token, or a bad, expired or revoked one", body = crate::rejection::ErrorBody, headers(("www-authenticate" = String, description = "`Bearer realm=\"keygate\"`, with `error=\"invalid_token\"` for a bad token"))),
        (status = 403, description = "Role or scope unmet: `insufficient_scope`", body = crate::rejection::ErrorBody),
        (status = 429, description = "The token's client is over its quota: `rate_limited`, with `Retry-After`, `RateLimit-Policy` and `RateLimit`", body = crate::rejection::ErrorBody, headers(("retry-after" = u64))),
        (status = 503, description = "With a store and `store.on_unavailable = \"deny\"`: the revocation list is not in sync with the store", body = crate::rejection::ErrorBody, headers(("retry-after" = u64))),
    ),
    security(("bearer" = []), ("token_cookie" = []), ("oauth2" = []))
)]
pub(super) async fn verify(
    State(state): State<AppState>,
    request: Request,
) -> Result<Response, Rejection> {
    // The request itself rather than a `HeaderMap` extractor, which copies every header:
    // this is the hot path of forward auth.
    let (headers, query) = (request.headers(), request.uri().query());
    let ctx = RequestCtx::new(state, Endpoint::Verify);
    let claims = ctx.authorize(headers).await?.claims;
    let quota = ctx.charge(&claims.client_id, Some(&claims.jti)).await?;
    Ok(with_headers(
        quota.as_ref(),
        demands(&claims, query).unwrap_or_else(IntoResponse::into_response),
    ))
}

/// The `?role=` and `?scope=` demands of a verified token: 200 with the identity
/// headers, or 403.
fn demands(claims: &keygate::token::Claims, query: Option<&str>) -> Result<Response, Rejection> {
    let mut demands = Demands::default();
    for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        let items = v
            .split([',', ' '])
            .filter(|s| !s.is_empty())
            .map(str::to_owned);
        match k.as_ref() {
            "role" => demands.roles.extend(items),
            "scope" => demands.scopes.extend(items),
            _ => {}
        }
    }
    if !demands.met_by(claims) {
        return Err(Rejection::InsufficientScope(demands.scope()));
    }
    const SUBJECT: HeaderName = HeaderName::from_static("x-auth-subject");
    const ROLE: HeaderName = HeaderName::from_static("x-auth-role");
    const SCOPE: HeaderName = HeaderName::from_static("x-auth-scope");
    const CLIENT_ID: HeaderName = HeaderName::from_static("x-auth-client-id");
    // Room for these five and what the frame and a quota add, so the map never grows.
    let mut h = HeaderMap::with_capacity(12);
    for (name, value) in [
        (SUBJECT, &claims.sub),
        (ROLE, &claims.role),
        (SCOPE, &claims.scope),
        (CLIENT_ID, &claims.client_id),
    ] {
        if let Ok(v) = HeaderValue::from_str(value) {
            h.insert(name, v);
        }
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    let mut response = Response::new(Body::empty());
    *response.headers_mut() = h;
    Ok(response)
}

/// The verified claims of the presented token.
#[utoipa::path(
    get, path = "/userinfo", tag = "verification",
    summary = "The claims of the presented token",
    responses(
        (status = 200, description = "The verified claims", body = keygate::token::Claims),
        (status = 401, description = "No token, or a bad, expired or revoked one", body = crate::rejection::ErrorBody, headers(("www-authenticate" = String, description = "`Bearer realm=\"keygate\"`, with `error=\"invalid_token\"` for a bad token"))),
        (status = 429, description = "The token's client is over its quota: `rate_limited`", body = crate::rejection::ErrorBody, headers(("retry-after" = u64))),
        (status = 503, description = "With a store and `store.on_unavailable = \"deny\"`: the revocation list is not in sync with the store", body = crate::rejection::ErrorBody, headers(("retry-after" = u64))),
    ),
    security(("bearer" = []), ("token_cookie" = []), ("oauth2" = []))
)]
pub(super) async fn userinfo(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, Rejection> {
    let ctx = RequestCtx::new(state, Endpoint::Userinfo);
    let claims = ctx.authorize(&headers).await?.claims;
    let quota = ctx.charge(&claims.client_id, Some(&claims.jti)).await?;
    let mut response = Json(&*claims).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(with_headers(quota.as_ref(), response))
}
