//! The revocation list: token ids (`iss` + `jti`) refused until the token would have
//! expired anyway.
//!
//! Keyed by `iss` + `jti`, never by the token's bytes: a JWS can be re-encoded (other
//! base64 padding bits, a re-ordered header) without changing its meaning, and a list
//! keyed by bytes would miss the copy (OWASP JWT cheat sheet, "denylist").

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Mutex;

use sha2::{Digest, Sha256};

use crate::clock::Clock;

/// A revocation list in this process's memory. Entries are dropped once their token has
/// expired, so the list holds at most the tokens revoked within one token lifetime.
///
/// Bounded by configuration, never by input: an entry is a fixed-size digest of `iss` +
/// `jti`, its expiry and the digest of the principal the token was issued to; expired
/// entries leave in expiry order without a scan. Revocation never fails for lack of room
/// (see [`MemoryRevocationStore::revoke_token_of`]): each principal holds at most its
/// share of entries, and a principal past its share — or the one holding most entries
/// when the whole list is full — has its entries folded into one record, "its tokens
/// issued before T are refused", which logs out only that principal.
#[derive(Debug)]
pub struct MemoryRevocationStore {
    inner: Mutex<Entries>,
    capacity: usize,
    share: usize,
    /// Compared with each entry's expiry, and dates the folds.
    clock: Clock,
}

impl Default for MemoryRevocationStore {
    fn default() -> Self {
        Self::bounded(MAX_REVOKED)
    }
}

/// Revocations held at once; with tokens of 30 minutes, a sustained 500 revocations a
/// second per replica.
pub const MAX_REVOKED: usize = 1_000_000;

/// Token revocations one principal holds at once before they are folded into one
/// "tokens issued before T" record: 1 % of [`MAX_REVOKED`].
pub const DEFAULT_PRINCIPAL_SHARE: usize = 10_000;

/// What a revocation did to the list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revoked {
    /// The token is listed on its own.
    Listed,
    /// The principal's entries, this token's included, were folded: every token of the
    /// principal issued before `before_ms` (milliseconds since the epoch) is refused.
    Folded {
        /// Tokens whose `iat`, in milliseconds, is below this are refused.
        before_ms: u64,
    },
}

/// "Tokens of this principal issued before `before_ms` are refused, until `until`."
#[derive(Debug, Clone, Copy)]
struct Folded {
    before_ms: u64,
    until: u64,
}

type Digest32 = [u8; 32];

#[derive(Debug, Default)]
struct Entries {
    /// Token id → (refused until, principal).
    until: HashMap<Digest32, (u64, Digest32)>,
    by_expiry: BinaryHeap<Reverse<(u64, Digest32)>>,
    /// Entries held per principal.
    per_principal: HashMap<Digest32, usize>,
    /// Folded principals.
    folded: HashMap<Digest32, Folded>,
}

fn id(issuer: &str, jti: &str) -> Digest32 {
    let mut h = Sha256::new();
    h.update((issuer.len() as u64).to_be_bytes());
    h.update(issuer.as_bytes());
    h.update(jti.as_bytes());
    h.finalize().into()
}

fn principal_id(principal: &str) -> Digest32 {
    let mut h = Sha256::new();
    h.update(b"keygate principal\0");
    h.update(principal.as_bytes());
    h.finalize().into()
}

/// Milliseconds since the epoch, by the system clock.
pub fn now_ms() -> u64 {
    Clock::system().now_ms()
}

/// True when a token issued at `iat` (whole seconds) may have been issued before the
/// instant `at_ms`: its second began before it. A token whose second begins at or after
/// `at_ms` was issued at or after it (`iat` is the issue time rounded down), so a
/// revocation made on a whole second (`key rotate --grace 0s`) spares the tokens the new
/// key obtains in that second.
pub fn issued_before(iat: u64, at_ms: u64) -> bool {
    iat.saturating_mul(1000) < at_ms
}

