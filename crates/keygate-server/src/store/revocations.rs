//! `Revocations`: the revocation list every check reads, and [`SharedRevocations`], this
//! replica's copy of the list kept in the store.
//!
//! With a store, `/verify`, `/userinfo` and `/introspect` read only the local copy: no
//! network round trip per request. The copy is kept current by the store's pub/sub
//! channel and fully resynchronised, both ways, after every (re)connect (see
//! `sync.rs`). While it is not in sync, a token the copy does not list is
//! `Verdict::Unknown`, and `store.on_unavailable` decides: `deny` answers 503, `allow`
//! answers from the copy.
//!
//! A revocation is confirmed by the store or kept pending: applied to the copy and
//! written again until the store takes it (see `sync.rs`). Each principal holds at most
//! its share of token revocations in the store; past it they are folded into one
//! principal revocation (`REVOKE_TOKEN`), so no one can fill the list for others.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use keygate::Error;
use keygate::error::chain;
use keygate::revocation::{MemoryRevocationStore, issued_before, now_ms};
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

    /// True when the token `iss` + `jti` is refused here only because its revocation
    /// has not reached the store yet: revoking it again is allowed (and retries the
    /// write), so a client answered 503 can finish its logout.
    pub(crate) fn is_pending(&self, iss: &str, jti: &str) -> bool {
        match self {
            Revocations::Memory(_) => false,
            Revocations::Shared(s) => s.is_pending(iss, jti),
        }
    }

    /// A token of principal `id` issued at `iat`: refused when the principal was revoked
    /// (in the store, or folded for revoking more than its share) at an instant its
    /// second may predate (see [`keygate::revocation::issued_before`]). (The file's own
    /// `revoked_at` is checked elsewhere.)
    pub(crate) fn principal_token(&self, id: &str, iat: u64) -> Verdict {
        match self {
            Revocations::Memory(m) if m.principal_refused(id, iat) => Verdict::Revoked,
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

    /// Refuses the token `iss` + `jti` of principal `sub` until `until` (unix seconds).
    /// `horizon` is how long a principal revocation must be kept: the longest a token
    /// verifies after its `iat` (ttl + leeway + 1 s). Never fails for lack of room.
    /// With a store, an error means the revocation is applied here and pending: retried
    /// in the background until the store takes it ([`Revocations::readiness`] says so
    /// meanwhile), or, with too many pending, not applied at all.
    pub(crate) async fn revoke(
        &self,
        iss: &str,
        jti: &str,
        until: u64,
        sub: &str,
        horizon: Duration,
    ) -> Result<(), Revoke> {
        match self {
            Revocations::Memory(m) => {
                m.revoke_token_of(sub, iss, jti, until);
                Ok(())
            }
            Revocations::Shared(s) => s.revoke(iss, jti, until, sub, horizon).await,
        }
    }

    /// For `/readyz`: `None` when ready, else why not.
    pub(crate) fn readiness(&self) -> Option<&'static str> {
        match self {
            Revocations::Memory(_) => None,
            Revocations::Shared(s) => s.readiness(),
        }
    }
}

/// Why a revocation did not reach the store.
#[derive(Debug)]
pub(crate) enum Revoke {
    /// Refused here, and retried in the background until the store takes it.
    Pending(Error),
    /// Not applied anywhere: too many revocations already wait for the store.
    Refused(Error),
}

impl std::fmt::Display for Revoke {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Revoke::Pending(e) => write!(f, "{}; applied here, pending for the store", chain(e)),
            Revoke::Refused(e) => write!(f, "{}; not applied", chain(e)),
        }
    }
}

