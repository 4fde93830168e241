//! The guarantee "Every CLI edit lands or fails loudly" (docs/security.md), with the real `keygate` binary:
//! concurrent edits all land, what the server would refuse is refused with the file
//! untouched, owner, group, mode and symlinks are kept, and `kill -9` at any moment leaves
//! a file that loads with every entry reported written.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use super::{init, keygate, keygate_stdin, login, serve, stderr, stdout};

fn spawn(dir: &Path, args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_keygate"))
        .args(args)
        .current_dir(dir)
        .env_remove("KEYGATE_CONFIG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The clients as `key list --json` reports them, by id.
fn clients(dir: &Path) -> Vec<Value> {
    let out = keygate(dir, &["key", "list", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    serde_json::from_str::<Vec<Value>>(&stdout(&out)).unwrap()
}

fn ids(dir: &Path) -> Vec<String> {
    clients(dir)
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect()
}

/// Sleeps until `margin` before the next whole second. `key add` waits for the next whole
/// second (its `not_before`) before it takes the lock; starting a command here puts its
/// edit, not that wait, in the milliseconds that follow. Real time must pass: the command
/// reads the system clock.
pub(super) fn just_before_a_second(margin: Duration) {
    let into = Duration::from_nanos(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
            .into(),
    );
    let target = Duration::from_secs(1) - margin;
    let wait = if into < target {
        target - into
    } else {
        Duration::from_secs(1) - into + target
    };
    std::thread::sleep(wait);
}

#[test]
fn sixteen_parallel_key_adds_all_land_and_all_work() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    init(d);
    let children: Vec<(String, Child)> = (0..16)
        .map(|i| {
            let id = format!("parallel-{i}");
            let child = spawn(d, &["key", "add", &id, "--role", "service"]);
            (id, child)
        })
        .collect();
    let mut keys = Vec::new();
    for (id, child) in children {
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{id}: {}", stderr(&out));
        keys.push(stdout(&out).trim().to_owned());
    }
    let mut listed = ids(d);
    listed.sort();
    let mut expected: Vec<String> = (0..16).map(|i| format!("parallel-{i}")).collect();
    expected.push("my-service".into());
    expected.sort();
    assert_eq!(listed, expected);
    let server = serve(d);
    for key in &keys {
        assert_eq!(login(&server.base, key).status(), 200, "{key}");
    }
}

#[test]
fn a_revoke_racing_adds_is_never_lost() {
    for round in 0..8 {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        init(d);
        assert_eq!(
            keygate(d, &["key", "add", "victim", "--role", "r"])
                .status
                .code(),
            Some(0)
        );
        // The adds all wake at the next whole second and contend for the lock; the revoke
        // (which does not wait) is started to arrive among them.
        just_before_a_second(Duration::from_millis(400));
        let adds: Vec<Child> = (0..6)
            .map(|i| spawn(d, &["key", "add", &format!("racer-{i}"), "--role", "r"]))
            .collect();
        just_before_a_second(Duration::from_millis(8 - round));
        let revoke = spawn(d, &["key", "revoke", "victim"]);
        for child in adds.into_iter().chain([revoke]) {
            let out = child.wait_with_output().unwrap();
            assert_eq!(
                out.status.code(),
                Some(0),
                "round {round}: {}",
                stderr(&out)
            );
        }
        let list = clients(d);
        let victim = list.iter().find(|c| c["id"] == "victim").unwrap();
        assert_eq!(victim["state"], "revoked", "round {round}: {list:?}");
        assert_eq!(list.len(), 8, "round {round}: {list:?}");
    }
}

/// Asserts exit 2, one stderr line naming `setting`, and the file byte for byte as before.
fn refused(dir: &Path, out: &Output, setting: &str, before: &[u8]) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains(setting), "expected {setting}: {err}");
    assert!(err.contains("nothing was written"), "{err}");
    assert!(
        stdout(out).is_empty(),
        "no key printed for an edit not made"
    );
    assert_eq!(std::fs::read(dir.join("keygate.toml")).unwrap(), before);
}

#[test]
fn the_cli_refuses_what_the_server_would_refuse_and_leaves_the_file_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    init(d);
    let before = std::fs::read(d.join("keygate.toml")).unwrap();
    let cases: &[(&[&str], &str)] = &[
        (&["--role", "s", "--scope", "a b"], "clients[1].scopes[0]"),
        (
            &["--role", "reader\r\nX-Auth-Role: admin"],
            "clients[1].role",
        ),
        (&["--role", "reader,admin"], "clients[1].role"),
        (
            &["--role", "s", "--scope", "ok", "--scope", ""],
            "clients[1].scopes[1]",
        ),
    ];
    for (extra, setting) in cases {
        let mut args = vec!["key", "add", "x"];
        args.extend_from_slice(extra);
        refused(d, &keygate(d, &args), setting, &before);
    }
    let user = keygate_stdin(
        d,
        &["user", "add", "bob", "--role", "a\"b"],
        "long-enough-pw",
    );
    refused(d, &user, "users[0].role", &before);

    // A file the server already refuses: a revocation written into it would silently not
    // apply, so the CLI says so instead.
    let broken = String::from_utf8(before)
        .unwrap()
        .replace("ttl = \"30m\"", "ttl = \"0s\"");
    std::fs::write(d.join("keygate.toml"), &broken).unwrap();
    let revoke = keygate(d, &["key", "revoke", "my-service"]);
    refused(d, &revoke, "token.ttl", broken.as_bytes());
}

