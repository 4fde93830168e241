//! Operations habits: `--version` with the git revision, shell completions that complete,
//! `--json` listings, the container health probe, and JSON log lines carrying the
//! request id that the response echoes.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use serde_json::{Value, json};

use super::{http, init, keygate, login, serve, stderr, stdout};

#[test]
fn version_names_the_release_and_the_git_revision() {
    let out = keygate(Path::new("."), &["--version"]);
    assert_eq!(out.status.code(), Some(0));
    // What build.rs saw: this checkout's HEAD, or "unknown" where git cannot tell.
    let rev = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map_or_else(|| "unknown".to_owned(), |o| stdout(&o).trim().to_owned());
    let rev = std::env::var("KEYGATE_GIT_REV")
        .ok()
        .filter(|r| !r.trim().is_empty())
        .unwrap_or(rev);
    assert_eq!(
        stdout(&out),
        format!("keygate {} ({rev})\n", env!("CARGO_PKG_VERSION"))
    );
}

/// Runs bash's completion function the way bash does on TAB after `words`.
fn bash_complete(script: &Path, words: &[&str]) -> String {
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let current = words.len() - 1;
    let previous = if current > 0 { words[current - 1] } else { "" };
    let program = format!(
        "source '{}'; COMP_WORDS=({}); COMP_CWORD={current}; _keygate keygate '{}' '{previous}'; echo \"${{COMPREPLY[*]}}\"",
        script.display(),
        quoted.join(" "),
        words[current],
    );
    let out = Command::new("bash")
        .args(["-c", &program])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out).trim().to_owned()
}

