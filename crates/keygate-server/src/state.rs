//! [`AppState`]: what every handler shares. Cheap to clone; the configuration inside is
//! swapped whole on reload, so a request sees one consistent version from start to end.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use keygate::password::PasswordVerifier;
use keygate::revocation::MemoryRevocationStore;

use crate::audit::{AuditEvent, AuditKind, AuditLog};
use crate::config::{Config, ConfigError};
use crate::directory::{LiveCopy, Location};
use crate::limits::FailedAttempts;
use crate::metrics::Metrics;
use crate::quota::Quotas;
use crate::runtime::Runtime;
use crate::store::{RedisAttempts, RedisQuota, RedisStore, Revocations, SharedRevocations};

/// How long the replaced runtime is waited for, at most, before the requests still
/// using it are left to free it.
const RELEASE_WAIT: Duration = Duration::from_secs(30);

/// Frees a replaced runtime on a thread of its own rather than in whichever request lets
/// go of it last: freeing a million principals would stall every request queued on that
/// async worker. The thread waits for the requests still holding it (they hold it only
/// while they run) without blocking the reload's caller, which may be an async task.
fn release<T: Send + Sync + 'static>(replaced: Arc<T>) -> Option<std::thread::JoinHandle<()>> {
    let wait_and_free = move || {
        let mut replaced = replaced;
        let deadline = Instant::now() + RELEASE_WAIT;
        loop {
            match Arc::try_unwrap(replaced) {
                Ok(runtime) => return drop(runtime),
                Err(held) if Instant::now() < deadline => {
                    replaced = held;
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err(_) => return,
            }
        }
    };
    let thread = std::thread::Builder::new().name("keygate-release".into());
    // Without a thread, the last request frees it: slower for one request, never wrong.
    thread.spawn(wait_and_free).ok()
}

/// Opens `[directory]` and loads this replica's copy of it, when the configuration has
/// one. The load runs on a thread of its own with its own Tokio runtime, so that it works
/// before the server's runtime exists as well as inside it (tests); connections it made
/// are made again by the copy's own task.
fn open_directory(runtime: &Runtime) -> Result<Option<Arc<LiveCopy>>, ConfigError> {
    let config = &runtime.config.directory;
    let Some(location) = Location::of(config, &runtime.config.base_dir)? else {
        return Ok(None);
    };
    let load = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?
            .block_on(LiveCopy::load(&location, config))
            .map_err(|e| e.to_string())
    };
    let loaded = std::thread::scope(|s| {
        s.spawn(load)
            .join()
            .unwrap_or_else(|_| Err("loading the directory panicked".into()))
    });
    loaded.map(Some).map_err(|e| {
        ConfigError::new(
            "directory.url",
            format!("cannot load {}: {e}", location.describe()),
        )
    })
}

/// Refuses a file whose principals share an id with the directory: one namespace, so
/// that no token's `sub` can name two principals.
fn check_namespace(runtime: &Runtime, live: &LiveCopy) -> Result<(), ConfigError> {
    let taken = live.taken(runtime.directory.iter().map(|p| p.id.as_str()));
    match taken.first() {
        None => Ok(()),
        Some(id) => Err(ConfigError::new(
            "clients/users",
            format!(
                "`{id}` is both in the file and in the directory ({} in all); ids are one namespace: remove it from one",
                taken.len()
            ),
        )),
    }
}

/// Shared server state.
#[derive(Clone, Debug)]
pub struct AppState {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    runtime: ArcSwap<Runtime>,
    config_path: Option<PathBuf>,
    revocations: Revocations,
    attempts: FailedAttempts,
    quotas: Quotas,
    audit: AuditLog,
    passwords: PasswordVerifier,
    metrics: Metrics,
    draining: AtomicBool,
}

