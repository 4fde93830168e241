//! [`VerifiedTokens`]: the tokens this configuration has already verified, so that a
//! service presenting the same token for its whole life costs `/verify` a lookup instead
//! of a signature check and two JSON parses.
//!
//! What it holds and why it never answers wrongly (docs/security.md, "The verified-token
//! cache"):
//!
//! - **Only the signature and claims check is cached.** The revocation list (token,
//!   principal and folded revocations) and the directory (a removed or revoked principal,
//!   its `not_before`) are looked up on every request, hit or miss, in `authorize.rs`: a
//!   revocation made on any replica reaches the local revocation copy and refuses the token
//!   at once, without this cache having to hear of it.
//! - **One cache per [`crate::Runtime`].** A reload builds a new runtime with an empty
//!   cache, so a change of issuer, audience, leeway, algorithm or keys (a key retired or
//!   removed from the keyring) is never answered from a verdict taken under the old one.
//! - **Every time-dependent check is repeated on a hit**: an entry answers only while the
//!   clock is inside the window the verifier would accept (`nbf`/`iat` minus the leeway up
//!   to `exp` plus the leeway, RFC 7519 §4.1.4–4.1.5), and no later than the moment a
//!   retired key of the set stops verifying (`retired_at + ttl + leeway`); outside it the
//!   full verifier runs (and gives the exact refusal), and an entry past its end is dropped.
//! - **Keyed by the whole token.** A 64-bit hash, seeded at random per process, picks the
//!   entry; the stored token is then compared byte for byte, so a different token never
//!   hits, whatever the hash does.
//! - **Filled only by tokens that passed every check**, and bounded: at most
//!   [`DEFAULT_ENTRIES`] tokens and [`DEFAULT_BYTES`] accounted bytes (the tokens, their
//!   claims and a fixed overhead per entry), tokens over [`MAX_CACHED_TOKEN`] bytes are not
//!   kept.
//! - **A flood cannot push out the working set cheaply.** Each shard keeps a
//!   probationary segment where every new token starts (whatever room the protected
//!   segment leaves, a tenth of the shard at least), and a protected segment of at most
//!   nine tenths. A probationary token leaves when the segment needs room, unless it was
//!   presented again meanwhile: then it moves to the protected segment. Protected tokens
//!   are evicted by CLOCK with a small count (each presentation adds one, up to three;
//!   each pass of the hand takes one; the hand evicts a token whose count is spent), and
//!   only to make room for a promoted token. A stream of distinct tokens each
//!   presented once churns the probationary segment only; to evict one protected token an
//!   attacker needs a promoted token for each protected slot the hand passes, each of
//!   them issued at `/login` (rate-limited, quota'd) and presented twice.

use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use keygate::token::{Claims, KeySet, TokenPolicy};

/// Tokens kept at most, by default.
pub const DEFAULT_ENTRIES: usize = 65_536;

/// Accounted bytes kept at most, by default: each entry counts its token, its claims'
/// strings and a fixed overhead per entry (what the entry, its claims and its map slot
/// take, rounded up).
pub const DEFAULT_BYTES: usize = 64 * 1024 * 1024;

/// Longest token kept. keygate's own tokens are a few hundred bytes; the verifier accepts
/// up to [`keygate::token::MAX_TOKEN_LEN`].
pub const MAX_CACHED_TOKEN: usize = 4 * 1024;

/// Bytes counted per entry beyond its strings: the entry, its map slot, the claims' fixed
/// part and the allocations' headers, rounded up.
const ENTRY_OVERHEAD: usize = 512;

/// Passes of the protected segment's hand a token presented often survives unused.
const MAX_FREQUENCY: u8 = 3;

/// Shards of the default cache: each a mutex of its own, so the workers of a busy server
/// rarely wait for each other.
const DEFAULT_SHARDS: usize = 16;

/// The bytes an entry is counted for.
fn entry_bytes(token: &str, claims: &Claims) -> usize {
    let aud = claims
        .aud
        .as_ref()
        .map_or(0, |a| a.iter().map(|s| s.len() + 24).sum());
    token.len()
        + claims.iss.len()
        + claims.sub.len()
        + claims.jti.len()
        + claims.client_id.len()
        + claims.role.len()
        + claims.scope.len()
        + aud
        + ENTRY_OVERHEAD
}

/// The window in which a verdict of the verifier holds, in seconds since the epoch,
/// both ends included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// The first second the token verifies: `max(nbf, iat) - leeway`.
    pub from: u64,
    /// The last second the token verifies: `exp + leeway`, or earlier when a retired key
    /// of the set stops verifying before.
    pub until: u64,
}