/// A shell from Debian's packages; `.ci/run` installs zsh and fish.
fn shell(name: &str) -> String {
    let found = Command::new(name)
        .args(["-c", "exit 0"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "checking {name} completions needs {name}: run `apt-get install {name}`"
    );
    name.to_owned()
}

#[test]
fn completion_scripts_complete_commands_and_flags() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for sh in ["bash", "zsh", "fish"] {
        let out = keygate(d, &["completions", sh]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        std::fs::write(d.join(format!("keygate.{sh}")), &out.stdout).unwrap();
    }
    let bash = d.join("keygate.bash");
    assert_eq!(bash_complete(&bash, &["keygate", "sig"]), "signing");
    assert_eq!(bash_complete(&bash, &["keygate", "key", "l"]), "list");
    assert_eq!(
        bash_complete(&bash, &["keygate", "key", "list", "--j"]),
        "--json"
    );
    assert_eq!(
        bash_complete(&bash, &["keygate", "completions", "f"]),
        "fish"
    );

    // zsh and fish: the scripts parse, and fish completes from its own.
    let zsh = shell("zsh");
    let parsed = Command::new(&zsh)
        .arg("-n")
        .arg(d.join("keygate.zsh"))
        .output()
        .unwrap();
    assert!(parsed.status.success(), "{}", stderr(&parsed));
    let fish = shell("fish");
    let completed = Command::new(&fish)
        .arg("-c")
        .arg(format!(
            "source '{}'; complete -C 'keygate signing '",
            d.join("keygate.fish").display()
        ))
        .output()
        .unwrap();
    assert!(completed.status.success(), "{}", stderr(&completed));
    let words: BTreeSet<String> = stdout(&completed)
        .lines()
        .filter_map(|l| l.split('\t').next())
        .map(str::to_owned)
        .collect();
    for expected in ["list", "retire", "help"] {
        assert!(words.contains(expected), "{words:?}");
    }

    let unknown = keygate(d, &["completions", "cmd.exe"]);
    assert_eq!(unknown.status.code(), Some(2));
}

fn keys(v: &Value) -> BTreeSet<&str> {
    v.as_object().unwrap().keys().map(String::as_str).collect()
}

#[test]
fn key_list_json_is_an_array_of_clients() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    init(d);
    let add = |args: &[&str]| {
        let out = keygate(d, args);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    };
    add(&[
        "key",
        "add",
        "billing",
        "--role",
        "service",
        "--scope",
        "orders:read",
        "--scope",
        "orders:write",
        "--expires",
        "90d",
    ]);
    add(&["key", "rotate", "billing", "--grace", "1h"]);
    add(&["key", "add", "gone", "--role", "batch"]);
    add(&["key", "revoke", "gone"]);

    let out = keygate(d, &["key", "list", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let list: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 3);
    let fields = BTreeSet::from([
        "id",
        "role",
        "state",
        "scopes",
        "expires_at",
        "previous_key_expires_at",
        "revoked_at",
    ]);
    for c in list {
        assert_eq!(keys(c), fields, "{c}");
    }
    assert_eq!(
        list[0],
        json!({"id": "my-service", "role": "service", "state": "active", "scopes": [],
               "expires_at": null, "previous_key_expires_at": null, "revoked_at": null})
    );
    assert_eq!(list[1]["id"], "billing");
    assert_eq!(list[1]["state"], "rotating");
    assert_eq!(list[1]["scopes"], json!(["orders:read", "orders:write"]));
    for t in ["expires_at", "previous_key_expires_at"] {
        let at = list[1][t].as_str().unwrap();
        assert!(
            at.len() >= 20 && at.ends_with('Z') && at.as_bytes()[10] == b'T',
            "{t}: {at}"
        );
    }
    assert_eq!(list[1]["revoked_at"], Value::Null);
    assert_eq!(list[2]["id"], "gone");
    assert_eq!(list[2]["state"], "revoked");
    assert!(list[2]["revoked_at"].is_string());

    // The table stays the default.
    let table = stdout(&keygate(d, &["key", "list"]));
    assert!(table.starts_with("ID "), "{table}");
}

#[test]
fn signing_list_json_is_empty_under_hs256_and_lists_key_pairs() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    init(d);
    let out = keygate(d, &["signing", "list", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "[]\n");

    let generated = keygate(d, &["keygen", "--alg", "ES256"]);
    assert_eq!(generated.status.code(), Some(0), "{}", stderr(&generated));
    let kid = stdout(&generated).trim().to_owned();
    let out = keygate(d, &["signing", "list", "--json"]);
    let list: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 1);
    let entry = &list[0];
    assert_eq!(
        keys(entry),
        BTreeSet::from(["kid", "alg", "state", "created_at", "retired_at"])
    );
    assert_eq!(entry["kid"], kid.as_str());
    assert_eq!(entry["alg"], "ES256");
    // The only key signs at once, publish delay or not.
    assert_eq!(entry["state"], "signing");
    assert!(entry["created_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(entry["retired_at"], Value::Null);
}

#[test]
fn healthcheck_exits_0_on_a_live_server_and_1_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    init(d);
    let server = serve(d);
    let healthz = format!("{}/healthz", server.base);
    let ok = keygate(d, &["healthcheck", "--url", &healthz]);
    assert_eq!(ok.status.code(), Some(0), "{}", stderr(&ok));
    assert_eq!(stdout(&ok), "");

    let missing = format!("{}/nothing-here", server.base);
    let wrong = keygate(d, &["healthcheck", "--url", &missing]);
    assert_eq!(wrong.status.code(), Some(1));
    assert_eq!(
        stderr(&wrong),
        format!("keygate: unhealthy: {missing} answered 404 Not Found\n")
    );

    let addr = server.base.clone();
    drop(server);
    let down = keygate(d, &["healthcheck", "--url", &format!("{addr}/healthz")]);
    assert_eq!(down.status.code(), Some(1), "Docker reads 1 as unhealthy");
    let line = stderr(&down);
    assert_eq!(line.lines().count(), 1, "{line}");
    assert!(line.starts_with("keygate: unhealthy: "), "{line}");
}

/// `keygate serve` with `KEYGATE_LOG_FORMAT=json`, both output streams kept line by line.
struct JsonServer {
    child: Child,
    base: String,
    stdout: std::thread::JoinHandle<Vec<String>>,
    stderr: std::thread::JoinHandle<Vec<String>>,
    /// The stderr lines read so far.
    logged: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

fn collect(stream: impl std::io::Read + Send + 'static) -> std::thread::JoinHandle<Vec<String>> {
    std::thread::spawn(move || {
        BufReader::new(stream)
            .lines()
            .map_while(Result::ok)
            .collect()
    })
}

fn serve_json(dir: &Path) -> JsonServer {
    let mut child = Command::new(env!("CARGO_BIN_EXE_keygate"))
        .arg("serve")
        .current_dir(dir)
        .env_remove("KEYGATE_CONFIG")
        .env("KEYGATE_SERVER_LISTEN", "127.0.0.1:0")
        .env("KEYGATE_LOG_FORMAT", "json")
        .env("RUST_LOG", "debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let err = child.stderr.take().unwrap();
    let logged = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = logged.clone();
    let stderr = std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str::<Value>(&line)
                && v["message"] == "keygate listening"
            {
                let _ = tx.send(v["url"].as_str().unwrap_or_default().to_owned());
            }
            seen.lock().unwrap().push(line.clone());
            lines.push(line);
        }
        lines
    });
    let stdout = collect(child.stdout.take().unwrap());
    let base = rx
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("no JSON `keygate listening` line on stderr");
    JsonServer {
        child,
        base,
        stdout,
        stderr,
        logged,
    }
}

