//! [`FailedAttempts`]: counts failed credential checks per client address and per key id,
//! and answers 429 once a count reaches `limits.failed_attempts` within `limits.window`.
//!
//! Fixed windows that start at the first failure: a blocked address or id is free again
//! when its window ends, so an attacker can delay a victim's logins by at most one window
//! at a time but never lock the account for good (ASVS 6.1.1).
//!
//! With `[store] url`, the counts live in Redis and every replica sees them; this
//! replica's own counts are kept too and answer while Redis cannot be reached.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::store::RedisAttempts;

/// What a failed attempt counts against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Subject {
    /// A client address.
    Address(IpAddr),
    /// A principal named in the attempt (a `kg_` key's client id, a client id, a username).
    Principal(String),
}

impl fmt::Display for Subject {
    /// The counter's key: `ip:<address>` or `id:<principal>` (hashed again by the Redis store).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Subject::Address(ip) => write!(f, "ip:{ip}"),
            Subject::Principal(id) => write!(f, "id:{id}"),
        }
    }
}

/// Entries kept before expired windows are swept out.
const SWEEP_AT: usize = 10_000;

/// Failed-attempt counters.
#[derive(Debug)]
pub struct FailedAttempts {
    inner: Mutex<Inner>,
    shared: Option<RedisAttempts>,
}

#[derive(Debug)]
struct Inner {
    limit: u32,
    window: Duration,
    counters: HashMap<Subject, Window>,
}

#[derive(Debug, Clone, Copy)]
struct Window {
    started: Instant,
    failures: u32,
}

impl FailedAttempts {
    /// `limit` failures per `window`, counted in this process only.
    pub fn new(limit: u32, window: Duration) -> Self {
        Self {
            inner: Mutex::new(Inner {
                limit,
                window,
                counters: HashMap::new(),
            }),
            shared: None,
        }
    }

    /// Counts in Redis as well, so every replica sees every failure.
    pub fn shared(mut self, redis: RedisAttempts) -> Self {
        self.shared = Some(redis);
        self
    }

    /// `Some(retry_after)` when any of `subjects` is blocked now: by the shared counts, or
    /// by this replica's own when Redis cannot be reached.
    pub async fn blocked(&self, subjects: &[Subject], now: Instant) -> Option<Duration> {
        if let Some(shared) = &self.shared {
            let (limit, window) = self.limits();
            match shared.blocked(subjects, limit, window).await {
                Ok(blocked) => return blocked,
                Err(e) => {
                    tracing::warn!(error = %e, "attempt counters: Redis unavailable, counting locally")
                }
            }
        }
        self.blocked_locally(subjects, now)
    }

    /// Counts one failure against each of `subjects`, here and in Redis.
    pub async fn record_failure(&self, subjects: &[Subject], now: Instant) {
        self.record_locally(subjects, now);
        if let Some(shared) = &self.shared {
            let (limit, window) = self.limits();
            if let Err(e) = shared.record_failure(subjects, limit, window).await {
                tracing::warn!(error = %e, "attempt counters: Redis unavailable, counted locally");
            }
        }
    }

    /// Applies new limits from a reloaded configuration; counts are kept.
    pub fn reconfigure(&self, limit: u32, window: Duration) {
        let mut inner = self.lock();
        inner.limit = limit;
        inner.window = window;
    }

    /// `Some(retry_after)` when any of `subjects` is blocked by this replica's counts.
    pub fn blocked_locally(&self, subjects: &[Subject], now: Instant) -> Option<Duration> {
        let inner = self.lock();
        subjects
            .iter()
            .filter_map(|s| inner.counters.get(s))
            .filter(|w| w.failures >= inner.limit)
            .filter_map(|w| (w.started + inner.window).checked_duration_since(now))
            .filter(|d| !d.is_zero())
            .max()
    }

    /// Counts one failure against each of `subjects` in this replica.
    pub fn record_locally(&self, subjects: &[Subject], now: Instant) {
        let mut inner = self.lock();
        let window = inner.window;
        if inner.counters.len() >= SWEEP_AT {
            inner.counters.retain(|_, w| w.started + window > now);
        }
        for s in subjects {
            let w = inner.counters.entry(s.clone()).or_insert(Window {
                started: now,
                failures: 0,
            });
            if w.started + window <= now {
                *w = Window {
                    started: now,
                    failures: 0,
                };
            }
            w.failures = w.failures.saturating_add(1);
        }
    }

    fn limits(&self) -> (u32, Duration) {
        let inner = self.lock();
        (inner.limit, inner.window)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Every update is a single entry write; a poisoned lock holds consistent data.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_the_limit_until_the_window_ends() {
        let ip = |n: u8| Subject::Address(IpAddr::from([10, 0, 0, n]));
        let id = |s: &str| Subject::Principal(s.to_owned());
        let limits = FailedAttempts::new(3, Duration::from_secs(60));
        let t0 = Instant::now();
        for _ in 0..2 {
            limits.record_locally(&[ip(1), id("a")], t0);
        }
        assert_eq!(limits.blocked_locally(&[ip(1)], t0), None);
        limits.record_locally(&[ip(1), id("a")], t0);
        let later = t0 + Duration::from_secs(20);
        assert_eq!(
            limits.blocked_locally(&[ip(1)], later),
            Some(Duration::from_secs(40))
        );
        assert_eq!(
            limits.blocked_locally(&[id("a")], later),
            Some(Duration::from_secs(40))
        );
        assert_eq!(limits.blocked_locally(&[ip(2), id("b")], later), None);
        assert_eq!(
            limits.blocked_locally(&[ip(1)], t0 + Duration::from_secs(60)),
            None
        );
        limits.record_locally(&[ip(1)], t0 + Duration::from_secs(61));
        assert_eq!(
            limits.blocked_locally(&[ip(1)], t0 + Duration::from_secs(61)),
            None
        );
    }

    #[test]
    fn subjects_are_keyed_by_kind() {
        assert_eq!(
            Subject::Address(IpAddr::from([127, 0, 0, 1])).to_string(),
            "ip:127.0.0.1"
        );
        assert_eq!(Subject::Principal("bob".into()).to_string(), "id:bob");
    }
}
