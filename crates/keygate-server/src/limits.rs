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
//! In memory the counters are bounded ([`MAX_SUBJECTS`]) and keyed by fixed-size keys, so neither
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
    /// The counter's name: `ip:<address>` or `user:<name>@<address>` (hashed into the Redis
    /// key; in memory, see [`Key`]).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Subject::Address(ip) => write!(f, "ip:{ip}"),
            Subject::UserAt(name, ip) => write!(f, "user:{name}@{ip}"),
        }
    }
}

/// The fixed-size key a counter is kept under in memory: an address as itself, a username
/// and address by a digest, so a username of 64 KiB costs what one of 5 bytes costs. The
/// first byte keeps the two kinds apart.
type Key = [u8; 17];

impl Subject {
    fn key(&self) -> Key {
        let mut key = [0u8; 17];
        match self {
            // The hot path (every API key and client secret): no hashing, no formatting.
            Subject::Address(ip) => {
                key[0] = 1;
                let v6 = match ip {
                    IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                    IpAddr::V6(v6) => *v6,
                };
                key[1..].copy_from_slice(&v6.octets());
            }
            Subject::UserAt(..) => {
                /// Feeds the key to the hash as it is formatted, with no `String` between.
                struct Hashing(Sha256);
                impl fmt::Write for Hashing {
                    fn write_str(&mut self, s: &str) -> fmt::Result {
                        self.0.update(s.as_bytes());
                        Ok(())
                    }
                }
                let mut hashing = Hashing(Sha256::new());
                // Writing to a hash cannot fail.
                let _ = fmt::write(&mut hashing, format_args!("{self}"));
                key[0] = 2;
                key[1..].copy_from_slice(&hashing.0.finalize()[..16]);
            }
        }
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
    counters: HashMap<Key, Window, foldhash::fast::RandomState>,
    /// Windows in the order they started, to expire and evict the oldest first without
    /// scanning the map. An entry whose window restarted since is skipped when popped.
    order: VecDeque<(Key, Instant)>,
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
                counters: HashMap::default(),
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
            // Boxed, as the quota's round trip is: inline, its kilobytes would make every
            // login's future that large whether or not a store is configured.
            match Box::pin(shared.begin(subjects, limit, window)).await {
                Ok(outcome) => {
                    if outcome.is_ok() {
                        // Kept here too, to answer from while Redis cannot be reached.
                        let keys: Vec<Key> = subjects.iter().map(Subject::key).collect();
                        self.lock().add(&keys, now);
                    }
                    return outcome;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "attempt counters: Redis unavailable, counting locally");
                }
            }
        }
        let keys: Vec<Key> = subjects.iter().map(Subject::key).collect();
        let mut inner = self.lock();
        if let Some(after) = inner.blocked(&keys, now) {
            return Err(after);
        }
        inner.add(&keys, now);
        Ok(())
    }

    /// The attempt begun for `subjects` was good: it is taken back.
    pub async fn succeeded(&self, subjects: &[Subject]) {
        self.lock().refund(subjects);
        if let Some(shared) = &self.shared
            && let Err(e) = Box::pin(shared.refund(subjects)).await
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
    fn blocked(&mut self, keys: &[Key], now: Instant) -> Option<Duration> {
        self.expire(now);
        keys.iter()
            .filter_map(|k| self.counters.get(k))
            .filter(|w| w.attempts >= self.limit)
            .filter_map(|w| (w.started + self.window).checked_duration_since(now))
            .filter(|d| !d.is_zero())
            .max()
    }

    /// Counts an attempt against each of the subjects with these `keys`.
    fn add(&mut self, keys: &[Key], now: Instant) {
        self.expire(now);
        for &key in keys {
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
        // Every good attempt starts a window of its own (see `refund`), and the entries of
        // windows that were taken back stay queued until they would have ended: at
        // thousands of logins a second that is millions of entries. Dropping the dead ones
        // whenever they outnumber the live keeps the queue within twice the map, at an
        // amortized constant cost per attempt.
        if self.order.len() > 2 * self.counters.len() + 1024 {
            let counters = &self.counters;
            self.order
                .retain(|(key, started)| counters.get(key).is_some_and(|w| w.started == *started));
        }
    }

    /// Takes an attempt back. A subject left with no attempts is forgotten: its next
    /// attempt starts a new window, as a first one would.
    fn refund(&mut self, subjects: &[Subject]) {
        for key in subjects.iter().map(Subject::key) {
            if let Some(w) = self.counters.get_mut(&key) {
                w.attempts = w.attempts.saturating_sub(1);
                if w.attempts == 0 {
                    self.counters.remove(&key);
                }
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

    #[tokio::test]
    async fn a_stream_of_good_attempts_keeps_memory_flat() {
        let limits = FailedAttempts::new(10, Duration::from_secs(3600));
        let t0 = Instant::now();
        for i in 0..200_000u64 {
            // Each good attempt starts a window of its own, a nanosecond apart.
            let now = t0 + Duration::from_nanos(i);
            limits.begin(&[ip(1), user("a", 1)], now).await.unwrap();
            limits.succeeded(&[ip(1), user("a", 1)]).await;
        }
        assert!(limits.is_empty(), "nothing left counted");
        let inner = limits.lock();
        assert!(inner.order.len() <= 1024 + 2, "{}", inner.order.len());
    }

    #[test]
    fn subjects_are_keyed_by_kind() {
        assert_eq!(
            Subject::Address(IpAddr::from([127, 0, 0, 1])).to_string(),
            "ip:127.0.0.1"
        );
        assert_eq!(user("bob", 1).to_string(), "user:bob@10.0.0.1");
        assert_ne!(user("bob", 1).key(), user("bob", 2).key());
        let full = Sha256::digest(b"user:bob@10.0.0.1");
        assert_eq!(
            user("bob", 1).key()[1..],
            full[..16],
            "the digest of the key as shown"
        );
        // An IPv4 address and its IPv6-mapped form are one sender.
        let mapped = Subject::Address(IpAddr::from(
            std::net::Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped(),
        ));
        assert_eq!(ip(1).key(), mapped.key());
        assert_ne!(ip(1).key(), ip(2).key());
    }
}
