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
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

pub use admin::ADMIN_SCOPE;
use tower_http::catch_panic::{CatchPanic, CatchPanicLayer, ResponseForPanic};
use tower_http::limit::{RequestBodyLimit, RequestBodyLimitLayer};

use crate::rejection::Rejection;
use crate::state::AppState;

pub use crate::issue::TokenResponse;

/// Bodies larger than this are refused with 413 before they are read.
pub const MAX_BODY: usize = 64 * 1024;

/// The router with every endpoint and the layers around them, for embedding keygate in an
/// axum application. With `server.metrics_listen` set, `/metrics` is not among them (it
/// answers 404 here) and is served on its own listener.
pub fn router(state: AppState) -> Router {
    Router::new().fallback_service(app(state))
}

/// What keygate's own listeners serve: [`router`]'s endpoints inside their layers, called
/// as they are (a `Router` around them would look every request's path up twice and box a
/// clone of the service per request).
pub(crate) fn app(state: AppState) -> App {
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

/// What `server.admin_listen` serves: the admin API alone.
pub(crate) fn admin_app(state: AppState) -> App {
    framed(
        admin_routes()
            .fallback(|| async { Rejection::NotFound })
            .with_state(state),
        true,
    )
}

/// `/metrics` alone, for `server.metrics_listen`: every other path is 404, in the same
/// shape and with the same headers as on the public listener.
pub(crate) fn metrics_app(state: AppState) -> App {
    framed(
        Router::new()
            .route("/metrics", get(health::metrics))
            .fallback(|| async { Rejection::NotFound })
            .with_state(state),
        false,
    )
}

/// A router inside the layers of [`framed`].
pub(crate) type App = crate::frame::Frame<RequestBodyLimit<CatchPanic<Router, Panicked>>>;

/// The answer to a panicked handler (tower-http's `CatchPanic`): 500, logged.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Panicked;

impl ResponseForPanic for Panicked {
    type ResponseBody = axum::body::Body;

    fn response_for_panic(&mut self, _: Box<dyn std::any::Any + Send + 'static>) -> Response {
        tracing::error!("a request handler panicked");
        IntoResponse::into_response(Rejection::Internal)
    }
}

/// The layers, applied once around the whole router rather than per route (as
/// `Router::layer` does, which boxes and clones each layer's service per request).
/// Innermost first: a panic becomes a 500, oversized bodies a 413, and the frame gives
/// every answer the OAuth shape and nosniff, counts it (`metrics`) and puts the request
/// id on it.
fn framed(inner: Router, metrics: bool) -> App {
    tower::ServiceBuilder::new()
        .layer(crate::frame::FrameLayer { metrics })
        .layer(RequestBodyLimitLayer::new(MAX_BODY))
        .layer(CatchPanicLayer::custom(Panicked))
        .service(inner)
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{Request, StatusCode, header};
    use tower::ServiceExt as _;

    use super::*;

    /// The layers of [`framed`], called as the listeners call them: a panicking handler
    /// answers 500 `server_error` and an oversized body 413, each in the OAuth shape with
    /// the frame's headers, and the service keeps answering.
    async fn boom() -> &'static str {
        panic!("a handler's bug")
    }

    #[tokio::test]
    async fn the_framed_layers_answer_a_panic_and_an_oversized_body() {
        let app = framed(
            Router::new().route("/boom", get(boom)).route(
                "/echo",
                post(|body: String| async move { body.len().to_string() }),
            ),
            false,
        );
        let call = |req: Request<Body>| app.clone().oneshot(req);
        let json = |r: Response| async move {
            let body = axum::body::to_bytes(r.into_body(), 4096).await.unwrap();
            serde_json::from_slice::<serde_json::Value>(&body).unwrap()
        };

        let r = call(Request::get("/boom").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(r.headers()["x-content-type-options"], "nosniff");
        assert!(r.headers().contains_key("x-request-id"));
        assert_eq!(json(r).await["error"], "server_error");

        let big = Request::post("/echo")
            .header(header::CONTENT_LENGTH, MAX_BODY + 1)
            .body(Body::from(vec![b'x'; MAX_BODY + 1]))
            .unwrap();
        let r = call(big).await.unwrap();
        assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(json(r).await["error"], "invalid_request");

        let small = Request::post("/echo").body(Body::from("abc")).unwrap();
        let r = call(small).await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(axum::body::to_bytes(r.into_body(), 64).await.unwrap(), "3");
    }
}
