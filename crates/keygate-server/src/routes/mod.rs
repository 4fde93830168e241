//! The whole HTTP API on one screen. Each group of endpoints lives in its own file.

mod discovery;
mod health;
mod introspect;
mod login;
pub mod openapi;
mod token;
mod verify;

use axum::Router;
use axum::routing::{get, post};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::limit::RequestBodyLimitLayer;

use crate::rejection::Rejection;
use crate::state::AppState;

pub use crate::issue::TokenResponse;

/// Bodies larger than this are refused with 413 before they are read.
pub const MAX_BODY: usize = 64 * 1024;

/// The router with every endpoint and the layers around them.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/login", post(login::login))
        .route("/logout", post(login::logout))
        .route("/token", post(token::token))
        .route("/revoke", post(introspect::revoke))
        .route("/introspect", post(introspect::introspect))
        .route("/verify", get(verify::verify))
        .route("/userinfo", get(verify::userinfo))
        .route("/.well-known/jwks.json", get(discovery::jwks))
        .route(
            "/.well-known/oauth-authorization-server",
            get(discovery::oauth_authorization_server),
        )
        .route(
            "/.well-known/openid-configuration",
            get(discovery::openid_configuration),
        )
        .route("/openapi.json", get(openapi::openapi_json))
        .merge(openapi::swagger_ui())
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .fallback(|| async { Rejection::NotFound })
        // Innermost first: a panic becomes a 500, oversized bodies a 413, both get the
        // OAuth shape and nosniff (hardening), the metrics layer counts them, and the
        // request id, outermost, is on every answer.
        .layer(CatchPanicLayer::custom(|_| {
            tracing::error!("a request handler panicked");
            axum::response::IntoResponse::into_response(Rejection::Internal)
        }))
        .layer(RequestBodyLimitLayer::new(MAX_BODY))
        .layer(axum::middleware::from_fn(crate::hardening::harden))
        .layer(axum::middleware::from_fn(crate::metrics::track))
        .layer(axum::middleware::from_fn(crate::request_id::propagate))
        .with_state(state)
}
