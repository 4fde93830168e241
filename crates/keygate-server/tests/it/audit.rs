//! The audit log (README, Audit log): one JSON line per security event with exactly the fields
//! that apply, never a secret in any encoding, and a full writer that drops (and counts)
//! rather than delaying a request.

use std::path::Path;
use std::time::Duration;

use crate::quota::quota_config;
use crate::util::*;
use base64::Engine as _;
use serde_json::{Value, json};

/// The lines of the audit file once it has at least `n` (the writer runs on its own thread).
async fn lines_of(path: &Path, n: usize) -> Vec<Value> {
    for _ in 0..100 {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.lines().count() >= n {
            return text
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "fewer than {n} audit lines: {}",
        std::fs::read_to_string(path).unwrap_or_default()
    );
}

/// `line` without its timestamp, checked to be RFC 3339 UTC whole seconds.
fn without_ts(mut line: Value) -> Value {
    let ts = line["ts"].as_str().unwrap().to_owned();
    assert!(
        time::OffsetDateTime::parse(&ts, &time::format_description::well_known::Rfc3339).is_ok()
            && ts.ends_with('Z')
            && ts.len() == 20,
        "{ts}"
    );
    line.as_object_mut().unwrap().remove("ts");
    line
}

fn jti_of(token: &str) -> String {
    let claims: Value = serde_json::from_slice(&unb64(token.split('.').nth(1).unwrap())).unwrap();
    claims["jti"].as_str().unwrap().to_owned()
}

async fn access_token(r: reqwest::Response) -> String {
    assert_eq!(r.status(), 200);
    r.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Every form a secret could take in a log line.
pub(crate) fn encodings(secret: &str) -> Vec<String> {
    let b = secret.as_bytes();
    vec![
        secret.to_owned(),
        base64::engine::general_purpose::STANDARD.encode(b),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b),
        form_urlencoded::byte_serialize(b).collect(),
        serde_json::to_string(secret)
            .unwrap()
            .trim_matches('"')
            .to_owned(),
    ]
}

#[tokio::test]
async fn every_server_event_is_one_line_with_the_fields_that_apply_and_no_secret() {
    let key = keygate::api_key::generate("billing").unwrap();
    let text = quota_config(&key, "3/1h", "[audit]\npath = \"audit.jsonl\"\n");
    let s = TestServer::with_config(text.clone(), key).await;
    let audit = s.dir().join("audit.jsonl");
    let local = "127.0.0.1";

    let issued = access_token(s.login(&s.billing_key).await).await; // quota 1 of 3
    // At /token, not /login: `hardening` counts the process-wide api_key refusals exactly.
    let wrong_key = keygate::api_key::generate("billing").unwrap();
    let r = s
        .post_form(
            "/token",
            Some(("billing", &wrong_key)),
            &[("grant_type", "client_credentials")],
        )
        .await;
    assert_eq!(r.status(), 401);
    let alice = access_token(
        s.token_form(&[
            ("grant_type", "password"),
            ("username", "alice"),
            ("password", USER_PASSWORD),
        ])
        .await,
    )
    .await;
    let wrong_password = "Tr0ub4dor&3 not alice's";
    let r = s
        .token_form(&[
            ("grant_type", "password"),
            ("username", "alice"),
            ("password", wrong_password),
        ])
        .await;
    assert_eq!(r.status(), 400);
    assert_eq!(s.logout(&issued).await.status(), 204);
    let second = access_token(
        s.post_form(
            "/token",
            Some(("billing", &s.billing_key)),
            &[("grant_type", "client_credentials")],
        )
        .await,
    )
    .await; // 2 of 3
    let r = s
        .post_form(
            "/revoke",
            Some(("billing", &s.billing_key)),
            &[("token", &second)],
        )
        .await;
    assert_eq!(r.status(), 200);
    let third = access_token(s.login(&s.billing_key).await).await; // 3 of 3
    assert_eq!(s.verify(&third).await.status(), 429);
    s.rewrite_config(&text).unwrap();
    assert!(s.rewrite_config("[token]\nsecret = \"short\"\n").is_err());

    let lines = lines_of(&audit, 11).await;
    let got: Vec<Value> = lines.into_iter().map(without_ts).collect();
    let expected = vec![
        json!({"event": "token.issued", "client_id": "billing", "address": local, "jti": jti_of(&issued), "reason": "api_key"}),
        json!({"event": "token.refused", "client_id": "billing", "address": local, "reason": "wrong_credential"}),
        json!({"event": "token.issued", "username": "alice", "address": local, "jti": jti_of(&alice), "reason": "password"}),
        json!({"event": "token.refused", "username": "alice", "address": local, "reason": "wrong_credential"}),
        json!({"event": "token.revoked", "client_id": "billing", "jti": jti_of(&issued), "reason": "logout"}),
        json!({"event": "token.issued", "client_id": "billing", "address": local, "jti": jti_of(&second), "reason": "client_credentials"}),
        json!({"event": "token.revoked", "client_id": "billing", "jti": jti_of(&second), "reason": "revoke"}),
        json!({"event": "token.issued", "client_id": "billing", "address": local, "jti": jti_of(&third), "reason": "api_key"}),
        json!({"event": "token.refused", "client_id": "billing", "jti": jti_of(&third), "reason": "rate_limited"}),
        json!({"event": "config.reloaded", "reason": "requested"}),
        json!({"event": "config.refused", "reason": format!("{}: token.secret", s.config_path.display())}),
    ];
    assert_eq!(got, expected);

    let raw = std::fs::read_to_string(&audit).unwrap();
    let basic = format!("billing:{}", s.billing_key);
    for secret in [
        s.billing_key.as_str(),
        wrong_key.as_str(),
        USER_PASSWORD,
        wrong_password,
        SECRET,
        SEED_KEY,
        basic.as_str(),
        issued.as_str(),
        second.as_str(),
        third.as_str(),
        alice.as_str(),
    ] {
        for form in encodings(secret) {
            assert!(
                !raw.contains(&form),
                "a secret reached the audit log as {form}"
            );
        }
        // A token's signature alone is as telling as the token.
        if let Some(sig) = secret.rsplit('.').next().filter(|_| secret.contains('.')) {
            assert!(!raw.contains(sig));
        }
    }

    let metrics = s.text("/metrics").await;
    for event in [
        "token.issued",
        "token.refused",
        "token.revoked",
        "config.reloaded",
        "config.refused",
    ] {
        assert!(
            metrics.contains(&format!("keygate_audit_events_total{{event=\"{event}\"}}")),
            "{event}: {metrics}"
        );
    }
}

#[tokio::test]
async fn a_full_audit_channel_drops_and_counts_without_delaying_requests() {
    // A FIFO nobody reads: once its 64 KiB buffer is full the writer blocks for good, as
    // on a stuck disk, and the one-line channel behind it is full.
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("audit.fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let reader_path = fifo.clone();
    // Opening a FIFO for writing waits for a reader: this one opens and never reads.
    let reader = std::thread::spawn(move || std::fs::File::open(reader_path).unwrap());
    let extra = format!("[audit]\npath = \"{}\"\nbuffer = 1\n", fifo.display());
    let s = TestServer::with_extra(&extra).await;
    let _held = reader.join().unwrap();

    let before = dropped(&s).await;
    // A request waiting on the writer would wait for ever: the deadline only catches that.
    tokio::time::timeout(Duration::from_secs(120), async {
        for _ in 0..800 {
            assert_eq!(s.login(&s.billing_key).await.status(), 200);
        }
    })
    .await
    .expect("requests were held up by the audit writer");
    assert!(
        dropped(&s).await > before,
        "800 lines (over 64 KiB) into a stuck writer must drop"
    );
}

async fn dropped(s: &TestServer) -> u64 {
    let metrics = s.text("/metrics").await;
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("keygate_audit_dropped_total "))
        .map_or(0, |v| v.trim().parse().unwrap())
}

/// What the server writes to tracing while `f` runs on this thread (a current-thread
/// runtime: the server's tasks run here too), at every level.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// A claimed id that names no principal is logged as `unknown:<fingerprint>`: a whole
/// API key sent as a client id (HTTP Basic user or form `client_id`) or a password typed
/// into the username field never reaches the audit log, tracing or `/metrics`. The
/// Stripe convention (`-u "$KEY:"`) is client authentication by that key.
#[tokio::test(flavor = "current_thread")]
async fn claimed_ids_that_name_nobody_are_fingerprinted_never_logged() {
    // While only one dispatcher exists, tracing-core caches the interest of a callsite
    // first reached on another thread (another test's) from that thread's default: none,
    // so never. A second dispatcher makes every interest be computed from all of them.
    let _second = tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default());
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let key = keygate::api_key::generate("billing").unwrap();
    let text = config_text(&key, user_hash(), "[audit]\npath = \"audit.jsonl\"\n")
        .replace("failed_attempts = 5", "failed_attempts = 100");
    let s = TestServer::with_config(text.clone(), key.clone()).await;
    let audit = s.dir().join("audit.jsonl");
    let stripe = Some((key.as_str(), ""));

    // `-u "$KEY:"`: a token, and client authentication at /introspect and /revoke.
    let token = access_token(
        s.post_form("/token", stripe, &[("grant_type", "client_credentials")])
            .await,
    )
    .await;
    let r = s
        .post_form("/introspect", stripe, &[("token", &token)])
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["active"], true);
    let r = s.post_form("/revoke", stripe, &[("token", &token)]).await;
    assert_eq!(r.status(), 200);

    // The key as a client id, with a secret, without one, and as the Basic user name
    // with a password: all refused, none logged.
    let mut refusals = 0;
    for path in ["/token", "/introspect", "/revoke"] {
        for form in [
            vec![("client_id", key.as_str()), ("client_secret", "not it")],
            vec![("client_id", key.as_str())],
        ] {
            let mut form = form;
            form.push(("grant_type", "client_credentials"));
            form.push(("token", &token));
            let r = s.post_form(path, None, &form).await;
            assert_eq!(r.status(), 401, "{path} {form:?}");
            refusals += usize::from(form.len() == 4);
        }
        let r = s
            .post_form(
                path,
                Some((key.as_str(), "a password")),
                &[("grant_type", "client_credentials"), ("token", &token)],
            )
            .await;
        assert_eq!(r.status(), 401, "{path}");
        refusals += 1;
    }
    // A password typed into the username field, twice (one fingerprint).
    for _ in 0..2 {
        let r = s
            .token_form(&[
                ("grant_type", "password"),
                ("username", USER_PASSWORD),
                ("password", "alice"),
            ])
            .await;
        assert_eq!(r.status(), 400);
    }

    let lines = lines_of(&audit, 1 + 1 + refusals + 2).await;
    let refused: Vec<&Value> = lines
        .iter()
        .filter(|l| l["event"] == "token.refused")
        .collect();
    assert_eq!(refused.len(), refusals + 2, "{lines:?}");
    let fingerprint = |v: &Value| -> String {
        let shown = v.as_str().unwrap();
        let fp = shown.strip_prefix("unknown:").expect(shown);
        assert_eq!(fp.len(), 12, "{shown}");
        assert!(fp.bytes().all(|b| b.is_ascii_hexdigit()), "{shown}");
        fp.to_owned()
    };
    let key_fps: std::collections::BTreeSet<String> = refused[..refusals]
        .iter()
        .map(|l| fingerprint(&l["client_id"]))
        .collect();
    assert_eq!(key_fps.len(), 1, "one claim, one fingerprint: {key_fps:?}");
    let typed = fingerprint(&refused[refusals]["username"]);
    assert_eq!(typed, fingerprint(&refused[refusals + 1]["username"]));
    assert!(!key_fps.contains(&typed));
    assert_eq!(lines[0]["event"], "token.issued");
    assert_eq!(lines[0]["client_id"], "billing");

    // Another replica of the same file gives the same claim the same fingerprint.
    let replica = TestServer::with_config(text, key.clone()).await;
    let r = replica
        .token_form(&[
            ("grant_type", "password"),
            ("username", USER_PASSWORD),
            ("password", "alice"),
        ])
        .await;
    assert_eq!(r.status(), 400);
    let replica_lines = lines_of(&replica.dir().join("audit.jsonl"), 1).await;
    assert_eq!(fingerprint(&replica_lines[0]["username"]), typed);

    let raw = std::fs::read_to_string(&audit).unwrap();
    let traced = captured.text();
    assert!(traced.contains("token issued"), "tracing was captured");
    assert!(
        traced.contains("credential refused"),
        "tracing was captured"
    );
    let metrics = s.text("/metrics").await;
    for (what, text) in [
        ("audit log", &raw),
        ("tracing", &traced),
        ("/metrics", &metrics),
    ] {
        for secret in [key.as_str(), USER_PASSWORD, &token] {
            for form in encodings(secret) {
                assert!(
                    !text.contains(&form),
                    "a secret reached the {what} as {form}"
                );
            }
        }
        // The key's random part alone is as good as the key.
        assert!(!text.contains(&key[key.len() - 40..]), "{what}");
    }
}
