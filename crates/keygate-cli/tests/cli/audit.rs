//! The audit log from the CLI's side: `key …` and `user …` append their events to the file
//! the server writes, `audit tail` filters and follows it, SIGHUP reopens it after a
//! logrotate-style move, and no key, password or secret reaches it in any encoding.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use super::*;

/// `init`, then an `[audit]` section writing `audit.jsonl` beside the configuration.
fn init_with_audit(d: &Path, path: &str) -> String {
    let key = init(d);
    let config = d.join("keygate.toml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!("\n[audit]\npath = \"{path}\"\n"));
    std::fs::write(&config, text).unwrap();
    key
}

/// The audit file's events without their timestamps.
fn events(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let mut v: Value = serde_json::from_str(l).unwrap();
            assert!(v["ts"].as_str().unwrap().ends_with('Z'), "{v}");
            v.as_object_mut().unwrap().remove("ts");
            v
        })
        .collect()
}

fn ok(out: &std::process::Output) -> String {
    assert_eq!(out.status.code(), Some(0), "{}", stderr(out));
    stdout(out)
}

fn encodings(secret: &str) -> Vec<String> {
    let b = secret.as_bytes();
    use base64::Engine as _;
    vec![
        secret.to_owned(),
        base64::engine::general_purpose::STANDARD.encode(b),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b),
        url_encoded(secret),
    ]
}

fn url_encoded(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[test]
fn cli_edits_append_their_events_and_tail_filters_them() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let first = init_with_audit(d, "audit.jsonl");
    let key = ok(&keygate(d, &["key", "add", "svc", "--role", "service"]))
        .trim()
        .to_owned();
    let rotated = ok(&keygate(d, &["key", "rotate", "svc", "--grace", "1h"]))
        .trim()
        .to_owned();
    ok(&keygate(d, &["key", "revoke", "svc"]));
    let password = "bob's pass phrase";
    ok(&keygate_stdin(
        d,
        &["user", "add", "bob", "--role", "admin"],
        password,
    ));
    ok(&keygate(d, &["user", "remove", "bob"]));

    let audit = d.join("audit.jsonl");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&audit).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the log names clients and users");
    assert_eq!(
        events(&audit),
        vec![
            json!({"event": "key.added", "client_id": "svc"}),
            json!({"event": "key.rotated", "client_id": "svc", "reason": "grace 1h"}),
            json!({"event": "key.revoked", "client_id": "svc"}),
            json!({"event": "user.added", "username": "bob"}),
            json!({"event": "user.removed", "username": "bob"}),
        ]
    );
    let raw = std::fs::read_to_string(&audit).unwrap();
    let config = std::fs::read_to_string(d.join("keygate.toml")).unwrap();
    let secret = config
        .lines()
        .find_map(|l| l.strip_prefix("secret = \""))
        .map(|s| s.trim_end_matches('"').to_owned())
        .unwrap();
    for s in [&first, &key, &rotated, password, &secret] {
        for form in encodings(s) {
            assert!(
                !raw.contains(&form),
                "a secret reached the audit log: {form}"
            );
        }
    }

    let tail = |args: &[&str]| -> Vec<String> {
        let mut all = vec!["audit", "tail"];
        all.extend_from_slice(args);
        ok(&keygate(d, &all)).lines().map(str::to_owned).collect()
    };
    assert_eq!(tail(&[]).len(), 5);
    assert_eq!(tail(&["-n", "2"]).len(), 2);
    let added = tail(&["--event", "key.added"]);
    assert_eq!(added.len(), 1);
    assert!(added[0].contains("\"client_id\":\"svc\""));
    assert_eq!(tail(&["--principal", "bob"]).len(), 2);
    assert_eq!(
        tail(&["--principal", "svc", "--event", "key.revoked"]).len(),
        1
    );
    let unknown = keygate(d, &["audit", "tail", "--event", "key.stolen"]);
    assert_eq!(unknown.status.code(), Some(2));
    assert!(stderr(&unknown).contains("unknown event"));
}

#[test]
fn a_dash_path_sends_the_cli_events_to_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    init_with_audit(d, "-");
    let out = keygate(d, &["key", "add", "svc", "--role", "service"]);
    let key = ok(&out);
    assert!(
        key.trim().starts_with("kg_svc_"),
        "stdout holds the key only"
    );
    let line = stderr(&out)
        .lines()
        .find(|l| l.starts_with('{'))
        .map(str::to_owned)
        .expect("the event on stderr");
    let mut v: Value = serde_json::from_str(&line).unwrap();
    v.as_object_mut().unwrap().remove("ts");
    assert_eq!(v, json!({"event": "key.added", "client_id": "svc"}));
    assert!(!stderr(&out).contains(key.trim()));
}

