//! [`RedisAttempts`]: failed-attempt counters in Redis, fixed windows that start at the
//! first failure.
//!
//! Each decision is one Lua script, so Redis runs it atomically: counting and giving the
//! counter its expiry can never be separated. (A pipeline `SET NX PX; INCR` could: when
//! the key expired between the two, `INCR` recreated it without a TTL and the limit stayed
//! on for good.) Both scripts also give any counter found without a TTL one, so counters
//! left by older versions heal.

use std::time::Duration;

use keygate::Error;

use super::connection::RedisStore;
use super::layout::Layout;
use crate::limits::Subject;

/// Reads the counters; returns the longest time (ms) a subject at or over the limit is
/// still blocked, 0 when none is.
const BLOCKED: &str = r"
local worst = 0
for _, k in ipairs(KEYS) do
  local n = tonumber(redis.call('GET', k) or '0')
  if n > 0 then
    local ttl = redis.call('PTTL', k)
    if ttl < 0 then
      redis.call('PEXPIRE', k, ARGV[2])
      ttl = tonumber(ARGV[2])
    end
    if n >= tonumber(ARGV[1]) and ttl > worst then worst = ttl end
  end
end
return worst
";

/// Counts one failure against each counter, starting its window on the first; returns
/// what [`BLOCKED`] would answer afterwards.
const RECORD: &str = r"
local worst = 0
for _, k in ipairs(KEYS) do
  local n = redis.call('INCR', k)
  local ttl = redis.call('PTTL', k)
  if ttl < 0 then
    redis.call('PEXPIRE', k, ARGV[2])
    ttl = tonumber(ARGV[2])
  end
  if n >= tonumber(ARGV[1]) and ttl > worst then worst = ttl end
end
return worst
";

/// Failed-attempt counters in Redis, shared by every replica.
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
        limit: u32,
        window: Duration,
    ) -> Result<Option<Duration>, Error> {
        let keys: Vec<String> = subjects
            .iter()
            .map(|s| self.layout.attempts(&s.to_string()))
            .collect();
        let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX).max(1);
        let ms: u64 = self
            .store
            .run(|mut c| async move {
                redis::cmd("EVAL")
                    .arg(script)
                    .arg(keys.len())
                    .arg(&keys)
                    .arg(limit)
                    .arg(window_ms)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        Ok((ms > 0).then(|| Duration::from_millis(ms)))
    }

    /// The longest time any of `subjects` is still blocked with `limit` failures allowed.
    pub async fn blocked(
        &self,
        subjects: &[Subject],
        limit: u32,
        window: Duration,
    ) -> Result<Option<Duration>, Error> {
        self.eval(BLOCKED, subjects, limit, window).await
    }

    /// Counts one failure against each of `subjects`; returns how long they are blocked now.
    pub async fn record_failure(
        &self,
        subjects: &[Subject],
        limit: u32,
        window: Duration,
    ) -> Result<Option<Duration>, Error> {
        self.eval(RECORD, subjects, limit, window).await
    }
}
