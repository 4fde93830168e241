//! Quotas in Redis: one Lua script per decision, so the check and the count are one atomic
//! step however many replicas ask at once, and Redis's own clock (`TIME`) is the only clock,
//! so replicas whose clocks disagree still enforce one quota.
//!
//! The script is the same GCRA as [`crate::quota::gcra`]: the key holds the client's
//! theoretical arrival time (TAT) in microseconds and expires when the bucket is full again,
//! so an idle client costs no memory. Keys are namespaced by deployment like every other
//! (`keygate:{<issuer hash>}:quota:<client id hash>`), one hash tag per deployment.

use keygate::Error;
use keygate::error::StoreError;

use super::RedisStore;
use super::layout::Layout;
use crate::quota::Gcra;

/// KEYS[1]: the client's TAT. ARGV[1]: emission interval (µs), ARGV[2]: burst tolerance (µs).
/// Returns `{allowed, debt, wait}` in µs, as [`Gcra`] reads them.
///
/// Redis numbers are doubles: microseconds since 1970 (~1.8e15) are exact below 2^53.
/// `TIME` before a write is allowed since Redis 5 (effects replication).
const SOURCE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
if tat - now > tolerance then
  return {0, tat - now, tat - now - tolerance}
end
local new = tat + interval
redis.call('SET', KEYS[1], string.format('%.0f', new), 'PX', math.ceil((new - now) / 1000) + 1)
return {1, new - now, 0}
";

/// The quota counters of every replica, in Redis.
#[derive(Debug, Clone)]
pub struct RedisQuota {
    store: RedisStore,
    layout: Layout,
}

impl RedisQuota {
    /// Quotas of the deployment issuing as `issuer`.
    pub fn new(store: RedisStore, issuer: &str) -> Self {
        Self {
            store,
            layout: Layout::for_issuer(issuer),
        }
    }

    /// Counts one request of `client_id` against `gcra`, in one atomic step.
    pub async fn charge(
        &self,
        client_id: &str,
        gcra: Gcra,
    ) -> Result<crate::quota::Outcome, Error> {
        let key = self.layout.quota(client_id);
        let args = [gcra.interval_us, gcra.tolerance_us];
        let row: Vec<i64> = self
            .store
            .run(|mut c| async move {
                redis::cmd("EVAL")
                    .arg(SOURCE)
                    .arg(1)
                    .arg(&key)
                    .arg(&args[..])
                    .query_async(&mut c)
                    .await
            })
            .await?;
        match row.as_slice() {
            [allowed, debt, wait] => Ok(crate::quota::Outcome {
                allowed: *allowed == 1,
                debt_us: u64::try_from(*debt).unwrap_or(0),
                wait_us: u64::try_from(*wait).unwrap_or(0),
            }),
            _ => Err(StoreError::UnexpectedAnswer("the quota script").into()),
        }
    }
}
