//! [`LiveCopy`]: this replica's copy of the directory, read by every login and
//! verification without a database call, and kept current from the change log.
//!
//! Principals sit behind `Arc`s in two hash tables (by id; by key digest, for hand-made
//! keys imported from a file) under one `RwLock`, held only to clone an `Arc` out or to
//! swap one in: a login never holds it across its password check, and applying a change
//! costs one principal, not a rebuild of a million.

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use hashbrown::HashTable;
use keygate::principal::{Principal, PrincipalKind, SharedAccess};
use time::OffsetDateTime;

use super::record::Record;
use super::store::{Changes, Store};
use super::{DirectoryError, Location};
use crate::config::DirectoryConfig;
use crate::quota::RateLimit;

/// A principal of the copy, with its own quota.
#[derive(Debug)]
pub struct Entry {
    /// The principal as it authenticates.
    pub principal: Principal,
    /// Its `rate_limit`, parsed.
    pub rate_limit: Option<RateLimit>,
}

/// A principal found in the file or in the directory's copy.
#[derive(Debug, Clone)]
pub enum Found<'a> {
    /// A `[[clients]]` or `[[users]]` entry.
    File(&'a Principal),
    /// A principal of the directory.
    Live(Arc<Entry>),
}

impl std::ops::Deref for Found<'_> {
    type Target = Principal;

    fn deref(&self) -> &Principal {
        match self {
            Found::File(p) => p,
            Found::Live(e) => &e.principal,
        }
    }
}

/// How current the copy is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Staleness {
    /// The last read of the log succeeded.
    Current,
    /// The last read failed, for less than `max_staleness`: logins still answer from the
    /// copy; `/readyz` says `directory_unavailable`.
    Failing,
    /// No read has succeeded for `max_staleness`: logins answer 503.
    Stale,
}

#[derive(Debug, Default)]
struct Index {
    by_id: HashTable<Arc<Entry>>,
    by_digest: HashTable<Arc<Entry>>,
    access: SharedAccess,
    hasher: std::hash::RandomState,
    users: usize,
}

impl Index {
    /// One principal of a snapshot.
    fn load(&mut self, record: &Record) {
        self.apply(&record.id, Some(record));
    }

    fn hash_id(&self, id: &str) -> u64 {
        self.hasher.hash_one(id)
    }

    fn hash_digest(&self, d: &[u8; 32]) -> u64 {
        self.hasher.hash_one(d)
    }

    fn remove(&mut self, id: &str) {
        let hash = self.hash_id(id);
        let Ok(slot) = self.by_id.find_entry(hash, |e| &*e.principal.id == id) else {
            return;
        };
        let (old, _) = slot.remove();
        if old.principal.kind == PrincipalKind::User {
            self.users -= 1;
        }
        for c in old.principal.credentials.iter() {
            let Some(d) = c.hash.sha256() else { continue };
            let hash = self.hash_digest(d);
            if let Ok(slot) = self.by_digest.find_entry(hash, |e| Arc::ptr_eq(e, &old)) {
                slot.remove();
            }
        }
    }

    fn insert(&mut self, entry: Entry) {
        self.remove(&entry.principal.id);
        let entry = Arc::new(entry);
        if entry.principal.kind == PrincipalKind::User {
            self.users += 1;
        }
        let hasher = self.hasher.clone();
        let hash = self.hash_id(&entry.principal.id);
        self.by_id
            .insert_unique(hash, entry.clone(), |e| hasher.hash_one(&*e.principal.id));
        if entry.principal.kind != PrincipalKind::Client {
            return;
        }
        for c in entry.principal.credentials.iter() {
            let Some(d) = c.hash.sha256() else { continue };
            let hash = self.hash_digest(d);
            let holds = |e: &Arc<Entry>| {
                e.principal
                    .credentials
                    .iter()
                    .any(|c| c.hash.sha256() == Some(d))
            };
            let rehash = |e: &Arc<Entry>| {
                let d = e.principal.credentials.iter().find_map(|c| c.hash.sha256());
                hasher.hash_one(d.unwrap_or(&[0; 32]))
            };
            match self.by_digest.entry(hash, holds, rehash) {
                hashbrown::hash_table::Entry::Occupied(mut taken) => {
                    *taken.get_mut() = entry.clone()
                }
                hashbrown::hash_table::Entry::Vacant(free) => {
                    free.insert(entry.clone());
                }
            }
        }
    }