#[test]
fn a_file_using_a_variable_this_shell_lacks_is_still_edited() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    init(d);
    let path = d.join("keygate.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let secret_line = text.lines().find(|l| l.starts_with("secret = ")).unwrap();
    std::fs::write(
        &path,
        text.replace(
            secret_line,
            "secret = \"${KG_TEST_SECRET_ONLY_THE_SERVER_HAS}\"",
        ),
    )
    .unwrap();
    let out = keygate(d, &["key", "add", "billing", "--role", "service"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        stderr(&out).trim(),
        "keygate: KG_TEST_SECRET_ONLY_THE_SERVER_HAS not set here: checked [[clients]] and [[users]] only"
    );
    let before = std::fs::read(&path).unwrap();
    let bad = keygate(d, &["key", "add", "x", "--role", "a b"]);
    refused(d, &bad, "clients[2].role", &before);
}

#[test]
fn edits_keep_the_owner_group_and_mode() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    init(d);
    let path = d.join("keygate.toml");
    let me = std::fs::metadata(&path).unwrap();
    // CI runs as root: hand the file to nobody:nogroup, as a packaged install would to
    // its service user. A developer who is not root can only keep their own ids, so
    // there the mode alone differs from what a new file gets (0600).
    let (uid, gid) = if me.uid() == 0 {
        (65534, 65534)
    } else {
        (me.uid(), me.gid())
    };
    std::os::unix::fs::chown(&path, Some(uid), Some(gid)).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
    let mut ino = std::fs::metadata(&path).unwrap().ino();

    for args in [
        &["key", "add", "billing", "--role", "service"][..],
        &["key", "rotate", "billing", "--grace", "1h"],
        &["key", "revoke", "billing"],
    ] {
        let out = keygate(d, args);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
        let m = std::fs::metadata(&path).unwrap();
        assert_eq!((m.uid(), m.gid()), (uid, gid), "{args:?}");
        assert_eq!(m.mode() & 0o7777, 0o640, "{args:?}");
        // The new file is made while the old one exists, so its inode differs.
        assert_ne!(
            m.ino(),
            ino,
            "{args:?}: replaced by a rename, not rewritten in place"
        );
        ino = m.ino();
    }
}

#[test]
fn a_symlinked_config_stays_a_link_and_its_target_changes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let real = d.join("etc");
    std::fs::create_dir(&real).unwrap();
    init(&real);
    std::os::unix::fs::symlink("etc/keygate.toml", d.join("keygate.toml")).unwrap();
    let out = keygate(d, &["key", "add", "billing", "--role", "service"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let link = std::fs::symlink_metadata(d.join("keygate.toml")).unwrap();
    assert!(link.file_type().is_symlink(), "still a link");
    assert_eq!(
        std::fs::read_link(d.join("keygate.toml")).unwrap(),
        PathBuf::from("etc/keygate.toml")
    );
    let text = std::fs::read_to_string(real.join("keygate.toml")).unwrap();
    assert!(text.contains("id = \"billing\""), "{text}");
    assert!(
        real.join("keygate.toml.lock").exists(),
        "locked beside the target"
    );
    assert!(!d.join("keygate.toml.lock").exists());
}

/// The project's virtualenv python (`cargo xtask test` makes it): holds the lock from
/// another process, which this test can then `kill -9`.
fn python() -> PathBuf {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
    assert!(
        python.exists(),
        "needs the project's .venv: run `cargo xtask test` once"
    );
    python
}

/// A process holding `flock` on `lock` until killed.
fn hold_lock(lock: &Path) -> Child {
    let script = "import fcntl, sys, time\nf = open(sys.argv[1], 'a')\nfcntl.flock(f, fcntl.LOCK_EX)\nprint('locked', flush=True)\ntime.sleep(600)\n";
    let mut child = Command::new(python())
        .args(["-c", script])
        .arg(lock)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line, "locked\n");
    child
}

