//! The CLI on the directory (docs/directory.md) with a real SQLite file: `key …` and
//! `user …` edit it, a running server picks the edits up within a poll, `directory
//! import` moves the file's principals in, `directory export` writes them out, and a
//! directory out of reach is exit 3.

use std::time::{Duration, Instant};

use super::*;

const DIRECTORY: &str = "\n[directory]\nurl = \"sqlite://keygate.db\"\npoll_interval = \"100ms\"\n";

fn with_directory(dir: &Path) {
    let path = dir.join("keygate.toml");
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str(DIRECTORY);
    std::fs::write(&path, text).unwrap();
}

/// `keygate directory export --format jsonl` in `dir`: one JSON object per principal.
fn exported(dir: &Path) -> Vec<Value> {
    let out = keygate(dir, &["directory", "export", "--format", "jsonl"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn login_status(base: &str, key: &str) -> u16 {
    http()
        .post(format!("{base}/login"))
        .header("X-API-Key", key)
        .send()
        .unwrap()
        .status()
        .as_u16()
}

fn within_a_second(what: &str, check: impl Fn() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "{what} took over a second"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn key_commands_edit_the_directory_and_a_running_server_follows() {
    let dir = tempfile::tempdir().unwrap();
    let first = init(dir.path());
    with_directory(dir.path());
    let server = serve(dir.path());
    let started = Instant::now();
    let out = keygate(
        dir.path(),
        &[
            "key",
            "add",
            "svc",
            "--role",
            "service",
            "--scope",
            "orders:read",
        ],
    );
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    eprintln!("key add on the directory took {took:?} (process start included)");
    let key = stdout(&out).trim().to_owned();
    assert!(key.starts_with("kg_svc_"));
    // The file is untouched: the key lives in the directory.
    let text = std::fs::read_to_string(dir.path().join("keygate.toml")).unwrap();
    assert!(!text.contains("id = \"svc\""));
    within_a_second("the new key working", || {
        login_status(&server.base, &key) == 200
    });
    // The file's own client still works, and is listed with the directory's.
    assert_eq!(login_status(&server.base, &first), 200);
    let list = keygate(dir.path(), &["key", "list", "--json"]);
    let listed: Value = serde_json::from_slice(&list.stdout).unwrap();
    let ids: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&"svc") && ids.len() == 2, "{ids:?}");
    // An id of the file cannot be taken by the directory.
    let out = keygate(dir.path(), &["key", "add", "my-service", "--role", "x"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("one namespace"), "{}", stderr(&out));
    let out = keygate(dir.path(), &["key", "add", "svc", "--role", "x"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("already exists"), "{}", stderr(&out));

    let out = keygate(dir.path(), &["key", "rotate", "svc", "--grace", "0s"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let new_key = stdout(&out).trim().to_owned();
    within_a_second("the old key refused", || {
        login_status(&server.base, &key) != 200
    });
    assert_eq!(login_status(&server.base, &new_key), 200);
    let out = keygate(dir.path(), &["key", "revoke", "svc"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    within_a_second("the revoked key refused", || {
        login_status(&server.base, &new_key) != 200
    });
}

#[test]
fn import_moves_the_files_principals_and_export_writes_them_out() {
    let dir = tempfile::tempdir().unwrap();
    let first = init(dir.path());
    let out = keygate(dir.path(), &["key", "add", "legacy", "--role", "reader"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let legacy = stdout(&out).trim().to_owned();
    let out = keygate_stdin(
        dir.path(),
        &["user", "add", "alice", "--role", "admin"],
        "a long password\n",
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    with_directory(dir.path());
    let out = keygate(dir.path(), &["directory", "import"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("imported 3 principals"),
        "{}",
        stderr(&out)
    );
    let text = std::fs::read_to_string(dir.path().join("keygate.toml")).unwrap();
    assert!(
        !text.contains("[[clients]]") && !text.contains("[[users]]"),
        "{text}"
    );
    // Running it again finds nothing left to move and loses nothing.
    let out = keygate(dir.path(), &["directory", "import"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    let server = serve(dir.path());
    assert_eq!(login_status(&server.base, &first), 200);
    assert_eq!(login_status(&server.base, &legacy), 200);
    assert_eq!(
        password_grant(&server.base, "alice", "a long password").status(),
        200
    );

    let lines = exported(dir.path());
    assert_eq!(lines.len(), 3);
    let legacy_line = lines.iter().find(|l| l["id"] == "legacy").unwrap();
    assert_eq!(
        legacy_line["hash"],
        keygate::api_key::KeyHash::sha256_of(&legacy).to_string()
    );
    let out = keygate(
        dir.path(),
        &["directory", "export", "--output", "backup.toml"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let backup = std::fs::read_to_string(dir.path().join("backup.toml")).unwrap();
    let parsed: toml::Table = toml::from_str(&backup).unwrap();
    assert_eq!(parsed["clients"].as_array().unwrap().len(), 2);
    assert_eq!(parsed["users"].as_array().unwrap().len(), 1);
}

#[test]
fn sixteen_concurrent_key_adds_land_once_per_id_or_fail_loudly() {
    let dir = tempfile::tempdir().unwrap();
    init(dir.path());
    with_directory(dir.path());
    let outcomes: Vec<(String, i32, String)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..16)
            .map(|i| {
                let d = dir.path();
                s.spawn(move || {
                    let id = format!("race-{}", i % 4);
                    let out = keygate(d, &["key", "add", &id, "--role", "r"]);
                    (id, out.status.code().unwrap_or(-1), stdout(&out))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut created = std::collections::HashMap::new();
    for (id, code, out) in outcomes {
        match code {
            0 => assert!(created.insert(id, out.trim().to_owned()).is_none()),
            2 => {}
            other => panic!("{id}: exit {other}"),
        }
    }
    assert_eq!(created.len(), 4);
    let server = serve(dir.path());
    for key in created.values() {
        assert_eq!(login_status(&server.base, key), 200);
    }
}

#[test]
fn a_directory_out_of_reach_is_exit_3_for_the_cli_and_a_clear_error_for_serve() {
    let dir = tempfile::tempdir().unwrap();
    init(dir.path());
    let path = dir.path().join("keygate.toml");
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str(
        "\n[directory]\nurl = \"postgres://keygate@127.0.0.1:1/keygate\"\ntimeout = \"500ms\"\n",
    );
    std::fs::write(&path, text).unwrap();
    let out = keygate(dir.path(), &["key", "add", "svc", "--role", "r"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("unavailable"), "{}", stderr(&out));
    let out = keygate(dir.path(), &["serve"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("directory.url"), "{}", stderr(&out));
}

#[test]
fn init_with_a_directory_writes_the_section_and_keys_go_to_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = keygate(d, &["init", "--directory", "sqlite"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let first = stdout(&out).lines().last().unwrap().trim().to_owned();
    assert!(first.starts_with("kg_my-service_"), "{}", stdout(&out));
    let text = std::fs::read_to_string(d.join("keygate.toml")).unwrap();
    assert!(
        text.contains("\n[directory]") && text.contains("url = \"sqlite://keygate.db\""),
        "{text}"
    );
    assert!(d.join("keygate.db").exists(), "the schema is made at init");
    let check = keygate(d, &["check-config"]);
    assert_eq!(check.status.code(), Some(0), "{}", stderr(&check));

    let out = keygate(d, &["key", "add", "svc", "--role", "service"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let key = stdout(&out).trim().to_owned();
    assert_eq!(
        std::fs::read_to_string(d.join("keygate.toml")).unwrap(),
        text,
        "the key went to the directory, not the file"
    );
    let server = serve(d);
    assert_eq!(login_status(&server.base, &key), 200);
    assert_eq!(login_status(&server.base, &first), 200);

    // Anything but `sqlite` or a database URL is a usage error, and nothing is written.
    let other = tempfile::tempdir().unwrap();
    let out = keygate(other.path(), &["init", "--directory", "mysql://x"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--directory"), "{}", stderr(&out));
    // A database out of reach: exit 3, and no configuration left behind.
    let out = keygate(
        other.path(),
        &[
            "init",
            "--directory",
            "postgres://keygate@127.0.0.1:1/keygate",
        ],
    );
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(!other.path().join("keygate.toml").exists());
}

/// `kill -9` of `key add` at moments spread over its run: each id is in the directory whole
/// (its key, once printed, works) or not at all, and the directory still opens, lists and
/// serves.
#[test]
fn a_key_add_killed_at_any_moment_leaves_no_half_written_principal() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let first = init(d);
    with_directory(d);
    let started = Instant::now();
    let out = keygate(d, &["key", "add", "warm", "--role", "service"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // Kills spread from the start of a run to past its end, as long as runs take here.
    let run = started.elapsed();
    let mut finished = Vec::new();
    for i in 0..40u64 {
        let id = format!("k{i}");
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_keygate"))
            .args(["key", "add", &id, "--role", "service"])
            .current_dir(d)
            .env_remove("KEYGATE_CONFIG")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Real time must pass: the moment of the kill is what varies.
        std::thread::sleep(run * (i * 37 % 40) as u32 / 30);
        let _ = child.kill(); // SIGKILL
        let out = child.wait_with_output().unwrap();
        if out.status.success() {
            finished.push((id, stdout(&out).trim().to_owned()));
        }
    }
    let records = exported(d);
    for r in &records {
        assert_eq!(r["role"], "service", "{r}");
        assert!(r["hash"].as_str().unwrap().starts_with("sha256:"), "{r}");
        assert!(r["created_at"].is_string(), "{r}");
    }
    let present: Vec<&str> = records.iter().map(|r| r["id"].as_str().unwrap()).collect();
    for (id, _) in &finished {
        assert!(
            present.contains(&id.as_str()),
            "{id} was printed but is gone"
        );
    }
    // An id whose add was killed before its commit can be added now.
    for i in 0..40 {
        let id = format!("k{i}");
        if !present.contains(&id.as_str()) {
            let out = keygate(d, &["key", "add", &id, "--role", "service"]);
            assert_eq!(out.status.code(), Some(0), "{id}: {}", stderr(&out));
        }
    }
    eprintln!(
        "{} of 40 adds finished before the kill, {} committed",
        finished.len(),
        present.len() - 1
    );
    let server = serve(d);
    assert_eq!(login_status(&server.base, &first), 200);
    for (id, key) in &finished {
        assert_eq!(login_status(&server.base, key), 200, "{id}");
    }
}

/// A user removed from the directory and then imported from the file under the same name is
/// a new principal: its `not_before` is after the removal, so tokens issued to the removed
/// one stay refused (as for a create through the admin API).
#[test]
fn an_import_reusing_a_removed_name_starts_after_the_removal() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    init(d);
    with_directory(d);
    let out = keygate_stdin(
        d,
        &["user", "add", "bob", "--role", "reader"],
        "first password",
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = keygate(d, &["user", "remove", "bob"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let removed = time::OffsetDateTime::now_utc();
    let hash = keygate_stdin(d, &["hash"], "second password");
    assert_eq!(hash.status.code(), Some(0), "{}", stderr(&hash));
    let path = d.join("keygate.toml");
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str(&format!(
        "\n[[users]]\nusername = \"bob\"\npassword_hash = \"{}\"\nrole = \"reader\"\n",
        stdout(&hash).trim()
    ));
    std::fs::write(&path, text).unwrap();
    let out = keygate(d, &["directory", "import"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let bob = exported(d)
        .into_iter()
        .find(|r| r["id"] == "bob")
        .expect("bob imported");
    let not_before = bob["not_before"].as_str().expect("a not_before");
    let not_before =
        time::OffsetDateTime::parse(not_before, &time::format_description::well_known::Rfc3339)
            .unwrap();
    assert!(
        not_before > removed - Duration::from_secs(1),
        "{not_before} is not after the removal ({removed})"
    );
}

/// The server killed (`kill -9`) while four threads create clients through the admin API:
/// every create answered 201 is in the directory whole with the key it returned, nothing
/// half-written is, and the restarted server serves every one.
#[test]
fn a_server_killed_during_admin_creates_leaves_every_answered_create_whole() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    init(d);
    let ops = add_operator(d);
    with_directory(d);
    let mut server = serve(d);
    let token: Value = login(&server.base, &ops).json().unwrap();
    let token = token["access_token"].as_str().unwrap().to_owned();
    let created = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let writers: Vec<_> = (0..4)
        .map(|t| {
            let (base, token, created) = (server.base.clone(), token.clone(), created.clone());
            std::thread::spawn(move || {
                for i in 0.. {
                    let id = format!("w{t}-{i}");
                    let r = http()
                        .post(format!("{base}/admin/v1/clients"))
                        .bearer_auth(&token)
                        .json(&serde_json::json!({"id": id, "role": "service"}))
                        .send();
                    // The server is gone: the connection fails or is cut mid-answer.
                    let Ok(r) = r else { break };
                    if r.status() != 201 {
                        break;
                    }
                    let Ok(body) = r.json::<Value>() else { break };
                    let key = body["api_key"].as_str().unwrap().to_owned();
                    created.lock().unwrap().push((id, key));
                }
            })
        })
        .collect();
    eventually_within(
        "creates are being answered",
        Duration::from_secs(30),
        || created.lock().unwrap().len() >= 10,
    );
    server.child.kill().unwrap(); // SIGKILL, mid-write
    server.child.wait().unwrap();
    for w in writers {
        w.join().unwrap();
    }
    let created = created.lock().unwrap().clone();
    assert!(!created.is_empty(), "no create answered before the kill");
    let records = exported(d);
    for r in &records {
        assert_eq!(r["role"], "service", "{r}");
        assert!(r["hash"].as_str().unwrap().starts_with("sha256:"), "{r}");
    }
    eprintln!(
        "{} creates answered before the kill, {} in the directory",
        created.len(),
        records.len()
    );
    let server = serve(d);
    for (id, key) in &created {
        assert!(
            records.iter().any(|r| r["id"] == id.as_str()),
            "{id} was answered 201 but is not in the directory"
        );
        assert_eq!(login_status(&server.base, key), 200, "{id}");
    }
}

/// `KEYGATE_DIRECTORY_URL` turns the directory on for the CLI as it does for the server:
/// a key added with it set goes to the database, not the file.
#[test]
fn the_directory_named_by_the_environment_is_the_one_edited() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    init(d);
    let before = std::fs::read(d.join("keygate.toml")).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_keygate"))
        .args(["key", "add", "svc", "--role", "service"])
        .current_dir(d)
        .env_remove("KEYGATE_CONFIG")
        .env("KEYGATE_DIRECTORY_URL", "sqlite://keygate.db")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(std::fs::read(d.join("keygate.toml")).unwrap(), before);
    assert!(d.join("keygate.db").exists());
    with_directory(d);
    let server = serve(d);
    assert_eq!(login_status(&server.base, stdout(&out).trim()), 200);
}
