//! `keygate serve`

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::Context;
use keygate_server::{AppState, reload, serve};
use tokio::signal::unix::{SignalKind, signal};

pub(crate) fn run(path: PathBuf) -> anyhow::Result<()> {
    // Before anything else: a bad KEYGATE_LOG_FORMAT must not leave a new config behind.
    init_logging()?;
    let first_key = if path.exists() {
        None
    } else {
        let key = super::init::create(&path)?;
        println!(
            "No configuration at {}: created one (mode 0600) with a fresh secret and the client `my-service`.",
            path.display()
        );
        println!("Its API key, shown only this once:\n  {key}");
        Some(key)
    };
    let state = AppState::from_path(path)?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(async move {
            let rt = state.runtime();
            let listener = tokio::net::TcpListener::bind(rt.listen)
                .await
                .with_context(|| format!("server.listen: cannot bind {}", rt.listen))?;
            let addr = listener.local_addr()?;
            if let Some(key) = first_key {
                let header = &rt.config.api_key.header;
                println!("Try it:\n  curl -s -X POST -H '{header}: {key}' http://{addr}/login");
            }
            // Signal handlers first: a SIGHUP or SIGTERM sent as soon as the server says it
            // listens must reach them, not the default action that ends the process.
            reload::spawn(state.clone(), rt.config.server.reload_interval);
            let shutdown = shutdown_signal()?;
            println!("keygate listening on http://{addr}");
            drop(rt);
            serve(listener, state, shutdown).await?;
            tracing::info!("stopped");
            Ok(())
        })
}

/// Logs go to stderr, filtered by `RUST_LOG` (default `info`): human-readable text, or with
/// `KEYGATE_LOG_FORMAT=json` one JSON object per line for log collectors. Each line of a
/// request carries its `request_id` (the `request` span, flattened into the object).
fn init_logging() -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match std::env::var("KEYGATE_LOG_FORMAT").as_deref() {
        Err(std::env::VarError::NotPresent) | Ok("" | "text") => {
            builder.with_ansi(std::io::stderr().is_terminal()).init()
        }
        Ok("json") => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .init(),
        Ok(other) => anyhow::bail!("KEYGATE_LOG_FORMAT: `{other}` is neither `text` nor `json`"),
        Err(std::env::VarError::NotUnicode(_)) => {
            anyhow::bail!("KEYGATE_LOG_FORMAT: is not UTF-8; expected `text` or `json`")
        }
    }
    Ok(())
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
