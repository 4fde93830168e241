//! Picking up configuration changes without a restart: on SIGHUP, and when the file's
//! modification time or size changes (checked every `interval`). A file that does not
//! validate is refused with a logged error and the running configuration keeps serving.

use std::path::Path;
use std::time::{Duration, SystemTime};

use tokio::signal::unix::{SignalKind, signal};

use crate::state::AppState;

/// Starts watching; the task ends with the runtime.
pub fn spawn(state: AppState, interval: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let Some(path) = state.config_path().cloned() else {
            return;
        };
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "SIGHUP reload unavailable; watching the file only");
                None
            }
        };
        let mut seen = stamp(&path);
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let by_signal = tokio::select! {
                _ = tick.tick() => false,
                Some(()) = async {
                    match hup.as_mut() {
                        Some(h) => h.recv().await,
                        None => std::future::pending().await,
                    }
                } => true,
            };
            let now = stamp(&path);
            if by_signal || now != seen {
                seen = now;
                // The error is logged and counted by `reload`.
                let _ = state.reload();
            }
        }
    })
}

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}
