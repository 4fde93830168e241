//! OpenTelemetry traces (`[telemetry]`, docs/operations.md#traces): one server span per
//! request, a child of the caller's trace when the request carries a W3C `traceparent`
//! (sampled at `sample_ratio` otherwise), exported over OTLP/HTTP (protobuf) to
//! `{otlp_endpoint}/v1/traces`.
//!
//! Spans come from `tracing`: the request span of `frame.rs`, with the attributes that
//! [`record`] adds as the request goes (grant, client, refusal). Only keygate's own spans
//! are exported, never log events, so no line written for the log becomes an attribute.
//! Attributes are route templates, fixed words and ids of existing principals: never a
//! key, secret, password or token.
//!
//! Export never slows a request: an ended span goes into a bounded queue
//! ([`QUEUE_SPANS`]); a thread of its own sends batches; a full queue (the receiver slow,
//! down or absent) drops the span and counts it in `keygate_trace_spans_dropped_total`,
//! and a batch the receiver refuses is counted there too.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::time::{Duration, Instant};

use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    Sampler, SdkTracerProvider, Span, SpanData, SpanExporter as _, SpanProcessor,
};
use tracing_subscriber::Layer;
use tracing_subscriber::registry::LookupSpan;

use crate::config::{Config, ConfigError};

/// Spans waiting for the exporter; more are dropped and counted.
pub const QUEUE_SPANS: usize = 4096;
/// Spans sent in one request to the receiver.
const BATCH_SPANS: usize = 512;
/// How long an ended span may wait for its batch to fill.
const BATCH_DELAY: Duration = Duration::from_secs(1);
/// One export request, then it counts as failed.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether spans are exported: read by the request path to skip what only tracing needs.
static ENABLED: AtomicBool = AtomicBool::new(false);

/// True when `[telemetry] otlp_endpoint` is set and the exporter runs.
#[inline]
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Records `value` as attribute `field` of the current request's span, when traces are on.
/// `field` must be one the request span declares (see `frame.rs`); an untraced request's
/// span declares none, and the call changes nothing.
#[inline]
pub(crate) fn record(field: &'static str, value: &str) {
    if enabled() {
        tracing::Span::current().record(field, value);
    }
}

/// Whether this request is traced, and under which parent: `Some` with the caller's
/// context when its W3C `traceparent` is sampled, `Some` with no parent for a root drawn at
/// `sample_ratio`, `None` otherwise (an unsampled `traceparent`, or a root not drawn). The
/// decision is made here, before any span exists, so that a request that is not recorded
/// costs what it costs with traces off; the SDK then records every span it is given.
pub(crate) fn sample(headers: &axum::http::HeaderMap) -> Option<Context> {
    use opentelemetry::trace::TraceContextExt as _;
    if headers.contains_key("traceparent") {
        let parent = parent_of(headers);
        let remote = parent.span().span_context().clone();
        if remote.is_valid() {
            return remote.is_sampled().then_some(parent);
        }
    }
    let ratio = f64::from_bits(RATIO.load(Ordering::Relaxed));
    (ratio > 0.0 && fastrand::f64() < ratio).then(Context::new)
}

/// `sample_ratio`, as the bits of an `f64`.
static RATIO: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// True inside a request whose span is recorded: only there are child spans (store calls)
/// made, so that none is made for a request that is not traced.
pub(crate) fn in_traced_request() -> bool {
    enabled()
        && tracing::Span::current()
            .metadata()
            .is_some_and(|m| m.fields().field("otel.kind").is_some())
}

/// The caller's trace context from the W3C `traceparent` / `tracestate` headers; the empty
/// context when there is none (or it is malformed: a root span then).
fn parent_of(headers: &axum::http::HeaderMap) -> Context {
    struct Headers<'a>(&'a axum::http::HeaderMap);
    impl Extractor for Headers<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            self.0.get(key).and_then(|v| v.to_str().ok())
        }
        fn keys(&self) -> Vec<&str> {
            self.0.keys().map(axum::http::HeaderName::as_str).collect()
        }
    }
    TraceContextPropagator::new().extract(&Headers(headers))
}

/// The running exporter; flushes what is queued when shut down or dropped.
#[derive(Debug)]
pub struct Telemetry {
    provider: SdkTracerProvider,
}

