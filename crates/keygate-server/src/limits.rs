//! [`FailedAttempts`]: counts credential attempts per [`Subject`] and answers 429 once a
//! count reaches `limits.failed_attempts` within `limits.window`.
//!
//! Checking and counting are one step, taken *before* any hashing ([`FailedAttempts::begin`]):
//! every attempt holds one of the subject's remaining attempts while its credential is
//! checked ([`Attempt`]), and keeps it only when it failed ([`Attempt::failed`];
//! [`Attempt::succeeded`] gives a good one back). So N concurrent wrong passwords get at
//! most `failed_attempts` answers other than 429, however they interleave.
//!
//! Attempts still in flight are not failures: a subject is refused (429) only for the
//! failures it has made. An attempt that finds every remaining attempt held by attempts in
//! flight waits for one of them to end ([`FailedAttempts::begin_waiting`], at most
//! [`RESERVED_WAIT`]) instead of being refused, so users behind one address who log in at
//! once are all served, and still no more than `failed_attempts` wrong credentials are
//! checked per window.
//!
//! Senders are counted by address, IPv4 as itself, an IPv4-mapped IPv6 address as the
//! IPv4 address, and any other IPv6 address by its `limits.ipv6_prefix` (64 by default):
//! one host usually holds a whole /64 (RFC 6177), and counting each of its 2^64 addresses
//! apart would be no limit at all.
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
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use sha2::{Digest, Sha256};

/// Subjects counted in memory at once; past it, the oldest windows make room.
pub const MAX_SUBJECTS: usize = 100_000;

/// The longest an attempt waits for attempts in flight to end when they hold every
/// remaining attempt of its subject; then it is answered 503 (busy), never 429.
pub const RESERVED_WAIT: Duration = Duration::from_secs(5);

/// How often a waiting attempt asks Redis again: attempts of other replicas end there,
/// unseen by this process.
const RESERVED_POLL: Duration = Duration::from_millis(20);

pub use crate::config::DEFAULT_IPV6_PREFIX;

/// Why an attempt may not begin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// A subject has used up its failures: 429 with this `Retry-After`.
    Blocked(Duration),
    /// Attempts in flight hold every remaining attempt of a subject (and, from
    /// [`FailedAttempts::begin_waiting`], none ended within [`RESERVED_WAIT`]).
    Busy,
}

/// The sender an address is counted as: an IPv4 address as itself (also when sent in its
/// IPv6-mapped form), an IPv6 address as its first `ipv6_prefix` bits.
pub fn sender(ip: IpAddr, ipv6_prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let bits = u32::from(ipv6_prefix.clamp(1, 128));
                let mask = u128::MAX << (128 - bits);
                IpAddr::V6(std::net::Ipv6Addr::from(u128::from(v6) & mask))
            }
        },
    }
}

impl Subject {
    /// The subject with its address as the sender it is counted as (see [`sender`]).
    fn normalized(&self, ipv6_prefix: u8) -> Subject {
        match self {
            Subject::Address(ip) => Subject::Address(sender(*ip, ipv6_prefix)),
            Subject::UserAt(name, ip) => Subject::UserAt(name.clone(), sender(*ip, ipv6_prefix)),
        }
    }
}

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

/// Counters that every replica shares (Redis: `store::RedisAttempts`), checked and
/// counted as one step. The futures are boxed: inline, a store's round trip would make every
/// login's future kilobytes larger whether or not a store is configured.
pub trait SharedAttempts: fmt::Debug + Send + Sync {
    /// Checks and counts one attempt in flight against every subject as one step:
    /// `Ok(Err(_))` when one is used up or held by attempts in flight (nothing counted);
    /// `Err(_)` when the store cannot answer.
    fn begin<'a>(
        &'a self,
        subjects: &'a [Subject],
        limit: u32,
        window: Duration,
    ) -> BoxFuture<'a, Result<Result<(), Refused>, keygate::Error>>;

    /// Ends an attempt begun with [`SharedAttempts::begin`]: `good` gives it back.
    fn end<'a>(
        &'a self,
        subjects: &'a [Subject],
        good: bool,
    ) -> BoxFuture<'a, Result<(), keygate::Error>>;
}

