//! Real Redis servers for the store tests (`redis-server` and `redis-cli` from Debian;
//! `cargo xtask test` installs them): one server, a Sentinel set, a three-node Cluster.
//! Each runs in a temporary folder on ports of its own and is killed on drop.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::*;

pub(crate) fn redis_server() -> PathBuf {
    system_program(
        &["/usr/bin/redis-server", "/usr/local/bin/redis-server"],
        "redis-server",
    )
}

fn redis_cli() -> PathBuf {
    system_program(
        &["/usr/bin/redis-cli", "/usr/local/bin/redis-cli"],
        "redis-tools",
    )
}

/// A port `p` free now, with `p + 10000` free too (a cluster node's bus port).
fn free_port_pair() -> u16 {
    loop {
        let p = free_port();
        if p < 55_000 && std::net::TcpListener::bind(("127.0.0.1", p + 10_000)).is_ok() {
            return p;
        }
    }
}

async fn wait_for_port(port: u16) {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("redis-server did not start on port {port}");
}

/// One redis-server process.
pub(crate) struct Redis {
    child: Option<Child>,
    pub(crate) port: u16,
    args: Vec<String>,
    dir: tempfile::TempDir,
}

impl Redis {
    /// A standalone server without persistence, plus `extra` arguments.
    pub(crate) async fn start(extra: &[&str]) -> Self {
        let mut args: Vec<String> = ["--save", "", "--appendonly", "no"]
            .map(String::from)
            .to_vec();
        args.extend(extra.iter().map(|s| s.to_string()));
        Self::start_with(free_port_pair(), args).await
    }

    /// A server speaking only TLS (`rediss://`), with `cert` and `key` (PEM files), not
    /// asking clients for certificates.
    pub(crate) async fn start_tls(cert: &std::path::Path, key: &std::path::Path) -> Self {
        let port = free_port_pair();
        let args = vec![
            "--save".into(),
            "".into(),
            "--port".into(),
            "0".into(),
            "--tls-port".into(),
            port.to_string(),
            "--tls-cert-file".into(),
            cert.display().to_string(),
            "--tls-key-file".into(),
            key.display().to_string(),
            "--tls-auth-clients".into(),
            "no".into(),
        ];
        Self::start_with(port, args).await
    }

    async fn start_with(port: u16, args: Vec<String>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut redis = Self {
            child: None,
            port,
            args,
            dir,
        };
        redis.spawn().await;
        redis
    }

    async fn spawn(&mut self) {
        let child = Command::new(redis_server())
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--protected-mode", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        wait_for_port(self.port).await;
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn pid(&self) -> String {
        self.child.as_ref().expect("running").id().to_string()
    }

    /// `kill -9`.
    pub(crate) fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Killed and started again on the same port, with the same arguments.
    pub(crate) async fn restart(&mut self) {
        self.kill();
        self.spawn().await;
    }

    /// SIGSTOP: the server keeps its connections and answers nothing.
    pub(crate) fn pause(&self) {
        signal(&self.pid(), "-STOP");
    }

    /// SIGCONT.
    pub(crate) fn resume(&self) {
        signal(&self.pid(), "-CONT");
    }

    /// A plain connection to this server, for the test's own checks.
    pub(crate) async fn connection(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }

    /// Calls per command (`INFO commandstats`), e.g. `"get" → 3`.
    pub(crate) async fn command_calls(&self) -> std::collections::BTreeMap<String, u64> {
        let mut c = self.connection().await;
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(&mut c)
            .await
            .unwrap();
        info.lines()
            .filter_map(|l| l.strip_prefix("cmdstat_"))
            .filter_map(|l| {
                let (name, rest) = l.split_once(':')?;
                let calls = rest.strip_prefix("calls=")?.split(',').next()?;
                Some((name.to_owned(), calls.parse().ok()?))
            })
            .collect()
    }
}

fn signal(pid: &str, sig: &str) {
    let ok = Command::new("kill").args([sig, pid]).status().unwrap();
    assert!(ok.success(), "kill {sig} {pid}");
}

impl Drop for Redis {
    fn drop(&mut self) {
        if let Some(c) = &self.child {
            // A paused server must be resumed to die promptly and free its port.
            signal(&c.id().to_string(), "-CONT");
        }
        self.kill();
    }
}

/// A primary, one replica and three sentinels watching them as `keygate`.
pub(crate) struct SentinelSet {
    pub(crate) primary: Redis,
    pub(crate) replica: Redis,
    pub(crate) sentinels: Vec<Redis>,
}

impl SentinelSet {
    pub(crate) async fn start() -> Self {
        let primary = Redis::start(&[]).await;
        let replica = Redis::start(&["--replicaof", "127.0.0.1", &primary.port.to_string()]).await;
        let mut sentinels = Vec::new();
        for _ in 0..3 {
            let port = free_port_pair();
            let dir = tempfile::tempdir().unwrap();
            let conf = dir.path().join("sentinel.conf");
            std::fs::write(
                &conf,
                format!(
                    "port {port}\nbind 127.0.0.1\nprotected-mode no\n\
                     sentinel monitor keygate 127.0.0.1 {} 2\n\
                     sentinel down-after-milliseconds keygate 1000\n\
                     sentinel failover-timeout keygate 4000\n\
                     sentinel parallel-syncs keygate 1\n",
                    primary.port
                ),
            )
            .unwrap();
            let mut s = Redis {
                child: None,
                port,
                args: vec![conf.display().to_string(), "--sentinel".into()],
                dir,
            };
            s.spawn_sentinel().await;
            sentinels.push(s);
        }
        // The replica has caught up before the test writes anything.
        let mut r = replica.connection().await;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let info: String = redis::cmd("INFO")
                .arg("replication")
                .query_async(&mut r)
                .await
                .unwrap();
            if info.contains("master_link_status:up") {
                break;
            }
            assert!(Instant::now() < deadline, "the replica never synced");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self {
            primary,
            replica,
            sentinels,
        }
    }