impl Telemetry {
    /// The `tracing` layer exporting keygate's spans as `config` asks, or `None` when
    /// `[telemetry] otlp_endpoint` is unset. Call it outside an async runtime (the
    /// exporter's HTTP client is a blocking one, made on its own thread).
    pub fn start<S>(
        config: &Config,
    ) -> Result<Option<(Self, impl Layer<S> + Send + Sync + 'static)>, ConfigError>
    where
        S: tracing::Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
    {
        let t = &config.telemetry;
        let Some(endpoint) = t.otlp_endpoint.as_deref() else {
            return Ok(None);
        };
        let url = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
        let mut exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(url)
            .with_timeout(EXPORT_TIMEOUT)
            .build()
            .map_err(|e| ConfigError::new("telemetry.otlp_endpoint", e.to_string()))?;
        let resource = Resource::builder()
            .with_service_name(t.service_name.clone())
            .build();
        exporter.set_resource(&resource);
        let processor = QueueProcessor::start(exporter)
            .map_err(|e| ConfigError::new("telemetry", format!("starting the exporter: {e}")))?;
        // The sampling decision is [`sample`]'s: every span made is recorded.
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_sampler(Sampler::AlwaysOn)
            .with_resource(resource)
            .build();
        let tracer = provider.tracer("keygate");
        // keygate's trace spans only (those declaring `otel.kind`): no log event becomes a
        // span event, no span of a library, no request span that was not sampled.
        let layer = tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_filter(tracing_subscriber::filter::filter_fn(|meta| {
                meta.is_span()
                    && meta.target().starts_with("keygate")
                    && meta.fields().field("otel.kind").is_some()
            }));
        RATIO.store(t.sample_ratio.to_bits(), Ordering::Relaxed);
        ENABLED.store(true, Ordering::Relaxed);
        Ok(Some((Self { provider }, layer)))
    }

    /// Sends what is queued (bounded by the export timeout) and stops the exporter.
    pub fn shutdown(self) {
        ENABLED.store(false, Ordering::Relaxed);
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!(error = %e, "trace exporter did not shut down cleanly");
        }
    }
}

/// A span processor with a bounded queue and a counted drop: the SDK's batch processor
/// keeps its drop count to itself (it logs it once), and an operator needs the number
/// as a metric. Batches are sent by one thread, so a slow receiver costs queue room only.
#[derive(Debug)]
struct QueueProcessor {
    sender: Mutex<Option<SyncSender<Message>>>,
    worker: Mutex<Option<std::thread::JoinHandle<()>>>,
}

enum Message {
    Span(Box<SpanData>),
    /// Send what is queued, then answer.
    Flush(SyncSender<()>),
}

fn dropped(spans: u64) {
    metrics::counter!("keygate_trace_spans_dropped_total").increment(spans);
}

impl QueueProcessor {
    fn start(exporter: opentelemetry_otlp::SpanExporter) -> std::io::Result<Self> {
        let (sender, receiver) = std::sync::mpsc::sync_channel(QUEUE_SPANS);
        let worker = std::thread::Builder::new()
            .name("keygate-traces".into())
            .spawn(move || export_batches(&receiver, &exporter))?;
        Ok(Self {
            sender: Mutex::new(Some(sender)),
            worker: Mutex::new(Some(worker)),
        })
    }

    fn sender(&self) -> Option<SyncSender<Message>> {
        self.sender
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

impl SpanProcessor for QueueProcessor {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        let Some(sender) = self.sender() else {
            return dropped(1);
        };
        match sender.try_send(Message::Span(Box::new(span))) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => dropped(1),
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        let Some(sender) = self.sender() else {
            return Err(OTelSdkError::AlreadyShutdown);
        };
        let (done, wait) = std::sync::mpsc::sync_channel(1);
        sender
            .send(Message::Flush(done))
            .map_err(|_| OTelSdkError::AlreadyShutdown)?;
        wait.recv_timeout(EXPORT_TIMEOUT * 2)
            .map_err(|_| OTelSdkError::Timeout(EXPORT_TIMEOUT * 2))
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        // Closing the queue ends the worker once it has sent what it holds.
        drop(
            self.sender
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take(),
        );
        let worker = self
            .worker
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        let Some(worker) = worker else {
            return Err(OTelSdkError::AlreadyShutdown);
        };
        let deadline = Instant::now() + timeout;
        while !worker.is_finished() {
            if Instant::now() >= deadline {
                return Err(OTelSdkError::Timeout(timeout));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = worker.join();
        Ok(())
    }
}

/// The exporter thread: sends a batch when it is full or its first span has waited
/// [`BATCH_DELAY`], and what is left when the queue closes.
fn export_batches(receiver: &Receiver<Message>, exporter: &opentelemetry_otlp::SpanExporter) {
    let mut batch: Vec<SpanData> = Vec::with_capacity(BATCH_SPANS);
    let mut since: Option<Instant> = None;
    let send = |batch: &mut Vec<SpanData>| {
        if batch.is_empty() {
            return;
        }
        let spans = std::mem::replace(batch, Vec::with_capacity(BATCH_SPANS));
        let n = spans.len() as u64;
        // The OTLP exporter's future does its blocking HTTP call when polled.
        if let Err(e) = futures_executor::block_on(exporter.export(spans)) {
            dropped(n);
            tracing::debug!(error = %e, spans = n, "trace export failed");
        }
    };
    loop {
        let wait = since.map_or(BATCH_DELAY, |t| BATCH_DELAY.saturating_sub(t.elapsed()));
        match receiver.recv_timeout(wait) {
            Ok(Message::Span(span)) => {
                since.get_or_insert_with(Instant::now);
                batch.push(*span);
                if batch.len() >= BATCH_SPANS {
                    send(&mut batch);
                    since = None;
                }
            }
            Ok(Message::Flush(done)) => {
                send(&mut batch);
                since = None;
                let _ = done.send(());
            }
            Err(RecvTimeoutError::Timeout) => {
                send(&mut batch);
                since = None;
            }
            Err(RecvTimeoutError::Disconnected) => {
                send(&mut batch);
                let _ = exporter.shutdown();
                return;
            }
        }
    }
}