impl Window {
    /// The window of `claims`, verified under `policy` with the keys of `keys`. A key
    /// retired at `r` stops verifying when `r + ttl + leeway` has come (see
    /// [`KeySet::published`]); the token's own key is not named here, so the earliest such
    /// moment still ahead bounds the window: conservative (an entry may be verified again
    /// sooner than it had to be), never late.
    pub fn of(claims: &Claims, policy: &TokenPolicy, keys: &KeySet, now: u64) -> Self {
        let leeway = policy.leeway.as_secs();
        let keep = policy.keep_after_retire();
        let key_stops = keys
            .entries()
            .iter()
            .filter_map(|e| e.retired_at)
            .map(|r| r.saturating_add(keep))
            .filter(|&stops| stops > now)
            .min();
        let until = claims.exp.saturating_add(leeway);
        Self {
            from: claims.nbf.max(claims.iat).saturating_sub(leeway),
            until: key_stops.map_or(until, |stops| until.min(stops - 1)),
        }
    }
}

/// What [`VerifiedTokens::get`] found.
#[derive(Debug)]
pub enum Lookup {
    /// Verified before, and the window still holds.
    Hit(Arc<Claims>),
    /// Not here (or no longer valid): verify it.
    Miss,
}

/// Which segment an entry is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Segment {
    Probation,
    Protected,
}

#[derive(Debug)]
struct Entry {
    hash: u64,
    token: Box<str>,
    claims: Arc<Claims>,
    window: Window,
    bytes: usize,
    /// Times presented since it came in, less one per pass of the protected segment's
    /// CLOCK hand; at most [`MAX_FREQUENCY`].
    frequency: u8,
}

/// Up to `capacity` slots, allocated as they are first needed, swept by a hand.
#[derive(Debug)]
struct Ring {
    slots: Vec<Option<Entry>>,
    capacity: usize,
    free: Vec<u32>,
    hand: usize,
    len: usize,
}

impl Ring {
    fn new(capacity: usize) -> Self {
        Self {
            slots: Vec::new(),
            capacity,
            free: Vec::new(),
            hand: 0,
            len: 0,
        }
    }

    fn is_full(&self) -> bool {
        self.len == self.capacity
    }

    /// Stores `entry` in a free slot; the caller made room.
    fn put(&mut self, entry: Entry) -> u32 {
        let i = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(None);
                (self.slots.len() - 1) as u32
            }
        };
        self.slots[i as usize] = Some(entry);
        self.len += 1;
        i
    }

    fn take(&mut self, i: u32) -> Option<Entry> {
        let entry = self.slots[i as usize].take()?;
        self.free.push(i);
        self.len -= 1;
        Some(entry)
    }

    /// The slot under the hand, and the hand moved on.
    fn advance(&mut self) -> u32 {
        if self.hand >= self.slots.len() {
            self.hand = 0;
        }
        let i = self.hand;
        self.hand += 1;
        i as u32
    }
}

#[derive(Debug)]
struct Shard {
    /// Hash of the token → (segment, slot). Two verified tokens of the same 64-bit hash
    /// are astronomically rare; the second one is simply not kept.
    map: std::collections::HashMap<u64, (Segment, u32), foldhash::fast::RandomState>,
    /// New tokens: whatever the protected segment does not use.
    probation: Ring,
    /// Tokens presented again while on probation: at most nine tenths of the shard.
    protected: Ring,
    entries: usize,
    bytes: usize,
    max_bytes: usize,
    /// Lookups answered here (kept under the lock: no shared counter on the hot path).
    hits: u64,
}

impl Shard {
    fn new(entries: usize, max_bytes: usize) -> Self {
        let protected = entries - (entries / 10).max(1);
        Self {
            map: std::collections::HashMap::default(),
            probation: Ring::new(entries),
            protected: Ring::new(protected.max(1)),
            entries,
            bytes: 0,
            hits: 0,
            max_bytes,
        }
    }

    fn ring(&mut self, segment: Segment) -> &mut Ring {
        match segment {
            Segment::Probation => &mut self.probation,
            Segment::Protected => &mut self.protected,
        }
    }

    fn entry(&mut self, segment: Segment, i: u32) -> Option<&mut Entry> {
        self.ring(segment).slots[i as usize].as_mut()
    }

    fn remove(&mut self, hash: u64) {
        if let Some((segment, i)) = self.map.remove(&hash)
            && let Some(entry) = self.ring(segment).take(i)
        {
            self.bytes -= entry.bytes;
        }
    }

    /// Frees one probationary slot: the entry under the hand leaves, or, when it was
    /// presented again since it came in, moves to the protected segment with its count.
    fn evict_probation(&mut self) {
        for _ in 0..self.probation.slots.len() {
            let i = self.probation.advance();
            let Some(entry) = self.probation.take(i) else {
                continue;
            };
            if entry.frequency > 0 {
                if self.protected.is_full() {
                    self.evict_protected();
                }
                let hash = entry.hash;
                let j = self.protected.put(entry);
                self.map.insert(hash, (Segment::Protected, j));
            } else {
                self.map.remove(&entry.hash);
                self.bytes -= entry.bytes;
            }
            return;
        }
    }