    fn apply(&mut self, id: &str, record: Option<&Record>) {
        match record.map(|r| r.principal(&mut self.access)) {
            Some(Ok((principal, rate_limit))) => self.insert(Entry {
                principal,
                rate_limit,
            }),
            Some(Err(e)) => {
                // Never served half-read: the principal is left out until its row reads.
                tracing::error!(id, error = %e, "directory principal left out of this replica's copy");
                self.remove(id);
            }
            None => self.remove(id),
        }
    }
}

/// This replica's copy of the directory. Shared by every runtime of the process.
#[derive(Debug)]
pub struct LiveCopy {
    index: RwLock<Index>,
    store: Store,
    /// The last change-log number applied.
    seq: AtomicI64,
    /// Milliseconds from `epoch` to the last successful read of the log.
    last_read: AtomicU64,
    epoch: Instant,
    failing: AtomicBool,
    started: AtomicBool,
    poll_interval: Duration,
    max_staleness: Duration,
    /// Ids that authenticated since the last write of `last_used_at`.
    used: Mutex<std::collections::HashSet<Box<str>>>,
}

/// How often `last_used_at` is written: at most one write per principal in this time.
const USED_EVERY: Duration = Duration::from_secs(60);

impl LiveCopy {
    /// Opens the directory and loads it whole.
    pub async fn load(
        location: &Location,
        config: &DirectoryConfig,
    ) -> Result<Arc<Self>, DirectoryError> {
        let store = Store::open(location, config.timeout).await?;
        let (seq, index) = store.snapshot_into(Index::default(), Index::load).await?;
        Ok(Arc::new(LiveCopy {
            index: RwLock::new(index),
            store,
            seq: AtomicI64::new(seq),
            last_read: AtomicU64::new(0),
            epoch: Instant::now(),
            failing: AtomicBool::new(false),
            started: AtomicBool::new(false),
            poll_interval: config.poll_interval,
            max_staleness: config.max_staleness,
            used: Mutex::new(std::collections::HashSet::new()),
        }))
    }

    /// The database behind the copy, for edits.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The principal `id`.
    pub fn get(&self, id: &str) -> Option<Arc<Entry>> {
        let index = self.index.read().unwrap_or_else(|p| p.into_inner());
        let hash = index.hash_id(id);
        index.by_id.find(hash, |e| &*e.principal.id == id).cloned()
    }

    /// The client holding a SHA-256 credential with this digest.
    pub fn by_digest(&self, digest: &[u8; 32]) -> Option<Arc<Entry>> {
        let index = self.index.read().unwrap_or_else(|p| p.into_inner());
        let hash = index.hash_digest(digest);
        index
            .by_digest
            .find(hash, |e| {
                e.principal
                    .credentials
                    .iter()
                    .any(|c| c.hash.sha256() == Some(digest))
            })
            .cloned()
    }

    /// Number of principals.
    pub fn len(&self) -> usize {
        self.index
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .by_id
            .len()
    }

    /// True when the copy holds no principal.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True when the copy holds a user (the password grant is on then).
    pub fn has_users(&self) -> bool {
        self.index.read().unwrap_or_else(|p| p.into_inner()).users > 0
    }

