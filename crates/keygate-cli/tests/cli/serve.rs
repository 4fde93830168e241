//! `keygate serve` as an operator sees it: what reaches the logs, and the signals it obeys.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::*;

#[test]
fn secrets_never_reach_the_logs_even_at_trace_level() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let key = init(d);
    let password = "canary-password-5f3e";
    assert_eq!(
        keygate_stdin(d, &["user", "add", "alice", "--role", "r"], password)
            .status
            .code(),
        Some(0)
    );
    let text = std::fs::read_to_string(d.join("keygate.toml")).unwrap();
    let secret = text
        .lines()
        .find_map(|l| l.strip_prefix("secret = \""))
        .unwrap()
        .trim_end_matches('"')
        .to_owned();
    let log_path = d.join("server.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let server = serve_logging(d, "trace", Stdio::from(log));
    let base = server.base.clone();

    let token = login(&base, &key).json::<Value>().unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let wrong_key = format!("{key}0");
    assert_eq!(login(&base, &wrong_key).status(), 401);
    assert_eq!(login(&base, "hand-made-canary-key").status(), 401);
    let tampered = format!("{}x", &token[..token.len() - 1]);
    for t in [&token, &tampered] {
        http()
            .get(format!("{base}/verify"))
            .bearer_auth(t)
            .send()
            .unwrap();
    }
    http()
        .post(format!("{base}/token"))
        .form(&[
            ("grant_type", "password"),
            ("username", "alice"),
            ("password", password),
        ])
        .send()
        .unwrap();
    http()
        .post(format!("{base}/token"))
        .form(&[
            ("grant_type", "password"),
            ("username", "alice"),
            ("password", "wrong-canary-pw"),
        ])
        .send()
        .unwrap();
    http()
        .post(format!("{base}/token"))
        .basic_auth("my-service", Some(&wrong_key))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .unwrap();
    http()
        .post(format!("{base}/logout"))
        .bearer_auth(&token)
        .send()
        .unwrap();
    // A broken reload is logged too; its message must not carry the secret either.
    std::fs::write(
        d.join("keygate.toml"),
        text.replace(&secret, &format!("{secret}\u{0}")),
    )
    .unwrap();
    eventually("the refused reload is logged", || {
        std::fs::read_to_string(&log_path)
            .unwrap()
            .contains("configuration reload refused")
    });
    drop(server);

    let logs = std::fs::read_to_string(&log_path).unwrap();
    assert!(logs.contains("token issued"), "the log was written: {logs}");
    assert!(logs.contains("configuration reload refused"), "{logs}");
    assert!(!logs.contains('\u{1b}'), "no colour codes in a log file");
    for canary in [
        key.as_str(),
        wrong_key.as_str(),
        "hand-made-canary-key",
        token.as_str(),
        token.split('.').nth(2).unwrap(),
        tampered.as_str(),
        secret.as_str(),
        password,
        "wrong-canary-pw",
    ] {
        assert!(
            !logs.contains(canary),
            "the log holds a credential: {canary}"
        );
    }
}

fn signal(server: &Server, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(server.child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn sighup_reloads_when_polling_is_off() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    init(d);
    let server = serve_with(
        d,
        "warn",
        Stdio::null(),
        &[("KEYGATE_SERVER_RELOAD_INTERVAL", "0s")],
    );
    let key = stdout(&keygate(d, &["key", "add", "billing", "--role", "service"]))
        .trim()
        .to_owned();
    // Real time must pass to show that something does not happen: longer than the 1 s
    // poll that would have seen the change by now.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        login(&server.base, &key).status(),
        401,
        "no polling: not seen yet"
    );
    signal(&server, "HUP");
    eventually("SIGHUP reloads the file", || {
        login(&server.base, &key).status() == 200
    });
}

/// The lines `stream` carries, as they come, read on a thread of their own.
fn lines_of(stream: impl std::io::Read + Send + 'static) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stream)) {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Waits (10 s at most) for a line of `lines` holding `text`.
fn wait_for_line(lines: &std::sync::mpsc::Receiver<String>, text: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if line.contains(text) => return,
            Ok(_) => {}
            Err(e) => panic!("no line with `{text}` within 10 s: {e}"),
        }
    }
}

/// Reads the interim `100 Continue` answer (RFC 9110 §10.1.1) to a request sent with
/// `Expect: 100-continue`: sent when the handler first reads the body, so once it is here
/// the server has the request in hand.
fn expect_continue(conn: &mut std::net::TcpStream) {
    use std::io::Read;
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut got = Vec::new();
    let mut byte = [0u8];
    while !got.ends_with(b"\r\n\r\n") {
        conn.read_exact(&mut byte)
            .expect("an interim answer within 10 s");
        got.push(byte[0]);
    }
    assert_eq!(
        String::from_utf8_lossy(&got),
        "HTTP/1.1 100 Continue\r\n\r\n"
    );
    conn.set_read_timeout(None).unwrap();
}

