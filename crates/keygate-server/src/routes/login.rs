//! `POST /login` (an API key for a token) and `POST /logout` (revoke it, clear the cookie).

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::charge::with_headers;
use crate::config::Config;
use crate::context::{Endpoint, Grant, RequestCtx, RevokedBy};
use crate::extract::{Peer, TokenSource, api_key};
use crate::issue::token_response;
use crate::rejection::Rejection;
use crate::state::AppState;

#[utoipa::path(
    post, path = "/login", tag = "tokens",
    summary = "Exchange an API key for a token",
    description = "The key comes from the configured header (default `X-API-Key`), or the query parameter or cookie when configured. Sets the token cookie in cookie mode.",
    responses(
        (status = 200, description = "A token", body = crate::issue::TokenResponse, headers(("cache-control" = String, description = "`no-store`"))),
        (status = 400, description = "Two different keys presented", body = crate::rejection::ErrorBody),
        (status = 401, description = "No key, or a wrong, expired or revoked one: `invalid_client`", body = crate::rejection::ErrorBody),
        (status = 429, description = "Too many failed attempts (`too_many_attempts`), or the client's quota is used up (`rate_limited`, with `RateLimit-Policy` and `RateLimit`)", body = crate::rejection::ErrorBody, headers(("retry-after" = u64))),
        (status = 503, description = "With a store and `store.on_unavailable = \"deny\"`: the revocation list is not in sync with the store", body = crate::rejection::ErrorBody, headers(("retry-after" = u64))),
    ),
    security(("api_key_header" = []), ("api_key_query" = []), ("api_key_cookie" = []))
)]
pub(super) async fn login(
    State(state): State<AppState>,
    Peer(peer): Peer,
    request: Request,
) -> Result<Response, Rejection> {
    // The request itself rather than a `HeaderMap` extractor, which copies every header.
    let (headers, query) = (request.headers(), request.uri().query());
    let ctx = RequestCtx::with_sender(state, Endpoint::Login, peer, headers);
    let key = api_key(headers, query, &ctx.rt)?.ok_or(Rejection::InvalidClient { basic: false })?;
    let client = ctx.authenticate_key(&key, Grant::ApiKey).await?;
    let quota = ctx.charge(&client.id, None).await?;
    // Every answer counted against a quota carries its fields, refusals included.
    let issued = match ctx.issue(&client, &client.id, client.scopes(), Grant::ApiKey) {
        Ok(issued) => issued,
        Err(e) => return Ok(with_headers(quota.as_ref(), e.into_response())),
    };
    let config = &ctx.rt.config;
    let cookie = config
        .cookie
        .enabled
        .then(|| token_cookie(config, &issued.token, issued.expires_in()))
        .flatten();
    Ok(with_headers(
        quota.as_ref(),
        token_response(&issued, cookie),
    ))
}

#[utoipa::path(
    post, path = "/logout", tag = "tokens",
    summary = "Revoke the presented token and clear the cookie",
    responses(
        (status = 204, description = "Revoked until it expires"),
        (status = 401, description = "No token, or a bad, expired or revoked one", body = crate::rejection::ErrorBody, headers(("www-authenticate" = String, description = "`Bearer realm=\"keygate\"`, with `error=\"invalid_token\"` for a bad token"))),
        (status = 403, description = "Cross-site request carrying only the cookie", body = crate::rejection::ErrorBody),
        (status = 503, description = "With a store and `store.on_unavailable = \"deny\"`: the revocation list is not in sync with the store, or the store did not confirm the revocation (it is applied on this replica and retried until the store has it; repeating the logout is accepted)", body = crate::rejection::ErrorBody, headers(("retry-after" = u64))),
    ),
    security(("bearer" = []), ("token_cookie" = []), ("oauth2" = []))
)]
pub(super) async fn logout(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let ctx = RequestCtx::new(state, Endpoint::Logout);
    let config = &ctx.rt.config;
    let clear = config
        .cookie
        .enabled
        .then(|| token_cookie(config, "", 0))
        .flatten();
    let outcome = async {
        let authorized = ctx.authorize_logout(&headers).await?;
        if authorized.source == TokenSource::Cookie && is_cross_site(&headers, &ctx.rt.public_url) {
            return Err(Rejection::CrossSite);
        }
        ctx.revoke(&authorized.claims, RevokedBy::Logout).await
    }
    .await;
    let mut response = match outcome {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        // A refused logout changes nothing, the cookie included (docs/security.md).
        Err(r) => return r.into_response(),
    };
    if let Some(clear) = clear {
        response.headers_mut().insert(header::SET_COOKIE, clear);
        response
            .headers_mut()
            .insert("clear-site-data", HeaderValue::from_static("\"cookies\""));
    }
    response
}

/// `Set-Cookie` for the token (or, with an empty value and `max_age` 0, its removal):
/// HttpOnly always, Secure and SameSite as configured, Path=/.
fn token_cookie(config: &Config, token: &str, max_age: u64) -> Option<HeaderValue> {
    let c = &config.cookie;
    let secure = if c.secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{}={token}; Max-Age={max_age}; Path=/; HttpOnly{secure}; SameSite={}",
        c.name,
        c.same_site.as_str()
    ))
    .ok()
}

/// A state-changing request that arrives with only the cookie must come from our own
/// origin (ASVS 3.5.1, 3.5.3): `Sec-Fetch-Site: cross-site`, or an `Origin` other than
/// `server.public_url`, is refused.
fn is_cross_site(headers: &HeaderMap, public_url: &str) -> bool {
    let fetch_site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok());
    if fetch_site.is_some_and(|s| s.eq_ignore_ascii_case("cross-site")) {
        return true;
    }
    match headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        Some(origin) => origin.trim_end_matches('/') != public_url.trim_end_matches('/'),
        None => false,
    }
}