impl MemoryRevocationStore {
    /// True when the token is on the list now. Every token is checked against the list,
    /// and the list is empty most of the time: then nothing is hashed.
    pub fn contains(&self, issuer: &str, jti: &str) -> bool {
        if self.lock().until.is_empty() {
            return false;
        }
        let key = id(issuer, jti);
        self.lock()
            .until
            .get(&key)
            .is_some_and(|(exp, _)| *exp >= self.clock.now_unix())
    }

    /// True when the tokens of `principal` issued at `iat` were folded away (see
    /// [`MemoryRevocationStore::revoke_token_of`]).
    pub fn principal_refused(&self, principal: &str, iat: u64) -> bool {
        if self.lock().folded.is_empty() {
            return false;
        }
        let key = principal_id(principal);
        self.lock()
            .folded
            .get(&key)
            .is_some_and(|f| f.until >= self.clock.now_unix() && issued_before(iat, f.before_ms))
    }

    /// An empty list holding at most [`MAX_REVOKED`] entries.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty list holding at most `capacity` entries, at most
    /// [`DEFAULT_PRINCIPAL_SHARE`] (or `capacity`, if lower) of one principal.
    pub fn bounded(capacity: usize) -> Self {
        Self::with_share(capacity, DEFAULT_PRINCIPAL_SHARE)
    }

    /// An empty list holding at most `capacity` entries, at most `share` of one principal.
    pub fn with_share(capacity: usize, share: usize) -> Self {
        Self {
            inner: Mutex::default(),
            capacity: capacity.max(1),
            share: share.clamp(1, capacity.max(1)),
            clock: Clock::system(),
        }
    }

