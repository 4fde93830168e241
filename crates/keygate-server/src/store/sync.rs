//! Keeping a replica's copy of the revocation list in sync with the store.
//!
//! One task per replica: connect, `SUBSCRIBE` to the deployment's channel, then read the
//! whole list (so nothing published meanwhile is missed) and merge it into the copy;
//! entries the copy holds and the store lacks (a Redis restarted without persistence, a
//! failover to a replica that had not received them) are written back and published.
//! Only then is the copy "in sync". A `PING` every [`HEARTBEAT`] on the subscription,
//! answered within `store.timeout`, notices a stalled or vanished Redis; the copy is then
//! out of sync until the next full resynchronisation.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use keygate::token::now_unix;
use redis::aio::{PubSubSink, PubSubStream};

use super::principals::PrincipalRevocation;
use super::requirements;
use super::revocations::{Copy, Shared};

/// How often the subscription is checked.
const HEARTBEAT: Duration = Duration::from_millis(500);
/// The longest pause between two connection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Writes back entries the store lost, publishing each one it did not have.
/// KEYS: revoked, principals; ARGV: channel, now, then (kind, score, member) triples.
const REPUBLISH: &str = r"
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[2])
local added = 0
for i = 3, #ARGV, 3 do
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
    let mut backoff = Duration::from_millis(50);
    let mut checked = false;
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
                        backoff = Duration::from_millis(50);
                        let timeout = s.store.timeout();
                        drop(s);
                        follow(&shared, sink, stream, timeout).await;
                        if let Some(s) = shared.upgrade() {
                            s.synced.store(false, Ordering::Release);
                        }
                        metrics::gauge!("keygate_store_in_sync").set(0.0);
                        tracing::warn!("store subscription lost; resynchronising");
                    }
                    Err(e) => tracing::warn!(error = %e, "store resynchronisation failed"),
                }
            }
            Err(e) => {
                s.synced.store(false, Ordering::Release);
                metrics::gauge!("keygate_store_in_sync").set(0.0);
                tracing::warn!(error = %e, "store unreachable; retrying");
                drop(s);
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

async fn subscribe(s: &Shared) -> Result<(PubSubSink, PubSubStream), String> {
    let timeout = s.store.timeout();
    let channel = s.layout.channel();
    let attempt = async {
        let mut last = String::from("no node to subscribe to");
        for client in s.store.pubsub_clients().await.map_err(|e| e.to_string())? {
            let subscribed = async {
                let mut pubsub = client.get_async_pubsub().await?;
                pubsub.subscribe(&channel).await?;
                redis::RedisResult::Ok(pubsub.split())
            };
            match tokio::time::timeout(timeout, subscribed).await {
                Ok(Ok(pair)) => return Ok(pair),
                Ok(Err(e)) => last = e.to_string(),
                Err(_) => last = "no answer within store.timeout".into(),
            }
        }
        Err(last)
    };
    // Sentinel lookups and several cluster nodes may each take up to the timeout.
    tokio::time::timeout(timeout * 8, attempt)
        .await
        .map_err(|_| "no answer within store.timeout".to_owned())?
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
    let missing = {
        let mut copy = s
            .copy
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        copy.prune(now);
        let in_store: std::collections::HashSet<&str> = tokens
            .iter()
            .chain(entries.iter())
            .map(|(m, _)| m.as_str())
            .collect();
        let mut missing: Vec<String> = Vec::new();
        for (member, until) in &copy.tokens {
            if !in_store.contains(member.as_str()) {
                missing.extend(["t".into(), until.to_string(), member.clone()]);
            }
        }
        for (member, at) in &copy.principal_entries {
            if !in_store.contains(member.as_str()) {
                missing.extend(["p".into(), at.to_string(), member.clone()]);
            }
        }
        merge(&mut copy, tokens, entries);
        missing
    };
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
        copy.add_token(member, until);
    }
    for (member, at) in entries {
        if let Some(r) = PrincipalRevocation::from_member(&member, at) {
            copy.add_principal(r);
        }
    }
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
    loop {
        tokio::select! {
            msg = stream.next() => {
                let Some(msg) = msg else { return };
                let Some(s) = shared.upgrade() else { return };
                let Ok(text) = msg.get_payload::<String>() else { continue };
                apply(&s, &text);
            }
            _ = heartbeat.tick() => {
                let Some(s) = shared.upgrade() else { return };
                s.copy
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .prune(now_unix());
                drop(s);
                let pong = tokio::time::timeout(timeout, sink.ping::<redis::Value>()).await;
                if !matches!(pong, Ok(Ok(_))) {
                    return;
                }
            }
        }
    }
}

/// One published change: `t <until> <token digest>` or `p <at ms> <fingerprint> <id>`.
fn apply(s: &Arc<Shared>, text: &str) {
    let mut copy = s
        .copy
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    match text.split_once(' ') {
        Some(("t", rest)) => {
            if let Some((until, member)) = rest.split_once(' ')
                && let Ok(until) = until.parse()
            {
                copy.add_token(member.to_owned(), until);
            }
        }
        Some(("p", rest)) => {
            if let Some((at, member)) = rest.split_once(' ')
                && let Ok(at) = at.parse()
                && let Some(r) = PrincipalRevocation::from_member(member, at)
            {
                copy.add_principal(r);
            }
        }
        _ => tracing::debug!("unknown message on the store channel ignored"),
    }
}
