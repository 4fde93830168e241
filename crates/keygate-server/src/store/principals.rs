//! Principal revocations in the store: "credential F of principal ID revoked at T".
//!
//! Each replica reads its own copy of the configuration file, so a `keygate key revoke`
//! on one copy reaches the others only as fast as the file is distributed. With a store
//! configured, the CLI's `key revoke`, `user remove` and `key rotate --grace 0s` also
//! write the revocation to the store ([`PendingRevocation`]); every replica then refuses
//! that credential at login and every token issued to the principal up to T, whatever its
//! own file says.
//!
//! A credential is named by a fingerprint of its stored hash (never the hash itself), so
//! a replica whose file still lists the old key recognises it, and a new key (a rotation,
//! a user added again) is not affected.

use std::time::Duration;

use keygate::api_key::KeyHash;
use time::OffsetDateTime;

use super::connection::{RedisStore, StoreSetupError};
use super::layout::{Layout, digest};
use crate::config::{ConfigError, StoreConfig};

/// Writes principal revocations and tells every replica.
/// KEYS: principals; ARGV: channel, then (score, member) pairs.
const REVOKE_PRINCIPAL: &str = r"
for i = 2, #ARGV, 2 do
  redis.call('ZADD', KEYS[1], 'GT', ARGV[i], ARGV[i + 1])
  redis.call('PUBLISH', ARGV[1], 'p ' .. ARGV[i] .. ' ' .. ARGV[i + 1])
end
return 1
";

/// The fingerprint of a stored credential hash.
pub(crate) fn fingerprint(hash: &KeyHash) -> String {
    digest(&["keygate credential", &hash.to_string()])
}

/// One revoked credential of one principal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PrincipalRevocation {
    pub(crate) id: String,
    pub(crate) fingerprint: String,
    /// Milliseconds since the epoch.
    pub(crate) at_ms: u64,
}

impl PrincipalRevocation {
    /// The sorted-set member: `<fingerprint> <id>` (ids hold no spaces).
    pub(crate) fn member(&self) -> String {
        format!("{} {}", self.fingerprint, self.id)
    }

    /// From a sorted-set member and its score.
    pub(crate) fn from_member(member: &str, at_ms: u64) -> Option<Self> {
        let (fingerprint, id) = member.split_once(' ')?;
        Some(Self {
            id: id.to_owned(),
            fingerprint: fingerprint.to_owned(),
            at_ms,
        })
    }
}

/// Why a principal revocation could not be prepared or written to the store.
#[derive(Debug, thiserror::Error)]
pub enum PendingRevocationError {
    /// The configuration file does not load.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Its `[store]` cannot be set up.
    #[error(transparent)]
    Store(#[from] StoreSetupError),
    /// No runtime could be started for the store call.
    #[error("cannot start a runtime for the store call")]
    Runtime(#[source] std::io::Error),
    /// The store did not take the revocation.
    #[error(transparent)]
    Write(#[from] keygate::Error),
}

/// A revocation the CLI prepares before editing the file (while the principal's
/// credentials are still there) and writes to the store once the edit has succeeded.
#[derive(Debug)]
pub struct PendingRevocation {
    store: RedisStore,
    layout: Layout,
    id: String,
    hashes: Vec<KeyHash>,
}

impl PendingRevocation {
    /// The revocation of `hashes`, the credentials of principal `id`, for the deployment
    /// issuing as `issuer`; `None` when `store` names no store. The store is given at least
    /// 2 s per call: the CLI connects from scratch, perhaps over TLS.
    pub(crate) fn new(
        store: &StoreConfig,
        issuer: &str,
        id: &str,
        hashes: Vec<KeyHash>,
    ) -> Result<Option<Self>, PendingRevocationError> {
        let mut store_config = store.clone();
        store_config.timeout = store_config.timeout.max(Duration::from_secs(2));
        let Some(store) = RedisStore::from_config(&store_config)? else {
            return Ok(None);
        };
        Ok(Some(Self {
            store,
            layout: Layout::for_issuer(issuer),
            id: id.to_owned(),
            hashes,
        }))
    }

    /// Writes "these credentials of this principal revoked at `at`" to the store and
    /// publishes it to every replica.
    pub fn publish(&self, at: OffsetDateTime) -> Result<(), PendingRevocationError> {
        let at_ms = u64::try_from(at.unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
        let mut args: Vec<String> = vec![self.layout.channel()];
        for h in &self.hashes {
            let r = PrincipalRevocation {
                id: self.id.clone(),
                fingerprint: fingerprint(h),
                at_ms,
            };
            args.push(at_ms.to_string());
            args.push(r.member());
        }
        let key = self.layout.principals();
        let store = self.store.clone();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(PendingRevocationError::Runtime)?;
        Ok(runtime.block_on(store.run(|mut c| async move {
            redis::cmd("EVAL")
                .arg(REVOKE_PRINCIPAL)
                .arg(1)
                .arg(&key)
                .arg(&args)
                .query_async::<()>(&mut c)
                .await
        }))?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_round_trip_and_hide_the_hash() {
        let hash = KeyHash::sha256_of("kg_billing_secret");
        let r = PrincipalRevocation {
            id: "billing@eu".into(),
            fingerprint: fingerprint(&hash),
            at_ms: 1_700_000_000_123,
        };
        assert!(!r.member().contains(&hash.to_string()["sha256:".len()..]));
        assert_eq!(
            PrincipalRevocation::from_member(&r.member(), r.at_ms),
            Some(r)
        );
    }
}
