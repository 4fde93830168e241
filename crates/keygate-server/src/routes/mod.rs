//! The whole HTTP API on one screen. Each group of endpoints lives in its own file.

mod admin;
mod discovery;
mod health;
mod introspect;
mod login;
pub mod openapi;
mod token;
mod verify;

use axum::Router;
use axum::response::IntoResponse;
use axum::routing::{get, post};

pub use admin::ADMIN_SCOPE;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::limit::RequestBodyLimitLayer;

use crate::rejection::Rejection;
use crate::state::AppState;

pub use crate::issue::TokenResponse;

/// Bodies larger than this are refused with 413 before they are read.
pub const MAX_BODY: usize = 64 * 1024;

/// The router with every endpoint and the layers around them. With
/// `server.metrics_listen` set, `/metrics` is not among them (it answers 404 here) and is
/// served by [`metrics_router`] on its own listener.
pub fn router(state: AppState) -> Router {
    let metrics_here = state.runtime().metrics_listen.is_none();
    let admin_here = state.runtime().admin_listen.is_none();
    let api = Router::new()
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
        .route("/readyz", get(health::readyz));
    let api = if metrics_here {
        api.route("/metrics", get(health::metrics))
    } else {
        api
    };
    let api = if admin_here {
        api.merge(admin_routes())
    } else {
        api
    };
    framed(
        api.fallback(|| async { Rejection::NotFound })
            .with_state(state),
        true,
    )
}

/// The admin API (`/admin/v1/…`, routes/admin.rs).
fn admin_routes() -> Router<AppState> {
    Router::new()
        .route(
            "/admin/v1/{collection}",
            post(admin::create).get(admin::list),
        )
        .route(
            "/admin/v1/{collection}/{id}",
            get(admin::get_one)
                .patch(admin::update)
                .delete(admin::delete),
        )
        .route("/admin/v1/{collection}/{id}/rotate", post(admin::rotate))
        .route("/admin/v1/{collection}/{id}/revoke", post(admin::revoke))
        .route(
            "/admin/v1/{collection}/{id}/password",
            post(admin::password),
        )
}

/// The router of `server.admin_listen`: the admin API alone.
pub fn admin_router(state: AppState) -> Router {
    framed(
        admin_routes()
            .fallback(|| async { Rejection::NotFound })
            .with_state(state),
        true,
    )
}

/// `/metrics` alone, for `server.metrics_listen`: every other path is 404, in the same
/// shape and with the same headers as on the public listener.
pub fn metrics_router(state: AppState) -> Router {
    framed(
        Router::new()
            .route("/metrics", get(health::metrics))
            .fallback(|| async { Rejection::NotFound })
            .with_state(state),
        false,
    )
}

/// The layers, applied once around the whole router rather than per route (as
/// `Router::layer` does, which boxes and clones each layer's service per request).
/// Innermost first: a panic becomes a 500, oversized bodies a 413, and the frame gives
/// every answer the OAuth shape and nosniff, counts it (`metrics`) and puts the request
/// id on it.
fn framed(inner: Router, metrics: bool) -> Router {
    let layered = tower::ServiceBuilder::new()
        .layer(crate::frame::FrameLayer { metrics })
        .map_response(IntoResponse::into_response)
        .layer(RequestBodyLimitLayer::new(MAX_BODY))
        .layer(CatchPanicLayer::custom(|_| {
            tracing::error!("a request handler panicked");
            IntoResponse::into_response(Rejection::Internal)
        }))
        .service(inner);
    Router::new().fallback_service(layered)
}
