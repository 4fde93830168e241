//! `GET /.well-known/jwks.json` and the RFC 8414 metadata (also at the OpenID Connect
//! Discovery path), so standard clients find the token endpoint and the keys by themselves.

use std::collections::BTreeSet;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use keygate::token::now_unix;
use serde_json::{Value, json};

use crate::runtime::Runtime;
use crate::state::AppState;

/// The longest a verifier may cache the JWKS: at most half the publish delay, so a new
/// key is in every cache before it signs.
fn jwks_max_age(rt: &Runtime) -> u64 {
    (rt.config.token.key_publish_delay.as_secs() / 2).clamp(0, 300)
}

#[utoipa::path(
    get, path = "/.well-known/jwks.json", tag = "discovery",
    summary = "Public signing keys (RFC 7517); empty under HS*",
    responses((status = 200, description = "`{\"keys\": [...]}`", body = Object, headers(("cache-control" = String))))
)]
pub(super) async fn jwks(State(state): State<AppState>) -> Response {
    let rt = state.runtime();
    let keep = rt.verifier.policy().keep_after_retire();
    let mut response = Json(rt.keys.jwks(now_unix(), keep)).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("public, max-age={}", jwks_max_age(&rt))) {
        response.headers_mut().insert(header::CACHE_CONTROL, v);
    }
    response
}

fn metadata(rt: &Runtime) -> Value {
    let base = rt.public_url.trim_end_matches('/');
    let mut grants = vec!["client_credentials"];
    if rt.has_users() {
        grants.push("password");
    }
    let auth_methods = ["client_secret_basic", "client_secret_post"];
    let scopes: BTreeSet<&str> = rt
        .directory
        .iter()
        .flat_map(|p| p.scopes().iter().map(String::as_str))
        .collect();
    json!({
        "issuer": rt.verifier.policy().issuer,
        "token_endpoint": format!("{base}/token"),
        "jwks_uri": format!("{base}/.well-known/jwks.json"),
        "revocation_endpoint": format!("{base}/revoke"),
        "introspection_endpoint": format!("{base}/introspect"),
        "userinfo_endpoint": format!("{base}/userinfo"),
        "grant_types_supported": grants,
        // No authorization endpoint, so no response type: the list is honestly empty.
        "response_types_supported": [],
        "token_endpoint_auth_methods_supported": auth_methods,
        "revocation_endpoint_auth_methods_supported": auth_methods,
        "introspection_endpoint_auth_methods_supported": auth_methods,
        "scopes_supported": scopes,
    })
}

/// RFC 8414 authorization server metadata.
#[utoipa::path(
    get, path = "/.well-known/oauth-authorization-server", tag = "discovery",
    summary = "RFC 8414 authorization server metadata",
    responses((status = 200, description = "Metadata", body = Object))
)]
pub(super) async fn oauth_authorization_server(State(state): State<AppState>) -> Response {
    Json(metadata(&state.runtime())).into_response()
}

/// The same RFC 8414 document at the path of OpenID Connect Discovery. keygate is not an
/// OpenID Provider: it has no authorization endpoint and issues no ID tokens, so it claims
/// none of the members OIDC Discovery 1.0 §3 requires of a provider
/// (`authorization_endpoint`, `subject_types_supported`,
/// `id_token_signing_alg_values_supported`); an OpenID relying party correctly refuses it.
/// It is served because RFC 8414 §5 lets OAuth clients look here, and they do:
/// openid-client's `discovery()` asks this path first, and Swagger UI reads it for the
/// OpenAPI `openIdConnect` security scheme. See docs/conformance.md.
#[utoipa::path(
    get, path = "/.well-known/openid-configuration", tag = "discovery",
    summary = "RFC 8414 metadata at the OpenID Connect discovery path",
    description = "The document of `/.well-known/oauth-authorization-server`, byte for byte. keygate is not an OpenID Provider (no authorization endpoint, no ID tokens), so the members OpenID Connect Discovery requires of a provider are absent.",
    responses((status = 200, description = "Metadata", body = Object))
)]
pub(super) async fn openid_configuration(State(state): State<AppState>) -> Response {
    Json(metadata(&state.runtime())).into_response()
}
