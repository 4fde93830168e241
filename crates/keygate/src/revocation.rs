//! The revocation list: token ids (`iss` + `jti`) refused until the token would have
//! expired anyway.
//!
//! Keyed by `iss` + `jti`, never by the token's bytes: a JWS can be re-encoded (other
//! base64 padding bits, a re-ordered header) without changing its meaning, and a list
//! keyed by bytes would miss the copy (OWASP JWT cheat sheet, "denylist").

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::fmt;
use std::sync::Mutex;

use async_trait::async_trait;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::token::now_unix;

/// Where revoked token ids are kept. In memory for one replica; shared stores (Redis)
/// implement the same trait so every replica honours a revocation.
#[async_trait]
pub trait RevocationStore: Send + Sync + fmt::Debug {
    /// Refuses the token `issuer` + `jti` until `expires_at` (seconds since the epoch).
    async fn revoke(&self, issuer: &str, jti: &str, expires_at: u64) -> Result<()>;
    /// True when the token has been revoked.
    async fn is_revoked(&self, issuer: &str, jti: &str) -> Result<bool>;
    /// True when the store can be reached (for `/readyz`).
    async fn is_available(&self) -> bool {
        true
    }
}

/// A revocation list in this process's memory. Entries are dropped once their token has
/// expired, so the list holds at most the tokens revoked within one token lifetime.
/// Revoked ids kept in memory until they expire, at most [`MAX_REVOKED`] at once.
///
/// Bounded by configuration, never by input (SPEC §9): an entry is a fixed-size digest of
/// `iss` + `jti` and its expiry, expired entries leave in expiry order without a scan,
/// and a full list refuses new revocations (the caller answers 503) rather than grow.
#[derive(Debug)]
pub struct MemoryRevocationStore {
    inner: Mutex<Entries>,
    capacity: usize,
}

impl Default for MemoryRevocationStore {
    fn default() -> Self {
        Self::bounded(MAX_REVOKED)
    }
}

/// Revocations held at once; with tokens of 30 minutes, a sustained 500 revocations a
/// second per replica.
pub const MAX_REVOKED: usize = 1_000_000;

#[derive(Debug, Default)]
struct Entries {
    until: HashMap<[u8; 32], u64>,
    by_expiry: BinaryHeap<Reverse<(u64, [u8; 32])>>,
}

fn id(issuer: &str, jti: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update((issuer.len() as u64).to_be_bytes());
    h.update(issuer.as_bytes());
    h.update(jti.as_bytes());
    h.finalize().into()
}

impl MemoryRevocationStore {
    /// True when the token is on the list now: [`RevocationStore::is_revoked`] without
    /// its boxed future, for callers that hold this type. Every token is checked against
    /// the list, and the list is empty most of the time: then nothing is hashed.
    pub fn contains(&self, issuer: &str, jti: &str) -> bool {
        if self.lock().until.is_empty() {
            return false;
        }
        let key = id(issuer, jti);
        self.lock()
            .until
            .get(&key)
            .is_some_and(|exp| *exp >= now_unix())
    }

    /// An empty list holding at most [`MAX_REVOKED`] entries.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty list holding at most `capacity` entries.
    pub fn bounded(capacity: usize) -> Self {
        Self {
            inner: Mutex::default(),
            capacity,
        }
    }

    /// Entries held now, expired ones not yet swept included.
    pub fn len(&self) -> usize {
        self.lock().until.len()
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
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
            if self.until.get(&key) == Some(&exp) {
                self.until.remove(&key);
            }
        }
    }
}

#[async_trait]
impl RevocationStore for MemoryRevocationStore {
    async fn revoke(&self, issuer: &str, jti: &str, expires_at: u64) -> Result<()> {
        let key = id(issuer, jti);
        let mut entries = self.lock();
        entries.sweep(now_unix());
        if entries.until.len() >= self.capacity && !entries.until.contains_key(&key) {
            return Err(Error::StoreUnavailable(
                "the revocation list is full".into(),
            ));
        }
        let exp = entries.until.entry(key).or_insert(0);
        if expires_at > *exp {
            *exp = expires_at;
            entries.by_expiry.push(Reverse((expires_at, key)));
        }
        Ok(())
    }

    async fn is_revoked(&self, issuer: &str, jti: &str) -> Result<bool> {
        Ok(self.contains(issuer, jti))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn revoked_id_is_reported_until_pruned() {
        let store = MemoryRevocationStore::new();
        assert!(!store.is_revoked("iss", "a").await.unwrap());
        store.revoke("iss", "a", now_unix() + 60).await.unwrap();
        assert!(store.is_revoked("iss", "a").await.unwrap());
        assert!(!store.is_revoked("other-iss", "a").await.unwrap());
        store.revoke("iss", "old", 1).await.unwrap();
        store.revoke("iss", "b", now_unix() + 60).await.unwrap();
        assert_eq!(store.len(), 2, "the expired entry was pruned");
    }

    #[tokio::test]
    async fn a_full_list_refuses_rather_than_grows_and_frees_as_entries_expire() {
        let store = MemoryRevocationStore::bounded(3);
        let later = now_unix() + 60;
        for jti in ["a", "b", "c"] {
            store.revoke("iss", jti, later).await.unwrap();
        }
        assert!(matches!(
            store.revoke("iss", "d", later).await,
            Err(Error::StoreUnavailable(_))
        ));
        store.revoke("iss", "a", later + 5).await.unwrap();
        assert_eq!(store.len(), 3, "an id already held may be extended");
        let long_jti = "j".repeat(8 * 1024);
        let store = MemoryRevocationStore::bounded(2);
        store.revoke("iss", "soon", now_unix() - 1).await.unwrap();
        store.revoke("iss", &long_jti, later).await.unwrap();
        store.revoke("iss", "e", later).await.unwrap();
        assert!(store.is_revoked("iss", &long_jti).await.unwrap());
        assert_eq!(store.len(), 2, "the expired entry made room");
    }
}
