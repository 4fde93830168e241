//! [`RedisAttempts`]: attempt counters in Redis, fixed windows that start at the first
//! attempt.
//!
//! Each decision is one Lua script, so Redis runs it atomically: checking the limit,
//! counting, and giving the counter its expiry can never be separated (no two replicas
//! both see the last free attempt; a counter never loses its TTL, as `SET NX PX; INCR`
//! could when the key expired between the two). The check also gives any counter found
//! without a TTL one, so counters left by older versions heal instead of blocking, or
//! being ignored, for good.

use std::time::Duration;

use keygate::Error;

use super::connection::RedisStore;
use super::layout::Layout;
use crate::limits::Subject;

/// Checks every counter and, when none is used up, counts one attempt against each.
/// KEYS: the counters; ARGV: limit, window (ms). Returns 0, or the longest time (ms) a
/// used-up counter still blocks (and then counts nothing).
const BEGIN: &str = r"
local longest = 0
for _, k in ipairs(KEYS) do
  local n = tonumber(redis.call('GET', k) or '0')
  if n > 0 then
    local ttl = redis.call('PTTL', k)
    if ttl < 0 then
      redis.call('PEXPIRE', k, ARGV[2])
      ttl = tonumber(ARGV[2])
    end
    if n >= tonumber(ARGV[1]) and ttl > longest then longest = ttl end
  end
end
if longest > 0 then return longest end
for _, k in ipairs(KEYS) do
  redis.call('INCR', k)
  if redis.call('PTTL', k) < 0 then redis.call('PEXPIRE', k, ARGV[2]) end
end
return 0
";

/// Takes back an attempt that turned out good.
const REFUND: &str = r"
for _, k in ipairs(KEYS) do
  if redis.call('DECR', k) <= 0 then redis.call('DEL', k) end
end
return 0
";

/// Attempt counters in Redis, shared by every replica.
#[derive(Debug, Clone)]
pub struct RedisAttempts {
    store: RedisStore,
    layout: Layout,
}

impl RedisAttempts {
    /// Counters of the deployment issuing as `issuer`.
    pub fn new(store: RedisStore, issuer: &str) -> Self {
        Self {
            store,
            layout: Layout::for_issuer(issuer),
        }
    }

    async fn eval(
        &self,
        script: &'static str,
        subjects: &[Subject],
        args: &[u64],
    ) -> Result<u64, Error> {
        let keys: Vec<String> = subjects
            .iter()
            .map(|s| self.layout.attempts(&s.to_string()))
            .collect();
        let args = args.to_vec();
        self.store
            .run(|mut c| async move {
                redis::cmd("EVAL")
                    .arg(script)
                    .arg(keys.len())
                    .arg(&keys)
                    .arg(&args)
                    .query_async(&mut c)
                    .await
            })
            .await
    }

    /// Checks and counts one attempt against every subject in one script:
    /// `Ok(Err(retry_after))` when one is used up (and nothing is counted).
    pub async fn begin(
        &self,
        subjects: &[Subject],
        limit: u32,
        window: Duration,
    ) -> Result<Result<(), Duration>, Error> {
        let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX).max(1);
        Ok(
            match self
                .eval(BEGIN, subjects, &[u64::from(limit), window_ms])
                .await?
            {
                0 => Ok(()),
                ms => Err(Duration::from_millis(ms)),
            },
        )
    }

    /// Takes back an attempt that turned out good.
    pub async fn refund(&self, subjects: &[Subject]) -> Result<(), Error> {
        self.eval(REFUND, subjects, &[]).await.map(|_| ())
    }
}
