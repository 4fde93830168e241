//! `Revocations`: the revocation list every check reads, and [`SharedRevocations`], this
//! replica's copy of the list kept in the store.
//!
//! With a store, `/verify`, `/userinfo` and `/introspect` read only the local copy: no
//! network round trip per request. The copy is kept current by the store's pub/sub
//! channel and fully resynchronised, both ways, after every (re)connect (see
//! `sync.rs`). While it is not in sync, a token the copy does not list is
//! `Verdict::Unknown`, and `store.on_unavailable` decides: `deny` answers 503, `allow`
//! answers from the copy.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use keygate::Error;
use keygate::revocation::{MemoryRevocationStore, RevocationStore};
use keygate::token::now_unix;

use super::connection::RedisStore;
use super::layout::{Layout, digest};
use super::principals::{PrincipalRevocation, fingerprint};

/// What the revocation list says about a token, a principal's token or a credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Not revoked, and the list is complete.
    Clear,
    /// Revoked.
    Revoked,
    /// Not in the local copy, but the copy is not in sync with the store right now.
    Unknown,
}

/// The revocation list of this server: in memory, or a copy of the store's.
#[derive(Debug)]
pub(crate) enum Revocations {
    Memory(MemoryRevocationStore),
    Shared(SharedRevocations),
}

impl Revocations {
    /// The token `iss` + `jti`.
    pub(crate) async fn token(&self, iss: &str, jti: &str) -> Verdict {
        match self {
            Revocations::Memory(m) if m.contains(iss, jti) => Verdict::Revoked,
            Revocations::Memory(_) => Verdict::Clear,
            Revocations::Shared(s) => s.token(iss, jti),
        }
    }

    /// A token of principal `id` issued at `iat`: refused when the principal was revoked
    /// in the store at or after that second. (The file's own `revoked_at` is checked
    /// elsewhere; in memory there is nothing more.)
    pub(crate) fn principal_token(&self, id: &str, iat: u64) -> Verdict {
        match self {
            Revocations::Memory(_) => Verdict::Clear,
            Revocations::Shared(s) => s.principal_token(id, iat),
        }
    }

    /// A principal that has just authenticated with one of `hashes` (the credentials its
    /// entry in this replica's file holds): refused when the store lists any of them as
    /// revoked, whatever the file says.
    pub(crate) fn credentials<'a>(
        &self,
        id: &str,
        hashes: impl IntoIterator<Item = &'a keygate::api_key::KeyHash>,
    ) -> Verdict {
        match self {
            Revocations::Memory(_) => Verdict::Clear,
            Revocations::Shared(s) => s.credentials(id, hashes),
        }
    }

    /// Refuses the token until `until` (unix seconds).
    pub(crate) async fn revoke(&self, iss: &str, jti: &str, until: u64) -> Result<(), Error> {
        match self {
            Revocations::Memory(m) => m.revoke(iss, jti, until).await,
            Revocations::Shared(s) => s.revoke(iss, jti, until).await,
        }
    }

    /// For `/readyz`: the local copy is in sync with the store.
    pub(crate) fn is_available(&self) -> bool {
        match self {
            Revocations::Memory(_) => true,
            Revocations::Shared(s) => s.is_synced(),
        }
    }
}

/// Writes a token revocation (keeping the later end if it was there), prunes what has
/// expired, and tells every replica.
/// KEYS: revoked; ARGV: until, member, now, channel, message.
pub(super) const REVOKE_TOKEN: &str = r"
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[3])
redis.call('ZADD', KEYS[1], 'GT', ARGV[1], ARGV[2])
redis.call('PUBLISH', ARGV[4], ARGV[5])
return 1
";

/// This replica's copy of the store's revocation list.
#[derive(Debug, Clone)]
pub struct SharedRevocations {
    pub(super) inner: Arc<Shared>,
}

#[derive(Debug)]
pub(super) struct Shared {
    pub(super) store: RedisStore,
    pub(super) layout: Layout,
    pub(super) copy: RwLock<Copy>,
    /// True from the end of a full resynchronisation until the subscription fails.
    pub(super) synced: AtomicBool,
    started: AtomicBool,
}

/// The list as this replica knows it.
#[derive(Debug, Default)]
pub(super) struct Copy {
    /// Token digest → the unix second until which it is refused.
    pub(super) tokens: HashMap<String, u64>,
    /// Principal revocations, by member (`<fingerprint> <id>`) → revoked at (ms).
    pub(super) principal_entries: HashMap<String, u64>,
    /// The same, by principal id: the latest revocation and the revoked fingerprints.
    by_principal: HashMap<String, (u64, HashSet<String>)>,
}

