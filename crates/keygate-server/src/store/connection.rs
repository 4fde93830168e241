//! [`RedisStore`]: one shared connection to the configured topology — a single Redis, a
//! Sentinel-managed primary, or a Redis Cluster — with every call bounded by
//! `store.timeout`.
//!
//! The connection is opened on first use and dropped after any failure, so the next call
//! opens a new one: under Sentinel that means asking the sentinels again, which is how a
//! failover is followed without a restart.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use keygate::Error;
use keygate::error::StoreError;
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::{AsyncConnectionConfig, Cmd, Pipeline, RedisFuture, Value};
use tokio::sync::Mutex;

use crate::config::StoreConfig;

/// A connection to the store, shared by every request; cheap to clone.
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    topology: Topology,
    timeout: Duration,
    /// The open connection and the generation it belongs to; a failed call drops it only
    /// if no one has replaced it since (so one failure does not close a fresh connection).
    connection: Mutex<Option<(u64, Connection)>>,
    generation: AtomicU64,
}

/// The sentinels of a Sentinel-managed primary.
struct Sentinels {
    sentinels: Vec<redis::Client>,
    master: String,
    /// A sentinel URL, whose scheme and credentials the primary's URL reuses.
    template: String,
    tls: Option<Vec<u8>>,
}

enum Topology {
    Single(redis::Client),
    Sentinel(Sentinels),
    Cluster {
        client: Box<redis::cluster::ClusterClient>,
        /// Each seed node on its own, for pub/sub (a cluster broadcasts PUBLISH to every node).
        nodes: Vec<redis::Client>,
    },
}

/// An open connection of either kind; both multiplex, so clones share one socket.
#[derive(Clone)]
pub(crate) enum Connection {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Connection::Single(c) => c.req_packed_command(cmd),
            Connection::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Connection::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Connection::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Single(c) => c.get_db(),
            Connection::Cluster(c) => c.get_db(),
        }
    }
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // URLs may carry a password: only the shape and host parts are shown.
        match &self.inner.topology {
            Topology::Single(c) => write!(f, "RedisStore({:?})", c.get_connection_info().addr()),
            Topology::Sentinel(s) => write!(f, "RedisStore(sentinel {:?})", s.master),
            Topology::Cluster { nodes, .. } => write!(f, "RedisStore(cluster of {})", nodes.len()),
        }
    }
}

/// Why `[store]` could not be set up (nothing is connected yet at that point).
#[derive(Debug, thiserror::Error)]
pub enum StoreSetupError {
    /// `store.ca_file` could not be read.
    #[error("store.ca_file `{}`", .path.display())]
    CaFile {
        /// The file.
        path: PathBuf,
        /// Why it could not be read.
        #[source]
        source: std::io::Error,
    },
    /// `store.sentinels` without `store.sentinel_master`.
    #[error("store.sentinel_master is required with store.sentinels")]
    NoSentinelMaster,
    /// The redis client refused a URL or the cluster's settings.
    #[error("the store's client could not be set up")]
    Client(#[source] redis::RedisError),
}

/// The PEM roots for `rediss://` servers, read from `store.ca_file`.
fn read_ca(config: &StoreConfig) -> Result<Option<Vec<u8>>, StoreSetupError> {
    config
        .ca_file
        .as_ref()
        .map(|p| {
            std::fs::read(p).map_err(|source| StoreSetupError::CaFile {
                path: p.clone(),
                source,
            })
        })
        .transpose()
}

fn client(url: &str, ca: Option<&Vec<u8>>) -> redis::RedisResult<redis::Client> {
    match ca {
        Some(pem) if url.starts_with("rediss://") => redis::Client::build_with_tls(
            url,
            redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(pem.clone()),
            },
        ),
        _ => redis::Client::open(url),
    }
}

