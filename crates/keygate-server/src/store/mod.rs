//! Shared state for several replicas (`[store]`): the revocation list, principal
//! revocations written by the CLI, the failed-attempt counters and the quotas. Without a store all
//! of it lives in this process's memory ([`keygate::revocation::MemoryRevocationStore`],
//! [`crate::limits::FailedAttempts`]).
//!
//! - [`connection`]: [`RedisStore`], one Redis, a Sentinel-managed primary or a Cluster,
//!   every call bounded by `store.timeout`.
//! - `layout`: key names, namespaced by issuer, one hash tag per deployment.
//! - [`revocations`]: each replica's local copy of the list, read by every token check
//!   without a network round trip; `sync`: keeps it current (pub/sub) and resynchronises
//!   it both ways after every reconnect.
//! - [`principals`]: "credential F of principal ID revoked at T", written by the CLI.
//! - [`attempts`]: [`RedisAttempts`], one Lua script per decision.
//! - `quota`: [`RedisQuota`], one GCRA script per counted request.
//! - `requirements`: persistence and eviction settings, checked at start-up.
//!
//! When the store cannot be reached nothing crashes and nothing waits long: token checks
//! follow `store.on_unavailable` (`deny`, the default, answers 503 while the copy is not
//! in sync; `allow` answers from the copy), a revocation is applied here and retried until
//! the store takes it (503 under `deny`, 204 under `allow`), and the attempt counters fall
//! back to this replica's own counts. `/readyz` reports the outage and pending revocations. Connections are
//! re-established on their own once Redis is back.

pub mod attempts;
pub mod connection;
mod layout;
pub mod principals;
mod quota;
mod requirements;
pub mod revocations;
mod sync;

pub use self::attempts::RedisAttempts;
pub use self::connection::RedisStore;
pub use self::principals::{PendingRevocation, PendingRevocationError};
pub use self::quota::RedisQuota;
pub use self::revocations::SharedRevocations;
pub(crate) use self::revocations::{Revocations, Revoke, Verdict};