/// Writes a token revocation (keeping the later end if it was there), prunes what has
/// expired, and tells every replica. Each principal's revoked tokens are also counted in
/// a set of its own (which expires with its last entry); one past `share` folds them:
/// they leave both sets, and one principal revocation `logout <id>` at `fold_ms` refuses
/// every token of the principal issued before it. Returns 1 (listed) or 2 (folded).
/// Principal revocations older than `cutoff_ms` (every token they cover has expired) are
/// pruned.
/// KEYS: revoked, the principal's set, principals;
/// ARGV: until, member, now, channel, owner, share, fold member, fold_ms, cutoff_ms.
pub(super) const REVOKE_TOKEN: &str = r"
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', '(' .. ARGV[9])
if not redis.call('ZSCORE', KEYS[2], ARGV[2])
  and redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[6]) then
  local held = redis.call('ZRANGE', KEYS[2], 0, -1)
  for i = 1, #held, 500 do
    redis.call('ZREM', KEYS[1], unpack(held, i, math.min(i + 499, #held)))
  end
  redis.call('DEL', KEYS[2])
  redis.call('ZADD', KEYS[3], 'GT', ARGV[8], ARGV[7])
  redis.call('PUBLISH', ARGV[4], 'p ' .. ARGV[8] .. ' ' .. ARGV[7])
  return 2
end
redis.call('ZADD', KEYS[1], 'GT', ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], 'GT', ARGV[1], ARGV[2])
local ttl = redis.call('TTL', KEYS[2])
if ttl < tonumber(ARGV[1]) - tonumber(ARGV[3]) then
  redis.call('EXPIREAT', KEYS[2], ARGV[1])
end
redis.call('PUBLISH', ARGV[4], 't ' .. ARGV[1] .. ' ' .. ARGV[2])
redis.call('PUBLISH', ARGV[4], 'o ' .. ARGV[5] .. ' ' .. ARGV[2])
return 1
";

/// The fingerprint of a principal revocation made by folding its token revocations: not
/// a credential fingerprint (those are hex), so it never refuses a login.
pub(super) const FOLDED: &str = "logout";

/// The digest naming principal `id`'s token revocations.
pub(super) fn owner(id: &str) -> String {
    digest(&["keygate principal", id])
}

/// Revocations waiting for the store at once, at most; past it a revocation is refused
/// (503) and not applied anywhere.
const MAX_PENDING: usize = 100_000;

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
    /// Token revocations per principal before they are folded.
    pub(super) share: usize,
    /// How long principal revocations are kept, in ms (ttl + leeway + 1 s): the longest
    /// configured since start (each revocation passes the one in force).
    pub(super) horizon_ms: AtomicU64,
    /// Why the store cannot take writes although the subscription is up (a Cluster
    /// shard lost), or `None`.
    pub(super) degraded: Mutex<Option<String>>,
    /// Woken when the connection must be re-established and the copy resynchronised (a
    /// Sentinel switched primary, a lost Cluster shard is back).
    pub(super) reconnect: Arc<tokio::sync::Notify>,
}

/// A token revocation the store has not taken yet.
#[derive(Debug, Clone)]
pub(super) struct PendingToken {
    pub(super) until: u64,
    pub(super) sub: String,
}

/// One revoked token in the copy.
#[derive(Debug, Clone)]
pub(super) struct TokenEntry {
    pub(super) until: u64,
    /// The digest of the principal it was issued to, when known ([`owner`]).
    pub(super) owner: Option<String>,
}

/// The list as this replica knows it.
#[derive(Debug, Default)]
pub(super) struct Copy {
    /// Token digest → the unix second until which it is refused, and its principal.
    pub(super) tokens: HashMap<String, TokenEntry>,
    /// Token revocations applied here that the store has not taken yet, by digest.
    pub(super) pending: HashMap<String, PendingToken>,
    /// Principal revocations, by member (`<fingerprint> <id>`) → revoked at (ms).
    pub(super) principal_entries: HashMap<String, u64>,
    /// The same, by principal id: the latest revocation and the revoked fingerprints.
    by_principal: HashMap<String, (u64, HashSet<String>)>,
}

impl Copy {
    pub(super) fn add_token(&mut self, member: String, until: u64, owner: Option<String>) {
        let entry = self
            .tokens
            .entry(member)
            .or_insert(TokenEntry { until, owner: None });
        entry.until = entry.until.max(until);
        if owner.is_some() {
            entry.owner = owner;
        }
    }

    /// Records the principal of a listed token (`o` messages).
    pub(super) fn set_owner(&mut self, member: &str, owner: &str) {
        if let Some(entry) = self.tokens.get_mut(member) {
            entry.owner = Some(owner.to_owned());
        }
    }

    /// A principal revocation as it happens (published, or the answer to this replica's
    /// own write): a fold also drops the principal's token entries, which the store has
    /// just dropped too (pending ones stay: they are not in the store yet).
    pub(super) fn apply_principal(&mut self, r: PrincipalRevocation) {
        if r.fingerprint == FOLDED {
            let folded = owner(&r.id);
            let pending = &self.pending;
            self.tokens.retain(|member, t| {
                t.owner.as_deref() != Some(folded.as_str()) || pending.contains_key(member)
            });
        }
        self.add_principal(r);
    }

    /// A principal revocation read from the store.
    pub(super) fn add_principal(&mut self, r: PrincipalRevocation) {
        let member = r.member();
        let at = self.principal_entries.entry(member).or_insert(r.at_ms);
        *at = (*at).max(r.at_ms);
        let (latest, fps) = self.by_principal.entry(r.id).or_default();
        *latest = (*latest).max(r.at_ms);
        fps.insert(r.fingerprint);
    }

    /// Drops token entries whose tokens can no longer verify anywhere, and principal
    /// revocations older than `cutoff_ms` (every token they cover has expired).
    pub(super) fn prune(&mut self, now: u64, cutoff_ms: u64) {
        self.tokens.retain(|_, t| t.until >= now);
        self.pending.retain(|_, p| p.until >= now);
        if self.principal_entries.values().any(|at| *at < cutoff_ms) {
            self.principal_entries.retain(|_, at| *at >= cutoff_ms);
            self.by_principal.clear();
            let entries: Vec<(String, u64)> = self
                .principal_entries
                .iter()
                .map(|(m, at)| (m.clone(), *at))
                .collect();
            for (member, at) in entries {
                if let Some(r) = PrincipalRevocation::from_member(&member, at) {
                    let (latest, fps) = self.by_principal.entry(r.id).or_default();
                    *latest = (*latest).max(r.at_ms);
                    fps.insert(r.fingerprint);
                }
            }
        }
    }
}

impl SharedRevocations {
    /// A copy of the list of the deployment issuing as `issuer`, empty and not in sync
    /// until [`SharedRevocations::start`] has synchronised it.
    ///
    /// `share`: token revocations one principal holds before they are folded;
    /// `horizon`: how long a principal revocation must be kept (ttl + leeway + 1 s).
    pub fn new(store: RedisStore, issuer: &str, share: usize, horizon: Duration) -> Self {
        Self {
            inner: Arc::new(Shared {
                store,
                layout: Layout::for_issuer(issuer),
                copy: RwLock::new(Copy::default()),
                synced: AtomicBool::new(false),
                started: AtomicBool::new(false),
                share: share.max(1),
                horizon_ms: AtomicU64::new(millis(horizon)),
                degraded: Mutex::new(None),
                reconnect: Arc::new(tokio::sync::Notify::new()),
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
            .is_some_and(|t| t.until >= now_unix());
        self.unless_unsynced(revoked)
    }

    fn principal_token(&self, id: &str, iat: u64) -> Verdict {
        // `iat` has whole seconds: a token whose second began before the revocation may
        // predate it and is refused; one whose second began at or after it may not.
        let revoked = self
            .read()
            .by_principal
            .get(id)
            .is_some_and(|(at_ms, _)| issued_before(iat, *at_ms));
        self.unless_unsynced(revoked)
    }

    fn is_pending(&self, iss: &str, jti: &str) -> bool {
        let copy = self.read();
        !copy.pending.is_empty() && copy.pending.contains_key(&digest(&[iss, jti]))
    }

    /// `None` when ready; else why not: the copy is out of sync, revocations wait for
    /// the store, or the store cannot take writes.
    fn readiness(&self) -> Option<&'static str> {
        if !self.is_synced() {
            return Some("store_unavailable");
        }
        if !self.read().pending.is_empty() {
            return Some("revocations_pending");
        }
        if self
            .inner
            .degraded
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_some()
        {
            return Some("store_degraded");
        }
        None
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

    async fn revoke(
        &self,
        iss: &str,
        jti: &str,
        until: u64,
        sub: &str,
        horizon: Duration,
    ) -> Result<(), Revoke> {
        self.inner
            .horizon_ms
            .fetch_max(millis(horizon), Ordering::Relaxed);
        let member = digest(&[iss, jti]);
        match write_token(&self.inner, &member, until, sub).await {
            Ok(()) => Ok(()),
            Err(e) => {
                // Refused here at once and retried until the store takes it: a
                // revocation reaches the store or is not applied anywhere.
                let mut copy = self.write();
                if copy.pending.len() >= MAX_PENDING && !copy.pending.contains_key(&member) {
                    return Err(Revoke::Refused(e));
                }
                copy.add_token(member.clone(), until, Some(owner(sub)));
                copy.pending.insert(
                    member,
                    PendingToken {
                        until,
                        sub: sub.to_owned(),
                    },
                );
                Err(Revoke::Pending(e))
            }
        }
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Copy> {
        self.inner.write()
    }
}

impl Shared {
    pub(super) fn write(&self) -> std::sync::RwLockWriteGuard<'_, Copy> {
        self.copy
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// At most `limit` pending token revocations: (digest, until, principal).
    pub(super) fn read_pending(&self, limit: usize) -> Vec<(String, u64, String)> {
        let copy = self
            .copy
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        copy.pending
            .iter()
            .take(limit)
            .map(|(m, p)| (m.clone(), p.until, p.sub.clone()))
            .collect()
    }

    /// On a Cluster the subscription may sit on a node other than the one holding the
    /// deployment's slot: a read of the list through the data connection tells whether
    /// that node still answers (a shard lost without a replica leaves the subscription
    /// up and every write failing). Elsewhere the heartbeat's `PING` says as much.
    pub(super) async fn check_writable(&self) {
        if !self.store.is_cluster() {
            return;
        }
        let key = self.layout.revoked();
        let outcome = self
            .store
            .run(|mut c| async move {
                redis::cmd("ZCARD")
                    .arg(&key)
                    .query_async::<u64>(&mut c)
                    .await
            })
            .await;
        let mut degraded = self
            .degraded
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match outcome {
            Ok(_) => {
                if degraded.take().is_some() {
                    // The shard is back, perhaps empty (a restart without persistence):
                    // resynchronise, which writes back what it lost.
                    tracing::info!("the store's shard answers again; resynchronising");
                    self.reconnect.notify_one();
                }
            }
            Err(e) => {
                if degraded.is_none() {
                    tracing::error!(error = %chain(&e), "the store's shard holding this deployment does not answer: revocations and attempt counters cannot be written");
                }
                *degraded = Some(e.to_string());
            }
        }
    }

    /// The cutoff below which principal revocations may be pruned, in ms.
    pub(super) fn cutoff_ms(&self) -> u64 {
        now_ms().saturating_sub(self.horizon_ms.load(Ordering::Relaxed))
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Writes one token revocation of principal `sub` to the store and applies the outcome
/// to the copy (listed, or the principal folded); on success it is no longer pending.
pub(super) async fn write_token(
    shared: &Shared,
    member: &str,
    until: u64,
    sub: &str,
) -> Result<(), Error> {
    let keys = [
        shared.layout.revoked(),
        shared.layout.revoked_by(&owner(sub)),
        shared.layout.principals(),
    ];
    let channel = shared.layout.channel();
    // Every token revoked so far was issued at or before now: `iat * 1000 <= now`.
    let fold_ms = now_ms() + 1;
    let fold_member = format!("{FOLDED} {sub}");
    let cutoff = shared.cutoff_ms();
    let share = shared.share;
    let owner_digest = owner(sub);
    let fold_arg = fold_member.as_str();
    let outcome: u8 = shared
        .store
        .run(|mut c| async move {
            redis::cmd("EVAL")
                .arg(REVOKE_TOKEN)
                .arg(3)
                .arg(&keys)
                .arg(until)
                .arg(member)
                .arg(now_unix())
                .arg(&channel)
                .arg(&owner_digest)
                .arg(share)
                .arg(fold_arg)
                .arg(fold_ms)
                .arg(cutoff)
                .query_async(&mut c)
                .await
        })
        .await?;
    let mut copy = shared.write();
    copy.pending.remove(member);
    if outcome == 2 {
        if let Some(r) = PrincipalRevocation::from_member(&fold_member, fold_ms) {
            copy.apply_principal(r);
        }
    } else {
        copy.add_token(member.to_owned(), until, Some(owner(sub)));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Half a second into a whole second: the time the tests below act at.
    const AT_MS: u64 = 1_800_000_000_500;
    const AT: u64 = AT_MS / 1000;

    fn fold_of(id: &str, at_ms: u64) -> PrincipalRevocation {
        PrincipalRevocation::from_member(&format!("{FOLDED} {id}"), at_ms).unwrap()
    }

    #[test]
    fn a_published_fold_drops_the_principals_entries_but_not_its_pending_ones() {
        let mut copy = Copy::default();
        let until = AT + 60;
        copy.add_token("m1".into(), until, Some(owner("mallory")));
        copy.add_token("m2".into(), until, Some(owner("mallory")));
        copy.add_token("v1".into(), until, Some(owner("victim")));
        copy.add_token("u1".into(), until, None);
        copy.set_owner("u1", &owner("mallory"));
        copy.add_token("p1".into(), until, Some(owner("mallory")));
        copy.pending.insert(
            "p1".into(),
            PendingToken {
                until,
                sub: "mallory".into(),
            },
        );
        copy.apply_principal(fold_of("mallory", AT_MS));
        let mut left: Vec<&str> = copy.tokens.keys().map(String::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["p1", "v1"]);
        let (at, fps) = &copy.by_principal["mallory"];
        assert!(issued_before(AT, *at) && !issued_before(AT + 1, *at));
        assert!(fps.contains(FOLDED));
        // Read from the store (a resynchronisation), a fold drops nothing by itself.
        copy.add_principal(fold_of("victim", AT_MS));
        assert!(copy.tokens.contains_key("v1"));
    }

    #[test]
    fn principal_revocations_older_than_the_cutoff_are_pruned() {
        let mut copy = Copy::default();
        copy.add_principal(fold_of("old", 1_000));
        copy.add_principal(fold_of("new", 5_000));
        copy.add_principal(PrincipalRevocation::from_member("ab12 new", 2_000).unwrap());
        copy.prune(AT, 3_000);
        assert_eq!(copy.principal_entries.len(), 1);
        assert!(!copy.by_principal.contains_key("old"));
        let (at, fps) = &copy.by_principal["new"];
        assert_eq!(*at, 5_000);
        assert!(
            !fps.contains("ab12"),
            "the pruned credential is forgotten too"
        );
    }
}
