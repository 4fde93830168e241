//! `GET /healthz` (the process answers), `GET /readyz` (it should get traffic) and
//! `GET /metrics` (Prometheus text).

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::state::AppState;

#[utoipa::path(get, path = "/healthz", tag = "operations", summary = "Liveness",
    responses((status = 200, description = "`{\"status\": \"ok\"}`", body = Object)))]
pub(super) async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// 503 while shutting down or when the revocation store cannot be reached.
#[utoipa::path(get, path = "/readyz", tag = "operations", summary = "Readiness",
    responses(
        (status = 200, description = "`{\"status\": \"ready\"}`", body = Object),
        (status = 503, description = "`draining`; `store_unavailable` (the revocation list is out of sync with the store); `revocations_pending` (revocations made here wait for the store); `store_degraded` (the store cannot take writes); `directory_unavailable` (the directory's database cannot be read)", body = Object),
    ))]
pub(super) async fn readyz(State(state): State<AppState>) -> Response {
    match readiness(&state) {
        Ok(()) => Json(json!({"status": "ready"})).into_response(),
        Err(status) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": status})),
        )
            .into_response(),
    }
}

/// Whether this replica should get traffic, or the word `/readyz` answers 503 with.
fn readiness(state: &AppState) -> Result<(), &'static str> {
    if state.is_draining() {
        return Err("draining");
    }
    // `store_unavailable`: the local copy of the revocation list is out of sync;
    // `revocations_pending`: revocations applied here wait for the store;
    // `store_degraded`: the store's shard holding this deployment does not answer.
    if let Some(status) = state.revocations().readiness() {
        return Err(status);
    }
    // `directory_unavailable`: the last read of the directory's change log failed; the
    // copy still authenticates until `directory.max_staleness`.
    if state
        .runtime()
        .live
        .as_ref()
        .is_some_and(|l| l.staleness() != crate::directory::Staleness::Current)
    {
        return Err("directory_unavailable");
    }
    Ok(())
}

#[utoipa::path(get, path = "/metrics", tag = "operations", summary = "Prometheus metrics",
    responses((status = 200, description = "Prometheus text exposition", content_type = "text/plain")))]
pub(super) async fn metrics(State(state): State<AppState>) -> Response {
    // Readiness as a series, read at each scrape: what alerts and dashboards watch.
    metrics::gauge!("keygate_ready").set(if readiness(&state).is_ok() { 1.0 } else { 0.0 });
    let mut response = state.metrics().render().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}
