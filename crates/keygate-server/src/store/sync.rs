//! Keeping a replica's copy of the revocation list in sync with the store.
//!
//! One task per replica: connect, `SUBSCRIBE` to the deployment's channel, then read the
//! whole list (so nothing published meanwhile is missed) and merge it into the copy;
//! entries the copy holds and the store lacks (a Redis restarted without persistence, a
//! failover to a replica that had not received them) are written back and published.
//! Only then is the copy "in sync". A `PING` every [`HEARTBEAT`] on the subscription,
//! answered within `store.timeout`, notices a stalled or vanished Redis; the copy is then
//! out of sync until the next full resynchronisation. Each heartbeat and resynchronisation
//! also writes the revocations still pending (applied here while the store refused them),
//! and, on a Cluster, reads through the data connection to notice a lost shard. Under
//! Sentinel, every sentinel's `+switch-master` event triggers a reconnection.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use keygate::token::now_unix;
use keygate_client::Backoff;
use redis::aio::{PubSubSink, PubSubStream};

use super::principals::PrincipalRevocation;
use super::requirements;
use super::revocations::{Copy, FOLDED, Shared, owner, write_token};

/// How often the subscription is checked.
const HEARTBEAT: Duration = Duration::from_millis(500);
/// The longest pause between two connection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// The pause after a lost subscription or a first failed attempt; doubled after each
/// further failure up to [`MAX_BACKOFF`], with jitter, so that the replicas of a
/// deployment do not all reconnect to a restarted store at the same moment.
const RECONNECT: Backoff = Backoff::new(Duration::from_millis(50), MAX_BACKOFF);

/// Writes back entries the store lost, publishing each one it did not have.
/// KEYS: revoked, principals; ARGV: channel, now, cutoff ms, then (kind, score, member)
/// triples.
const REPUBLISH: &str = r"
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[3])
local added = 0
for i = 4, #ARGV, 3 do
  local key = KEYS[1]
  if ARGV[i] == 'p' then key = KEYS[2] end
  if redis.call('ZADD', key, 'NX', ARGV[i + 1], ARGV[i + 2]) == 1 then
    redis.call('PUBLISH', ARGV[1], ARGV[i] .. ' ' .. ARGV[i + 1] .. ' ' .. ARGV[i + 2])
    added = added + 1
  end
end
return added
";

/// The task: runs until the copy it serves is dropped.
pub(super) async fn run(shared: Weak<Shared>) {
    // Attempts failed in a row.
    let mut failures = 0u32;
    let mut checked = false;
    if let Some(s) = shared.upgrade()
        && let Some((sentinels, master)) = s.store.sentinels()
    {
        for sentinel in sentinels {
            tokio::spawn(watch_sentinel(shared.clone(), sentinel, master.clone()));
        }
    }
    loop {
        let Some(s) = shared.upgrade() else { return };
        match subscribe(&s).await {
            Ok((sink, stream)) => {
                if !checked {
                    checked = true;
                    requirements::check(&s.store).await;
                }
                match resync(&s).await {
                    Ok(()) => {
                        s.synced.store(true, Ordering::Release);
                        metrics::gauge!("keygate_store_in_sync").set(1.0);
                        tracing::info!("revocation list in sync with the store");
                        failures = 0;
                        let timeout = s.store.timeout();
                        drop(s);
                        follow(&shared, sink, stream, timeout).await;
                        if let Some(s) = shared.upgrade() {
                            s.synced.store(false, Ordering::Release);
                        }
                        metrics::gauge!("keygate_store_in_sync").set(0.0);
                        tracing::warn!("store subscription lost; resynchronising");
                    }
                    Err(e) => {
                        failures = failures.saturating_add(1);
                        tracing::warn!(error = %keygate::error::chain(&e), "store resynchronisation failed");
                    }
                }
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                s.synced.store(false, Ordering::Release);
                metrics::gauge!("keygate_store_in_sync").set(0.0);
                tracing::warn!(error = %keygate::error::chain(&e), "store unreachable; retrying");
                drop(s);
            }
        }
        tokio::time::sleep(RECONNECT.delay(failures)).await;
    }
}

