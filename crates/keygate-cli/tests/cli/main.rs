//! The `keygate` binary end to end: init → key add → serve → login → verify → logout →
//! refused, and the exit codes of every failure class.

mod audit;
mod directory;
mod edits;
mod fastapi;
mod ops;
mod revoked;
mod serve;
pub(crate) mod store;
mod telemetry;
mod tls;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;

fn keygate(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_keygate"))
        .args(args)
        .current_dir(dir)
        .env_remove("KEYGATE_CONFIG")
        .output()
        .unwrap()
}

fn keygate_stdin(dir: &Path, args: &[&str], input: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_keygate"))
        .args(args)
        .current_dir(dir)
        .env_remove("KEYGATE_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// `keygate init` in `dir`; returns the first API key it prints.
fn init(dir: &Path) -> String {
    let out = keygate(dir, &["init"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    stdout(&out).lines().last().unwrap().trim().to_owned()
}

/// `keygate key add ops --role operator --scope keygate:admin` in `dir`, before any
/// `[directory]` (so into the file): the admin API's caller. Returns its API key.
fn add_operator(dir: &Path) -> String {
    let out = keygate(
        dir,
        &[
            "key",
            "add",
            "ops",
            "--role",
            "operator",
            "--scope",
            "keygate:admin",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    stdout(&out).trim().to_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

/// A running `keygate serve`; killed on drop.
struct Server {
    child: Child,
    base: String,
    first_lines: Vec<String>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(dir: &Path) -> Server {
    serve_logging(dir, "warn", Stdio::null())
}

fn serve_logging(dir: &Path, level: &str, log: Stdio) -> Server {
    serve_with(dir, level, log, &[])
}

fn serve_with(dir: &Path, level: &str, log: Stdio, env: &[(&str, &str)]) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_keygate"))
        .arg("serve")
        .envs(env.iter().copied())
        .current_dir(dir)
        .env_remove("KEYGATE_CONFIG")
        .env("KEYGATE_SERVER_LISTEN", "127.0.0.1:0")
        // `eventually` polls with refused credentials while a reload is pending.
        .env("KEYGATE_LIMITS_FAILED_ATTEMPTS", "1000")
        .env("RUST_LOG", level)
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut first_lines = Vec::new();
    let base = loop {
        let line = lines
            .next()
            .expect("serve exited before listening")
            .unwrap();
        first_lines.push(line.clone());
        if let Some(addr) = line.strip_prefix("keygate listening on ") {
            break addr.to_owned();
        }
    };
    // Keep reading so the child never blocks on a full pipe.
    std::thread::spawn(move || {
        for line in lines {
            if line.is_err() {
                break;
            }
        }
    });
    Server {
        child,
        base,
        first_lines,
    }
}

/// `GET /verify` with `token`, `per_thread` times from each of four threads: every answer
/// a 200 within five seconds (`why` says what could have stalled it).
fn verify_from_four_threads(base: &str, token: &str, per_thread: usize, why: &str) {
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| {
                let client = http();
                for _ in 0..per_thread {
                    let r = client
                        .get(format!("{base}/verify"))
                        .bearer_auth(token)
                        .timeout(Duration::from_secs(5))
                        .send()
                        .unwrap_or_else(|e| panic!("not answered {why}: {e}"));
                    assert_eq!(r.status(), 200);
                }
            });
        }
    });
}

fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::new()
}

/// `GET /verify` with `token`: its status.
pub(crate) fn verify(base: &str, token: &str) -> u16 {
    http()
        .get(format!("{base}/verify"))
        .bearer_auth(token)
        .send()
        .unwrap()
        .status()
        .as_u16()
}

/// A password grant at `/token`.
pub(crate) fn password_grant(
    base: &str,
    user: &str,
    password: &str,
) -> reqwest::blocking::Response {
    http()
        .post(format!("{base}/token"))
        .form(&[
            ("grant_type", "password"),
            ("username", user),
            ("password", password),
        ])
        .send()
        .unwrap()
}

fn login(base: &str, key: &str) -> reqwest::blocking::Response {
    http()
        .post(format!("{base}/login"))
        .header("X-API-Key", key)
        .send()
        .unwrap()
}

/// Polls until `f` holds (the server reloads the file within about a second).
fn eventually(what: &str, f: impl FnMut() -> bool) {
    eventually_within(what, Duration::from_secs(5), f);
}

/// Polls every 50 ms until `f` holds; fails after `limit`.
fn eventually_within(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what} did not happen within {limit:?}");
}

#[test]
fn first_serve_creates_a_config_and_prints_a_working_key_and_curl_line() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(dir.path());
    let text = server.first_lines.join("\n");
    assert!(
        text.starts_with("No configuration at keygate.toml: created one"),
        "{text}"
    );
    let key = server.first_lines[2].trim().to_owned();
    assert!(key.starts_with("kg_my-service_"), "{text}");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(dir.path().join("keygate.toml"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    let r = login(&server.base, &key);
    assert_eq!(r.status(), 200);
    // The printed curl line would work too.
    let mut lines = server.first_lines.iter();
    assert!(lines.any(|l| l.trim()
        == format!(
            "curl -s -X POST -H 'X-API-Key: {key}' {}/login",
            server.base
        )));
}

#[test]
fn round_trip_init_key_add_serve_login_verify_logout_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let init = keygate(d, &["init"]);
    assert_eq!(init.status.code(), Some(0), "{}", stderr(&init));
    assert!(stdout(&init).contains("kg_my-service_"));
    let again = keygate(d, &["init"]);
    assert_eq!(again.status.code(), Some(2), "init never overwrites");

    let add = keygate(
        d,
        &[
            "key",
            "add",
            "billing",
            "--role",
            "service",
            "--scope",
            "orders:read",
            "--expires",
            "90d",
        ],
    );
    assert_eq!(add.status.code(), Some(0), "{}", stderr(&add));
    let key = stdout(&add).trim().to_owned();
    assert!(
        key.starts_with("kg_billing_") && !key.contains('\n'),
        "only the key on stdout"
    );
    let text = std::fs::read_to_string(d.join("keygate.toml")).unwrap();
    assert!(text.contains("# keygate configuration."), "comments kept");
    assert!(!text.contains(&key), "only the hash is stored");

    let check = keygate(d, &["check-config"]);
    assert_eq!(check.status.code(), Some(0), "{}", stderr(&check));

    let server = serve(d);
    let r = login(&server.base, &key);
    assert_eq!(r.status(), 200);
    let body: Value = r.json().unwrap();
    assert_eq!(body["scope"], "orders:read");
    let token = body["access_token"].as_str().unwrap().to_owned();

    let r = http()
        .get(format!("{}/verify", server.base))
        .bearer_auth(&token)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-auth-subject"], "billing");

    let offline = keygate(d, &["token", "verify", &token]);
    assert_eq!(offline.status.code(), Some(0), "{}", stderr(&offline));
    let claims: Value = serde_json::from_str(&stdout(&offline)).unwrap();
    assert_eq!(claims["sub"], "billing");

    let r = http()
        .post(format!("{}/logout", server.base))
        .bearer_auth(&token)
        .send()
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = http()
        .get(format!("{}/verify", server.base))
        .bearer_auth(&token)
        .send()
        .unwrap();
    assert_eq!(r.status(), 401);

    // Rotation: both keys work during the grace, the server picking the file up live.
    let rotate = keygate(d, &["key", "rotate", "billing", "--grace", "1h"]);
    assert_eq!(rotate.status.code(), Some(0), "{}", stderr(&rotate));
    let new_key = stdout(&rotate).trim().to_owned();
    eventually("the rotated key works", || {
        login(&server.base, &new_key).status() == 200
    });
    assert_eq!(
        login(&server.base, &key).status(),
        200,
        "old key in its grace"
    );

    let list = keygate(d, &["key", "list"]);
    assert!(stdout(&list).contains("billing"), "{}", stdout(&list));
    assert!(stdout(&list).contains("rotating"));

    let live = login(&server.base, &new_key).json::<Value>().unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let revoke = keygate(d, &["key", "revoke", "billing"]);
    assert_eq!(revoke.status.code(), Some(0), "{}", stderr(&revoke));
    eventually("the revoked key is refused", || {
        login(&server.base, &new_key).status() == 401
    });
    assert_eq!(login(&server.base, &key).status(), 401);
    let r = http()
        .get(format!("{}/verify", server.base))
        .bearer_auth(&live)
        .send()
        .unwrap();
    assert_eq!(r.status(), 401, "tokens of a revoked key are refused");

    // Users: password from stdin, then the password grant.
    let user = keygate_stdin(
        d,
        &[
            "user",
            "add",
            "alice",
            "--role",
            "admin",
            "--scope",
            "orders:read",
        ],
        "wonderland-42\n",
    );
    assert_eq!(user.status.code(), Some(0), "{}", stderr(&user));
    let grant = || {
        http()
            .post(format!("{}/token", server.base))
            .form(&[
                ("grant_type", "password"),
                ("username", "alice"),
                ("password", "wonderland-42"),
            ])
            .send()
            .unwrap()
            .status()
    };
    eventually("the new user can log in", || grant() == 200);
    let remove = keygate(d, &["user", "remove", "alice"]);
    assert_eq!(remove.status.code(), Some(0), "{}", stderr(&remove));
    eventually("the removed user is refused", || grant() == 400);
}

#[test]
fn exit_codes_and_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    let missing = keygate(d, &["check-config"]);
    assert_eq!(missing.status.code(), Some(2));
    assert_eq!(stderr(&missing).lines().count(), 1, "{}", stderr(&missing));

    std::fs::write(
        d.join("keygate.toml"),
        "[token]\nsecret = \"09d25e094faa6ca2556c818166b7a9563b93f7099f6f0f4caa6cf63b88e8d3e7\"\n",
    )
    .unwrap();
    let weak = keygate(d, &["check-config"]);
    assert_eq!(weak.status.code(), Some(2));
    let err = stderr(&weak);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("keygate: keygate.toml: token.secret: is the well-known example secret"),
        "{err}"
    );
    let serve = keygate(d, &["serve"]);
    assert_eq!(serve.status.code(), Some(2), "serve refuses a weak secret");

    std::fs::remove_file(d.join("keygate.toml")).unwrap();
    assert_eq!(keygate(d, &["init"]).status.code(), Some(0));
    let garbage = keygate(d, &["token", "verify", "not.a.token"]);
    assert_eq!(garbage.status.code(), Some(1));
    assert!(stderr(&garbage).starts_with("keygate: invalid token:"));

    let issued = keygate(d, &["token", "issue", "--sub", "my-service", "--ttl", "5m"]);
    assert_eq!(issued.status.code(), Some(0), "{}", stderr(&issued));
    let token = stdout(&issued).trim().to_owned();
    let decoded = keygate(d, &["token", "decode", &token]);
    assert_eq!(decoded.status.code(), Some(0));
    assert!(stderr(&decoded).contains("NOT VERIFIED"));
    let v: Value = serde_json::from_str(&stdout(&decoded)).unwrap();
    assert_eq!(
        v["claims"]["exp"].as_u64().unwrap() - v["claims"]["iat"].as_u64().unwrap(),
        300
    );
    assert_eq!(v["header"]["typ"], "at+jwt");

    let unknown = keygate(d, &["token", "issue", "--sub", "nobody"]);
    assert_eq!(unknown.status.code(), Some(2));
    let too_long = keygate(
        d,
        &["token", "issue", "--sub", "my-service", "--ttl", "30d"],
    );
    assert_eq!(
        too_long.status.code(),
        Some(2),
        "no token may live over a day"
    );

    let usage = keygate(d, &["key", "add"]);
    assert_eq!(usage.status.code(), Some(2));

    let secret = keygate(d, &["secret"]);
    assert_eq!(secret.status.code(), Some(0));
    assert_eq!(stdout(&secret).trim().len(), 64);

    let hash = keygate_stdin(d, &["hash"], "hunter2-hunter2\n");
    assert_eq!(hash.status.code(), Some(0));
    let phc = stdout(&hash).trim().to_owned();
    assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
    let parsed: keygate::password::PasswordHash = phc.parse().unwrap();
    parsed.verify_blocking(b"hunter2-hunter2").unwrap();

    let short = keygate_stdin(d, &["user", "add", "bob", "--role", "r"], "short\n");
    assert_eq!(short.status.code(), Some(2));
    let dup = keygate(d, &["key", "add", "my-service", "--role", "r"]);
    assert_eq!(dup.status.code(), Some(2), "ids stay unique");
}

