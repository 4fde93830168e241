//! Shared state for several replicas (`[store] url = "redis://…"`): the revocation list,
//! the failed-attempt counters and the quotas (`quota.rs`). Without a URL both live in this process's memory
//! ([`keygate::revocation::MemoryRevocationStore`], [`crate::limits::FailedAttempts`]).
//!
//! When Redis cannot be reached nothing crashes and nothing waits long: every call has a
//! short deadline; revocation checks then follow `store.on_unavailable` (`deny`, the
//! default, answers 503; `allow` lets verified tokens through), revoking answers 503, and
//! the attempt counters fall back to this replica's own counts. `/readyz` reports the
//! outage. The connection is re-established on its own once Redis is back.

mod quota;
mod redis;

pub use self::quota::RedisQuota;
pub use self::redis::{RedisAttempts, RedisRevocationStore, RedisStore};
