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
use futures_util::future::BoxFuture;

use crate::limits::{Refused, SharedAttempts, Subject};

/// Checks every counter and, when none is used up, counts one attempt in flight against
/// each. KEYS: the counters (failures and attempts in flight together, as counters of
/// older versions counted), then as many in-flight counters; ARGV: limit, window (ms).
/// Returns 0; or the longest time (ms) a counter whose failures are used up still
/// blocks; or -1 when attempts in flight hold all a counter has left (then nothing is
/// counted). An in-flight counter shares its counter's expiry.
const BEGIN: &str = r"
local n = #KEYS / 2
local limit = tonumber(ARGV[1])
local longest = 0
local busy = false
for i = 1, n do
  local k = KEYS[i]
  local total = tonumber(redis.call('GET', k) or '0')
  if total > 0 then
    local ttl = redis.call('PTTL', k)
    if ttl < 0 then
      redis.call('PEXPIRE', k, ARGV[2])
      ttl = tonumber(ARGV[2])
    end
    local flying = tonumber(redis.call('GET', KEYS[n + i]) or '0')
    local failed = total - flying
    if failed >= limit and ttl > longest then longest = ttl end
    if total >= limit then busy = true end
  end
end
if longest > 0 then return longest end
if busy then return -1 end
for i = 1, n do
  local k = KEYS[i]
  redis.call('INCR', k)
  if redis.call('PTTL', k) < 0 then redis.call('PEXPIRE', k, ARGV[2]) end
  redis.call('INCR', KEYS[n + i])
  redis.call('PEXPIRE', KEYS[n + i], redis.call('PTTL', k))
end
return 0
";

/// Ends an attempt in flight. KEYS as for [`BEGIN`]; ARGV: 1 when it was good (given
/// back), 0 when it failed (stays counted).
const END: &str = r"
local n = #KEYS / 2
for i = 1, n do
  if redis.call('DECR', KEYS[n + i]) <= 0 then redis.call('DEL', KEYS[n + i]) end
  if ARGV[1] == '1' then
    if redis.call('DECR', KEYS[i]) <= 0 then redis.call('DEL', KEYS[i]) end
  end
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
    ) -> Result<i64, Error> {
        let counters: Vec<String> = subjects
            .iter()
            .map(|s| self.layout.attempts(&s.to_string()))
            .collect();
        let in_flight = counters.iter().map(|k| format!("{k}:in-flight"));
        let keys: Vec<String> = counters.iter().cloned().chain(in_flight).collect();
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

    /// Checks and counts one attempt in flight against every subject in one script:
    /// `Ok(Err(_))` when one is used up or held by attempts in flight (and nothing is
    /// counted).
    pub async fn begin(
        &self,
        subjects: &[Subject],
        limit: u32,
        window: Duration,
    ) -> Result<Result<(), Refused>, Error> {
        let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX).max(1);
        Ok(
            match self
                .eval(BEGIN, subjects, &[u64::from(limit), window_ms])
                .await?
            {
                0 => Ok(()),
                ms if ms > 0 => Err(Refused::Blocked(Duration::from_millis(ms.unsigned_abs()))),
                _ => Err(Refused::Busy),
            },
        )
    }

    /// Ends an attempt begun with [`RedisAttempts::begin`]: `good` gives it back.
    pub async fn end(&self, subjects: &[Subject], good: bool) -> Result<(), Error> {
        self.eval(END, subjects, &[u64::from(good)])
            .await
            .map(|_| ())
    }
}

impl SharedAttempts for RedisAttempts {
    fn begin<'a>(
        &'a self,
        subjects: &'a [Subject],
        limit: u32,
        window: Duration,
    ) -> BoxFuture<'a, Result<Result<(), Refused>, Error>> {
        Box::pin(RedisAttempts::begin(self, subjects, limit, window))
    }

    fn end<'a>(&'a self, subjects: &'a [Subject], good: bool) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(RedisAttempts::end(self, subjects, good))
    }
}
