//! `keygate serve`

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::Context;
use keygate_server::config::FIRST_CLIENT;
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
    let format = init_logging()?;
    let first_key = if path.exists() {
        None
    } else {
        let key = super::init::create(&path)?;
        match format {
            Format::Text => {
                println!(
                    "No configuration at {}: created one (mode 0600) with a fresh secret and the client `{FIRST_CLIENT}`.",
                    path.display()
                );
                println!("Its API key, shown only this once:\n  {key}");
            }
            Format::Json => {
                tracing::warn!(
                    path = %path.display(),
                    client_id = FIRST_CLIENT,
                    "no configuration: created one (mode 0600) with a fresh secret; the client's API key is on stdout, this once"
                );
                // The key is for whoever started the server, never for the log: stdout only.
                println!(
                    "{}",
                    serde_json::json!({ "client_id": FIRST_CLIENT, "api_key": key })
                );
            }
        }
        Some(key)
    };
    let state = AppState::from_path(path)?;
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

/// Logs go to stderr, filtered by `RUST_LOG` (default `info`): human-readable text, or with
/// `KEYGATE_LOG_FORMAT=json` one JSON object per line for log collectors. Each line of a
/// request carries its `request_id` (the `request` span, as `"span":{…}`).
fn init_logging() -> anyhow::Result<Format> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match std::env::var("KEYGATE_LOG_FORMAT").as_deref() {
        Err(std::env::VarError::NotPresent) | Ok("" | "text") => {
            builder.with_ansi(std::io::stderr().is_terminal()).init();
            Ok(Format::Text)
        }
        Ok("json") => {
            builder
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_span_list(false)
                .init();
            Ok(Format::Json)
        }
        Ok(other) => anyhow::bail!("KEYGATE_LOG_FORMAT: `{other}` is neither `text` nor `json`"),
        Err(std::env::VarError::NotUnicode(_)) => {
            anyhow::bail!("KEYGATE_LOG_FORMAT: is not UTF-8; expected `text` or `json`")
        }
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
