//! What keygate needs from Redis, checked once at start-up (on the first connection).
//!
//! - **Persistence** (`appendonly yes`, or RDB snapshots via `save`): without it a
//!   restart empties the revocation list. Replicas write back what they hold, but a
//!   revocation made while a replica was down would be lost.
//! - **No eviction of keygate's keys** (`maxmemory-policy noeviction`, or a `volatile-*`
//!   policy, which never evicts the revocation lists since they carry no TTL, but may
//!   evict attempt counters): `allkeys-*` can drop revocations under memory pressure.
//!
//! A managed Redis may refuse `CONFIG GET`; then the log says so and names what to check.

use super::connection::RedisStore;

/// Logs a warning for each requirement the store does not meet, naming the setting.
pub(crate) async fn check(store: &RedisStore) {
    for finding in findings(store).await {
        tracing::warn!("{finding}");
    }
}

/// The warnings [`check`] logs: for each node keygate writes to (the one Redis, the
/// primary, or every listed cluster node).
pub(crate) async fn findings(store: &RedisStore) -> Vec<String> {
    let nodes = match store.pubsub_clients().await {
        Ok(nodes) => nodes,
        Err(e) => {
            return vec![format!(
                "store: could not check the Redis settings keygate relies on: {e}"
            )];
        }
    };
    let mut out = Vec::new();
    for node in nodes {
        for finding in node_findings(store, &node).await {
            if !out.contains(&finding) {
                out.push(finding);
            }
        }
    }
    out
}

async fn node_findings(store: &RedisStore, node: &redis::Client) -> Vec<String> {
    let query = async {
        let mut c = node.get_multiplexed_async_connection().await?;
        redis::pipe()
            .cmd("CONFIG")
            .arg("GET")
            .arg("maxmemory-policy")
            .cmd("CONFIG")
            .arg("GET")
            .arg("appendonly")
            .cmd("CONFIG")
            .arg("GET")
            .arg("save")
            .query_async::<Vec<Vec<String>>>(&mut c)
            .await
    };
    let settings = match tokio::time::timeout(store.timeout() * 4, query).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            return vec![format!(
                "store: could not check the Redis settings keygate relies on (CONFIG GET refused: {e}); \
                 make sure persistence is on (appendonly yes, or save) and maxmemory-policy is \
                 noeviction or volatile-*"
            )];
        }
        Err(_) => {
            return vec![
                "store: could not check the Redis settings keygate relies on (no answer in time)"
                    .to_owned(),
            ];
        }
    };
    let value = |i: usize| -> &str {
        settings
            .get(i)
            .and_then(|v| v.get(1))
            .map_or("", String::as_str)
    };
    let mut out = Vec::new();
    let policy = value(0);
    if policy.starts_with("allkeys") {
        out.push(format!(
            "store: Redis maxmemory-policy is {policy}: under memory pressure it may evict \
             revocations; set maxmemory-policy noeviction"
        ));
    } else if policy.starts_with("volatile") {
        out.push(format!(
            "store: Redis maxmemory-policy is {policy}: revocations are safe, but failed-attempt \
             counters may be evicted under memory pressure; noeviction keeps them"
        ));
    }
    if value(1) != "yes" && value(2).trim().is_empty() {
        out.push(
            "store: Redis persistence is off (appendonly no, save \"\"): a restart empties the \
             revocation list; replicas write back what they hold, but set appendonly yes"
                .to_owned(),
        );
    }
    out
}