/// True when `child` has `path` open (one of its descriptors in `/proc` points to it): a
/// command that opened the lock file is at the lock.
fn holds_open(child: &Child, path: &Path) -> bool {
    let fds = format!("/proc/{}/fd", child.id());
    std::fs::read_dir(fds).is_ok_and(|fds| {
        fds.filter_map(Result::ok)
            .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|target| target == path))
    })
}

#[test]
fn a_held_lock_makes_edits_wait_then_fail_loudly_and_a_killed_holder_frees_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    init(d);
    let path = d.join("keygate.toml");
    let mut holder = hold_lock(&d.join("keygate.toml.lock"));
    let before = std::fs::read(&path).unwrap();

    let started = Instant::now();
    let out = keygate(d, &["key", "revoke", "my-service"]);
    assert!(
        started.elapsed() >= Duration::from_secs(10),
        "waited the full bound"
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(
        err,
        format!(
            "keygate: {}: another keygate command has held this lock for 10s; nothing was changed\n",
            std::fs::canonicalize(d)
                .unwrap()
                .join("keygate.toml.lock")
                .display()
        )
    );
    assert_eq!(std::fs::read(&path).unwrap(), before);

    let mut add = spawn(d, &["key", "add", "billing", "--role", "service"]);
    let lock = std::fs::canonicalize(d.join("keygate.toml.lock")).unwrap();
    let started = Instant::now();
    while !holds_open(&add, &lock) {
        assert!(add.try_wait().unwrap().is_none(), "ended without the lock");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "never opened the lock file"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    // Real time must pass to show that something does not happen: an edit that ignored
    // the lock would be written and done well within this second.
    std::thread::sleep(Duration::from_secs(1));
    assert!(add.try_wait().unwrap().is_none(), "waits for the lock");
    holder.kill().unwrap(); // SIGKILL: the kernel drops the dead holder's lock
    holder.wait().unwrap();
    let out = add.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(ids(d).contains(&"billing".to_owned()));
}

/// xorshift64*: reproducible random delays without a dependency; the seed is printed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

#[test]
fn kill_9_at_random_moments_never_loses_the_file_or_a_reported_entry() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    init(d);
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    println!("seed {seed}");
    let mut rng = Rng(seed);
    // Kills aim at the moment a `key add` started just before a second ends, where the
    // write and the rename are: starting from how long an uninterrupted one takes here
    // (the machine may be slow and busy), later after each kill, earlier after each finish,
    // each delay drawn within ±30% of that aim.
    let mut spans = Vec::new();
    for i in 0..3 {
        just_before_a_second(Duration::from_millis(15));
        let started = Instant::now();
        let out = keygate(
            d,
            &["key", "add", &format!("calibration-{i}"), "--role", "r"],
        );
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        spans.push(started.elapsed());
    }
    spans.sort();
    let mut aim = u64::try_from(spans[1].as_micros()).unwrap();
    println!("an add takes {:?}", spans[1]);

    let mut reported = Vec::new();
    let mut killed = 0;
    for i in 0..50 {
        let id = format!("fault-{i}");
        just_before_a_second(Duration::from_millis(15));
        let mut child = spawn(d, &["key", "add", &id, "--role", "r"]);
        // Real time must pass: the moment of the kill is what varies.
        std::thread::sleep(Duration::from_micros(
            aim * 7 / 10 + rng.below(aim * 6 / 10),
        ));
        let _ = child.kill(); // SIGKILL; fails only when it has already exited
        let out = child.wait_with_output().unwrap();
        match out.status.code() {
            Some(0) => {
                reported.push((id.clone(), stdout(&out).trim().to_owned()));
                aim = aim * 19 / 20;
            }
            None => {
                killed += 1;
                aim = aim * 21 / 20;
            }
            Some(code) => panic!("{id} exited {code}: {}", stderr(&out)),
        }
        let check = keygate(d, &["check-config"]);
        assert_eq!(
            check.status.code(),
            Some(0),
            "after {id}: {}",
            stderr(&check)
        );
        let listed = ids(d);
        for (id, _) in &reported {
            assert!(listed.contains(id), "{id} was reported written and is gone");
        }
    }
    println!("{} finished, {killed} killed", reported.len());
    assert!(
        killed > 0,
        "no command was interrupted: the test proved nothing"
    );

    // A killed command leaves neither a held lock nor, after the next edit, a temporary file.
    let started = Instant::now();
    let out = keygate(d, &["key", "add", "after-the-storm", "--role", "r"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "not blocked by a stale lock"
    );
    let mut names: Vec<String> = std::fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["keygate.toml", "keygate.toml.lock"]);
    let server = serve(d);
    for (id, key) in &reported {
        assert_eq!(login(&server.base, key).status(), 200, "{id}");
    }
}