/// Attempt counters.
#[derive(Debug)]
pub struct FailedAttempts {
    inner: Mutex<Inner>,
    shared: Option<Arc<dyn SharedAttempts>>,
    /// Woken whenever an attempt ends, for the attempts waiting for one.
    ended: tokio::sync::Notify,
}

#[derive(Debug)]
struct Inner {
    limit: u32,
    window: Duration,
    ipv6_prefix: u8,
    counters: HashMap<Key, Window, foldhash::fast::RandomState>,
    /// Windows in the order they started, to expire and evict the oldest first without
    /// scanning the map. An entry whose window restarted since is skipped when popped.
    order: VecDeque<(Key, Instant)>,
}

#[derive(Debug, Clone, Copy)]
struct Window {
    started: Instant,
    /// Attempts that failed.
    failed: u32,
    /// Attempts whose credential is being checked.
    in_flight: u32,
}

/// One attempt, begun by [`FailedAttempts::begin`]: it holds one of each subject's
/// remaining attempts until it ends. Dropped without an ending (the request was
/// cancelled mid-check), it counts as failed: its credential may have been checked.
#[derive(Debug)]
#[must_use = "an attempt ends as succeeded or failed"]
pub struct Attempt<'a> {
    limits: &'a FailedAttempts,
    /// The subjects as counted (addresses as senders).
    subjects: Vec<Subject>,
    /// Whether Redis counted it (else only this process did, Redis being unreachable).
    shared: bool,
    ended: bool,
}

impl Attempt<'_> {
    /// The credential was good, or could not be checked for a reason of the server's
    /// (a full hashing queue, a failing store): the attempt is given back.
    pub async fn succeeded(mut self) {
        self.end(true).await;
    }

    /// The credential was refused: the attempt stays counted as a failure.
    pub async fn failed(mut self) {
        self.end(false).await;
    }

    async fn end(&mut self, good: bool) {
        self.ended = true;
        self.limits.lock().end(&self.subjects, good);
        if self.shared
            && let Some(shared) = &self.limits.shared
            && let Err(e) = shared.end(&self.subjects, good).await
        {
            tracing::warn!(error = %keygate::error::chain(&e), "attempt counters: Redis unavailable, attempt's end not shared");
        }
        self.limits.ended.notify_waiters();
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        self.limits.lock().end(&self.subjects, false);
        if self.shared
            && let Some(shared) = self.limits.shared.clone()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let subjects = std::mem::take(&mut self.subjects);
            runtime.spawn(async move {
                if let Err(e) = shared.end(&subjects, false).await {
                    tracing::warn!(error = %keygate::error::chain(&e), "attempt counters: Redis unavailable, attempt's end not shared");
                }
            });
        }
        self.limits.ended.notify_waiters();
    }
}

impl FailedAttempts {
    /// `limit` attempts per `window`, counted in this process only.
    pub fn new(limit: u32, window: Duration) -> Self {
        Self {
            inner: Mutex::new(Inner {
                limit,
                window,
                ipv6_prefix: DEFAULT_IPV6_PREFIX,
                counters: HashMap::default(),
                order: VecDeque::new(),
            }),
            shared: None,
            ended: tokio::sync::Notify::new(),
        }
    }

    /// Counts in a shared store as well, so every replica sees every attempt.
    pub fn shared(mut self, store: impl SharedAttempts + 'static) -> Self {
        self.shared = Some(Arc::new(store));
        self
    }

