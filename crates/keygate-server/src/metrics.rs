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
//! | `keygate_verified_cache_total` | `result` (`hit`, `miss`) |
//! | `keygate_rate_limited_total` | `grant` |
//! | `keygate_config_reloads_total` | `result` (`ok`, `refused`) |
//! | `keygate_tls_reloads_total` | `result` (`ok`, `refused`) |
//! | `keygate_quota_refused_total` | `route` |
//! | `keygate_audit_events_total` | `event` |
//! | `keygate_audit_dropped_total` | |
//! | `keygate_trace_spans_dropped_total` | |
//! | `keygate_log_dropped_total` (counted by `keygate serve`'s log writer) | |
//! | `keygate_directory_changes_total` | `result` (`applied`, `error`) |
//! | `keygate_store_in_sync` (gauge: 1 while the revocation copy follows the store) | |
//! | `keygate_ready` (gauge: 1 while `/readyz` answers 200, read at each scrape) | |
//!
//! docs/operations.md says what each means; a test holds this table, that one and the code
//! to the same names. Alerting and recording rules over these, and a Grafana dashboard,
//! ship in `deploy/`.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;

use axum::http::{Method, StatusCode};
use metrics::{Counter, Histogram};
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
                .inspect(start_upkeep)
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

/// Histogram samples wait in a lock-free buffer until upkeep folds them into their buckets;
/// without it, a server nobody scrapes would keep every request's sample. Every five
/// seconds, as the exporter's own `install` does, on a thread of its own.
fn start_upkeep(handle: &PrometheusHandle) {
    let handle = handle.clone();
    let spawned = std::thread::Builder::new()
        .name("keygate-metrics".into())
        .spawn(move || {
            loop {
                std::thread::sleep(Duration::from_secs(5));
                handle.run_upkeep();
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "metrics upkeep thread not started; /metrics scrapes do it");
    }
}

/// True when keygate's own recorder is the process's: its handles stay valid for the
/// life of the process and may be kept.
fn recorder_is_ours() -> bool {
    HANDLE.get().is_some_and(Option::is_some)
}

/// The `method` label: one of the standard methods, or `other`, so that requests with
/// made-up methods cannot add series (docs/security.md: bounded by configuration, never by input).
pub(crate) const METHODS: [&str; 10] = [
    "GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "CONNECT", "TRACE", "other",
];

/// The index in [`METHODS`] of a request's method.
pub(crate) fn method_index(method: &Method) -> u8 {
    match *method {
        Method::GET => 0,
        Method::POST => 1,
        Method::PUT => 2,
        Method::DELETE => 3,
        Method::HEAD => 4,
        Method::OPTIONS => 5,
        Method::PATCH => 6,
        Method::CONNECT => 7,
        Method::TRACE => 8,
        _ => 9,
    }
}

/// The `route` label: the route, from the router's fixed set (`unmatched` for any other
/// path), so that no label is allocated per request and neither made-up paths nor query
/// strings reach a label. The admin API's routes are named by their templates.
const ROUTES: [&str; 21] = [
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
    "/docs",
    "/admin/v1/{collection}",
    "/admin/v1/{collection}/{id}",
    "/admin/v1/{collection}/{id}/rotate",
    "/admin/v1/{collection}/{id}/revoke",
    "/admin/v1/{collection}/{id}/password",
    "unmatched",
];

/// The index in [`ROUTES`] of a request's path. Every other route is a fixed path, and the
/// admin API's are told apart by their segments, so the path names its route without the
/// router's `MatchedPath` (the frame runs outside the router).
pub(crate) fn route_index(path: &str) -> u8 {
    const UNMATCHED: u8 = 20;
    if let Some(rest) = path.strip_prefix("/admin/v1/") {
        let mut segments = rest.split('/');
        let named = segments.next().is_some_and(|s| !s.is_empty());
        return match (named, segments.next(), segments.next(), segments.next()) {
            (true, None, _, _) => 15,
            (true, Some(id), None, _) if !id.is_empty() => 16,
            (true, Some(id), Some(action), None) if !id.is_empty() => match action {
                "rotate" => 17,
                "revoke" => 18,
                "password" => 19,
                _ => UNMATCHED,
            },
            _ => UNMATCHED,
        };
    }
    match ROUTES[..14].iter().position(|r| *r == path) {
        Some(i) => i as u8,
        None if path == "/docs" || path.starts_with("/docs/") => 14,
        None => UNMATCHED,
    }
}

/// The `route` label of a [`route_index`].
pub(crate) fn route_label(route: u8) -> &'static str {
    ROUTES[usize::from(route)]
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

/// The handles of the per-request series, kept per worker thread: looking a series up
/// in the recorder hashes its name and labels, which was a measurable part of a request.
/// Bounded by the fixed label sets (routes × methods × statuses keygate answers with).
#[derive(Default)]
struct Handles {
    durations: HashMap<(u8, u8), Histogram, foldhash::fast::RandomState>,
    requests: HashMap<(u8, u8, u16), Counter, foldhash::fast::RandomState>,
    /// Other counters, by the addresses of their name and label values (all `'static`).
    counters: HashMap<[usize; 4], Counter, foldhash::fast::RandomState>,
}

thread_local! {
    static HANDLES: RefCell<Handles> = RefCell::default();
}

/// Counts and times one request by its route template (`/verify`, not the raw URI).
pub(crate) fn record_request(route: u8, method: u8, status: StatusCode, elapsed: Duration) {
    let (route_label, method_label) = (ROUTES[usize::from(route)], METHODS[usize::from(method)]);
    let histogram = || metrics::histogram!("keygate_http_request_duration_seconds", "route" => route_label, "method" => method_label);
    let counter = || metrics::counter!("keygate_http_requests_total", "route" => route_label, "method" => method_label, "status" => status_label(status));
    if !recorder_is_ours() {
        histogram().record(elapsed.as_secs_f64());
        counter().increment(1);
        return;
    }
    HANDLES.with_borrow_mut(|h| {
        h.durations
            .entry((route, method))
            .or_insert_with(histogram)
            .record(elapsed.as_secs_f64());
        h.requests
            .entry((route, method, status.as_u16()))
            .or_insert_with(counter)
            .increment(1);
    });
}

/// Adds one to the counter `name` with these labels (at most three, from fixed sets), its
/// handle kept per worker thread. A name is always used with the same label names.
pub(crate) fn increment<const N: usize>(
    name: &'static str,
    labels: [(&'static str, &'static str); N],
) {
    const { assert!(N <= 3, "at most three labels") };
    let counter = || {
        let labels: Vec<metrics::Label> = labels
            .iter()
            .map(|&(k, v)| metrics::Label::from_static_parts(k, v))
            .collect();
        metrics::counter!(name, labels)
    };
    if !recorder_is_ours() {
        counter().increment(1);
        return;
    }
    let mut key = [name.as_ptr() as usize ^ (name.len() << 48), 0, 0, 0];
    for (slot, (_, value)) in key[1..].iter_mut().zip(&labels) {
        *slot = value.as_ptr() as usize ^ (value.len() << 48);
    }
    HANDLES.with_borrow_mut(|h| {
        h.counters.entry(key).or_insert_with(counter).increment(1);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every metric the workspace's code names, listed in this module's table and in
    /// docs/operations.md, and nothing listed that the code does not name.
    #[test]
    fn every_metric_is_in_the_table_and_the_docs() {
        let crates = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut in_code = std::collections::BTreeSet::new();
        let mut stack = vec![
            crates.join("keygate-server/src"),
            crates.join("keygate-cli/src"),
        ];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    let text = std::fs::read_to_string(&path).unwrap();
                    for piece in text.split("\"keygate_").skip(1) {
                        let name: String = piece
                            .chars()
                            .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                            .collect();
                        let is_metric = ["_total", "_seconds", "_in_sync"]
                            .iter()
                            .any(|end| name.ends_with(end))
                            || name == "ready";
                        if is_metric && piece[name.len()..].starts_with('"') {
                            in_code.insert(format!("keygate_{name}"));
                        }
                    }
                }
            }
        }
        assert!(in_code.len() >= 15, "{in_code:?}");
        let listed = |text: &str| -> std::collections::BTreeSet<String> {
            text.lines()
                .filter_map(|l| l.trim_start_matches("//!").trim().strip_prefix("| `"))
                .filter_map(|l| l.split('`').next())
                .filter(|n| n.starts_with("keygate_"))
                .map(str::to_owned)
                .collect()
        };
        let here = listed(include_str!("metrics.rs"));
        let docs = std::fs::read_to_string(crates.join("../docs/operations.md")).unwrap();
        assert_eq!(here, in_code, "this module's table");
        assert_eq!(listed(&docs), in_code, "docs/operations.md, Metrics");
    }

    /// Paths name their route template; anything else, however made up, is `unmatched`, so
    /// no request can add a label value.
    #[test]
    fn paths_name_their_route_template_and_nothing_else_adds_a_label() {
        let cases = [
            ("/login", "/login"),
            ("/docs/index.html", "/docs"),
            ("/admin/v1/clients", "/admin/v1/{collection}"),
            ("/admin/v1/users/bob", "/admin/v1/{collection}/{id}"),
            (
                "/admin/v1/clients/billing/rotate",
                "/admin/v1/{collection}/{id}/rotate",
            ),
            (
                "/admin/v1/clients/billing/revoke",
                "/admin/v1/{collection}/{id}/revoke",
            ),
            (
                "/admin/v1/users/bob/password",
                "/admin/v1/{collection}/{id}/password",
            ),
            ("/admin/v1/", "unmatched"),
            ("/admin/v1/clients/", "unmatched"),
            ("/admin/v1/clients/billing/other", "unmatched"),
            ("/admin/v1/clients/billing/revoke/more", "unmatched"),
            ("/admin/v2/clients", "unmatched"),
            ("/nothing", "unmatched"),
        ];
        for (path, route) in cases {
            assert_eq!(route_label(route_index(path)), route, "{path}");
        }
    }
}
