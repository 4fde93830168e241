//! Picking up configuration changes without a restart: on SIGHUP, and when the
//! configuration file or the signing keyring changes (modification time, size or the file
//! itself — a replace by rename, as `keygate key …` writes, is seen even within one tick of
//! a coarse clock — checked every `interval`). A file that does not validate is refused with a logged error and the
//! running configuration keeps serving. Reading files and parsing keys runs on the
//! blocking pool, never on the workers that answer requests. The TLS certificate and key
//! are watched the same way ([`crate::tls`]).

use std::time::Duration;

use crate::state::AppState;
use crate::watch::watch_files;

/// Starts watching (`interval` zero: SIGHUP only); the task ends with the runtime.
pub fn spawn(state: AppState, interval: Duration) -> tokio::task::JoinHandle<()> {
    if state.config_path().is_none() {
        return tokio::spawn(async {});
    }
    let watched = state.clone();
    watch_files(
        interval,
        move || watched.watched_paths(),
        move |by_signal| {
            if by_signal {
                // logrotate sends SIGHUP after moving the audit file away.
                state.audit().reopen();
            }
            let cause = if by_signal { "sighup" } else { "file_changed" };
            // The outcome is logged, counted and audited by `reload_because`.
            let _ = state.reload_because(cause);
        },
    )
}
