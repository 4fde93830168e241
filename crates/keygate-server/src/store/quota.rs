//! Quotas in Redis: one Lua script per decision, so the check and the count are one atomic
//! step however many replicas ask at once, and Redis's own clock (`TIME`) is the only clock,
//! so replicas whose clocks disagree still enforce one quota.
//!
//! The script is the same GCRA as [`crate::quota::gcra`]: the key holds the client's
//! theoretical arrival time (TAT) in microseconds and expires when the bucket is full again,
//! so an idle client costs no memory. Keys are namespaced by deployment like every other
//! (`keygate:{<issuer hash>}:quota:<client id hash>`), one hash tag per deployment.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures_util::future::BoxFuture;
use keygate::Error;
use keygate::error::StoreError;
use tokio::sync::oneshot;

use super::RedisStore;
use super::layout::Layout;

use crate::quota::{Gcra, Outcome, SharedQuota};

/// KEYS[1]: the client's TAT. ARGV[1]: emission interval (µs), ARGV[2]: burst tolerance (µs),
/// ARGV[3]: the requests to count. Grants as many of them as the GCRA allows now, in order,
/// and returns `{granted, debt, wait}` in µs: the debt after the last one granted, and the
/// wait until one more would be allowed (0 while it would be).
///
/// Redis numbers are doubles: microseconds since 1970 (~1.8e15) are exact below 2^53.
/// `TIME` before a write is allowed since Redis 5 (effects replication).
const SOURCE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local granted = 0
if tat - now <= tolerance then
  granted = math.min(want, math.floor((tolerance - (tat - now)) / interval) + 1)
end
if granted > 0 then
  tat = tat + granted * interval
  redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', math.ceil((tat - now) / 1000) + 1)
end
local wait = 0
if tat - now > tolerance then wait = tat - now - tolerance end
return {granted, tat - now, wait}
";

/// The quota counters of every replica, in Redis.
///
/// A client's requests that arrive while a round trip for it is in flight wait and are
/// counted together by the next one: one script grants the first of them as many as the
/// GCRA allows at that instant and refuses the rest, exactly as one script per request in
/// the same order would. Under load a client costs one round trip per batch, not one per
/// request; a request arriving alone is its own batch of one. A round trip that fails
/// answers its error to its batch and to every request that arrived meanwhile, so a
/// request that meets a stalled store waits one `store.timeout`, not the round trip in
/// flight and then its own. Only a round trip that succeeds just inside the timeout,
/// followed by one that stalls, can hold a request for up to twice `store.timeout`.
#[derive(Debug, Clone)]
pub struct RedisQuota {
    store: RedisStore,
    layout: Layout,
    waiting: Arc<Mutex<HashMap<Box<str>, Waiting, foldhash::fast::RandomState>>>,
}

/// The requests of one client waiting for the next round trip, while one is in flight.
#[derive(Debug)]
struct Waiting {
    gcra: Gcra,
    queue: Vec<oneshot::Sender<Result<Outcome, String>>>,
}

/// What one script answered for a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Granted {
    granted: u64,
    debt_us: u64,
    wait_us: u64,
}

impl Granted {
    /// The outcome of the `i`-th request of the batch (from 0): the first `granted` are
    /// allowed, each with the debt it left; the rest are refused.
    fn outcome(self, i: u64, interval_us: u64) -> Outcome {
        if i < self.granted {
            Outcome {
                allowed: true,
                debt_us: self
                    .debt_us
                    .saturating_sub((self.granted - 1 - i) * interval_us),
                wait_us: 0,
            }
        } else {
            Outcome {
                allowed: false,
                debt_us: self.debt_us,
                wait_us: self.wait_us,
            }
        }
    }
}

impl RedisQuota {
    /// Quotas of the deployment issuing as `issuer`.
    pub fn new(store: RedisStore, issuer: &str) -> Self {
        Self {
            store,
            layout: Layout::for_issuer(issuer),
            waiting: Arc::default(),
        }
    }

