//! `POST /token`: the RFC 6749 token endpoint (`client_credentials`, `password`).

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use time::OffsetDateTime;
use utoipa::ToSchema;

use crate::config::Runtime;
use crate::credentials::{
    Claimed, FormSecret, authenticate_client, begin_attempt, finish_attempt, not_revoked_in_store,
};
use crate::extract::{Peer, client_ip};
use crate::form::Form;
use crate::issue::{issue, narrow_scopes, token_response};
use crate::limits::Subject;
use crate::quota::{charge, with_headers};
use crate::rejection::Rejection;
use crate::state::AppState;

/// Form body of `POST /token`.
#[derive(Debug, Deserialize, ToSchema)]
pub(super) struct TokenForm {
    /// `client_credentials` or `password`.
    #[schema(required = true, value_type = String)]
    grant_type: Option<String>,
    /// Space-separated scopes to narrow the grant to.
    scope: Option<String>,
    /// Password grant.
    username: Option<String>,
    /// Password grant.
    password: Option<String>,
    /// Client credentials in the body, instead of HTTP Basic.
    client_id: Option<String>,
    /// The client's API key, with `client_id`.
    client_secret: Option<String>,
}

#[utoipa::path(
    post, path = "/token", tag = "tokens",
    summary = "RFC 6749 token endpoint",
    description = "`grant_type=client_credentials` (client authentication by HTTP Basic `client_id:api_key`, form `client_id`+`client_secret`, or the API-key header) or `grant_type=password` (on when users exist). `scope` narrows the grant.",
    request_body(content = TokenForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "A token", body = crate::issue::TokenResponse, headers(("cache-control" = String, description = "`no-store`"))),
        (status = 400, description = "`invalid_request`, `unsupported_grant_type`, `invalid_grant` or `invalid_scope`", body = crate::rejection::ErrorBody),
        (status = 401, description = "`invalid_client`", body = crate::rejection::ErrorBody, headers(("www-authenticate" = String, description = "`Basic realm=\"keygate\"`"))),
        (status = 429, description = "Too many failed attempts (`too_many_attempts`), or the client's quota is used up (`rate_limited`, with `RateLimit-Policy` and `RateLimit`)", body = crate::rejection::ErrorBody, headers(("retry-after" = u64))),
        (status = 503, description = "Password hashing queue full; or, with a store and `store.on_unavailable = \"deny\"`, the revocation list is not in sync with the store", body = crate::rejection::ErrorBody, headers(("retry-after" = u64))),
    ),
    security((), ("client_basic" = []), ("api_key_header" = []))
)]
pub(super) async fn token(
    State(state): State<AppState>,
    Peer(peer): Peer,
    headers: HeaderMap,
    Form(form): Form<TokenForm>,
) -> Result<Response, Rejection> {
    let rt = state.runtime();
    let ip = client_ip(peer, &headers, &rt.config);
    match form.grant_type.as_deref() {
        None => Err(Rejection::InvalidRequest("grant_type is required")),
        Some("client_credentials") => {
            let secret = FormSecret {
                client_id: form.client_id.as_deref(),
                client_secret: form.client_secret.as_deref(),
            };
            let client =
                authenticate_client(&state, &rt, ip, &headers, secret, "client_credentials")
                    .await?;
            let quota = charge(&state, &rt, &client.id, "/token", Some(ip), None).await?;
            let issued = narrow_scopes(form.scope.as_deref(), client.scopes())
                .and_then(|scopes| issue(&state, &rt, client, &scopes, "client_credentials", ip));
            let response = match issued {
                Ok(issued) => token_response(&issued, None),
                Err(e) => e.into_response(),
            };
            Ok(with_headers(quota.as_ref(), response))
        }
        Some("password") if rt.directory.has_users() => password(&state, &rt, &form, ip).await,
        Some(_) => Err(Rejection::UnsupportedGrantType),
    }
}

async fn password(
    state: &AppState,
    rt: &Runtime,
    form: &TokenForm,
    ip: std::net::IpAddr,
) -> Result<Response, Rejection> {
    let (Some(username), Some(password)) = (&form.username, &form.password) else {
        return Err(Rejection::InvalidRequest(
            "username and password are required",
        ));
    };
    // A username's attempts count per address and per (username, address): guessing
    // from one address is bounded, and nobody elsewhere can lock the user out.
    let subjects = [Subject::Address(ip), Subject::UserAt(username.clone(), ip)];
    let claimed = Claimed::User(username);
    let attempt = begin_attempt(state, &subjects, "password", claimed).await?;
    let now = OffsetDateTime::now_utc();
    let outcome = rt
        .directory
        .authenticate_user(username, password, state.passwords(), now)
        .await;
    let user = finish_attempt(
        state,
        attempt,
        &subjects,
        "password",
        claimed,
        outcome,
        Rejection::InvalidGrant,
    )
    .await?;
    let user = not_revoked_in_store(state, rt, user, Rejection::InvalidGrant, "password")?;
    let scopes = narrow_scopes(form.scope.as_deref(), user.scopes())?;
    let issued = issue(state, rt, user, &scopes, "password", ip)?;
    Ok(token_response(&issued, None))
}