    /// The `[store]` section for this set.
    pub(crate) fn store_toml(&self) -> String {
        let urls: Vec<String> = self
            .sentinels
            .iter()
            .map(|s| format!("\"{}\"", s.url()))
            .collect();
        format!(
            "[store]\nsentinels = [{}]\nsentinel_master = \"keygate\"\n",
            urls.join(", ")
        )
    }
}

impl Redis {
    /// A sentinel: the config file first, then `--sentinel` (its arguments).
    async fn spawn_sentinel(&mut self) {
        let child = Command::new(redis_server())
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        wait_for_port(self.port).await;
    }
}

/// Three primaries in one Redis Cluster (no replicas), slots spread by `redis-cli`.
pub(crate) struct Cluster {
    pub(crate) nodes: Vec<Redis>,
}

impl Cluster {
    pub(crate) async fn start() -> Self {
        let mut nodes = Vec::new();
        for _ in 0..3 {
            nodes.push(
                Redis::start(&[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "2000",
                ])
                .await,
            );
        }
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = Command::new(redis_cli())
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        let deadline = Instant::now() + Duration::from_secs(15);
        for n in &nodes {
            let mut c = n.connection().await;
            loop {
                let info: String = redis::cmd("CLUSTER")
                    .arg("INFO")
                    .query_async(&mut c)
                    .await
                    .unwrap();
                if info.contains("cluster_state:ok") {
                    break;
                }
                assert!(Instant::now() < deadline, "the cluster never became ok");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Self { nodes }
    }

    pub(crate) fn store_toml(&self) -> String {
        let urls: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("\"{}\"", n.url()))
            .collect();
        format!("[store]\ncluster = [{}]\n", urls.join(", "))
    }
}

/// `n` replicas, each with its own copy of one configuration (same secret, keys and
/// store), `store` being the whole `[store]` section.
pub(crate) async fn replicas_with(store: &str, n: usize) -> Vec<TestServer> {
    let key = keygate::api_key::generate("billing").unwrap();
    let text = config_text(&key, user_hash(), store);
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(TestServer::with_config(text.clone(), key.clone()).await);
    }
    for s in &out {
        s.wait_in_sync().await;
    }
    out
}

impl TestServer {
    /// Waits (up to 10 s) for `/readyz` to say the store copy is in sync.
    pub(crate) async fn wait_in_sync(&self) {
        let waited = eventually(Duration::from_secs(10), || async {
            self.http
                .get(self.url("/readyz"))
                .send()
                .await
                .unwrap()
                .status()
                == 200
        })
        .await;
        assert!(
            waited.is_some(),
            "the replica never got in sync with the store"
        );
    }
}

/// Polls `check` until it is true; `Some(time taken)`, or `None` past `limit`.
pub(crate) async fn eventually<F, Fut>(limit: Duration, mut check: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = Instant::now();
    while started.elapsed() < limit {
        if check().await {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    None
}