/// Why the store's channel could not be subscribed to.
#[derive(Debug, thiserror::Error)]
enum SubscribeError {
    /// A node refused or failed (the last one tried, when there are several).
    #[error("cannot subscribe to the store's channel")]
    Redis(#[from] redis::RedisError),
    /// No node answered within `store.timeout` (each lookup and node may take that long).
    #[error("no answer within store.timeout")]
    Timeout,
    /// The topology names no node to subscribe through.
    #[error("no node to subscribe to")]
    NoNode,
}

async fn subscribe(s: &Shared) -> Result<(PubSubSink, PubSubStream), SubscribeError> {
    let timeout = s.store.timeout();
    let channel = s.layout.channel();
    let attempt = async {
        let mut last = SubscribeError::NoNode;
        for client in s.store.pubsub_clients().await? {
            let subscribed = async {
                let mut pubsub = client.get_async_pubsub().await?;
                pubsub.subscribe(&channel).await?;
                redis::RedisResult::Ok(pubsub.split())
            };
            match tokio::time::timeout(timeout, subscribed).await {
                Ok(Ok(pair)) => return Ok(pair),
                Ok(Err(e)) => last = e.into(),
                Err(_) => last = SubscribeError::Timeout,
            }
        }
        Err(last)
    };
    // Sentinel lookups and several cluster nodes may each take up to the timeout.
    tokio::time::timeout(timeout * 8, attempt)
        .await
        .map_err(|_| SubscribeError::Timeout)?
}

/// Sorted-set members with their scores.
type Scored = Vec<(String, u64)>;

/// Reads the store's whole list into the copy and writes back what the store lacks.
async fn resync(s: &Shared) -> Result<(), keygate::Error> {
    let (revoked, principals) = (s.layout.revoked(), s.layout.principals());
    let now = now_unix();
    let (tokens, entries): (Scored, Scored) = s
        .store
        .run(|mut c| async move {
            redis::pipe()
                .cmd("ZRANGE")
                .arg(&revoked)
                .arg(now)
                .arg("+inf")
                .arg("BYSCORE")
                .arg("WITHSCORES")
                .cmd("ZRANGE")
                .arg(&principals)
                .arg(0)
                .arg(-1)
                .arg("WITHSCORES")
                .query_async(&mut c)
                .await
        })
        .await?;
    let cutoff = s.cutoff_ms();
    let missing = {
        let mut copy = s.write();
        copy.prune(now, cutoff);
        // Principals the store folded: their token entries left the store on purpose,
        // so the copy's are not written back (they expire here; the fold refuses those
        // tokens anyway).
        let folded: std::collections::HashSet<String> = entries
            .iter()
            .filter_map(|(m, at)| PrincipalRevocation::from_member(m, *at))
            .filter(|r| r.fingerprint == FOLDED)
            .map(|r| owner(&r.id))
            .collect();
        let in_store: std::collections::HashSet<&str> = tokens
            .iter()
            .chain(entries.iter())
            .map(|(m, _)| m.as_str())
            .collect();
        let mut missing: Vec<String> = Vec::new();
        for (member, t) in &copy.tokens {
            // Pending ones are written below, through the principal's share.
            let was_folded = t.owner.as_ref().is_some_and(|o| folded.contains(o));
            if !in_store.contains(member.as_str())
                && !copy.pending.contains_key(member)
                && !was_folded
            {
                missing.extend(["t".into(), t.until.to_string(), member.clone()]);
            }
        }
        for (member, at) in &copy.principal_entries {
            if !in_store.contains(member.as_str()) && *at >= cutoff {
                missing.extend(["p".into(), at.to_string(), member.clone()]);
            }
        }
        merge(&mut copy, tokens, entries);
        missing
    };
    flush_pending(s).await?;
    if missing.is_empty() {
        return Ok(());
    }
    let count = missing.len() / 3;
    let keys = [s.layout.revoked(), s.layout.principals()];
    let channel = s.layout.channel();
    s.store
        .run(|mut c| async move {
            redis::cmd("EVAL")
                .arg(REPUBLISH)
                .arg(2)
                .arg(&keys)
                .arg(&channel)
                .arg(now)
                .arg(cutoff)
                .arg(&missing)
                .query_async::<u64>(&mut c)
                .await
        })
        .await?;
    tracing::warn!(
        entries = count,
        "the store had lost revocations this replica holds; written back"
    );
    Ok(())
}

fn merge(copy: &mut Copy, tokens: Scored, entries: Scored) {
    for (member, until) in tokens {
        copy.add_token(member, until, None);
    }
    for (member, at) in entries {
        if let Some(r) = PrincipalRevocation::from_member(&member, at) {
            copy.add_principal(r);
        }
    }
}

/// Pending token revocations written per call, at most, so that a long queue does not
/// hold the heartbeat for long.
const FLUSH_BATCH: usize = 1024;

/// Writes revocations applied here while the store could not take them; stops at the
/// first failure (the store is still unavailable) and is called again at the next
/// heartbeat.
async fn flush_pending(s: &Shared) -> Result<(), keygate::Error> {
    let batch = s.read_pending(FLUSH_BATCH);
    let written = batch.len();
    for (member, until, sub) in batch {
        write_token(s, &member, until, &sub).await?;
    }
    if written > 0 {
        tracing::info!(
            entries = written,
            "revocations applied during a store failure written to the store"
        );
    }
    Ok(())
}

/// Applies published changes until the subscription fails or stalls.
async fn follow(
    shared: &Weak<Shared>,
    mut sink: PubSubSink,
    mut stream: PubSubStream,
    timeout: Duration,
) {
    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    heartbeat.tick().await;
    let Some(s) = shared.upgrade() else { return };
    let reconnect = s.reconnect.clone();
    drop(s);
    let switched = reconnect.notified();
    tokio::pin!(switched);
    loop {
        tokio::select! {
            () = &mut switched => {
                tracing::warn!("reconnecting: the sentinels switched the primary, or a lost shard is back");
                if let Some(s) = shared.upgrade() {
                    s.store.reset().await;
                }
                return;
            }
            msg = stream.next() => {
                let Some(msg) = msg else { return };
                let Some(s) = shared.upgrade() else { return };
                let Ok(text) = msg.get_payload::<String>() else { continue };
                apply(&s, &text);
            }
            _ = heartbeat.tick() => {
                let Some(s) = shared.upgrade() else { return };
                let cutoff = s.cutoff_ms();
                s.write().prune(now_unix(), cutoff);
                if let Err(e) = flush_pending(&s).await {
                    tracing::warn!(error = %keygate::error::chain(&e), "pending revocations not written yet");
                }
                s.check_writable().await;
                drop(s);
                let pong = tokio::time::timeout(timeout, sink.ping::<redis::Value>()).await;
                if !matches!(pong, Ok(Ok(_))) {
                    return;
                }
            }
        }
    }
}

/// One published change: `t <until> <token digest>`, then `o <principal digest> <token
/// digest>` (whose token it is: replicas that do not know `o` ignore it), or
/// `p <at ms> <fingerprint> <id>`.
fn apply(s: &Arc<Shared>, text: &str) {
    let mut copy = s.write();
    match text.split_once(' ') {
        Some(("t", rest)) => {
            if let Some((until, member)) = rest.split_once(' ')
                && let Ok(until) = until.parse()
            {
                copy.add_token(member.to_owned(), until, None);
            }
        }
        Some(("o", rest)) => {
            if let Some((owner, member)) = rest.split_once(' ') {
                copy.set_owner(member, owner);
            }
        }
        Some(("p", rest)) => {
            if let Some((at, member)) = rest.split_once(' ')
                && let Ok(at) = at.parse()
                && let Some(r) = PrincipalRevocation::from_member(member, at)
            {
                copy.apply_principal(r);
            }
        }
        _ => tracing::debug!("unknown message on the store channel ignored"),
    }
}

/// Follows one sentinel's `+switch-master` events (the Sentinel documentation,
/// "Pub/Sub messages"): when the primary named `master` changes — a graceful
/// `SENTINEL FAILOVER` leaves the old one running and taking writes until it is demoted —
/// the connection is dropped and the copy resynchronised with the new primary at once,
/// rather than when the old one starts refusing writes. Runs until the copy is dropped.
async fn watch_sentinel(shared: Weak<Shared>, sentinel: redis::Client, master: String) {
    loop {
        let Some(s) = shared.upgrade() else { return };
        let timeout = s.store.timeout();
        drop(s);
        let subscribed = async {
            let mut pubsub = sentinel.get_async_pubsub().await?;
            pubsub.subscribe("+switch-master").await?;
            redis::RedisResult::Ok(pubsub)
        };
        if let Ok(Ok(mut pubsub)) = tokio::time::timeout(timeout * 4, subscribed).await {
            let mut stream = pubsub.on_message();
            loop {
                // Wakes now and then to notice that the copy is gone.
                match tokio::time::timeout(Duration::from_secs(5), stream.next()).await {
                    Ok(Some(msg)) => {
                        let Ok(text) = msg.get_payload::<String>() else {
                            continue;
                        };
                        // `<master name> <old ip> <old port> <new ip> <new port>`
                        if text.split(' ').next() == Some(master.as_str()) {
                            let Some(s) = shared.upgrade() else { return };
                            tracing::warn!(event = %text, "sentinel: +switch-master");
                            s.store.reset().await;
                            s.reconnect.notify_one();
                        }
                    }
                    Ok(None) => break,
                    Err(_) if shared.strong_count() == 0 => return,
                    Err(_) => {}
                }
            }
        }
        tokio::time::sleep(MAX_BACKOFF).await;
    }
}
