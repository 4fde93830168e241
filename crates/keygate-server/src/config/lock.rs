//! The lock beside `keygate.toml` (`keygate.toml.lock`) that serialises the CLI's edits, so
//! that two commands never both read the old file and the second write loses the first.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::ErrorKind;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::ConfigError;

/// How long an edit waits for another to finish before giving up. An edit holds the lock
/// for milliseconds; ten seconds means something is stuck, and the admin should hear so.
pub const LOCK_WAIT: Duration = Duration::from_secs(10);

/// An exclusive `flock(2)` on `<config>.lock`, held until dropped.
///
/// The kernel releases a `flock` when its process dies, `kill -9` included, so a crashed
/// command never leaves the lock held; the file itself stays (deleting it would let two
/// commands lock two different files of one name).
#[derive(Debug)]
pub struct EditLock {
    _file: File,
}

impl EditLock {
    /// Waits up to `wait` for the lock beside `config` (a resolved path, not a symlink, so
    /// that edits through a link and through its target share one lock).
    pub fn acquire(config: &Path, wait: Duration) -> Result<Self, ConfigError> {
        let path = lock_path(config);
        let err = |e: std::io::Error| ConfigError::new(path.display().to_string(), e);
        let file = match OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
        {
            // A lock file another user created: `flock` works on a read-only descriptor.
            Err(e) if e.kind() == ErrorKind::PermissionDenied => File::open(&path).map_err(err)?,
            other => other.map_err(err)?,
        };
        let deadline = Instant::now() + wait;
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(Self { _file: file }),
                Err(TryLockError::WouldBlock) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(TryLockError::WouldBlock) => {
                    return Err(ConfigError::new(
                        path.display().to_string(),
                        format!(
                            "another keygate command has held this lock for {}s; nothing was changed",
                            wait.as_secs()
                        ),
                    ));
                }
                Err(TryLockError::Error(e)) => return Err(err(e)),
            }
        }
    }
}

/// `keygate.toml` → `keygate.toml.lock`, in the same folder.
pub fn lock_path(config: &Path) -> PathBuf {
    let mut name = config.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_waits_then_gives_up_with_one_line() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("keygate.toml");
        let first = EditLock::acquire(&config, LOCK_WAIT).unwrap();
        let err = EditLock::acquire(&config, Duration::from_millis(50)).unwrap_err();
        assert!(err.setting.ends_with("keygate.toml.lock"), "{err}");
        assert!(err.message.contains("nothing was changed"), "{err}");
        drop(first);
        EditLock::acquire(&config, Duration::ZERO).unwrap();
    }
}