    /// This list, reading the time from `clock` instead of the system clock.
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Entries held now, expired ones not yet swept included; a folded principal counts
    /// as one.
    pub fn len(&self) -> usize {
        let entries = self.lock();
        entries.until.len() + entries.folded.len()
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Refuses the token `issuer` + `jti`, issued to `principal` (its `sub`), until
    /// `expires_at`. Never fails: past the principal's share, or with the list full, a
    /// principal's entries are folded (see [`Revoked::Folded`]).
    pub fn revoke_token_of(
        &self,
        principal: &str,
        issuer: &str,
        jti: &str,
        expires_at: u64,
    ) -> Revoked {
        self.insert(principal_id(principal), id(issuer, jti), expires_at)
    }

    fn insert(&self, owner: Digest32, key: Digest32, expires_at: u64) -> Revoked {
        let now_ms = self.clock.now_ms();
        let mut entries = self.lock();
        entries.sweep(now_ms / 1000);
        if let Some((exp, _)) = entries.until.get_mut(&key) {
            if expires_at > *exp {
                *exp = expires_at;
                entries.by_expiry.push(Reverse((expires_at, key)));
            }
            return Revoked::Listed;
        }
        let held = entries.per_principal.get(&owner).copied().unwrap_or(0);
        if held >= self.share {
            return Revoked::Folded {
                before_ms: entries.fold(owner, expires_at, now_ms),
            };
        }
        if entries.until.len() >= self.capacity {
            // The principal holding most entries gives up its room; it may be this one.
            let largest = entries
                .per_principal
                .iter()
                .max_by_key(|(_, n)| **n)
                .map(|(p, _)| *p);
            if largest.is_none_or(|p| p == owner) {
                return Revoked::Folded {
                    before_ms: entries.fold(owner, expires_at, now_ms),
                };
            }
            if let Some(p) = largest {
                entries.fold(p, 0, now_ms);
            }
        }
        entries.until.insert(key, (expires_at, owner));
        entries.by_expiry.push(Reverse((expires_at, key)));
        *entries.per_principal.entry(owner).or_insert(0) += 1;
        Revoked::Listed
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Entries {
    fn sweep(&mut self, now: u64) {
        while let Some(Reverse((exp, key))) = self.by_expiry.peek().copied() {
            if exp >= now {
                break;
            }
            self.by_expiry.pop();
            if let Some((held, owner)) = self.until.get(&key).copied()
                && held == exp
            {
                self.until.remove(&key);
                self.release(owner);
            }
        }
        if !self.folded.is_empty() {
            self.folded.retain(|_, f| f.until >= now);
        }
    }

    fn release(&mut self, owner: Digest32) {
        if let Some(n) = self.per_principal.get_mut(&owner) {
            *n -= 1;
            if *n == 0 {
                self.per_principal.remove(&owner);
            }
        }
    }

    /// Replaces every entry of `owner` by one record refusing its tokens issued up to
    /// now (`now_ms`), kept until the last of them (or `until`, if later) expires. Returns
    /// the record's bound in milliseconds. One pass over the list, once per `share`
    /// revocations of that principal at most.
    fn fold(&mut self, owner: Digest32, until: u64, now_ms: u64) -> u64 {
        // Every token revoked so far was issued at or before now: `iat * 1000 <= now`.
        let before_ms = now_ms + 1;
        let mut latest = until;
        self.until.retain(|_, (exp, o)| {
            if *o == owner {
                latest = latest.max(*exp);
                false
            } else {
                true
            }
        });
        self.per_principal.remove(&owner);
        let f = self.folded.entry(owner).or_insert(Folded {
            before_ms,
            until: latest,
        });
        f.before_ms = f.before_ms.max(before_ms);
        f.until = f.until.max(latest);
        // The heap keeps stale (expiry, id) pairs of the removed entries; `sweep` skips
        // them, and they leave with their expiry.
        if self.by_expiry.len() > 2 * self.until.len() + 1024 {
            let live: BinaryHeap<_> = self
                .until
                .iter()
                .map(|(k, (exp, _))| Reverse((*exp, *k)))
                .collect();
            self.by_expiry = live;
        }
        before_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::token::now_unix;

    /// Half a second into a whole second, where every test clock starts.
    const START_MS: u64 = 1_800_000_000_500;
    const START: u64 = START_MS / 1000;

    #[test]
    fn revoked_id_is_reported_until_pruned() {
        let store = MemoryRevocationStore::new();
        assert!(!store.contains("iss", "a"));
        store.revoke_token_of("alice", "iss", "a", now_unix() + 60);
        assert!(store.contains("iss", "a"));
        assert!(!store.contains("other-iss", "a"));
        store.revoke_token_of("alice", "iss", "old", 1);
        store.revoke_token_of("alice", "iss", "b", now_unix() + 60);
        assert_eq!(store.len(), 2, "the expired entry was pruned");
    }

    #[test]
    fn an_id_held_is_extended_and_expired_entries_make_room() {
        let store = MemoryRevocationStore::with_share(3, 3);
        let later = now_unix() + 60;
        for (principal, jti) in [("a", "a1"), ("b", "b1"), ("c", "c1")] {
            store.revoke_token_of(principal, "iss", jti, later);
        }
        assert_eq!(
            store.revoke_token_of("a", "iss", "a1", later + 5),
            Revoked::Listed
        );
        assert_eq!(store.len(), 3, "an id already held may be extended");
        let long_jti = "j".repeat(8 * 1024);
        let store = MemoryRevocationStore::with_share(2, 2);
        store.revoke_token_of("a", "iss", "soon", now_unix() - 1);
        store.revoke_token_of("b", "iss", &long_jti, later);
        assert_eq!(
            store.revoke_token_of("c", "iss", "e", later),
            Revoked::Listed
        );
        assert!(store.contains("iss", &long_jti) && store.contains("iss", "e"));
        assert_eq!(
            store.len(),
            2,
            "the expired entry made room, nothing was folded"
        );
    }

    /// One principal revoking a million of its own tokens never fills the list: its
    /// entries are folded each time it passes its share, and another principal's
    /// revocation is still listed and refused.
    #[test]
    fn a_million_revocations_of_one_principal_leave_room_for_everyone_else() {
        let clock = ManualClock::at_ms(START_MS);
        let store = MemoryRevocationStore::new().with_clock(clock.clock());
        let later = START + 1800;
        let started = std::time::Instant::now();
        let mut folds = 0;
        for n in 0..1_000_000u32 {
            if let Revoked::Folded { .. } =
                store.revoke_token_of("mallory", "iss", &format!("m{n}"), later)
            {
                folds += 1;
            }
        }
        eprintln!(
            "1 000 000 revocations of one principal: {folds} folds, {} entries held, {:?}",
            store.len(),
            started.elapsed()
        );
        assert_eq!(folds, 1_000_000 / (DEFAULT_PRINCIPAL_SHARE + 1));
        assert!(
            store.len() <= DEFAULT_PRINCIPAL_SHARE + 1,
            "{}",
            store.len()
        );
        // The folds happened half a second into START: a token of that second may be
        // older than them, one of the next second is not.
        assert!(
            store.principal_refused("mallory", START),
            "its tokens are refused"
        );
        assert!(
            !store.principal_refused("mallory", START + 1),
            "not those it obtains later"
        );
        assert_eq!(
            store.revoke_token_of("victim", "iss", "v1", later),
            Revoked::Listed
        );
        assert!(store.contains("iss", "v1"));
        assert!(!store.contains("iss", "v2"));
        assert!(
            !store.principal_refused("victim", START),
            "the victim is not folded"
        );
    }

    #[test]
    fn a_full_list_folds_the_principal_holding_most() {
        let clock = ManualClock::at_ms(START_MS);
        let store = MemoryRevocationStore::with_share(4, 3).with_clock(clock.clock());
        let later = START + 60;
        // Issued in the second the folds below happen, before them.
        let issued = START;
        store.revoke_token_of("a", "iss", "a1", later);
        store.revoke_token_of("a", "iss", "a2", later);
        store.revoke_token_of("a", "iss", "a3", later);
        store.revoke_token_of("b", "iss", "b1", later);
        assert_eq!(
            store.revoke_token_of("b", "iss", "b2", later),
            Revoked::Listed,
            "room made by folding `a`"
        );
        assert!(store.contains("iss", "b1") && store.contains("iss", "b2"));
        assert!(!store.contains("iss", "a1"));
        assert!(store.principal_refused("a", issued));
        assert!(!store.principal_refused("b", issued));
        // Past its share, a principal folds itself, whatever room is left.
        store.revoke_token_of("b", "iss", "b3", later);
        assert!(matches!(
            store.revoke_token_of("b", "iss", "b4", later),
            Revoked::Folded { .. }
        ));
        assert!(store.principal_refused("b", issued));
    }

    #[test]
    fn a_token_from_the_second_a_revocation_began_is_refused_unless_that_was_a_whole_second() {
        assert!(issued_before(99, 100_000));
        assert!(
            !issued_before(100, 100_000),
            "iat == the whole second: issued after"
        );
        assert!(
            issued_before(100, 100_001),
            "may predate a revocation within its second"
        );
        assert!(!issued_before(101, 100_999));
    }

    /// A token stays refused through the second of its expiry and not after, and its entry
    /// then leaves the list; a fold lasts as long as the last token it covers.
    #[test]
    fn entries_and_folds_last_until_the_clock_passes_their_expiry() {
        let clock = ManualClock::at_ms(START_MS);
        let store = MemoryRevocationStore::with_share(100, 1).with_clock(clock.clock());
        store.revoke_token_of("alice", "iss", "a1", START + 10);
        assert!(matches!(
            store.revoke_token_of("alice", "iss", "a2", START + 20),
            Revoked::Folded { .. }
        ));
        store.revoke_token_of("bob", "iss", "b1", START + 10);
        clock.advance(std::time::Duration::from_secs(10));
        assert!(store.contains("iss", "b1"), "refused in its expiry second");
        assert!(store.principal_refused("alice", START));
        clock.advance(std::time::Duration::from_secs(1));
        assert!(!store.contains("iss", "b1"), "not after it");
        assert!(store.principal_refused("alice", START), "a2 still covered");
        clock.advance(std::time::Duration::from_secs(10));
        assert!(
            !store.principal_refused("alice", START),
            "past the last expiry"
        );
        store.revoke_token_of("carol", "iss", "c1", START + 100);
        assert_eq!(store.len(), 1, "expired entries and folds were swept");
    }
}
