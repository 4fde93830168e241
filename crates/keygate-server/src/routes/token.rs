//! `POST /token`: the RFC 6749 token endpoint (`client_credentials`, `password`).

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::ToSchema;

use crate::charge::with_headers;
use crate::context::{Endpoint, Grant, RequestCtx};
use crate::credentials::{FormSecret, decode_basic};
use crate::extract::Peer;
use crate::form::Form;
use crate::issue::{narrow_scopes, token_response};
use crate::quota::Decision;
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
    description = "`grant_type=client_credentials` (client authentication by HTTP Basic `client_id:api_key`, form `client_id`+`client_secret`, or the API-key header) or `grant_type=password` (on when users exist; client authentication, when included, is checked first and a wrong one is 401 `invalid_client`; without it the token's `client_id` is `token.public_client_id`, and a `client_id` naming another client is 401). `scope` narrows the grant.",
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
    let ctx = RequestCtx::with_sender(state, Endpoint::Token, peer, &headers);
    match form.grant_type.as_deref() {
        None => Err(Rejection::InvalidRequest("grant_type is required")),
        Some("client_credentials") => {
            let secret = FormSecret {
                client_id: form.client_id.as_deref(),
                client_secret: form.client_secret.as_deref(),
            };
            let grant = Grant::ClientCredentials;
            let client = ctx.authenticate_client(&headers, secret, grant).await?;
            let quota = ctx.charge(&client.id, None).await?;
            // Every answer counted against a quota carries its fields, refusals included.
            let issued = narrow_scopes(form.scope.as_deref(), client.scopes())
                .and_then(|scopes| ctx.issue(&client, &client.id, &scopes, grant));
            let response = match issued {
                Ok(issued) => token_response(&issued, None),
                Err(e) => e.into_response(),
            };
            Ok(with_headers(quota.as_ref(), response))
        }
        Some("password") if ctx.rt.has_users() => {
            let (client_id, quota) = requesting_client(&ctx, &headers, &form).await?;
            let response = match user_token(&ctx, &client_id, &form).await {
                Ok(response) => response,
                Err(e) => e.into_response(),
            };
            Ok(with_headers(quota.as_ref(), response))
        }
        Some(_) => Err(Rejection::UnsupportedGrantType),
    }
}

/// The client that requests a password-grant token. When the request includes client
/// authentication (HTTP Basic with a secret, form `client_secret`, the API-key header), the
/// client is authenticated before anything else and a wrong one is 401 `invalid_client`,
/// whatever the password (RFC 6749 §4.3.2, §5.2); its quota is charged as for any of its
/// `/token` requests. Otherwise the requester is the public client
/// `token.public_client_id`: a `client_id` naming any other client is refused, as a
/// confidential client must authenticate (§3.2.1).
async fn requesting_client<'c>(
    ctx: &'c RequestCtx,
    headers: &HeaderMap,
    form: &TokenForm,
) -> Result<(std::borrow::Cow<'c, str>, Option<Decision>), Rejection> {
    let basic = basic_credentials(headers)?;
    // Basic with an empty secret authenticates nothing: it names a client at most, as a
    // lone `client_id` does. Swagger UI's password flow sends `Basic <base64 of ":">` when
    // its client fields are left empty.
    let (basic_secret, basic_id) = match &basic {
        Some((id, secret)) if secret.is_empty() => (false, (!id.is_empty()).then_some(id.as_str())),
        Some(_) => (true, None),
        None => (false, None),
    };
    let key_header = matches!(
        ctx.rt.client_key_header.find(headers, None),
        Ok(Some(_)) | Err(_)
    );
    if basic_secret || key_header || form.client_secret.is_some() {
        let secret = FormSecret {
            client_id: form.client_id.as_deref(),
            client_secret: form.client_secret.as_deref(),
        };
        let client = ctx
            .authenticate_client(headers, secret, Grant::Password)
            .await?;
        let quota = ctx.charge(&client.id, None).await?;
        return Ok((client.id.to_string().into(), quota));
    }
    let public = ctx.rt.config.token.public_client_id.as_str();
    let named = [basic_id, form.client_id.as_deref()];
    if named.iter().flatten().all(|id| *id == public) {
        Ok((public.into(), None))
    } else {
        Err(Rejection::InvalidClient { basic: true })
    }
}

/// The id and secret of an `Authorization: Basic` header, read as client authentication
/// reads them (`credentials::decode_basic`: form-decoded, RFC 6749 §2.3.1); `None` without
/// such a header. An undecodable one is 401 `invalid_client`, as at any token endpoint.
fn basic_credentials(headers: &HeaderMap) -> Result<Option<(String, String)>, Rejection> {
    let Some(value) = headers.get(axum::http::header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value
        .to_str()
        .map_err(|_| Rejection::InvalidClient { basic: true })?;
    match value.split_once(' ') {
        Some((scheme, creds)) if scheme.eq_ignore_ascii_case("basic") => {
            let mut readings = decode_basic(creds.trim())?;
            Ok(Some(readings.swap_remove(0)))
        }
        _ => Ok(None),
    }
}

/// The password check and the token of the user, requested by `client_id`.
async fn user_token(
    ctx: &RequestCtx,
    client_id: &str,
    form: &TokenForm,
) -> Result<Response, Rejection> {
    let (Some(username), Some(password)) = (&form.username, &form.password) else {
        return Err(Rejection::InvalidRequest(
            "username and password are required",
        ));
    };
    let user = ctx.authenticate_user(username, password).await?;
    let scopes = narrow_scopes(form.scope.as_deref(), user.scopes())?;
    let issued = ctx.issue(&user, client_id, &scopes, Grant::Password)?;
    Ok(token_response(&issued, None))
}
