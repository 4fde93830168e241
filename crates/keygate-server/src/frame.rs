//! The frame every request runs in, as one layer: its request id (a `request` span around
//! the handler and `X-Request-Id` on the answer, see [`crate::request_id`]), what every
//! answer carries ([`crate::hardening`]) and, on the public listener, its metrics.
//!
//! One hand-written tower layer rather than three `axum::middleware::from_fn`: each of
//! those boxes its future and clones the boxed route per request, which the profile of
//! `/verify` showed as a measurable share of a request that does little else.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::Request;
use axum::http::{HeaderValue, Method};
use axum::response::Response;
use tower::{Layer, Service};
use tracing::Instrument;
use tracing::instrument::Instrumented;

/// Wraps every route (with `metrics`, its requests are counted and timed).
#[derive(Debug, Clone, Copy)]
pub(crate) struct FrameLayer {
    pub(crate) metrics: bool,
}

impl<S> Layer<S> for FrameLayer {
    type Service = Frame<S>;

    fn layer(&self, inner: S) -> Frame<S> {
        Frame {
            inner,
            metrics: self.metrics,
        }
    }
}

/// See [`FrameLayer`].
#[derive(Debug, Clone)]
pub(crate) struct Frame<S> {
    inner: S,
    metrics: bool,
}

/// What the frame keeps from the request to finish the answer.
#[derive(Debug)]
struct Pending {
    id: HeaderValue,
    docs: bool,
    /// Route and method indexes for the metrics, when counted.
    labels: Option<(u8, u8)>,
    /// Set when counted, or when the debug line will be written.
    start: Option<Instant>,
    /// Route and method for the debug line, only gathered when it is written.
    debug: Option<(&'static str, Method)>,
    span: tracing::Span,
    /// The span is exported (`crate::telemetry`): its status and outcome are recorded.
    traced: bool,
    /// The route index ([`crate::metrics::route_index`]).
    route: u8,
}

/// The inner service may answer with any body (the layers inside wrap it): the frame
/// answers with axum's.
impl<S, B> Service<Request> for Frame<S>
where
    S: Service<Request, Response = axum::http::Response<B>>,
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = FrameFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let id = crate::request_id::pick(req.headers());
        let route = crate::metrics::route_index(req.uri().path());
        let parent = if crate::telemetry::enabled() {
            crate::telemetry::sample(req.headers())
        } else {
            None
        };
        let traced = parent.is_some();
        let span = match parent {
            Some(parent) => traced_span(&req, &id, route, parent),
            None => tracing::info_span!("request", request_id = id.to_str().unwrap_or_default()),
        };
        let labels = self
            .metrics
            .then(|| (route, crate::metrics::method_index(req.method())));
        // The route, not the raw URI: a query string (which may hold an API key when
        // `api_key.query` is on) never reaches a log line.
        let debug = tracing::enabled!(tracing::Level::DEBUG)
            .then(|| (crate::metrics::route_label(route), req.method().clone()));
        let start = (labels.is_some() || debug.is_some()).then(Instant::now);
        let docs = req.uri().path().starts_with("/docs");
        FrameFuture {
            inner: self.inner.call(req).instrument(span.clone()),
            pending: Some(Pending {
                id,
                docs,
                labels,
                start,
                debug,
                span,
                traced,
                route,
            }),
        }
    }
}

/// The request span of a sampled request as an OpenTelemetry server span
/// (`crate::telemetry`): named after the route (`POST /login`), the child of `parent` (the
/// caller's `traceparent`, or none), with the fields the request fills in as it goes. Method and route come from fixed sets: never the raw path.
fn traced_span(
    req: &Request,
    id: &HeaderValue,
    route: u8,
    parent: opentelemetry::Context,
) -> tracing::Span {
    use tracing::field::Empty;
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    let method = crate::metrics::METHODS[usize::from(crate::metrics::method_index(req.method()))];
    let route = crate::metrics::route_label(route);
    let span = tracing::info_span!(
        "request",
        request_id = id.to_str().unwrap_or_default(),
        otel.name = format!("{method} {route}"),
        otel.kind = "server",
        http.request.method = method,
        http.route = route,
        http.response.status_code = Empty,
        otel.status_code = Empty,
        keygate.outcome = Empty,
        keygate.refusal = Empty,
        keygate.grant = Empty,
        keygate.client_id = Empty,
        keygate.kid = Empty,
    );
    // The caller's context, or none: a root span.
    let _ = span.set_parent(parent);
    span
}

/// `keygate.outcome`: what became of the request, from its route and status.
fn outcome(route: &str, status: axum::http::StatusCode) -> &'static str {
    match status.as_u16() {
        429 => "rate_limited",
        500.. => "error",
        400.. => "refused",
        200..=299 => match route {
            "/login" | "/token" => "issued",
            "/verify" | "/userinfo" => "verified",
            "/introspect" => "introspected",
            "/logout" | "/revoke" => "revoked",
            _ => "ok",
        },
        _ => "ok",
    }
}

pin_project_lite::pin_project! {
    /// The answer of [`Frame`]: the inner answer, finished.
    pub(crate) struct FrameFuture<F> {
        #[pin]
        inner: Instrumented<F>,
        pending: Option<Pending>,
    }
}

impl<F, B, E> Future for FrameFuture<F>
where
    F: Future<Output = Result<axum::http::Response<B>, E>>,
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = ready!(this.inner.poll(cx))?.map(Body::new);
        let Some(pending) = this.pending.take() else {
            // Polled again after it finished: a caller's bug, answered as futures do.
            panic!("FrameFuture polled after completion");
        };
        let mut response = crate::hardening::harden(response, pending.docs);
        if pending.traced {
            let status = response.status();
            let route = crate::metrics::route_label(pending.route);
            pending
                .span
                .record("http.response.status_code", status.as_u16())
                .record("keygate.outcome", outcome(route, status));
            if status.is_server_error() {
                pending.span.record("otel.status_code", "ERROR");
            }
        }
        let elapsed = pending.start.map(|s| s.elapsed());
        if let (Some((route, method)), Some(elapsed)) = (pending.labels, elapsed) {
            crate::metrics::record_request(route, method, response.status(), elapsed);
        }
        if let (Some((route, method)), Some(elapsed)) = (pending.debug, elapsed) {
            pending.span.in_scope(|| {
                tracing::debug!(
                    %method,
                    route,
                    status = response.status().as_u16(),
                    micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
                    "request finished"
                );
            });
        }
        response
            .headers_mut()
            .insert(crate::request_id::HEADER, pending.id);
        Poll::Ready(Ok(response))
    }
}