    /// The ids of `ids` that the copy holds: the file and the directory share one
    /// namespace.
    pub fn taken<'a>(&self, ids: impl IntoIterator<Item = &'a str>) -> Vec<String> {
        let index = self.index.read().unwrap_or_else(|p| p.into_inner());
        ids.into_iter()
            .filter(|id| {
                index
                    .by_id
                    .find(index.hash_id(id), |e| &*e.principal.id == *id)
                    .is_some()
            })
            .map(str::to_owned)
            .collect()
    }

    /// Notes that `id` authenticated now, for its `last_used_at`.
    pub fn used(&self, id: &str) {
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        if !used.contains(id) {
            used.insert(id.into());
        }
    }

    /// How current the copy is.
    pub fn staleness(&self) -> Staleness {
        if !self.failing.load(Ordering::Acquire) {
            return Staleness::Current;
        }
        let last = Duration::from_millis(self.last_read.load(Ordering::Acquire));
        if self.epoch.elapsed().saturating_sub(last) >= self.max_staleness {
            Staleness::Stale
        } else {
            Staleness::Failing
        }
    }

    /// Reads the log now rather than at the next poll (after an edit made here), to
    /// its end.
    pub async fn catch_up(&self) -> Result<(), DirectoryError> {
        loop {
            let seq = self.seq.load(Ordering::Acquire);
            let changes = match self.store.changes_since(seq).await {
                Ok(c) => c,
                Err(e) => {
                    self.failing.store(true, Ordering::Release);
                    return Err(e);
                }
            };
            let more = changes.more;
            self.apply(seq, changes).await?;
            self.mark_read();
            if !more {
                return Ok(());
            }
        }
    }

    fn mark_read(&self) {
        let ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_read.store(ms, Ordering::Release);
        if self.failing.swap(false, Ordering::AcqRel) {
            tracing::info!(directory = %self.store.location().describe(), "directory reachable again; copy current");
        }
    }

    async fn apply(&self, from: i64, changes: Changes) -> Result<(), DirectoryError> {
        if changes.reset {
            let (seq, index) = self
                .store
                .snapshot_into(Index::default(), Index::load)
                .await?;
            *self.index.write().unwrap_or_else(|p| p.into_inner()) = index;
            self.seq.store(seq, Ordering::Release);
            tracing::warn!(
                "directory change log pruned past this replica's copy: loaded whole again"
            );
            return Ok(());
        }
        if changes.principals.is_empty() {
            return Ok(());
        }
        {
            let mut index = self.index.write().unwrap_or_else(|p| p.into_inner());
            // Two readers of the log at once (a poll and an edit's catch-up): the later
            // one applies nothing twice and never goes back.
            if self.seq.load(Ordering::Acquire) != from {
                return Ok(());
            }
            for (id, record) in &changes.principals {
                index.apply(id, record.as_ref());
            }
            self.seq.store(changes.seq, Ordering::Release);
        }
        crate::metrics::increment("keygate_directory_changes_total", [("result", "applied")]);
        Ok(())
    }

    /// Starts keeping the copy current (once; later calls do nothing). Needs a Tokio
    /// runtime; the task ends when the last clone of the copy is dropped.
    pub fn start(self: &Arc<Self>) {
        if !self.started.swap(true, Ordering::AcqRel) {
            tokio::spawn(run(Arc::downgrade(self)));
        }
    }

    async fn write_used(&self) {
        let ids: Vec<String> = {
            let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
            used.drain().map(String::from).collect()
        };
        let now = OffsetDateTime::now_utc();
        let minute = now
            .replace_second(0)
            .unwrap_or(now)
            .replace_nanosecond(0)
            .unwrap_or(now);
        if let Err(e) = self.store.touch(ids, minute).await {
            tracing::warn!(error = %e, "last_used_at not written; the next minute's batch tries again");
        }
    }
}

/// Reads the log every `poll_interval`, or at once on a PostgreSQL notification.
async fn run(copy: Weak<LiveCopy>) {
    let Some((poll, store)) = copy.upgrade().map(|c| (c.poll_interval, c.store.clone())) else {
        return;
    };
    let mut notifications = None;
    let mut last_used_write = Instant::now();
    let mut reported = false;
    loop {
        if notifications.is_none()
            && let Some(Ok(rx)) = store.listen().await
        {
            notifications = Some(rx);
        }
        let notified = async {
            match notifications.as_mut() {
                Some(rx) => rx.recv().await.is_some(),
                None => std::future::pending().await,
            }
        };
        let Some(c) = copy.upgrade() else { return };
        let woken = tokio::select! {
            () = tokio::time::sleep(poll) => true,
            live = notified => live,
        };
        if !woken {
            notifications = None;
        }
        match c.catch_up().await {
            Ok(()) => reported = false,
            Err(e) => {
                if !reported {
                    tracing::error!(error = %e, directory = %store.location().describe(), "directory unreachable: serving from this replica's copy");
                    reported = true;
                }
                crate::metrics::increment("keygate_directory_changes_total", [("result", "error")]);
            }
        }
        if last_used_write.elapsed() >= USED_EVERY {
            last_used_write = Instant::now();
            c.write_used().await;
        }
    }
}
