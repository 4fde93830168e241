//! The revocation list: token ids (`iss` + `jti`) refused until the token would have
//! expired anyway.
//!
//! Keyed by `iss` + `jti`, never by the token's bytes: a JWS can be re-encoded (other
//! base64 padding bits, a re-ordered header) without changing its meaning, and a list
//! keyed by bytes would miss the copy (OWASP JWT cheat sheet, "denylist").

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;

use async_trait::async_trait;

use crate::error::Result;
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
#[derive(Debug, Default)]
pub struct MemoryRevocationStore {
    entries: Mutex<HashMap<(String, String), u64>>,
}

impl MemoryRevocationStore {
    /// An empty list.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of entries still held.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when nothing is revoked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), u64>> {
        // A panic while holding the lock cannot leave the map half-written (each
        // operation is a single insert or lookup), so a poisoned lock is still usable.
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait]
impl RevocationStore for MemoryRevocationStore {
    async fn revoke(&self, issuer: &str, jti: &str, expires_at: u64) -> Result<()> {
        let now = now_unix();
        let mut entries = self.lock();
        entries.retain(|_, exp| *exp >= now);
        entries.insert((issuer.to_owned(), jti.to_owned()), expires_at);
        Ok(())
    }

    async fn is_revoked(&self, issuer: &str, jti: &str) -> Result<bool> {
        let entries = self.lock();
        Ok(entries.contains_key(&(issuer.to_owned(), jti.to_owned())))
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
}
