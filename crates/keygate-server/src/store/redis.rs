//! The Redis store: one lazily connected, self-reconnecting connection shared by the
//! revocation list and the attempt counters.
//!
//! Keys hold hashes, never the values themselves: `keygate:revoked:<sha256(iss, jti)>`
//! (expiring when the token would have) and `keygate:attempts:<sha256(subject)>` (expiring
//! with the window), so neither client addresses nor usernames sit in Redis in clear.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use keygate::Error;
use keygate::revocation::RevocationStore;
use redis::AsyncCommands;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;

/// How long one Redis call may take before the store counts as unavailable.
const DEADLINE: Duration = Duration::from_millis(500);

/// A connection to Redis, opened on first use and re-opened after failures.
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    client: redis::Client,
    connection: OnceCell<ConnectionManager>,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URL may carry a password: only its host part is shown.
        write!(
            f,
            "RedisStore({:?})",
            self.inner.client.get_connection_info().addr()
        )
    }
}

impl RedisStore {
    /// A store for `url` (`redis://[:password@]host:port[/db]`). Nothing is connected yet,
    /// so a server starts even while Redis is down.
    pub fn open(url: &str) -> Result<Self, String> {
        let client = redis::Client::open(url).map_err(|e| e.to_string())?;
        Ok(Self {
            inner: Arc::new(Inner {
                client,
                connection: OnceCell::new(),
            }),
        })
    }

    async fn connection(&self) -> Result<ConnectionManager, Error> {
        let manager = self
            .inner
            .connection
            .get_or_try_init(|| async {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(DEADLINE))
                    .set_response_timeout(Some(DEADLINE))
                    .set_number_of_retries(1)
                    .set_max_delay(Duration::from_millis(200));
                ConnectionManager::new_lazy_with_config(self.inner.client.clone(), config)
            })
            .await
            .map_err(|e| unavailable(&e))?;
        Ok(manager.clone())
    }

    /// Runs `f` on the connection with a deadline; any failure is [`Error::StoreUnavailable`].
    async fn run<T, F, Fut>(&self, f: F) -> Result<T, Error>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let conn = self.connection().await?;
        match tokio::time::timeout(DEADLINE, f(conn)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(unavailable(&e)),
            Err(_) => Err(Error::StoreUnavailable(
                "Redis did not answer in time".into(),
            )),
        }
    }

    /// Runs a Lua script (`EVAL`) on `keys` and `args` under the store's deadline: the
    /// hook for state that must be decided and changed in one atomic step (quotas).
    pub async fn eval(
        &self,
        script: &'static str,
        keys: Vec<String>,
        args: Vec<u64>,
    ) -> Result<Vec<i64>, Error> {
        self.run(|mut c| async move {
            redis::cmd("EVAL")
                .arg(script)
                .arg(keys.len())
                .arg(keys)
                .arg(args)
                .query_async::<Vec<i64>>(&mut c)
                .await
        })
        .await
    }

    /// True when Redis answers `PING`.
    pub async fn ping(&self) -> bool {
        self.run(|mut c| async move { redis::cmd("PING").query_async::<String>(&mut c).await })
            .await
            .is_ok()
    }
}

fn unavailable(e: &redis::RedisError) -> Error {
    Error::StoreUnavailable(e.to_string())
}

fn key(prefix: &str, parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0u8]);
    }
    format!("keygate:{prefix}:{}", hex::encode(h.finalize()))
}

/// The revocation list in Redis, shared by every replica.
#[derive(Debug, Clone)]
pub struct RedisRevocationStore(pub RedisStore);

#[async_trait]
impl RevocationStore for RedisRevocationStore {
    async fn revoke(&self, issuer: &str, jti: &str, expires_at: u64) -> Result<(), Error> {
        let key = key("revoked", &[issuer, jti]);
        if expires_at <= keygate::token::now_unix() {
            return Ok(());
        }
        self.0
            .run(|mut c| async move {
                redis::cmd("SET")
                    .arg(&key)
                    .arg(1)
                    .arg("EXAT")
                    .arg(expires_at)
                    .query_async::<()>(&mut c)
                    .await
            })
            .await
    }

    async fn is_revoked(&self, issuer: &str, jti: &str) -> Result<bool, Error> {
        let key = key("revoked", &[issuer, jti]);
        self.0
            .run(|mut c| async move { c.exists::<_, bool>(&key).await })
            .await
    }

    async fn is_available(&self) -> bool {
        self.0.ping().await
    }
}

/// Failed-attempt counters in Redis: fixed windows that start at the first failure.
#[derive(Debug, Clone)]
pub struct RedisAttempts(pub RedisStore);

impl RedisAttempts {
    /// The longest time any of `subjects` is still blocked with `limit` failures allowed.
    pub async fn blocked(
        &self,
        subjects: &[crate::limits::Subject],
        limit: u32,
    ) -> Result<Option<Duration>, Error> {
        let keys: Vec<String> = subjects
            .iter()
            .map(|s| key("attempts", &[&s.to_string()]))
            .collect();
        let rows: Vec<(Option<u32>, i64)> = self
            .0
            .run(|mut c| async move {
                let mut pipe = redis::pipe();
                for k in &keys {
                    pipe.get(k).pttl(k);
                }
                pipe.query_async(&mut c).await
            })
            .await?;
        Ok(rows
            .into_iter()
            .filter(|(count, _)| count.is_some_and(|n| n >= limit))
            .filter_map(|(_, pttl)| u64::try_from(pttl).ok())
            .map(Duration::from_millis)
            .filter(|d| !d.is_zero())
            .max())
    }

    /// Counts one failure against each of `subjects`.
    pub async fn record_failure(
        &self,
        subjects: &[crate::limits::Subject],
        window: Duration,
    ) -> Result<(), Error> {
        let keys: Vec<String> = subjects
            .iter()
            .map(|s| key("attempts", &[&s.to_string()]))
            .collect();
        let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
        self.0
            .run(|mut c| async move {
                let mut pipe = redis::pipe();
                for k in &keys {
                    // Creates the window on the first failure only, then counts.
                    pipe.cmd("SET")
                        .arg(k)
                        .arg(0)
                        .arg("PX")
                        .arg(window_ms)
                        .arg("NX")
                        .ignore();
                    pipe.incr(k, 1).ignore();
                }
                pipe.query_async::<()>(&mut c).await
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_hide_what_they_count() {
        let k = key("attempts", &["ip:198.51.100.7"]);
        assert!(k.starts_with("keygate:attempts:"));
        assert!(!k.contains("198.51"));
        assert_ne!(key("revoked", &["a", "bc"]), key("revoked", &["ab", "c"]));
    }

    #[test]
    fn debug_output_does_not_show_the_password() {
        let store = RedisStore::open("redis://:hunter2@127.0.0.1:6379/0").unwrap();
        assert!(!format!("{store:?}").contains("hunter2"));
    }

    #[tokio::test]
    async fn a_dead_redis_is_reported_quickly_not_waited_for() {
        // Nothing listens on port 1.
        let store = RedisStore::open("redis://127.0.0.1:1").unwrap();
        let started = std::time::Instant::now();
        let revocations = RedisRevocationStore(store.clone());
        assert!(matches!(
            revocations.is_revoked("iss", "jti").await,
            Err(Error::StoreUnavailable(_))
        ));
        assert!(!revocations.is_available().await);
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
