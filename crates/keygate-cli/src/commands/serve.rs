//! `keygate serve`

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::Context;
use keygate_server::config::FIRST_CLIENT;
use keygate_server::telemetry::Telemetry;
use keygate_server::{AppState, Listeners, reload, serve};
use tokio::signal::unix::{SignalKind, signal};

/// How `serve` speaks: to a person, or to a log collector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Text,
    /// Every line on stderr and stdout is one JSON object.
    Json,
}

pub(crate) fn run(path: PathBuf) -> anyhow::Result<()> {
    // Before anything else: a bad KEYGATE_LOG_FORMAT must not leave a new config behind.
    let format = log_format()?;
    let created = if path.exists() {
        None
    } else {
        let key = super::init::create(&path)?;
        if format == Format::Text {
            println!(
                "No configuration at {}: created one (mode 0600) with a fresh secret and the client `{FIRST_CLIENT}`.",
                path.display()
            );
            println!("Its API key, shown only this once:\n  {key}");
        }
        Some(key)
    };
    let shown = path.display().to_string();
    let state = AppState::from_path(path)?;
    // The trace exporter is made before the async runtime: its HTTP client is a blocking one.
    let (telemetry, traces) = Telemetry::start(&state.runtime().config)?.unzip();
    // The guard flushes the log's queue when `run` returns.
    let log = init_logging(format, traces)?;
    if let (Some(key), Format::Json) = (&created, format) {
        tracing::warn!(
            path = %shown,
            client_id = FIRST_CLIENT,
            "no configuration: created one (mode 0600) with a fresh secret; the client's API key is on stdout, this once"
        );
        // The key is for whoever started the server, never for the log: stdout only.
        println!(
            "{}",
            serde_json::json!({ "client_id": FIRST_CLIENT, "api_key": key })
        );
    }
    let first_key = created;
    let served = serve_until_signalled(state, format, first_key, &log);
    if let Some(t) = telemetry {
        t.shutdown();
    }
    served
}

fn serve_until_signalled(
    state: AppState,
    format: Format,
    first_key: Option<String>,
    log: &Log,
) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(async move {
            let rt = state.runtime();
            let listeners = Listeners::bind(&rt).await?;
            let url = listeners.url()?;
            if let (Some(key), Format::Text) = (first_key, format) {
                let header = &rt.config.api_key.header;
                println!("Try it:\n  curl -s -X POST -H '{header}: {key}' {url}/login");
            }
            // Signal handlers first: a SIGHUP or SIGTERM sent as soon as the server says it
            // listens must reach them, not the default action that ends the process.
            reload::spawn(state.clone(), rt.config.server.reload_interval);
            tokio::spawn(count_dropped_log_lines(log.dropped.clone()));
            let shutdown = shutdown_signal()?;
            let metrics = listeners.metrics_url();
            match format {
                Format::Text => {
                    if let Some(m) = &metrics {
                        println!("keygate metrics on {m}");
                    }
                    println!("keygate listening on {url}");
                }
                Format::Json => {
                    tracing::info!(url = %url, metrics = metrics.as_deref(), "keygate listening");
                }
            }
            drop(rt);
            serve(listeners, state, shutdown).await?;
            tracing::info!("stopped");
            Ok(())
        })
}

/// The log's writer thread, kept for as long as the server runs.
struct Log {
    /// Flushes what is queued when dropped.
    _guard: tracing_appender::non_blocking::WorkerGuard,
    /// Lines dropped because the queue was full.
    dropped: tracing_appender::non_blocking::ErrorCounter,
}

/// Lines the log's queue holds before new ones are dropped (and counted).
const LOG_QUEUE_LINES: usize = 16_384;

/// `KEYGATE_LOG_FORMAT`: `text` (the default) or `json`.
fn log_format() -> anyhow::Result<Format> {
    match std::env::var("KEYGATE_LOG_FORMAT").as_deref() {
        Err(std::env::VarError::NotPresent) | Ok("" | "text") => Ok(Format::Text),
        Ok("json") => Ok(Format::Json),
        Ok(other) => anyhow::bail!("KEYGATE_LOG_FORMAT: `{other}` is neither `text` nor `json`"),
        Err(std::env::VarError::NotUnicode(_)) => {
            anyhow::bail!("KEYGATE_LOG_FORMAT: is not UTF-8; expected `text` or `json`")
        }
    }
}

/// Logs go to stderr, filtered by `RUST_LOG` (default `info`): human-readable text, or with
/// `KEYGATE_LOG_FORMAT=json` one JSON object per line for log collectors. Each line of a
/// request carries its `request_id` (the `request` span, as `"span":{…}`); text lines' fields
/// are written by `LogFields`, `DefaultFields`' output at less cost. Colour only on a
/// terminal, and never with `NO_COLOR` set (no-color.org). Lines are formatted where they
/// happen and written by a thread of their own through a bounded queue: a stalled stderr
/// (a full pipe, a slow collector) costs dropped lines, counted in `keygate_log_dropped_total`,
/// never a stalled request. `traces`, with `[telemetry]`, exports keygate's spans whatever
/// `RUST_LOG` says (the filter applies to the log alone).
fn init_logging<L>(format: Format, traces: Option<L>) -> anyhow::Result<Log>
where
    L: tracing_subscriber::Layer<tracing_subscriber::Registry> + Send + Sync + 'static,
{
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .buffered_lines_limit(LOG_QUEUE_LINES)
        .lossy(true)
        .thread_name("keygate-log")
        .finish(std::io::stderr());
    let dropped = writer.error_counter();
    let lines = tracing_subscriber::fmt::layer().with_writer(writer);
    let lines = match format {
        Format::Text => {
            let no_color = std::env::var_os("NO_COLOR");
            let ansi = colour(std::io::stderr().is_terminal(), no_color.as_deref());
            lines
                .fmt_fields(crate::log_fields::LogFields)
                .with_ansi(ansi)
                .boxed()
        }
        Format::Json => lines
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .boxed(),
    };
    tracing_subscriber::registry()
        .with(traces)
        .with(lines.with_filter(filter))
        .try_init()
        .context("installing the logger")?;
    Ok(Log {
        _guard: guard,
        dropped,
    })
}

/// Whether log lines carry colour codes: on a terminal, unless `NO_COLOR` is set to
/// anything but the empty string.
fn colour(terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

/// Publishes the count of dropped log lines as `keygate_log_dropped_total`.
async fn count_dropped_log_lines(dropped: tracing_appender::non_blocking::ErrorCounter) {
    let mut every = tokio::time::interval(std::time::Duration::from_secs(5));
    loop {
        every.tick().await;
        metrics::counter!("keygate_log_dropped_total").absolute(dropped.dropped_lines() as u64);
    }
}

/// A future resolving on SIGTERM or SIGINT; the handlers are installed by this call.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
    })
}

#[cfg(test)]
mod tests {
    use super::colour;

    #[test]
    fn colour_only_on_a_terminal_and_never_with_no_color() {
        assert!(colour(true, None));
        assert!(
            !colour(false, None),
            "a pipe or a file gets no escape codes"
        );
        assert!(!colour(true, Some("1".as_ref())));
        assert!(!colour(true, Some("yes".as_ref())));
        assert!(
            colour(true, Some("".as_ref())),
            "an empty NO_COLOR is unset (no-color.org)"
        );
    }
}