    /// Frees one protected slot by CLOCK: the hand passes over an entry with a count,
    /// taking one from it, and evicts the first without. `MAX_FREQUENCY + 1` turns at
    /// most: by then every count is spent.
    fn evict_protected(&mut self) {
        for _ in 0..(usize::from(MAX_FREQUENCY) + 1) * self.protected.slots.len() {
            let i = self.protected.advance();
            let Some(entry) = self.protected.slots[i as usize].as_mut() else {
                continue;
            };
            if entry.frequency > 0 {
                entry.frequency -= 1;
                continue;
            }
            if let Some(entry) = self.protected.take(i) {
                self.map.remove(&entry.hash);
                self.bytes -= entry.bytes;
            }
            return;
        }
    }

    fn insert(&mut self, entry: Entry) {
        // The same token verified by two workers at once (keep the entry there), or
        // another token of the same hash (not kept).
        if self.map.contains_key(&entry.hash) {
            return;
        }
        while self.probation.len + self.protected.len >= self.entries
            || self.bytes + entry.bytes > self.max_bytes
        {
            if self.probation.len > 0 {
                self.evict_probation();
            } else if self.protected.len > 0 {
                self.evict_protected();
            } else {
                // An entry larger than the shard's budget is not kept.
                return;
            }
        }
        self.bytes += entry.bytes;
        let hash = entry.hash;
        let i = self.probation.put(entry);
        self.map.insert(hash, (Segment::Probation, i));
    }
}

/// Verified tokens of one runtime (see the module's documentation).
#[derive(Debug)]
pub struct VerifiedTokens {
    hasher: foldhash::quality::RandomState,
    shards: Box<[Mutex<Shard>]>,
}

impl Default for VerifiedTokens {
    fn default() -> Self {
        Self::new(DEFAULT_ENTRIES, DEFAULT_BYTES, DEFAULT_SHARDS)
    }
}

impl VerifiedTokens {
    /// At most `entries` tokens and `bytes` accounted bytes, in `shards` shards (each
    /// holding an equal part of both).
    pub fn new(entries: usize, bytes: usize, shards: usize) -> Self {
        let shards = shards.max(1);
        let per_shard = entries.div_ceil(shards).max(2);
        let bytes_per_shard = bytes.div_ceil(shards);
        Self {
            hasher: foldhash::quality::RandomState::default(),
            shards: (0..shards)
                .map(|_| Mutex::new(Shard::new(per_shard, bytes_per_shard)))
                .collect(),
        }
    }

    fn shard(&self, hash: u64) -> MutexGuard<'_, Shard> {
        // The high bits pick the shard; the map hashes the whole value again.
        let i = ((hash >> 32) as usize) % self.shards.len();
        // A panic while holding a shard leaves it consistent enough to read: every
        // mutation keeps the map and the rings in step before anything can panic.
        self.shards[i]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The claims of `token` when it was verified before and its window holds at `now`
    /// (seconds since the epoch). An entry whose window has passed is dropped.
    pub fn get(&self, token: &str, now: u64) -> Lookup {
        let hash = self.hasher.hash_one(token);
        let mut shard = self.shard(hash);
        let Some(&(segment, i)) = shard.map.get(&hash) else {
            return Lookup::Miss;
        };
        let Some(entry) = shard.entry(segment, i) else {
            return Lookup::Miss;
        };
        if *entry.token != *token {
            return Lookup::Miss;
        }
        if now > entry.window.until {
            shard.remove(hash);
            return Lookup::Miss;
        }
        if now < entry.window.from {
            return Lookup::Miss;
        }
        entry.frequency = (entry.frequency + 1).min(MAX_FREQUENCY);
        let claims = entry.claims.clone();
        shard.hits += 1;
        Lookup::Hit(claims)
    }

    /// Keeps `token`, which passed every check, with its `claims`, valid within `window`.
    pub fn insert(&self, token: &str, claims: Arc<Claims>, window: Window) {
        if token.len() > MAX_CACHED_TOKEN {
            return;
        }
        let hash = self.hasher.hash_one(token);
        let entry = Entry {
            hash,
            token: token.into(),
            bytes: entry_bytes(token, &claims),
            claims,
            window,
            frequency: 0,
        };
        self.shard(hash).insert(entry);
    }

    /// Tokens held now.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                let s = s.lock().unwrap_or_else(PoisonError::into_inner);
                s.probation.len + s.protected.len
            })
            .sum()
    }

    /// True when no token is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Lookups answered from the cache so far.
    pub fn hits(&self) -> u64 {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).hits)
            .sum()
    }

    /// Accounted bytes held now.
    pub fn bytes(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).bytes)
            .sum()
    }
}

#[cfg(test)]
mod tests;