impl JsonServer {
    /// Waits (10 s at most) for a JSON line on stderr for which `f` holds. The server writes
    /// its log on a thread of its own: a request's lines may come after its answer.
    fn wait_for_log(&self, what: &str, f: impl Fn(&Value) -> bool) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !self
            .logged
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .any(|l| f(&l))
        {
            assert!(
                std::time::Instant::now() < deadline,
                "{what} not logged within 10 s"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    /// Kills the server; its stdout and stderr lines.
    fn stop(mut self) -> (Vec<String>, Vec<String>) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        (self.stdout.join().unwrap(), self.stderr.join().unwrap())
    }
}

fn parse_all(lines: &[String]) -> Vec<Value> {
    lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

#[test]
fn json_mode_first_run_puts_the_key_on_stdout_as_json_and_never_in_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve_json(dir.path());
    let base = server.base.clone();
    let (stdout, stderr) = server.stop();
    assert_eq!(stdout.len(), 1, "{stdout:?}");
    let printed: Value = serde_json::from_str(&stdout[0]).unwrap();
    assert_eq!(keys(&printed), BTreeSet::from(["client_id", "api_key"]));
    assert_eq!(printed["client_id"], "my-service");
    let key = printed["api_key"].as_str().unwrap().to_owned();
    assert!(key.starts_with("kg_my-service_"), "{key}");
    let logs = parse_all(&stderr);
    let created = logs
        .iter()
        .find(|l| l["level"] == "WARN")
        .expect("the creation is logged");
    assert_eq!(created["client_id"], "my-service");
    assert_eq!(created["path"], "keygate.toml");
    assert!(
        logs.iter()
            .any(|l| l["message"] == "keygate listening" && l["url"] == base.as_str())
    );
    assert!(
        !stderr.iter().any(|l| l.contains(&key)),
        "the key is never logged"
    );
    // The printed key is the configuration's.
    let server = serve_json(dir.path());
    assert_eq!(login(&server.base, &key).status(), 200);
    let (stdout, _) = server.stop();
    assert!(stdout.is_empty(), "{stdout:?}");
}

#[test]
fn json_logs_carry_the_request_id_which_the_response_echoes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let key = init(d);
    let server = serve_json(d);
    let base = server.base.clone();

    // A sane id from the caller is kept and echoed.
    let r = http()
        .post(format!("{base}/login"))
        .header("X-API-Key", &key)
        .header("X-Request-Id", "req-7f3a.login:1")
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-request-id"], "req-7f3a.login:1");

    // None given: one is made, 128 bits in hex, and echoed.
    let r = login(&base, "kg_my-service_wrong");
    assert_eq!(r.status(), 401);
    let generated = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(generated.len(), 32);
    assert!(generated.bytes().all(|b| b.is_ascii_hexdigit()));

    // Ids that could forge or bloat a log line are replaced.
    let mut replaced = Vec::new();
    for bad in ["two words", &"a".repeat(129)] {
        let r = http()
            .get(format!("{base}/verify"))
            .header("X-Request-Id", bad)
            .send()
            .unwrap();
        assert_eq!(r.status(), 401);
        let id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
        assert_eq!(id.len(), 32, "{bad:?} replaced by {id}");
        assert_ne!(id, generated);
        replaced.push(id);
    }

    // Every answer carries one, 404s included.
    let r = http().get(format!("{base}/nothing-here")).send().unwrap();
    assert_eq!(r.status(), 404);
    let not_found = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    // The log is written in order: once the last request's line is in, every line is.
    server.wait_for_log("the 404", |l| {
        l["span"]["request_id"] == not_found.as_str() && l["message"] == "request finished"
    });
    let (stdout, stderr) = server.stop();

    // Every line, on both streams, is JSON; with a configuration in place stdout is silent.
    assert!(stdout.is_empty(), "{stdout:?}");
    let lines = parse_all(&stderr);
    let text = stderr.join("\n");
    for l in &lines {
        assert!(l["timestamp"].is_string() && l["level"].is_string(), "{l}");
    }
    let of = |id: &str| -> Vec<&Value> {
        lines
            .iter()
            .filter(|l| l["span"]["request_id"] == id)
            .collect()
    };
    let messages = |id: &str| -> Vec<String> {
        of(id)
            .iter()
            .map(|l| l["message"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        messages("req-7f3a.login:1"),
        ["token issued", "request finished"]
    );
    let finished = of("req-7f3a.login:1")[1];
    assert_eq!(finished["route"], "/login");
    assert_eq!(finished["method"], "POST");
    assert_eq!(finished["status"], 200);
    assert_eq!(finished["span"]["name"], "request");

    assert_eq!(
        messages(&generated),
        ["credential refused", "request finished"]
    );
    assert_eq!(of(&generated)[1]["status"], 401);
    for id in &replaced {
        assert_eq!(messages(id), ["request finished"]);
        assert_eq!(of(id)[0]["route"], "/verify");
    }
    assert_eq!(messages(&not_found), ["request finished"]);
    assert_eq!(of(&not_found)[0]["status"], 404);

    // Nothing else was logged (no reload, and the server was killed, not stopped): every
    // line but the start-up one belongs to one of these requests.
    let mut ids = vec!["req-7f3a.login:1", generated.as_str(), not_found.as_str()];
    ids.extend(replaced.iter().map(String::as_str));
    let total: usize = ids.iter().map(|id| of(id).len()).sum();
    assert_eq!(lines[0]["message"], "keygate listening");
    assert_eq!(lines[0]["url"], base.as_str());
    assert_eq!(total + 1, lines.len(), "a line outside its request: {text}");
    assert!(
        !text.contains("two words"),
        "a refused id never reaches the log"
    );
}
