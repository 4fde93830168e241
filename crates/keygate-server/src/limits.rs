//! [`FailedAttempts`]: counts credential attempts per [`Subject`] and answers 429 once a
//! count reaches `limits.failed_attempts` within `limits.window`.
//!
//! Checking and counting are one step, taken *before* any hashing ([`FailedAttempts::begin`]):
//! every attempt counts while its credential is checked and stays counted only when it
//! failed ([`FailedAttempts::succeeded`] takes a good one back). So N concurrent wrong
//! passwords get at most `failed_attempts` answers other than 429, however they interleave
//! (SPEC §9).
//!
//! Fixed windows that start at the first attempt: a blocked subject is free again when its
//! window ends, so an attacker can delay a victim by at most one window at a time but never
//! lock it out for good (ASVS 6.1.1). Who counts against what:
//! - an API key (or a client secret, which is one): the sending address only. Keys carry
//!   256 random bits and cannot be guessed, so nobody gains from counting them per client,
//!   and a stranger who could must not be able to lock a genuine client out.
//! - a username: the address, and the (username, address) pair.
//!
//! In memory the counters are bounded ([`MAX_SUBJECTS`]) and keyed by a digest, so neither
//! the number nor the size of what requests send grows them. With `[store] url` the counts
//! live in Redis and every replica sees them; this replica's own counts answer while Redis
//! cannot be reached.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::store::RedisAttempts;

/// Subjects counted in memory at once; past it, the oldest windows make room.
pub const MAX_SUBJECTS: usize = 100_000;

/// What an attempt counts against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Subject {
    /// A client address.
    Address(IpAddr),
    /// A username tried from an address.
    UserAt(String, IpAddr),
}

impl fmt::Display for Subject {
    /// The counter's key: `ip:<address>` or `user:<name>@<address>` (hashed before it is
    /// stored, here and in Redis).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Subject::Address(ip) => write!(f, "ip:{ip}"),
            Subject::UserAt(name, ip) => write!(f, "user:{name}@{ip}"),
        }
    }
}

impl Subject {
    /// The fixed-size key a counter is stored under: a username of 64 KiB costs what one
    /// of 5 bytes costs.
    fn digest(&self) -> [u8; 16] {
        let full = Sha256::digest(self.to_string().as_bytes());
        let mut key = [0u8; 16];
        key.copy_from_slice(&full[..16]);
        key
    }
}

/// Attempt counters.
#[derive(Debug)]
pub struct FailedAttempts {
    inner: Mutex<Inner>,
    shared: Option<RedisAttempts>,
}

#[derive(Debug)]
struct Inner {
    limit: u32,
    window: Duration,
    counters: HashMap<[u8; 16], Window>,
    /// Windows in the order they started, to expire and evict the oldest first without
    /// scanning the map. An entry whose window restarted since is skipped when popped.
    order: VecDeque<([u8; 16], Instant)>,
}

#[derive(Debug, Clone, Copy)]
struct Window {
    started: Instant,
    attempts: u32,
}

impl FailedAttempts {
    /// `limit` attempts per `window`, counted in this process only.
    pub fn new(limit: u32, window: Duration) -> Self {
        Self {
            inner: Mutex::new(Inner {
                limit,
                window,
                counters: HashMap::new(),
                order: VecDeque::new(),
            }),
            shared: None,
        }
    }

    /// Counts in Redis as well, so every replica sees every attempt.
    pub fn shared(mut self, redis: RedisAttempts) -> Self {
        self.shared = Some(redis);
        self
    }

