//! Prometheus metrics through the `metrics` facade. Labels are routes, statuses, grant
//! types and refusal reasons: never a key, token, secret or username.
//!
//! | metric | labels |
//! |---|---|
//! | `keygate_http_requests_total` | `route`, `method`, `status` |
//! | `keygate_http_request_duration_seconds` (histogram) | `route`, `method` |
//! | `keygate_tokens_issued_total` | `grant` |
//! | `keygate_tokens_refused_total` | `grant`, `reason` |
//! | `keygate_token_verifications_total` | `result`, `reason` |
//! | `keygate_rate_limited_total` | `grant` |
//! | `keygate_config_reloads_total` | `result` |

use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// The process-wide Prometheus recorder (the `metrics` facade has one global recorder).
#[derive(Clone, Debug)]
pub struct Metrics {
    handle: Option<PrometheusHandle>,
}

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

impl Metrics {
    /// Installs the recorder on first use; later calls share it. When the embedding
    /// program installed its own recorder first, `/metrics` says so instead.
    pub fn install() -> Self {
        let handle = HANDLE.get_or_init(|| {
            PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full("keygate_http_request_duration_seconds".into()),
                    LATENCY_BUCKETS,
                )
                .and_then(PrometheusBuilder::install_recorder)
                .map_err(|e| tracing::warn!(error = %e, "metrics recorder not installed"))
                .ok()
        });
        Self {
            handle: handle.clone(),
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        match &self.handle {
            Some(h) => {
                h.run_upkeep();
                h.render()
            }
            None => "# another metrics recorder is installed in this process\n".into(),
        }
    }
}

/// The `method` label: one of the standard methods, or `other`, so that requests with
/// made-up methods cannot add series (SPEC §9: labels from fixed sets).
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "other",
    }
}

/// The `route` label: the matched route template, from the router's fixed set, as a
/// `&'static str` so that no label is allocated per request.
fn route_label(path: Option<&MatchedPath>) -> &'static str {
    const ROUTES: &[&str] = &[
        "/login",
        "/logout",
        "/token",
        "/revoke",
        "/introspect",
        "/verify",
        "/userinfo",
        "/.well-known/jwks.json",
        "/.well-known/oauth-authorization-server",
        "/.well-known/openid-configuration",
        "/openapi.json",
        "/healthz",
        "/readyz",
        "/metrics",
    ];
    match path.map(MatchedPath::as_str) {
        None => "unmatched",
        Some(p) => ROUTES
            .iter()
            .find(|r| **r == p)
            .copied()
            .unwrap_or(if p.starts_with("/docs") {
                "/docs"
            } else {
                "other"
            }),
    }
}

/// The `status` label: the three digits, from a table made once.
fn status_label(status: axum::http::StatusCode) -> &'static str {
    static LABELS: std::sync::OnceLock<Vec<&'static str>> = std::sync::OnceLock::new();
    let labels = LABELS.get_or_init(|| {
        (100..1000u16)
            .map(|s| &*Box::leak(s.to_string().into_boxed_str()))
            .collect()
    });
    labels
        .get(usize::from(status.as_u16().saturating_sub(100)))
        .copied()
        .unwrap_or("other")
}

/// Counts and times every request by its route template (`/verify`, not the raw URI,
/// so query strings never reach a label).
pub(crate) async fn track(req: Request, next: Next) -> Response {
    let route = route_label(req.extensions().get::<MatchedPath>());
    let method = method_label(req.method());
    let start = Instant::now();
    let response = next.run(req).await;
    let status = status_label(response.status());
    metrics::histogram!("keygate_http_request_duration_seconds", "route" => route, "method" => method)
        .record(start.elapsed().as_secs_f64());
    metrics::counter!("keygate_http_requests_total", "route" => route, "method" => method, "status" => status)
        .increment(1);
    response
}