#[test]
fn durations_past_what_a_date_can_hold_and_empty_roles_are_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    init(d);
    let before = std::fs::read_to_string(d.join("keygate.toml")).unwrap();
    for args in [
        &["key", "add", "far", "--role", "r", "--expires", "8000y"][..],
        &["key", "rotate", "my-service", "--grace", "8000y"][..],
        &[
            "key",
            "add",
            "far",
            "--role",
            "r",
            "--expires",
            "99999999999999y",
        ][..],
    ] {
        let out = keygate(d, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains("8000y") || err.contains("99999999999999y"),
            "{err}"
        );
        assert!(
            !err.contains("panicked") && !err.contains("RUST_BACKTRACE"),
            "{err}"
        );
    }
    for args in [
        &["key", "add", "norole", "--role", ""][..],
        &["key", "add", "noscope", "--role", "r", "--scope", ""][..],
    ] {
        let out = keygate(d, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
    }
    let out = keygate_stdin(
        d,
        &["user", "add", "alice", "--role", ""],
        "a long passphrase\n",
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert_eq!(
        std::fs::read_to_string(d.join("keygate.toml")).unwrap(),
        before,
        "nothing was written"
    );
    // The server refuses a hand-written empty role the same way.
    std::fs::write(
        d.join("keygate.toml"),
        format!("{before}\n[[users]]\nusername = \"bob\"\npassword_hash = \"$2b$10$N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWy\"\nrole = \"\"\n"),
    )
    .unwrap();
    let out = keygate(d, &["check-config"]);
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    assert!(stderr(&out).contains("role"), "{}", stderr(&out));
}

#[test]
fn a_key_id_beginning_with_a_hyphen_is_a_key_id_not_an_option() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    init(d);
    let out = keygate(d, &["signing", "retire", "-aZ3kQ"]);
    let err = stderr(&out);
    assert!(!err.contains("unexpected argument"), "{err}");
    assert_eq!(out.status.code(), Some(2), "{err}");
}

