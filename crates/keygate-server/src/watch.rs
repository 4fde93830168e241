//! Watching files for a change: on SIGHUP, and by their modification time, size and
//! inode checked on a timer. The configuration reload ([`crate::reload`]) and the TLS
//! certificate pair ([`crate::tls`]) both run on it. No HTTP, no server state: the caller
//! says which paths and what to run.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use tokio::signal::unix::{SignalKind, signal};

/// Runs `on_change(by_signal)` on the blocking pool on SIGHUP and whenever one of
/// `paths()` changes (modification time, size or inode, checked every `interval`; zero:
/// SIGHUP only). The files are first looked at before this returns: a change made after
/// it is never taken for the starting state.
pub(crate) fn watch_files(
    interval: Duration,
    paths: impl Fn() -> Vec<PathBuf> + Send + 'static,
    on_change: impl Fn(bool) + Clone + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    // Registered before returning, so a SIGHUP sent once the server is up never meets the
    // default action (which ends the process).
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "SIGHUP reload unavailable; watching the files only");
            None
        }
    };
    let mut seen = stamp(&paths());
    tokio::spawn(async move {
        let mut tick = (!interval.is_zero()).then(|| {
            let mut t = tokio::time::interval(interval);
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            t
        });
        loop {
            let by_signal = tokio::select! {
                _ = async {
                    match tick.as_mut() {
                        Some(t) => t.tick().await,
                        None => std::future::pending().await,
                    }
                } => false,
                Some(()) = async {
                    match hup.as_mut() {
                        Some(h) => h.recv().await,
                        None => std::future::pending().await,
                    }
                } => true,
            };
            let now = stamp(&paths());
            if by_signal || now != seen {
                seen = now;
                let on_change = on_change.clone();
                let _ = tokio::task::spawn_blocking(move || on_change(by_signal)).await;
            }
        }
    })
}

/// What tells one version of a file from the next: modification time, size, and the file
/// itself (device and inode).
type Stamp = (SystemTime, u64, u64, u64);

fn stamp(paths: &[PathBuf]) -> Vec<Option<Stamp>> {
    use std::os::unix::fs::MetadataExt as _;
    paths
        .iter()
        .map(|p| {
            let meta = std::fs::metadata(p).ok()?;
            Some((meta.modified().ok()?, meta.len(), meta.dev(), meta.ino()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::stamp;

    #[test]
    fn a_file_replaced_by_rename_is_a_change_even_with_the_same_time_and_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keygate.toml");
        std::fs::write(&path, "a = 1\n").unwrap();
        let modified = std::fs::metadata(&path).unwrap().modified().unwrap();
        let before = stamp(std::slice::from_ref(&path));
        // Same length, same modification time: only the file itself differs, as when an
        // edit lands within one tick of a filesystem's coarse clock.
        let tmp = dir.path().join("keygate.toml.new");
        std::fs::write(&tmp, "a = 2\n").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&tmp)
            .unwrap()
            .set_modified(modified)
            .unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        let after = stamp(std::slice::from_ref(&path));
        assert_eq!(
            before[0].map(|s| (s.0, s.1)),
            after[0].map(|s| (s.0, s.1)),
            "time and size alike"
        );
        assert_ne!(before, after, "the replaced file is seen");
    }
}