impl AppState {
    /// State for a validated runtime. `config_path` is where [`AppState::reload`] reads.
    pub fn new(mut runtime: Runtime, config_path: Option<PathBuf>) -> Result<Self, ConfigError> {
        if let Some(live) = open_directory(&runtime)? {
            check_namespace(&runtime, &live)?;
            if tokio::runtime::Handle::try_current().is_ok() {
                live.start();
            }
            runtime.live = Some(live);
        }
        let limits = &runtime.config.limits;
        let passwords = PasswordVerifier::new(limits.hashing_concurrency, limits.hashing_queue)
            .map_err(|e| ConfigError::new("limits", keygate::error::chain(&e)))?;
        let mut attempts = FailedAttempts::new(limits.failed_attempts, limits.window);
        attempts.set_ipv6_prefix(limits.ipv6_prefix);
        let mut quotas = Quotas::new(None);
        let issuer = runtime.issuer.policy().issuer.clone();
        let store = RedisStore::from_config(&runtime.config.store)
            .map_err(|e| ConfigError::new("store", keygate::error::chain(&e)))?;
        let revocations = match store {
            Some(redis) => {
                attempts = attempts.shared(RedisAttempts::new(redis.clone(), &issuer));
                quotas = Quotas::new(Some(Box::new(RedisQuota::new(redis.clone(), &issuer))));
                let policy = runtime.issuer.policy();
                let horizon = policy.ttl + policy.leeway + Duration::from_secs(1);
                let shared = SharedRevocations::new(
                    redis,
                    &issuer,
                    limits.revocations_per_principal,
                    horizon,
                );
                if tokio::runtime::Handle::try_current().is_ok() {
                    shared.start();
                }
                Revocations::Shared(shared)
            }
            None => Revocations::Memory(MemoryRevocationStore::with_share(
                keygate::revocation::MAX_REVOKED,
                limits.revocations_per_principal,
            )),
        };
        let audit =
            AuditLog::start(&runtime.config).map_err(|e| ConfigError::new("audit.path", e))?;
        Ok(Self {
            inner: Arc::new(Inner {
                runtime: ArcSwap::from_pointee(runtime),
                config_path,
                revocations,
                attempts,
                quotas,
                audit,
                passwords,
                metrics: Metrics::install(),
                draining: AtomicBool::new(false),
            }),
        })
    }

    /// Loads `path` and builds state from it.
    pub fn from_path(path: PathBuf) -> Result<Self, ConfigError> {
        let runtime = Config::load(&path)?;
        Self::new(runtime, Some(path))
    }

    /// The configuration in force now.
    pub fn runtime(&self) -> Arc<Runtime> {
        self.inner.runtime.load_full()
    }

    /// Re-reads the configuration file. A file that does not validate is refused and
    /// the running configuration stays.
    pub fn reload(&self) -> Result<(), ConfigError> {
        self.reload_because("requested")
    }

    /// [`AppState::reload`], saying why in the audit log (`file_changed`, `sighup`).
    pub fn reload_because(&self, cause: &str) -> Result<(), ConfigError> {
        let Some(path) = &self.inner.config_path else {
            return Ok(());
        };
        let outcome = Config::load(path).and_then(|mut runtime| {
            let current = self.runtime();
            runtime.live = current.live.clone();
            // Where the time is read belongs to the process, not to the file.
            runtime.issuer = runtime.issuer.with_clock(current.issuer.clock().clone());
            runtime.verifier = runtime
                .verifier
                .with_clock(current.verifier.clock().clone());
            if let Some(live) = &runtime.live {
                check_namespace(&runtime, live)?;
            }
            Ok(runtime)
        });
        match outcome {
            Ok(runtime) => {
                let old = self.runtime();
                let (was, now) = (&old.config, &runtime.config);
                let restart_only = [
                    ("server.listen", was.server.listen != now.server.listen),
                    (
                        "server.metrics_listen",
                        was.server.metrics_listen != now.server.metrics_listen,
                    ),
                    (
                        "server.admin_listen",
                        was.server.admin_listen != now.server.admin_listen,
                    ),
                    // The files' contents are re-read by the TLS watcher; their names are not.
                    (
                        "server.tls_cert/tls_key",
                        was.server.tls_cert != now.server.tls_cert
                            || was.server.tls_key != now.server.tls_key,
                    ),
                    (
                        "server.header_timeout",
                        was.server.header_timeout != now.server.header_timeout,
                    ),
                    (
                        "server.request_timeout",
                        was.server.request_timeout != now.server.request_timeout,
                    ),
                    (
                        "server.max_connections",
                        was.server.max_connections != now.server.max_connections,
                    ),
                    (
                        "server.shutdown_timeout",
                        was.server.shutdown_timeout != now.server.shutdown_timeout,
                    ),
                    (
                        "server.reload_interval",
                        was.server.reload_interval != now.server.reload_interval,
                    ),
                    (
                        "store.*",
                        was.store.url != now.store.url
                            || was.store.sentinels != now.store.sentinels
                            || was.store.sentinel_master != now.store.sentinel_master
                            || was.store.cluster != now.store.cluster
                            || was.store.ca_file != now.store.ca_file
                            || was.store.timeout != now.store.timeout,
                    ),
                    ("directory.*", was.directory != now.directory),
                    (
                        "token.issuer (the store's namespace)",
                        was.store.is_shared()
                            && old.issuer.policy().issuer != runtime.issuer.policy().issuer,
                    ),
                    (
                        "audit",
                        was.audit.path != now.audit.path || was.audit.buffer != now.audit.buffer,
                    ),
                    (
                        "limits.revocations_per_principal",
                        was.limits.revocations_per_principal
                            != now.limits.revocations_per_principal,
                    ),
                    (
                        "limits.hashing_*",
                        was.limits.hashing_concurrency != now.limits.hashing_concurrency
                            || was.limits.hashing_queue != now.limits.hashing_queue,
                    ),
                ];
                for (setting, _) in restart_only.iter().filter(|(_, changed)| *changed) {
                    tracing::warn!(setting, "changed; takes effect on restart");
                }
                let limits = &runtime.config.limits;
                self.inner
                    .attempts
                    .reconfigure(limits.failed_attempts, limits.window);
                self.inner.attempts.set_ipv6_prefix(limits.ipv6_prefix);
                let replaced = self.inner.runtime.swap(Arc::new(runtime));
                drop(old);
                release(replaced);
                metrics::counter!("keygate_config_reloads_total", "result" => "ok").increment(1);
                self.audit()
                    .record(&AuditEvent::new(AuditKind::ConfigReloaded).reason(cause));
                tracing::info!(path = %path.display(), "configuration reloaded");
                Ok(())
            }
            Err(e) => {
                metrics::counter!("keygate_config_reloads_total", "result" => "refused")
                    .increment(1);
                // The setting's name only: a message could quote a value.
                self.audit()
                    .record(&AuditEvent::new(AuditKind::ConfigRefused).reason(&e.setting));
                tracing::error!(error = %e, "configuration reload refused; the previous configuration keeps serving");
                Err(e)
            }
        }
    }