impl RedisStore {
    /// A store for `[store]`, or `None` when no shared store is configured. Nothing is
    /// connected yet, so a server starts even while Redis is down.
    pub fn from_config(config: &StoreConfig) -> Result<Option<Self>, StoreSetupError> {
        // The redis crate builds its `rediss://` TLS configuration from rustls's process
        // default provider: installed here, aws-lc-rs (the workspace's only one), so that
        // it is there whoever embeds the server.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let ca = read_ca(config)?;
        let topology = if let Some(url) = &config.url {
            Topology::Single(client(url, ca.as_ref()).map_err(StoreSetupError::Client)?)
        } else if !config.sentinels.is_empty() {
            let master = config
                .sentinel_master
                .clone()
                .ok_or(StoreSetupError::NoSentinelMaster)?;
            let sentinels = config
                .sentinels
                .iter()
                .map(|u| client(u, ca.as_ref()))
                .collect::<Result<_, _>>()
                .map_err(StoreSetupError::Client)?;
            Topology::Sentinel(Sentinels {
                sentinels,
                master,
                template: config.sentinels[0].clone(),
                tls: ca,
            })
        } else if !config.cluster.is_empty() {
            let mut builder = redis::cluster::ClusterClientBuilder::new(config.cluster.clone())
                .connection_timeout(config.timeout)
                .response_timeout(config.timeout)
                .retries(1);
            if let Some(pem) = &ca {
                builder = builder.certs(redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem.clone()),
                });
            }
            Topology::Cluster {
                client: Box::new(builder.build().map_err(StoreSetupError::Client)?),
                nodes: config
                    .cluster
                    .iter()
                    .map(|u| client(u, ca.as_ref()))
                    .collect::<Result<_, _>>()
                    .map_err(StoreSetupError::Client)?,
            }
        } else {
            return Ok(None);
        };
        Ok(Some(Self {
            inner: Arc::new(Inner {
                topology,
                timeout: config.timeout,
                connection: Mutex::new(None),
                generation: AtomicU64::new(0),
            }),
        }))
    }

    /// `store.timeout`: the bound on every call.
    pub fn timeout(&self) -> Duration {
        self.inner.timeout
    }

    fn connection_config(&self) -> AsyncConnectionConfig {
        AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.inner.timeout))
            .set_response_timeout(Some(self.inner.timeout))
    }

    /// The shared connection, opened if there is none.
    async fn connection(&self) -> redis::RedisResult<(u64, Connection)> {
        let mut held = self.inner.connection.lock().await;
        if let Some(open) = held.as_ref() {
            return Ok(open.clone());
        }
        let connection = match &self.inner.topology {
            Topology::Single(c) => Connection::Single(
                c.get_multiplexed_async_connection_with_config(&self.connection_config())
                    .await?,
            ),
            Topology::Sentinel(sentinels) => Connection::Single(
                self.primary(sentinels)
                    .await?
                    .get_multiplexed_async_connection_with_config(&self.connection_config())
                    .await?,
            ),
            Topology::Cluster { client, .. } => {
                Connection::Cluster(client.get_async_connection().await?)
            }
        };
        let generation = self.inner.generation.fetch_add(1, Ordering::Relaxed) + 1;
        *held = Some((generation, connection.clone()));
        Ok((generation, connection))
    }

    /// Drops the connection of `generation` after a failure, unless already replaced.
    fn forget(&self, generation: u64) {
        if let Ok(mut held) = self.inner.connection.try_lock()
            && held.as_ref().is_some_and(|(g, _)| *g == generation)
        {
            *held = None;
        }
    }

    /// Runs `f` on the shared connection within `store.timeout`, connecting first if
    /// needed; any failure or a late answer is an [`Error::Store`].
    pub(crate) async fn run<T, F, Fut>(&self, f: F) -> Result<T, Error>
    where
        F: FnOnce(Connection) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let mut generation = None;
        let call = async {
            let (g, conn) = self.connection().await?;
            generation = Some(g);
            f(conn).await
        };
        let timed = tokio::time::timeout(self.inner.timeout, call);
        let outcome = if crate::telemetry::in_traced_request() {
            // A child span of the request's, for the trace (see `crate::telemetry`).
            let span = tracing::info_span!(
                "store",
                otel.name = "redis",
                otel.kind = "client",
                db.system.name = "redis",
                otel.status_code = tracing::field::Empty,
            );
            let outcome = tracing::Instrument::instrument(timed, span.clone()).await;
            if !matches!(outcome, Ok(Ok(_))) {
                span.record("otel.status_code", "ERROR");
            }
            outcome
        } else {
            timed.await
        };
        let error = match outcome {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(e)) if !drops_connection(&e) => return Err(unavailable(e)),
            Ok(Err(e)) => unavailable(e),
            Err(_) => StoreError::Timeout(self.inner.timeout).into(),
        };
        if let Some(g) = generation {
            self.forget(g);
        }
        Err(error)
    }

    /// True for a Redis Cluster.
    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self.inner.topology, Topology::Cluster { .. })
    }

    /// Drops the shared connection, so the next call connects again (and, under
    /// Sentinel, asks the sentinels where the primary is).
    pub(crate) async fn reset(&self) {
        *self.inner.connection.lock().await = None;
    }

    /// The sentinels and the monitored primary's name, under Sentinel.
    pub(crate) fn sentinels(&self) -> Option<(Vec<redis::Client>, String)> {
        match &self.inner.topology {
            Topology::Sentinel(s) => Some((s.sentinels.clone(), s.master.clone())),
            _ => None,
        }
    }

    /// True when the store answers `PING` within `store.timeout`.
    pub async fn ping(&self) -> bool {
        self.run(|mut c| async move { redis::cmd("PING").query_async::<String>(&mut c).await })
            .await
            .is_ok()
    }

    /// Clients to subscribe through, in the order to try them: the one Redis, the
    /// primary the sentinels name now, or each cluster node.
    pub(crate) async fn pubsub_clients(&self) -> redis::RedisResult<Vec<redis::Client>> {
        match &self.inner.topology {
            Topology::Single(c) => Ok(vec![c.clone()]),
            Topology::Sentinel(sentinels) => Ok(vec![self.primary(sentinels).await?]),
            Topology::Cluster { nodes, .. } => Ok(nodes.clone()),
        }
    }

    /// Asks each sentinel in turn where the primary is, and checks that it says so itself
    /// (`ROLE`), so a demoted or stale address is never written to.
    async fn primary(&self, s: &Sentinels) -> redis::RedisResult<redis::Client> {
        let Sentinels {
            sentinels,
            master,
            template,
            tls,
        } = s;
        let mut last = None;
        for sentinel in sentinels {
            let found = async {
                let mut c = sentinel
                    .get_multiplexed_async_connection_with_config(&self.connection_config())
                    .await?;
                let (host, port): (String, u16) = redis::cmd("SENTINEL")
                    .arg("get-master-addr-by-name")
                    .arg(master)
                    .query_async(&mut c)
                    .await?;
                let url = with_address(template, &host, port);
                let primary = client(&url, tls.as_ref())?;
                let mut p = primary
                    .get_multiplexed_async_connection_with_config(&self.connection_config())
                    .await?;
                let role: Vec<Value> = redis::cmd("ROLE").query_async(&mut p).await?;
                match role.first() {
                    Some(Value::BulkString(r)) if r == b"master" => Ok(primary),
                    _ => Err(redis::RedisError::from((
                        redis::ErrorKind::Io,
                        "the address the sentinel named is not a primary (yet)",
                    ))),
                }
            };
            match tokio::time::timeout(self.inner.timeout, found).await {
                Ok(Ok(client)) => return Ok(client),
                Ok(Err(e)) => last = Some(e),
                Err(_) => {
                    last = Some(redis::RedisError::from((
                        redis::ErrorKind::Io,
                        "sentinel did not answer in time",
                    )))
                }
            }
        }
        Err(last.unwrap_or_else(|| {
            redis::RedisError::from((redis::ErrorKind::Io, "no sentinel configured"))
        }))
    }
}