    /// Counts one request of `client_id` against `gcra`: in the round trip about to start,
    /// or, when one is in flight for this client, in the next (see [`RedisQuota`]).
    pub async fn charge(&self, client_id: &str, gcra: Gcra) -> Result<Outcome, Error> {
        let (tx, rx) = oneshot::channel();
        let lead = {
            let mut waiting = self.lock();
            match waiting.get_mut(client_id) {
                Some(w) => {
                    // A reload may have changed the quota: the newest one counts.
                    w.gcra = gcra;
                    w.queue.push(tx);
                    false
                }
                None => {
                    let w = Waiting {
                        gcra,
                        queue: vec![tx],
                    };
                    waiting.insert(client_id.into(), w);
                    true
                }
            }
        };
        if lead {
            // A task of its own, so that no request waits for batches after its own.
            tokio::spawn(self.clone().flush(client_id.to_owned()));
        }
        match rx.await {
            Ok(outcome) => {
                outcome.map_err(|message| StoreError::Unavailable(message.into()).into())
            }
            Err(_) => {
                Err(StoreError::Unavailable("the quota round trip was dropped".into()).into())
            }
        }
    }

    /// Counts the waiting requests of `client_id`, one script per batch, until none wait.
    async fn flush(self, client_id: String) {
        loop {
            let (batch, gcra) = {
                let mut waiting = self.lock();
                let Some(w) = waiting.get_mut(client_id.as_str()) else {
                    return;
                };
                if w.queue.is_empty() {
                    waiting.remove(client_id.as_str());
                    return;
                }
                (std::mem::take(&mut w.queue), w.gcra)
            };
            let want = batch.len() as u64;
            match self.count(&client_id, gcra, want).await {
                Ok(granted) => {
                    for (i, tx) in (0..).zip(batch) {
                        let _ = tx.send(Ok(granted.outcome(i, gcra.interval_us)));
                    }
                }
                Err(e) => {
                    // One error for every request of the batch, and for those that arrived
                    // while its round trip was failing: another round trip would most
                    // likely wait out the same stall. Its whole chain, as text.
                    let message = keygate::error::chain(&e);
                    let arrived = self
                        .lock()
                        .get_mut(client_id.as_str())
                        .map(|w| std::mem::take(&mut w.queue))
                        .unwrap_or_default();
                    for tx in batch.into_iter().chain(arrived) {
                        let _ = tx.send(Err(message.clone()));
                    }
                }
            }
        }
    }

    /// One script: counts `want` requests of `client_id` against `gcra`, in one atomic step.
    async fn count(&self, client_id: &str, gcra: Gcra, want: u64) -> Result<Granted, Error> {
        let key = self.layout.quota(client_id);
        let args = [gcra.interval_us, gcra.tolerance_us, want];
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
            [granted, debt, wait] => Ok(Granted {
                granted: u64::try_from(*granted).unwrap_or(0).min(want),
                debt_us: u64::try_from(*debt).unwrap_or(0),
                wait_us: u64::try_from(*wait).unwrap_or(0),
            }),
            _ => Err(StoreError::UnexpectedAnswer("the quota script").into()),
        }
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<Box<str>, Waiting, foldhash::fast::RandomState>> {
        // Every update leaves the map consistent; a poisoned lock holds good data.
        self.waiting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl SharedQuota for RedisQuota {
    fn charge<'a>(
        &'a self,
        client_id: &'a str,
        gcra: Gcra,
    ) -> BoxFuture<'a, Result<Outcome, Error>> {
        Box::pin(RedisQuota::charge(self, client_id, gcra))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_grants_its_first_requests_in_order() {
        let interval = 1_000;
        // Three of five granted; the last granted left a debt of 3 000 µs.
        let g = Granted {
            granted: 3,
            debt_us: 3_000,
            wait_us: 500,
        };
        let outcomes: Vec<Outcome> = (0..5).map(|i| g.outcome(i, interval)).collect();
        let debts: Vec<u64> = outcomes.iter().map(|o| o.debt_us).collect();
        assert_eq!(debts, [1_000, 2_000, 3_000, 3_000, 3_000]);
        let allowed: Vec<bool> = outcomes.iter().map(|o| o.allowed).collect();
        assert_eq!(allowed, [true, true, true, false, false]);
        assert_eq!(outcomes[3].wait_us, 500);
        assert_eq!(outcomes[0].wait_us, 0);
    }
}
