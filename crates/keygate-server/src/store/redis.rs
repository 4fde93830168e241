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

    /// Runs a Lua script (`EVALSHA`, loading it on first use) on `keys` and `args` under
    /// the store's deadline: the hook for state that must be decided and changed in one
    /// atomic step (quotas).
    pub async fn eval(
        &self,
        script: &'static redis::Script,
        keys: Vec<String>,
        args: Vec<u64>,
    ) -> Result<Vec<i64>, Error> {
        self.run(|mut c| async move {
            let mut call = script.prepare_invoke();
            for k in &keys {
                call.key(k);
            }
            for a in &args {
                call.arg(a);
            }
            call.invoke_async(&mut c).await
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
    /// Checks and counts one attempt against every subject in one script, so no two
    /// replicas can both see the last free attempt: `Ok(Err(retry_after))` when one is
    /// used up (and nothing is counted). A counter always has its window as its TTL.
    pub async fn begin(
        &self,
        subjects: &[crate::limits::Subject],
        limit: u32,
        window: Duration,
    ) -> Result<Result<(), Duration>, Error> {
        const BEGIN: &str = r"
            local longest = 0
            for _, k in ipairs(KEYS) do
              if tonumber(redis.call('GET', k) or '0') >= tonumber(ARGV[1]) then
                local ttl = redis.call('PTTL', k)
                if ttl > longest then longest = ttl end
              end
            end
            if longest > 0 then return longest end
            for _, k in ipairs(KEYS) do
              redis.call('INCR', k)
              if redis.call('PTTL', k) < 0 then redis.call('PEXPIRE', k, ARGV[2]) end
            end
            return 0";
        let keys = attempt_keys(subjects);
        let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
        let retry_ms: u64 = self
            .0
            .run(|mut c| async move {
                let script = redis::Script::new(BEGIN);
                let mut call = script.prepare_invoke();
                for k in &keys {
                    call.key(k);
                }
                call.arg(limit).arg(window_ms).invoke_async(&mut c).await
            })
            .await?;
        Ok(match retry_ms {
            0 => Ok(()),
            ms => Err(Duration::from_millis(ms)),
        })
    }

    /// Takes back an attempt that turned out good.
    pub async fn refund(&self, subjects: &[crate::limits::Subject]) -> Result<(), Error> {
        const REFUND: &str = r"
            for _, k in ipairs(KEYS) do
              if redis.call('DECR', k) <= 0 then redis.call('DEL', k) end
            end
            return 0";
        let keys = attempt_keys(subjects);
        self.0
            .run(|mut c| async move {
                let script = redis::Script::new(REFUND);
                let mut call = script.prepare_invoke();
                for k in &keys {
                    call.key(k);
                }
                call.invoke_async::<()>(&mut c).await
            })
            .await
    }
}

fn attempt_keys(subjects: &[crate::limits::Subject]) -> Vec<String> {
    subjects
        .iter()
        .map(|s| key("attempts", &[&s.to_string()]))
        .collect()
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