impl Copy {
    pub(super) fn add_token(&mut self, member: String, until: u64) {
        let entry = self.tokens.entry(member).or_insert(until);
        *entry = (*entry).max(until);
    }

    pub(super) fn add_principal(&mut self, r: PrincipalRevocation) {
        let member = r.member();
        let at = self.principal_entries.entry(member).or_insert(r.at_ms);
        *at = (*at).max(r.at_ms);
        let (latest, fps) = self.by_principal.entry(r.id).or_default();
        *latest = (*latest).max(r.at_ms);
        fps.insert(r.fingerprint);
    }

    /// Drops token entries whose tokens can no longer verify anywhere.
    pub(super) fn prune(&mut self, now: u64) {
        self.tokens.retain(|_, until| *until >= now);
    }
}

impl SharedRevocations {
    /// A copy of the list of the deployment issuing as `issuer`, empty and not in sync
    /// until [`SharedRevocations::start`] has synchronised it.
    pub fn new(store: RedisStore, issuer: &str) -> Self {
        Self {
            inner: Arc::new(Shared {
                store,
                layout: Layout::for_issuer(issuer),
                copy: RwLock::new(Copy::default()),
                synced: AtomicBool::new(false),
                started: AtomicBool::new(false),
            }),
        }
    }

    /// Starts keeping the copy in sync (once; later calls do nothing). Needs a Tokio
    /// runtime; the task ends when the last clone of this copy is dropped.
    pub fn start(&self) {
        if !self.inner.started.swap(true, Ordering::AcqRel) {
            tokio::spawn(super::sync::run(Arc::downgrade(&self.inner)));
        }
    }

    /// Waits until the copy is in sync, for at most `limit`; true when it is.
    pub async fn wait_synced(&self, limit: std::time::Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        while !self.is_synced() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        self.is_synced()
    }

    /// True while the copy is complete: subscribed, and resynchronised since.
    pub fn is_synced(&self) -> bool {
        self.inner.synced.load(Ordering::Acquire)
    }

    pub(super) fn read(&self) -> std::sync::RwLockReadGuard<'_, Copy> {
        // Every write is a few inserts; a panic mid-write leaves a usable copy.
        self.inner
            .copy
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn unless_unsynced(&self, revoked: bool) -> Verdict {
        if revoked {
            Verdict::Revoked
        } else if self.is_synced() {
            Verdict::Clear
        } else {
            Verdict::Unknown
        }
    }

    fn token(&self, iss: &str, jti: &str) -> Verdict {
        let member = digest(&[iss, jti]);
        let revoked = self
            .read()
            .tokens
            .get(&member)
            .is_some_and(|until| *until >= now_unix());
        self.unless_unsynced(revoked)
    }

    fn principal_token(&self, id: &str, iat: u64) -> Verdict {
        // `iat` has whole seconds: a token issued in the second of the revocation may
        // predate it, so it is refused too.
        let revoked = self
            .read()
            .by_principal
            .get(id)
            .is_some_and(|(at_ms, _)| iat <= at_ms / 1000);
        self.unless_unsynced(revoked)
    }

    fn credentials<'a>(
        &self,
        id: &str,
        hashes: impl IntoIterator<Item = &'a keygate::api_key::KeyHash>,
    ) -> Verdict {
        let copy = self.read();
        let revoked = copy
            .by_principal
            .get(id)
            .is_some_and(|(_, fps)| hashes.into_iter().any(|h| fps.contains(&fingerprint(h))));
        drop(copy);
        self.unless_unsynced(revoked)
    }

    async fn revoke(&self, iss: &str, jti: &str, until: u64) -> Result<(), Error> {
        let member = digest(&[iss, jti]);
        // Refused here at once, and kept even if the store cannot take it now: the next
        // resynchronisation writes it to the store. Bounded like the in-memory list
        // (SPEC §9): a full copy refuses new revocations (503) rather than grow.
        {
            let mut copy = self
                .inner
                .copy
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            // (Expired entries leave at the next heartbeat, twice a second.)
            if copy.tokens.len() >= keygate::revocation::MAX_REVOKED {
                return Err(Error::StoreUnavailable(
                    "the revocation list is full".into(),
                ));
            }
            copy.add_token(member.clone(), until);
        }
        let key = self.inner.layout.revoked();
        let channel = self.inner.layout.channel();
        let message = format!("t {until} {member}");
        self.inner
            .store
            .run(|mut c| async move {
                redis::cmd("EVAL")
                    .arg(REVOKE_TOKEN)
                    .arg(1)
                    .arg(&key)
                    .arg(until)
                    .arg(&member)
                    .arg(now_unix())
                    .arg(&channel)
                    .arg(&message)
                    .query_async::<()>(&mut c)
                    .await
            })
            .await
    }
}