/// `template` (a sentinel's URL) with its host and port replaced: the primary is reached
/// with the sentinels' scheme (TLS or not) and credentials.
fn with_address(template: &str, host: &str, port: u16) -> String {
    let (scheme, rest) = template.split_once("://").unwrap_or(("redis", template));
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let userinfo = authority
        .rfind('@')
        .map(|at| &authority[..=at])
        .unwrap_or("");
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    };
    format!("{scheme}://{userinfo}{host}:{port}{path}")
}

/// Errors after which the connection cannot be trusted to work again (as opposed to a
/// command the server refused, like a script error).
fn drops_connection(e: &redis::RedisError) -> bool {
    e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_unrecoverable_error()
        || matches!(e.code(), Some("READONLY" | "LOADING" | "MASTERDOWN"))
}

/// A failed call, the store's own error kept as the source.
pub(crate) fn unavailable(e: redis::RedisError) -> Error {
    StoreError::Unavailable(Box::new(e)).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(url: &str) -> StoreConfig {
        StoreConfig {
            url: Some(url.into()),
            ..StoreConfig::default()
        }
    }

    #[test]
    fn debug_output_does_not_show_the_password() {
        let store = RedisStore::from_config(&config("redis://:hunter2@127.0.0.1:6379/0"))
            .unwrap()
            .unwrap();
        assert!(!format!("{store:?}").contains("hunter2"));
    }

    #[test]
    fn the_primary_is_reached_like_the_sentinels() {
        assert_eq!(
            with_address("rediss://u:pw@10.0.0.1:26379/2", "10.0.0.9", 6380),
            "rediss://u:pw@10.0.0.9:6380/2"
        );
        assert_eq!(
            with_address("redis://127.0.0.1:26379", "::1", 7000),
            "redis://[::1]:7000"
        );
    }

    #[tokio::test]
    async fn a_dead_redis_is_reported_quickly_not_waited_for() {
        // Nothing listens on port 1.
        let store = RedisStore::from_config(&config("redis://127.0.0.1:1"))
            .unwrap()
            .unwrap();
        let started = std::time::Instant::now();
        assert!(!store.ping().await);
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