#[test]
fn keygen_switches_to_es256_and_rotates_signing_keys() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let key = init(d);
    let gen1 = keygate(d, &["keygen", "--alg", "ES256"]);
    assert_eq!(gen1.status.code(), Some(0), "{}", stderr(&gen1));
    let kid1 = stdout(&gen1).trim().to_owned();
    assert_eq!(kid1.len(), 43);
    assert!(d.join(format!("keys/{kid1}.pem")).exists());
    let text = std::fs::read_to_string(d.join("keygate.toml")).unwrap();
    assert!(text.contains("signing_keys = \"keys\""));
    std::fs::write(
        d.join("keygate.toml"),
        text.replace("algorithm = \"HS256\"", "algorithm = \"ES256\""),
    )
    .unwrap();
    assert_eq!(keygate(d, &["check-config"]).status.code(), Some(0));

    let server = serve(d);
    let body: Value = login(&server.base, &key).json().unwrap();
    let token = body["access_token"].as_str().unwrap().to_owned();
    let jwks: Value = http()
        .get(format!("{}/.well-known/jwks.json", server.base))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(jwks["keys"][0]["kid"], kid1.as_str());
    let decoded = keygate(d, &["token", "decode", &token]);
    let v: Value = serde_json::from_str(&stdout(&decoded)).unwrap();
    assert_eq!(v["header"]["alg"], "ES256");
    assert_eq!(v["header"]["kid"], kid1.as_str());

    let retire_last = keygate(d, &["signing", "retire", &kid1]);
    assert_eq!(
        retire_last.status.code(),
        Some(2),
        "the last key cannot be retired"
    );
    let gen2 = keygate(d, &["keygen", "--alg", "ES256"]);
    let kid2 = stdout(&gen2).trim().to_owned();
    let list = stdout(&keygate(d, &["signing", "list"]));
    assert!(
        list.contains(&format!("{kid1}  ES256  signing")),
        "{kid1}\n{list}"
    );
    assert!(list.contains(&format!("{kid2}  ES256  pending")), "{list}");
    eventually("the new key is published", || {
        let jwks: Value = http()
            .get(format!("{}/.well-known/jwks.json", server.base))
            .send()
            .unwrap()
            .json()
            .unwrap();
        jwks["keys"].as_array().unwrap().len() == 2
    });
    let retire = keygate(d, &["signing", "retire", &kid1]);
    assert_eq!(retire.status.code(), Some(0), "{}", stderr(&retire));
    let list = stdout(&keygate(d, &["signing", "list"]));
    assert!(list.contains(&format!("{kid1}  ES256  retired")), "{list}");
    assert!(list.contains(&format!("{kid2}  ES256  signing")), "{list}");
    let r = http()
        .get(format!("{}/verify", server.base))
        .bearer_auth(&token)
        .send()
        .unwrap();
    assert_eq!(
        r.status(),
        200,
        "tokens of a retired key verify until they expire"
    );
}

