//! A real PostgreSQL server for the directory tests (Debian's `postgresql`; `cargo xtask
//! test` installs it). It refuses to run as root, so as root it runs as `nobody`, in a
//! temporary folder of its own, on a port of its own; killed on drop.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::*;

/// The folder of PostgreSQL's programs (`/usr/lib/postgresql/<version>/bin`).
fn bin_dir() -> PathBuf {
    let found = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("postgres").exists())
        .max();
    match found {
        Some(dir) => dir,
        None => {
            // Names the package, as for every program the tests need.
            let postgres = system_program(&["/usr/lib/postgresql/15/bin/postgres"], "postgresql");
            postgres.parent().unwrap().to_owned()
        }
    }
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// `program args…`, as `nobody` when this process is root.
fn command(program: &std::path::Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "nobody", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

/// One PostgreSQL server.
pub(crate) struct Postgres {
    child: Option<Child>,
    pub(crate) port: u16,
    dir: tempfile::TempDir,
}

impl Postgres {
    /// A new cluster (trust authentication on 127.0.0.1, no fsync), started.
    pub(crate) async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        if is_root() {
            std::os::unix::fs::chown(dir.path(), Some(65534), None).unwrap();
        }
        let out = command(&bin_dir().join("initdb"))
            .arg("-D")
            .arg(dir.path().join("data"))
            .args(["-U", "keygate", "--auth=trust", "-E", "UTF8", "--no-sync"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .expect("initdb runs");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut pg = Postgres {
            child: None,
            port: free_port(),
            dir,
        };
        pg.run().await;
        pg
    }

    async fn run(&mut self) {
        let child = command(&bin_dir().join("postgres"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-k")
            .arg(self.dir.path())
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
                "-c",
                "max_connections=200",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("postgres starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok((client, conn)) =
                tokio_postgres::connect(&self.url(), tokio_postgres::NoTls).await
            {
                tokio::spawn(conn);
                if client.simple_query("SELECT 1").await.is_ok() {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "postgres did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `postgres://keygate@127.0.0.1:<port>/postgres`
    pub(crate) fn url(&self) -> String {
        format!("postgres://keygate@127.0.0.1:{}/postgres", self.port)
    }

    /// Stops the server at once (PostgreSQL's immediate shutdown, `SIGQUIT`: every
    /// backend ends without closing its connection cleanly).
    pub(crate) fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            // As root the child is `runuser`; the server is its only child.
            let server = if is_root() {
                std::fs::read_to_string(self.dir.path().join("data/postmaster.pid"))
                    .ok()
                    .and_then(|t| t.lines().next()?.trim().parse::<i32>().ok())
            } else {
                i32::try_from(c.id()).ok()
            };
            if let Some(pid) = server.and_then(rustix::process::Pid::from_raw) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::QUIT);
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            while c.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port and data.
    pub(crate) async fn restart(&mut self) {
        self.kill();
        self.run().await;
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.kill();
    }
}
