//! `keygate key revoke`, `user remove` and `key rotate --grace 0s` with a store: two
//! `keygate serve` replicas, each with its OWN copy of the configuration, a real
//! redis-server. The CLI edits one copy; the other copy still lists the credential, and
//! both replicas refuse it, and the tokens issued with it, within a second. Also: what
//! keygate checks of Redis's settings at start-up.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::*;

fn redis_server() -> PathBuf {
    let found = ["/usr/bin/redis-server", "/usr/local/bin/redis-server"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists());
    found.expect("this test needs redis-server: run the tests with `cargo xtask test`")
}

/// A redis-server on a free port, killed on drop.
pub(crate) struct Redis {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Redis {
    pub(crate) fn start(extra: &[&str]) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = tempfile::tempdir().unwrap();
        let child = Command::new(redis_server())
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(dir.path())
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        eventually("redis-server listening", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        Self {
            child,
            port,
            _dir: dir,
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `keygate init` with the store at `redis`; returns the first key.
pub(crate) fn init_with_store(dir: &Path, redis: &Redis) -> String {
    let key = init(dir);
    let path = dir.join("keygate.toml");
    let text = std::fs::read_to_string(&path).unwrap().replacen(
        "# url = \"redis://127.0.0.1:6379\"",
        &format!("url = \"redis://127.0.0.1:{}\"", redis.port),
        1,
    );
    std::fs::write(&path, text).unwrap();
    key
}

fn token_of(r: reqwest::blocking::Response) -> String {
    assert_eq!(r.status(), 200);
    let body: Value = r.json().unwrap();
    body["access_token"].as_str().unwrap().to_owned()
}

/// Both replicas refuse `key` at login and `token` at `/verify` within a second.
fn refused_everywhere(what: &str, servers: [&Server; 2], key: Option<&str>, token: &str) {
    for s in servers {
        eventually_within(what, Duration::from_secs(1), || {
            verify(&s.base, token) == 401 && key.is_none_or(|k| login(&s.base, k).status() == 401)
        });
    }
}

#[test]
fn cli_revocations_reach_replicas_with_other_copies_of_the_file() {
    let redis = Redis::start(&[]);
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (a_dir.path(), b_dir.path());
    let first = init_with_store(a, &redis);
    let add = keygate(a, &["key", "add", "billing", "--role", "service"]);
    assert_eq!(add.status.code(), Some(0), "{}", stderr(&add));
    let billing = stdout(&add).trim().to_owned();
    let add = keygate_stdin(
        a,
        &["user", "add", "alice", "--role", "admin"],
        "correct horse battery\n",
    );
    assert_eq!(add.status.code(), Some(0), "{}", stderr(&add));
    std::fs::copy(a.join("keygate.toml"), b.join("keygate.toml")).unwrap();
    let (sa, sb) = (serve(a), serve(b));
    for s in [&sa, &sb] {
        eventually("in sync with the store", || {
            http()
                .get(format!("{}/readyz", s.base))
                .send()
                .unwrap()
                .status()
                == 200
        });
    }

    // key revoke on A's copy.
    let token = token_of(login(&sb.base, &first));
    let b_file = std::fs::read_to_string(b.join("keygate.toml")).unwrap();
    let revoke = keygate(a, &["key", "revoke", "my-service"]);
    assert_eq!(revoke.status.code(), Some(0), "{}", stderr(&revoke));
    assert!(
        stderr(&revoke).contains("written to the store"),
        "{}",
        stderr(&revoke)
    );
    refused_everywhere("key revoke", [&sa, &sb], Some(&first), &token);
    let b_now = std::fs::read_to_string(b.join("keygate.toml")).unwrap();
    assert_eq!(
        b_now, b_file,
        "B's copy is untouched and still lists the key"
    );
    assert!(!b_now.contains("revoked_at"));

    // user remove on A's copy.
    let token = token_of(password_grant(&sb.base, "alice", "correct horse battery"));
    let remove = keygate(a, &["user", "remove", "alice"]);
    assert_eq!(remove.status.code(), Some(0), "{}", stderr(&remove));
    refused_everywhere("user remove", [&sa, &sb], None, &token);
    for s in [&sa, &sb] {
        let r = password_grant(&s.base, "alice", "correct horse battery");
        assert_eq!(r.status(), 400, "the removed user's password");
    }

    // key rotate --grace 0s on A's copy: the old key and its tokens go, the new key works.
    let token = token_of(login(&sb.base, &billing));
    let rotate = keygate(a, &["key", "rotate", "billing", "--grace", "0s"]);
    assert_eq!(rotate.status.code(), Some(0), "{}", stderr(&rotate));
    let new_key = stdout(&rotate).trim().to_owned();
    refused_everywhere("key rotate --grace 0s", [&sa, &sb], Some(&billing), &token);
    // The rotation revoked the old key on a whole second, the new key's `not_before`:
    // the new key's tokens of that very second (`iat == not_before`) work everywhere.
    eventually("the new key works on A", || {
        login(&sa.base, &new_key).status() == 200
    });
    let fresh = token_of(login(&sa.base, &new_key));
    assert_eq!(verify(&sa.base, &fresh), 200);
    assert_eq!(verify(&sb.base, &fresh), 200);
}

#[test]
fn without_a_store_the_cli_edits_only_the_file() {
    let dir = tempfile::tempdir().unwrap();
    init(dir.path());
    let revoke = keygate(dir.path(), &["key", "revoke", "my-service"]);
    assert_eq!(revoke.status.code(), Some(0), "{}", stderr(&revoke));
    assert!(!stderr(&revoke).contains("store"), "{}", stderr(&revoke));
}

#[test]
fn an_unreachable_store_fails_the_revocation_loudly_after_the_file_edit() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    init(d);
    let path = d.join("keygate.toml");
    let text = std::fs::read_to_string(&path).unwrap().replacen(
        "# url = \"redis://127.0.0.1:6379\"",
        "url = \"redis://127.0.0.1:1\"",
        1,
    );
    std::fs::write(&path, text).unwrap();
    let revoke = keygate(d, &["key", "revoke", "my-service"]);
    assert_eq!(revoke.status.code(), Some(3), "{}", stderr(&revoke));
    assert!(stderr(&revoke).contains("writing the revocation to the store failed"));
    assert!(
        std::fs::read_to_string(&path)
            .unwrap()
            .contains("revoked_at"),
        "the file edit stays"
    );
}

/// Starts `keygate serve` on a store at `redis`, returns what it logged in its first second.
fn startup_warnings(redis: &Redis) -> String {
    let dir = tempfile::tempdir().unwrap();
    init_with_store(dir.path(), redis);
    let log = dir.path().join("serve.log");
    let server = serve_logging(
        dir.path(),
        "warn",
        Stdio::from(std::fs::File::create(&log).unwrap()),
    );
    let mut text = String::new();
    eventually("the store check is logged", || {
        text = std::fs::read_to_string(&log).unwrap();
        text.contains("store: ")
    });
    drop(server);
    text
}

#[test]
fn start_up_names_the_redis_settings_keygate_needs() {
    let loose = Redis::start(&["--maxmemory-policy", "allkeys-lru"]);
    let log = startup_warnings(&loose);
    assert!(log.contains("maxmemory-policy is allkeys-lru"), "{log}");
    assert!(log.contains("appendonly"), "{log}");

    let managed = Redis::start(&["--rename-command", "CONFIG", ""]);
    let log = startup_warnings(&managed);
    assert!(log.contains("CONFIG GET refused"), "{log}");

    let good = Redis::start(&["--appendonly", "yes", "--maxmemory-policy", "noeviction"]);
    let dir = tempfile::tempdir().unwrap();
    init_with_store(dir.path(), &good);
    let log = dir.path().join("serve.log");
    let server = serve_logging(
        dir.path(),
        "warn",
        Stdio::from(std::fs::File::create(&log).unwrap()),
    );
    eventually("in sync", || {
        http()
            .get(format!("{}/readyz", server.base))
            .send()
            .unwrap()
            .status()
            == 200
    });
    drop(server);
    assert!(
        !std::fs::read_to_string(&log).unwrap().contains("store: "),
        "no warning when all is set"
    );
}