#[test]
fn login_and_call_use_a_running_server() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let key = init(d);
    let server = serve(d);
    let base = server.base.clone();

    let login = keygate(d, &["login", "--url", &base, "--api-key", &key]);
    assert_eq!(login.status.code(), Some(0), "{}", stderr(&login));
    let token = stdout(&login).trim().to_owned();
    assert_eq!(token.split('.').count(), 3);
    assert_eq!(
        http()
            .get(format!("{base}/verify"))
            .bearer_auth(&token)
            .send()
            .unwrap()
            .status(),
        200
    );

    let wrong = keygate(d, &["login", "--url", &base, "--api-key", "kg_nope"]);
    assert_eq!(wrong.status.code(), Some(1), "a refused key exits 1");
    assert!(
        stderr(&wrong).contains("invalid_client"),
        "{}",
        stderr(&wrong)
    );

    let call = Command::new(env!("CARGO_BIN_EXE_keygate"))
        .args(["call", &format!("{base}/userinfo"), "--auth-url", &base])
        .env("KEYGATE_API_KEY", &key)
        .output()
        .unwrap();
    assert_eq!(call.status.code(), Some(0), "{}", stderr(&call));
    let claims: Value = serde_json::from_str(&stdout(&call)).unwrap();
    assert_eq!(claims["sub"], "my-service");

    let forbidden = keygate(
        d,
        &[
            "call",
            &format!("{base}/verify?role=admin"),
            "--auth-url",
            &base,
            "--api-key",
            &key,
        ],
    );
    assert_eq!(forbidden.status.code(), Some(1));
    assert!(
        stdout(&forbidden).contains("insufficient_scope"),
        "{}",
        stdout(&forbidden)
    );
}
