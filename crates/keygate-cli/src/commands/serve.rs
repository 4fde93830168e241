//! `keygate serve`

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::Context;
use keygate_server::{AppState, reload, serve};
use tokio::signal::unix::{SignalKind, signal};

pub(crate) fn run(path: PathBuf) -> anyhow::Result<()> {
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
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
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
            println!("keygate listening on http://{addr}");
            reload::spawn(state.clone(), rt.config.server.reload_interval);
            drop(rt);
            serve(listener, state, shutdown_signal()).await?;
            tracing::info!("stopped");
            Ok(())
        })
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    let term = async {
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        () = term => {},
        _ = tokio::signal::ctrl_c() => {},
    }
}