    /// The files whose changes trigger a reload: the configuration and, for public-key
    /// algorithms, the signing keyring.
    pub fn watched_paths(&self) -> Vec<PathBuf> {
        let mut paths: Vec<PathBuf> = self.inner.config_path.iter().cloned().collect();
        if let Some(dir) = &self.runtime().keyring_dir {
            paths.push(dir.join(crate::config::keyring::KEYRING_FILE));
        }
        paths
    }

    /// The path configuration is reloaded from.
    pub fn config_path(&self) -> Option<&PathBuf> {
        self.inner.config_path.as_ref()
    }

    pub(crate) fn revocations(&self) -> &Revocations {
        &self.inner.revocations
    }

    /// Starts keeping the local copy of the store's revocation list in sync (done by
    /// [`crate::serve`]; needs a Tokio runtime). Does nothing without a store, or twice.
    pub fn start_store_sync(&self) {
        if let Revocations::Shared(shared) = &self.inner.revocations {
            shared.start();
        }
        if let Some(live) = &self.runtime().live {
            live.start();
        }
    }

    /// Waits, at most `limit`, for the local copy of the store's revocation list to be in
    /// sync, so that the first requests after start-up find it complete rather than
    /// answering by `store.on_unavailable`. True at once without a store.
    pub async fn wait_store_sync(&self, limit: std::time::Duration) -> bool {
        match &self.inner.revocations {
            Revocations::Shared(shared) => shared.wait_synced(limit).await,
            Revocations::Memory(_) => true,
        }
    }

    pub(crate) fn attempts(&self) -> &FailedAttempts {
        &self.inner.attempts
    }

    pub(crate) fn quotas(&self) -> &Quotas {
        &self.inner.quotas
    }

    /// The audit log.
    pub fn audit(&self) -> &AuditLog {
        &self.inner.audit
    }

    pub(crate) fn passwords(&self) -> &PasswordVerifier {
        &self.inner.passwords
    }

    pub(crate) fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Marks the server as shutting down: `/readyz` answers 503 from now on.
    pub fn start_draining(&self) {
        self.inner.draining.store(true, Ordering::Release);
    }

    pub(crate) fn is_draining(&self) -> bool {
        self.inner.draining.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::mpsc;
    use std::thread::{self, ThreadId};
    use std::time::Duration;

    /// Tells, when dropped, on which thread.
    struct Dropped(mpsc::Sender<ThreadId>);

    impl Drop for Dropped {
        fn drop(&mut self) {
            let _ = self.0.send(thread::current().id());
        }
    }

    /// A replaced runtime is freed on a thread of its own, even when a request still held
    /// it at the swap: never by the request, which would be an async worker.
    #[test]
    fn a_replaced_runtime_is_freed_off_the_request_that_held_it() {
        let (tx, rx) = mpsc::channel();
        let replaced = Arc::new(Dropped(tx));
        let held = replaced.clone();
        let request = thread::spawn(move || {
            thread::sleep(Duration::from_millis(50));
            drop(held);
            thread::current().id()
        });
        let releaser = super::release(replaced).unwrap();
        let releaser_id = releaser.thread().id();
        let request_id = request.join().unwrap();
        releaser.join().unwrap();
        let freed_on = rx.recv().unwrap();
        assert_eq!(freed_on, releaser_id);
        assert_ne!(freed_on, request_id);
    }
}