#[test]
fn tail_follow_prints_new_events_across_a_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    init_with_audit(d, "audit.jsonl");
    ok(&keygate(d, &["key", "add", "before", "--role", "r"]));
    let mut child = Command::new(env!("CARGO_BIN_EXE_keygate"))
        .args(["audit", "tail", "--follow", "--event", "key.added"])
        .current_dir(d)
        .env_remove("KEYGATE_CONFIG")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let next = |rx: &std::sync::mpsc::Receiver<String>| {
        rx.recv_timeout(Duration::from_secs(10))
            .expect("tail --follow printed nothing")
    };
    assert!(next(&rx).contains("\"before\""));
    ok(&keygate(d, &["key", "add", "after", "--role", "r"]));
    ok(&keygate(d, &["key", "revoke", "after"]));
    assert!(
        next(&rx).contains("\"after\""),
        "filtered: key.revoked skipped"
    );
    // logrotate: the file moves away, a new one starts.
    std::fs::rename(d.join("audit.jsonl"), d.join("audit.jsonl.1")).unwrap();
    ok(&keygate(d, &["key", "add", "rotated", "--role", "r"]));
    assert!(next(&rx).contains("\"rotated\""));
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn the_server_and_the_cli_share_one_file_and_sighup_reopens_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let key = init_with_audit(d, "audit.jsonl");
    let server = serve(d);
    assert_eq!(login(&server.base, &key).status(), 200);
    ok(&keygate(d, &["key", "add", "svc", "--role", "service"]));
    let audit = d.join("audit.jsonl");
    eventually("the server's and the CLI's lines", || {
        let e = events(&audit);
        e.iter().any(|v| v["event"] == "token.issued")
            && e.iter().any(|v| v["event"] == "key.added")
    });

    std::fs::rename(&audit, d.join("audit.jsonl.1")).unwrap();
    let hup = Command::new("kill")
        .arg("-HUP")
        .arg(server.child.id().to_string())
        .status()
        .unwrap();
    assert!(hup.success());
    eventually("SIGHUP reopens the audit file", || {
        events(&audit)
            .iter()
            .any(|v| *v == json!({"event": "config.reloaded", "reason": "sighup"}))
    });
    assert_eq!(login(&server.base, &key).status(), 200);
    eventually("new lines go to the new file", || {
        events(&audit).iter().any(|v| v["event"] == "token.issued")
    });
    let old = events(&d.join("audit.jsonl.1"));
    assert_eq!(
        old.iter().filter(|v| v["event"] == "token.issued").count(),
        1,
        "the moved file got nothing more"
    );
}

#[test]
fn tail_escapes_line_breaks_and_c1_controls_whoever_wrote_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    init_with_audit(d, "audit.jsonl");
    // A line as an older writer (or anyone) could have left it: raw U+2028, U+2029, C1.
    let raw = "{\"ts\":\"2026-01-01T00:00:00Z\",\"event\":\"token.refused\",\"username\":\"a\u{2028}b\u{2029}c\u{9b}2Jd\u{85}e\"}\n";
    std::fs::write(d.join("audit.jsonl"), raw).unwrap();
    let out = ok(&keygate(d, &["audit", "tail"]));
    for c in ['\u{2028}', '\u{2029}', '\u{9b}', '\u{85}'] {
        assert!(!out.contains(c), "{c:?} printed raw: {out:?}");
    }
    assert_eq!(
        out,
        "{\"ts\":\"2026-01-01T00:00:00Z\",\"event\":\"token.refused\",\"username\":\"a\\u2028b\\u2029c\\u009b2Jd\\u0085e\"}\n"
    );
}

#[test]
fn check_config_refuses_an_audit_path_the_server_could_not_open() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    init_with_audit(d, "missing-folder/audit.jsonl");
    let out = keygate(d, &["check-config"]);
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    let err = stderr(&out);
    assert!(
        err.contains("audit.path") && err.contains("missing-folder"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    // The same file the server refuses to start with.
    let out = keygate(d, &["serve"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    // check-config opens nothing it should not: no file is created by the check.
    std::fs::create_dir(d.join("missing-folder")).unwrap();
    let out = keygate(d, &["check-config"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(!d.join("missing-folder/audit.jsonl").exists());
}