    /// Checks and counts one attempt against every subject, as one step: refused (and
    /// nothing counted) when one of them has used up its failures, or when attempts in
    /// flight hold all it has left. Does not wait; see [`FailedAttempts::begin_waiting`].
    pub async fn begin(&self, subjects: &[Subject], now: Instant) -> Result<Attempt<'_>, Refused> {
        let subjects: Vec<Subject> = {
            let prefix = self.lock().ipv6_prefix;
            subjects.iter().map(|s| s.normalized(prefix)).collect()
        };
        let keys: Vec<Key> = subjects.iter().map(Subject::key).collect();
        if let Some(shared) = &self.shared {
            let (limit, window) = {
                let inner = self.lock();
                (inner.limit, inner.window)
            };
            match shared.begin(&subjects, limit, window).await {
                Ok(Ok(())) => {
                    // Kept here too, to answer from while Redis cannot be reached.
                    self.lock().add(&keys, now);
                    return Ok(self.attempt(subjects, true));
                }
                Ok(Err(refused)) => return Err(refused),
                Err(e) => {
                    tracing::warn!(error = %keygate::error::chain(&e), "attempt counters: Redis unavailable, counting locally");
                }
            }
        }
        let mut inner = self.lock();
        inner.check(&keys, now)?;
        inner.add(&keys, now);
        drop(inner);
        Ok(self.attempt(subjects, false))
    }

    /// [`FailedAttempts::begin`], waiting while attempts in flight hold all a subject has
    /// left: each that ends may give its attempt back. Refused with [`Refused::Busy`] when
    /// none has within [`RESERVED_WAIT`].
    pub async fn begin_waiting(&self, subjects: &[Subject]) -> Result<Attempt<'_>, Refused> {
        let deadline = Instant::now() + RESERVED_WAIT;
        loop {
            // Registered before the check, so that an attempt ending between the check
            // and the wait is not missed.
            let ended = self.ended.notified();
            let mut ended = std::pin::pin!(ended);
            ended.as_mut().enable();
            match self.begin(subjects, Instant::now()).await {
                Err(Refused::Busy) => {}
                outcome => return outcome,
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Refused::Busy);
            }
            let wait = if self.shared.is_some() {
                left.min(RESERVED_POLL)
            } else {
                left
            };
            let _ = tokio::time::timeout(wait, ended).await;
        }
    }

    fn attempt(&self, subjects: Vec<Subject>, shared: bool) -> Attempt<'_> {
        Attempt {
            limits: self,
            subjects,
            shared,
            ended: false,
        }
    }

    /// Counts IPv6 senders by their first `prefix` bits from now on (`limits.ipv6_prefix`).
    pub fn set_ipv6_prefix(&self, prefix: u8) {
        self.lock().ipv6_prefix = prefix.clamp(1, 128);
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
    /// Whether an attempt may begin: [`Refused::Blocked`] for as long as the
    /// longest-blocked subject stays blocked, [`Refused::Busy`] when attempts in flight
    /// hold all a subject has left.
    fn check(&mut self, keys: &[Key], now: Instant) -> Result<(), Refused> {
        self.expire(now);
        let live: Vec<Window> = keys
            .iter()
            .filter_map(|k| self.counters.get(k))
            .filter(|w| w.started + self.window > now)
            .copied()
            .collect();
        let blocked = live
            .iter()
            .filter(|w| w.failed >= self.limit)
            .filter_map(|w| (w.started + self.window).checked_duration_since(now))
            .filter(|d| !d.is_zero())
            .max();
        if let Some(after) = blocked {
            return Err(Refused::Blocked(after));
        }
        if live
            .iter()
            .any(|w| w.failed.saturating_add(w.in_flight) >= self.limit)
        {
            return Err(Refused::Busy);
        }
        Ok(())
    }

    /// Counts an attempt in flight against each of the subjects with these `keys`.
    fn add(&mut self, keys: &[Key], now: Instant) {
        self.expire(now);
        for &key in keys {
            let w = self.counters.entry(key).or_insert(Window {
                started: now,
                failed: 0,
                in_flight: 0,
            });
            // A new subject, or one whose window ended or whose attempts were all given
            // back, starts a window now.
            if (w.failed == 0 && w.in_flight == 0) || w.started + self.window <= now {
                *w = Window {
                    started: now,
                    failed: 0,
                    in_flight: 0,
                };
                self.order.push_back((key, now));
            }
            w.in_flight = w.in_flight.saturating_add(1);
        }
        while self.counters.len() > MAX_SUBJECTS {
            self.evict_oldest();
        }
        // Every good attempt starts a window of its own (see `end`), and the entries of
        // windows that were given back stay queued until they would have ended: at
        // thousands of logins a second that is millions of entries. Dropping the dead ones
        // whenever they outnumber the live keeps the queue within twice the map, at an
        // amortized constant cost per attempt.
        if self.order.len() > 2 * self.counters.len() + 1024 {
            let counters = &self.counters;
            self.order
                .retain(|(key, started)| counters.get(key).is_some_and(|w| w.started == *started));
        }
    }

    /// Ends an attempt in flight: a good one is given back, a failed one stays counted.
    /// A subject left with nothing counted is forgotten: its next attempt starts a new
    /// window, as a first one would.
    fn end(&mut self, subjects: &[Subject], good: bool) {
        for key in subjects.iter().map(Subject::key) {
            if let Some(w) = self.counters.get_mut(&key) {
                w.in_flight = w.in_flight.saturating_sub(1);
                if !good {
                    w.failed = w.failed.saturating_add(1);
                }
                if w.failed == 0 && w.in_flight == 0 {
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

    /// Begins and fails an attempt.
    async fn fail(limits: &FailedAttempts, subjects: &[Subject], now: Instant) {
        limits.begin(subjects, now).await.unwrap().failed().await;
    }

    #[tokio::test]
    async fn blocks_after_the_limit_until_the_window_ends() {
        let limits = FailedAttempts::new(3, Duration::from_secs(60));
        let t0 = Instant::now();
        for _ in 0..3 {
            fail(&limits, &[ip(1), user("a", 1)], t0).await;
        }
        let later = t0 + Duration::from_secs(20);
        assert_eq!(
            limits.begin(&[ip(1)], later).await.unwrap_err(),
            Refused::Blocked(Duration::from_secs(40))
        );
        assert_eq!(
            limits
                .begin(&[user("a", 1), ip(2)], later)
                .await
                .unwrap_err(),
            Refused::Blocked(Duration::from_secs(40)),
            "the pair is blocked too, and nothing is counted for ip 2"
        );
        fail(&limits, &[ip(2), user("b", 2)], later).await;
        assert!(
            limits
                .begin(&[ip(1)], t0 + Duration::from_secs(60))
                .await
                .is_ok()
        );
    }

    #[tokio::test]
    async fn good_attempts_are_given_back() {
        let limits = FailedAttempts::new(2, Duration::from_secs(60));
        let now = Instant::now();
        for _ in 0..10 {
            limits.begin(&[ip(1)], now).await.unwrap().succeeded().await;
        }
        fail(&limits, &[ip(1)], now).await;
        fail(&limits, &[ip(1)], now).await;
        assert!(matches!(
            limits.begin(&[ip(1)], now).await,
            Err(Refused::Blocked(_))
        ));
    }

    /// Attempts in flight hold the subject's remaining attempts but are no failures: the
    /// next one is `Busy`, not blocked, and goes ahead as soon as one ends well; a
    /// dropped attempt (a cancelled request) counts as failed.
    #[tokio::test]
    async fn attempts_in_flight_make_others_wait_not_fail() {
        let limits = FailedAttempts::new(2, Duration::from_secs(60));
        let now = Instant::now();
        let a = limits.begin(&[ip(1)], now).await.unwrap();
        let b = limits.begin(&[ip(1)], now).await.unwrap();
        assert_eq!(
            limits.begin(&[ip(1)], now).await.unwrap_err(),
            Refused::Busy
        );
        a.succeeded().await;
        let c = limits.begin(&[ip(1)], now).await.unwrap();
        drop(b);
        assert_eq!(
            limits.begin(&[ip(1)], now).await.unwrap_err(),
            Refused::Busy
        );
        c.failed().await;
        assert!(matches!(
            limits.begin(&[ip(1)], now).await,
            Err(Refused::Blocked(_))
        ));
    }

    /// A waiting attempt goes ahead when one in flight ends, and gives up (`Busy`)
    /// after [`RESERVED_WAIT`] when none does.
    #[tokio::test]
    async fn a_waiting_attempt_goes_ahead_when_one_in_flight_ends() {
        let limits = std::sync::Arc::new(FailedAttempts::new(1, Duration::from_secs(60)));
        let held = limits.begin(&[ip(1)], Instant::now()).await.unwrap();
        let waiting = {
            let limits = limits.clone();
            tokio::spawn(async move { limits.begin_waiting(&[ip(1)]).await.map(drop) })
        };
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        held.succeeded().await;
        assert_eq!(waiting.await.unwrap(), Ok(()));

        let limits = FailedAttempts::new(1, Duration::from_secs(60));
        let _held = limits.begin(&[ip(1)], Instant::now()).await.unwrap();
        let started = Instant::now();
        assert_eq!(
            limits.begin_waiting(&[ip(1)]).await.unwrap_err(),
            Refused::Busy
        );
        assert!(started.elapsed() >= RESERVED_WAIT);
    }

    #[tokio::test]
    async fn memory_is_bounded_by_subjects_not_by_what_they_send() {
        let limits = FailedAttempts::new(3, Duration::from_secs(60));
        limits.set_ipv6_prefix(128);
        let now = Instant::now();
        let long = "x".repeat(4 * 1024);
        for i in 0..(MAX_SUBJECTS + 5_000) {
            let addr = IpAddr::from(std::net::Ipv6Addr::from(i as u128));
            fail(&limits, &[Subject::UserAt(long.clone(), addr)], now).await;
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
            let attempt = limits.begin(&[ip(1), user("a", 1)], now).await.unwrap();
            attempt.succeeded().await;
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

    /// Senders: IPv4 as itself, mapped or not; IPv6 by its prefix. Both kinds of subject
    /// name the same sender (so the Redis keys, made from the names, agree too).
    #[test]
    fn addresses_are_counted_as_senders() {
        let v6 = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(sender(v6("::ffff:10.0.0.1"), 64), v6("10.0.0.1"));
        assert_eq!(sender(v6("10.0.0.1"), 64), v6("10.0.0.1"));
        assert_eq!(sender(v6("2001:db8:1:2:aaaa::1"), 64), v6("2001:db8:1:2::"));
        assert_eq!(sender(v6("2001:db8:1:2:aaaa::1"), 48), v6("2001:db8:1::"));
        assert_eq!(sender(v6("2001:db8::1"), 128), v6("2001:db8::1"));
        assert_eq!(sender(v6("ffff::1"), 1), v6("8000::"));
        let mapped_user = Subject::UserAt("bob".into(), v6("::ffff:10.0.0.1"));
        assert_eq!(mapped_user.normalized(64).to_string(), "user:bob@10.0.0.1");
        let a = Subject::Address(v6("2001:db8:1:2::5")).normalized(64);
        let b = Subject::Address(v6("2001:db8:1:2:ffff::9")).normalized(64);
        assert_eq!(a.to_string(), b.to_string());
        assert_eq!(a.key(), b.key());
    }

    /// Thirty addresses of one /64 are one sender: their failures add up.
    #[tokio::test]
    async fn an_ipv6_slash_64_is_one_sender() {
        let limits = FailedAttempts::new(10, Duration::from_secs(60));
        let now = Instant::now();
        for i in 0..10u16 {
            let addr: IpAddr = format!("2001:db8:1:2::{i:x}").parse().unwrap();
            fail(&limits, &[Subject::Address(addr)], now).await;
        }
        let other: IpAddr = "2001:db8:1:2:ffff::1".parse().unwrap();
        assert!(matches!(
            limits.begin(&[Subject::Address(other)], now).await,
            Err(Refused::Blocked(_))
        ));
        let elsewhere: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert!(
            limits
                .begin(&[Subject::Address(elsewhere)], now)
                .await
                .is_ok()
        );
    }
}