#[test]
fn sigterm_drains_in_flight_requests_then_exits_0() {
    use std::io::Read;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    init(d);
    keygate_stdin(
        d,
        &["user", "add", "alice", "--role", "r"],
        "slow-argon2-pw",
    );
    let mut server = serve_logging(d, "info", Stdio::piped());
    let log = lines_of(server.child.stderr.take().unwrap());
    // A request whose body is still arriving when SIGTERM comes: in flight for sure.
    let body = "grant_type=password&username=alice&password=slow-argon2-pw";
    let addr = server.base.trim_start_matches("http://").to_owned();
    let mut conn = std::net::TcpStream::connect(&addr).unwrap();
    write!(
        conn,
        "POST /token HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n{}",
        body.len(),
        &body[..10]
    )
    .unwrap();
    expect_continue(&mut conn);
    signal(&server, "TERM");
    wait_for_line(&log, "shutting down: draining in-flight requests");
    conn.write_all(&body.as_bytes()[10..]).unwrap();
    let mut response = String::new();
    conn.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
    assert!(response.contains("\"token_type\":\"Bearer\""), "{response}");
    let status = server.child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(
        std::net::TcpStream::connect(&addr).is_err(),
        "no longer listening"
    );
}

/// `kill -9` of the server under load, then a restart: the configuration is untouched,
/// it loads, and tokens issued before the crash still verify (docs/security.md, Faults).
#[test]
fn a_server_killed_under_load_restarts_on_the_same_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let key = init(dir.path());
    let before = std::fs::read(dir.path().join("keygate.toml")).unwrap();
    let mut server = serve(dir.path());
    let token = login(&server.base, &key)
        .json::<serde_json::Value>()
        .unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let base = server.base.clone();
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let load: Vec<_> = (0..4)
        .map(|_| {
            let (base, key, answered) = (base.clone(), key.clone(), answered.clone());
            std::thread::spawn(move || {
                // Until the server dies: every answer before that is a 200.
                let client = http();
                for _ in 0..10_000 {
                    match client
                        .post(format!("{base}/login"))
                        .header("X-API-Key", &key)
                        .send()
                    {
                        Ok(r) => assert_eq!(r.status(), 200),
                        Err(_) => break,
                    }
                    answered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            })
        })
        .collect();
    eventually("the load is being answered", || {
        answered.load(std::sync::atomic::Ordering::Relaxed) >= 20
    });
    server.child.kill().unwrap(); // SIGKILL
    server.child.wait().unwrap();
    for t in load {
        t.join().unwrap();
    }
    assert_eq!(
        std::fs::read(dir.path().join("keygate.toml")).unwrap(),
        before,
        "the server never writes its configuration"
    );
    let check = keygate(dir.path(), &["check-config"]);
    assert!(check.status.success(), "{}", stderr(&check));
    let server = serve(dir.path());
    let r = http()
        .get(format!("{}/verify", server.base))
        .bearer_auth(&token)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200, "a token from before the crash");
    assert_eq!(login(&server.base, &key).status(), 200);
}

/// `kill -9` while the first `serve` writes its configuration: there is then either no
/// file or a whole one that loads, never a torn one.
#[test]
fn a_first_run_killed_at_any_moment_leaves_no_torn_configuration() {
    for i in 0..20u64 {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_keygate"))
            .arg("serve")
            .current_dir(dir.path())
            .env_remove("KEYGATE_CONFIG")
            .env("KEYGATE_SERVER_LISTEN", "127.0.0.1:0")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Spread the kill over the start: from before the write to after it. Real time
        // must pass: the moment of the kill is what varies.
        std::thread::sleep(Duration::from_micros(i * 1_500));
        child.kill().unwrap();
        child.wait().unwrap();
        let path = dir.path().join("keygate.toml");
        if path.exists() {
            let check = keygate(dir.path(), &["check-config"]);
            assert!(check.status.success(), "run {i}: {}", stderr(&check));
        }
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != "keygate.toml")
            .collect();
        assert!(
            leftovers.iter().all(|n| n.starts_with('.')),
            "run {i}: {leftovers:?}"
        );
    }
}

#[test]
fn a_stderr_nobody_reads_drops_counted_log_lines_and_never_stalls_requests() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let key = init(d);
    // stderr is a pipe nobody reads: once its 64 KiB are full, a synchronous log write
    // would block the request that logs. At debug every request writes a line: 24 000
    // requests are more lines than the queue's 16 384 and the pipe together hold.
    let server = serve_logging(d, "debug", Stdio::piped());
    let base = server.base.clone();
    let client = http();
    let token = login(&base, &key).json::<Value>().unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    verify_from_four_threads(&base, &token, 6000, "however full stderr is");
    let metrics = client.get(format!("{base}/metrics")).send().unwrap();
    assert_eq!(metrics.status(), 200);
    eventually("the dropped lines are counted", || {
        let text = client
            .get(format!("{base}/metrics"))
            .send()
            .unwrap()
            .text()
            .unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix("keygate_log_dropped_total "))
            .and_then(|n| n.trim().parse::<u64>().ok())
            .is_some_and(|n| n > 0)
    });
    drop(server);
}