    /// Checks and counts one attempt against every subject, as one step: `Err(retry_after)`
    /// (and nothing counted) when one of them has used up its attempts.
    pub async fn begin(&self, subjects: &[Subject], now: Instant) -> Result<(), Duration> {
        if let Some(shared) = &self.shared {
            let (limit, window) = {
                let inner = self.lock();
                (inner.limit, inner.window)
            };
            match shared.begin(subjects, limit, window).await {
                Ok(outcome) => {
                    if outcome.is_ok() {
                        // Kept here too, to answer from while Redis cannot be reached.
                        self.lock().add(subjects, now);
                    }
                    return outcome;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "attempt counters: Redis unavailable, counting locally");
                }
            }
        }
        let mut inner = self.lock();
        if let Some(after) = inner.blocked(subjects, now) {
            return Err(after);
        }
        inner.add(subjects, now);
        Ok(())
    }

    /// The attempt begun for `subjects` was good: it is taken back.
    pub async fn succeeded(&self, subjects: &[Subject]) {
        self.lock().refund(subjects);
        if let Some(shared) = &self.shared
            && let Err(e) = shared.refund(subjects).await
        {
            tracing::warn!(error = %e, "attempt counters: Redis unavailable, refund not shared");
        }
    }

    /// Applies new limits from a reloaded configuration; counts are kept.
    pub fn reconfigure(&self, limit: u32, window: Duration) {
        let mut inner = self.lock();
        inner.limit = limit;
        inner.window = window;
    }

    /// How many subjects are counted in memory now.
    pub fn len(&self) -> usize {
        self.lock().counters.len()
    }

    /// Whether no subject is counted in memory.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Every update leaves the map consistent; a poisoned lock holds good data.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Inner {
    /// How long the longest-blocked of `subjects` stays blocked, if any is.
    fn blocked(&mut self, subjects: &[Subject], now: Instant) -> Option<Duration> {
        self.expire(now);
        subjects
            .iter()
            .filter_map(|s| self.counters.get(&s.digest()))
            .filter(|w| w.attempts >= self.limit)
            .filter_map(|w| (w.started + self.window).checked_duration_since(now))
            .filter(|d| !d.is_zero())
            .max()
    }

    /// Counts an attempt against each of `subjects`.
    fn add(&mut self, subjects: &[Subject], now: Instant) {
        self.expire(now);
        for key in subjects.iter().map(Subject::digest) {
            let w = self.counters.entry(key).or_insert(Window {
                started: now,
                attempts: 0,
            });
            // A new subject, or one whose window ended or whose attempts were all taken
            // back, starts a window now.
            if w.attempts == 0 || w.started + self.window <= now {
                *w = Window {
                    started: now,
                    attempts: 0,
                };
                self.order.push_back((key, now));
            }
            w.attempts = w.attempts.saturating_add(1);
        }
        while self.counters.len() > MAX_SUBJECTS {
            self.evict_oldest();
        }
    }

    fn refund(&mut self, subjects: &[Subject]) {
        for key in subjects.iter().map(Subject::digest) {
            if let Some(w) = self.counters.get_mut(&key) {
                w.attempts = w.attempts.saturating_sub(1);
            }
        }
    }

    /// Drops windows that have ended, oldest first; stops at the first live one.
    fn expire(&mut self, now: Instant) {
        while let Some(&(key, started)) = self.order.front() {
            if started + self.window > now {
                break;
            }
            self.order.pop_front();
            if self
                .counters
                .get(&key)
                .is_some_and(|w| w.started == started)
            {
                self.counters.remove(&key);
            }
        }
    }

    fn evict_oldest(&mut self) {
        while let Some((key, started)) = self.order.pop_front() {
            if self
                .counters
                .get(&key)
                .is_some_and(|w| w.started == started)
            {
                self.counters.remove(&key);
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u8) -> Subject {
        Subject::Address(IpAddr::from([10, 0, 0, n]))
    }

    fn user(name: &str, n: u8) -> Subject {
        Subject::UserAt(name.to_owned(), IpAddr::from([10, 0, 0, n]))
    }

    #[tokio::test]
    async fn blocks_after_the_limit_until_the_window_ends() {
        let limits = FailedAttempts::new(3, Duration::from_secs(60));
        let t0 = Instant::now();
        for _ in 0..3 {
            limits.begin(&[ip(1), user("a", 1)], t0).await.unwrap();
        }
        let later = t0 + Duration::from_secs(20);
        assert_eq!(
            limits.begin(&[ip(1)], later).await,
            Err(Duration::from_secs(40))
        );
        assert_eq!(
            limits.begin(&[user("a", 1), ip(2)], later).await,
            Err(Duration::from_secs(40)),
            "the pair is blocked too, and nothing is counted for ip 2"
        );
        limits.begin(&[ip(2), user("b", 2)], later).await.unwrap();
        assert_eq!(
            limits.begin(&[ip(1)], t0 + Duration::from_secs(60)).await,
            Ok(())
        );
    }

    #[tokio::test]
    async fn good_attempts_are_taken_back() {
        let limits = FailedAttempts::new(2, Duration::from_secs(60));
        let now = Instant::now();
        for _ in 0..10 {
            limits.begin(&[ip(1)], now).await.unwrap();
            limits.succeeded(&[ip(1)]).await;
        }
        limits.begin(&[ip(1)], now).await.unwrap();
        limits.begin(&[ip(1)], now).await.unwrap();
        assert!(limits.begin(&[ip(1)], now).await.is_err());
    }

    #[tokio::test]
    async fn memory_is_bounded_by_subjects_not_by_what_they_send() {
        let limits = FailedAttempts::new(3, Duration::from_secs(60));
        let now = Instant::now();
        let long = "x".repeat(4 * 1024);
        for i in 0..(MAX_SUBJECTS + 5_000) {
            let addr = IpAddr::from(std::net::Ipv6Addr::from(i as u128));
            limits
                .begin(&[Subject::UserAt(long.clone(), addr)], now)
                .await
                .unwrap();
        }
        assert_eq!(limits.len(), MAX_SUBJECTS);
        let inner = limits.lock();
        assert!(inner.order.len() <= MAX_SUBJECTS + 1);
    }

    #[test]
    fn subjects_are_keyed_by_kind() {
        assert_eq!(
            Subject::Address(IpAddr::from([127, 0, 0, 1])).to_string(),
            "ip:127.0.0.1"
        );
        assert_eq!(user("bob", 1).to_string(), "user:bob@10.0.0.1");
        assert_ne!(user("bob", 1).digest(), user("bob", 2).digest());
    }
}
