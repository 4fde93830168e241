//! The directory (docs/directory.md) with its real engines: SQLite files, and a PostgreSQL
//! server the tests start. Principals created, revoked, rotated and deleted through the
//! admin API; two replicas on one PostgreSQL see each other's changes within a second;
//! a database that goes away leaves keys working from the copy.

use std::time::{Duration, Instant};

use keygate::api_key::{self, KeyHash};
use serde_json::{Value, json};

use crate::postgres_server::Postgres;
use crate::redis_servers::eventually;
use crate::util::*;

/// The configuration's extra lines: `[directory]` at `url`, and the file client `ops`
/// whose tokens carry `keygate:admin`.
fn directory_extra(url: &str, ops_key: &str, more: &str) -> String {
    format!(
        "[directory]\nurl = \"{url}\"\npoll_interval = \"100ms\"\nmax_staleness = \"2s\"\ntimeout = \"1s\"\n{more}\n\
         [[clients]]\nid = \"ops\"\nkey_hash = \"{}\"\nrole = \"operator\"\nscopes = [\"keygate:admin\"]\n",
        KeyHash::sha256_of(ops_key)
    )
}

struct Replica {
    server: TestServer,
    admin_token: String,
}

impl Replica {
    async fn start(url: &str, more: &str) -> Self {
        let ops_key = api_key::generate("ops").unwrap();
        Self::with_ops(url, &ops_key, more).await
    }

    async fn with_ops(url: &str, ops_key: &str, more: &str) -> Self {
        let billing = api_key::generate("billing").unwrap();
        // The propagation tests poll with logins that fail until a change arrives: each
        // refusal counts against 127.0.0.1, so the failed-attempt limit is raised here
        // lest a slow run lock the test itself out with 429.
        let text = config_text(&billing, user_hash(), &directory_extra(url, ops_key, more))
            .replace("failed_attempts = 5", "failed_attempts = 100000");
        let server = TestServer::with_config(text, billing).await;
        let r = server.login(ops_key).await;
        assert_eq!(r.status(), 200);
        let admin_token = r.json::<Value>().await.unwrap()["access_token"]
            .as_str()
            .unwrap()
            .to_owned();
        Replica {
            server,
            admin_token,
        }
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> reqwest::Response {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self
            .server
            .http
            .request(m, self.server.url(path))
            .bearer_auth(&self.admin_token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        req.send().await.unwrap()
    }

    async fn create_client(&self, id: &str) -> String {
        let r = self
            .call(
                "POST",
                "/admin/v1/clients",
                Some(json!({"id": id, "role": "service", "scopes": ["orders:read"]})),
            )
            .await;
        assert_eq!(r.status(), 201, "create {id}");
        let body: Value = r.json().await.unwrap();
        body["api_key"].as_str().unwrap().to_owned()
    }
}

async fn token_of(s: &TestServer, key: &str) -> String {
    let r = s.login(key).await;
    assert_eq!(r.status(), 200);
    r.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn sqlite_url(dir: &tempfile::TempDir) -> String {
    format!("sqlite://{}", dir.path().join("keygate.db").display())
}

#[tokio::test]
async fn a_client_created_over_the_admin_api_logs_in_and_dies_when_revoked() {
    let db = tempfile::tempdir().unwrap();
    let a = Replica::start(&sqlite_url(&db), "").await;
    let key = a.create_client("svc-1").await;
    assert!(key.starts_with("kg_svc-1_"));
    // The caller's next request on this replica sees it: no wait.
    let token = token_of(&a.server, &key).await;
    let r = a.server.verify(&token).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-auth-subject"], "svc-1");
    assert_eq!(r.headers()["x-auth-role"], "service");
    // client_credentials takes the key as the secret, too.
    let r = a
        .server
        .token_form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "svc-1"),
            ("client_secret", &key),
        ])
        .await;
    assert_eq!(r.status(), 200);

    let got: Value = a
        .call("GET", "/admin/v1/clients/svc-1", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(got["id"], "svc-1");
    assert_eq!(got["state"], "active");
    assert!(got.get("hash").is_none() && !got.to_string().contains("sha256:"));

    let r = a.call("POST", "/admin/v1/clients/svc-1/revoke", None).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["state"], "revoked");
    assert_eq!(a.server.verify(&token).await.status(), 401);
    assert_eq!(a.server.login(&key).await.status(), 401);
}

#[tokio::test]
async fn rotation_delete_and_recreation_keep_old_tokens_dead() {
    let db = tempfile::tempdir().unwrap();
    let a = Replica::start(&sqlite_url(&db), "").await;
    let key = a.create_client("svc-2").await;
    let old_token = token_of(&a.server, &key).await;
    // With a grace, both keys work.
    let r = a
        .call(
            "POST",
            "/admin/v1/clients/svc-2/rotate",
            Some(json!({"grace": "1h"})),
        )
        .await;
    assert_eq!(r.status(), 200);
    let new_key = r.json::<Value>().await.unwrap()["api_key"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(a.server.login(&key).await.status(), 200);
    assert_eq!(a.server.login(&new_key).await.status(), 200);
    // Without one, the old key and the tokens issued before now die; the new key works at once.
    let r = a
        .call(
            "POST",
            "/admin/v1/clients/svc-2/rotate",
            Some(json!({"grace": "0s"})),
        )
        .await;
    let newest = r.json::<Value>().await.unwrap()["api_key"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(a.server.login(&new_key).await.status(), 401);
    assert_eq!(a.server.verify(&old_token).await.status(), 401);
    let fresh = token_of(&a.server, &newest).await;
    assert_eq!(a.server.verify(&fresh).await.status(), 200);
    // Deleted: its tokens are refused; a new client of the same id never accepts them.
    let r = a.call("DELETE", "/admin/v1/clients/svc-2", None).await;
    assert_eq!(r.status(), 204);
    assert_eq!(a.server.verify(&fresh).await.status(), 401);
    let again = a.create_client("svc-2").await;
    assert_eq!(a.server.verify(&fresh).await.status(), 401);
    let t = token_of(&a.server, &again).await;
    assert_eq!(a.server.verify(&t).await.status(), 200);
}

#[tokio::test]
async fn bad_admin_input_is_400_409_or_404_and_writes_nothing() {
    let db = tempfile::tempdir().unwrap();
    let a = Replica::start(&sqlite_url(&db), "").await;
    a.create_client("taken").await;
    let cases: Vec<(Value, u16, &str)> = vec![
        (json!({"id": "taken"}), 409, "conflict"),
        // One namespace with the file.
        (json!({"id": "billing"}), 409, "conflict"),
        (json!({"id": "x", "colour": "red"}), 400, "invalid_request"),
        (json!({"id": "bad id!"}), 400, "invalid_request"),
        (
            json!({"id": "x", "scopes": ["a b"]}),
            400,
            "invalid_request",
        ),
        (json!({"id": "x", "role": "r\n"}), 400, "invalid_request"),
        (json!({"id": "x", "metadata": [1]}), 400, "invalid_request"),
        (
            json!({"id": "x", "metadata": {"big": "a".repeat(5000)}}),
            400,
            "invalid_request",
        ),
        (
            json!({"id": "x", "rate_limit": "lots"}),
            400,
            "invalid_request",
        ),
        (
            json!({"id": "x", "expires_at": "tomorrow"}),
            400,
            "invalid_request",
        ),
        (json!("just a string"), 400, "invalid_request"),
    ];
    for (body, status, error) in cases {
        let r = a
            .call("POST", "/admin/v1/clients", Some(body.clone()))
            .await;
        assert_eq!(r.status().as_u16(), status, "{body}");
        assert_eq!(r.headers()["content-type"], "application/json", "{body}");
        assert_eq!(r.json::<Value>().await.unwrap()["error"], error, "{body}");
    }
    // Not JSON at all.
    let r = a
        .server
        .http
        .post(a.server.url("/admin/v1/clients"))
        .bearer_auth(&a.admin_token)
        .body("{")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // A body far over the limit: refused before it is read.
    let huge = json!({"id": "x", "metadata": {"big": "a".repeat(5 << 20)}});
    let r = a.call("POST", "/admin/v1/clients", Some(huge)).await;
    assert_eq!(r.status(), 413);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_request");
    let r = a.call("GET", "/admin/v1/clients/nobody", None).await;
    assert_eq!(r.status(), 404);
    for query in [
        "limit=5000",
        "limit=null&limit=null",
        "limit=-1",
        "after=a&after=b",
    ] {
        let r = a
            .call("GET", &format!("/admin/v1/clients?{query}"), None)
            .await;
        assert_eq!(r.status(), 400, "{query}");
        assert_eq!(
            r.headers()["content-type"],
            "application/json",
            "{query}: the OAuth JSON shape"
        );
        assert_eq!(
            r.json::<Value>().await.unwrap()["error"],
            "invalid_request",
            "{query}"
        );
    }
    let r = a
        .call(
            "PATCH",
            "/admin/v1/clients/taken",
            Some(json!({"scopes": ["bad scope"]})),
        )
        .await;
    assert_eq!(r.status(), 400);
    // Nothing of the above was written: one client in the directory.
    let page: Value = a
        .call("GET", "/admin/v1/clients", None)
        .await
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["taken"]);
    let got: Value = a
        .call("GET", "/admin/v1/clients/taken", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(got["scopes"], json!(["orders:read"]));
}

#[tokio::test]
async fn the_admin_api_needs_a_valid_token_with_the_admin_scope() {
    let db = tempfile::tempdir().unwrap();
    let a = Replica::start(&sqlite_url(&db), "").await;
    let s = &a.server;
    let r = s.http.get(s.url("/admin/v1/clients")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers().contains_key("www-authenticate"));
    // billing's token is valid but lacks keygate:admin.
    let billing = s.token().await;
    let r = s
        .http
        .get(s.url("/admin/v1/clients"))
        .bearer_auth(&billing)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"],
        "insufficient_scope"
    );
    let r = s
        .http
        .get(s.url("/admin/v1/clients"))
        .bearer_auth("not.a.token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // A revoked admin token: 401.
    assert_eq!(s.logout(&a.admin_token).await.status(), 204);
    let r = a.call("GET", "/admin/v1/clients", None).await;
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn users_and_paging_through_the_admin_api() {
    let db = tempfile::tempdir().unwrap();
    let a = Replica::start(&sqlite_url(&db), "").await;
    let r = a
        .call(
            "POST",
            "/admin/v1/users",
            Some(json!({"username": "bob", "password": "long enough pw", "role": "reader", "scopes": ["orders:read"], "metadata": {"plan": "pro"}})),
        )
        .await;
    assert_eq!(r.status(), 201);
    let body = r.text().await.unwrap();
    assert!(
        !body.contains("long enough pw") && !body.contains("argon2"),
        "{body}"
    );
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["user"]["metadata"]["plan"], "pro");
    let grant = |pw: &'static str| {
        let s = &a.server;
        async move {
            s.token_form(&[
                ("grant_type", "password"),
                ("username", "bob"),
                ("password", pw),
            ])
            .await
            .status()
        }
    };
    assert_eq!(grant("long enough pw").await, 200);
    assert_eq!(grant("wrong password").await, 400);
    let r = a
        .call(
            "POST",
            "/admin/v1/users/bob/password",
            Some(json!({"password": "a new password"})),
        )
        .await;
    assert_eq!(r.status(), 204);
    assert_eq!(grant("long enough pw").await, 400);
    assert_eq!(grant("a new password").await, 200);
    let r = a
        .call(
            "POST",
            "/admin/v1/users",
            Some(json!({"username": "eve", "password": "short"})),
        )
        .await;
    assert_eq!(r.status(), 400);

    for i in 0..5 {
        a.create_client(&format!("page-{i}")).await;
    }
    let mut seen = Vec::new();
    let mut after = String::new();
    loop {
        let path = format!("/admin/v1/clients?limit=2&after={after}");
        let page: Value = a.call("GET", &path, None).await.json().await.unwrap();
        for c in page["items"].as_array().unwrap() {
            seen.push(c["id"].as_str().unwrap().to_owned());
        }
        match page["next"].as_str() {
            Some(n) => after = n.to_owned(),
            None => break,
        }
    }
    assert_eq!(seen, ["page-0", "page-1", "page-2", "page-3", "page-4"]);
}

/// With `server.admin_listen`, the admin API answers there alone: 404 on `listen`.
#[tokio::test]
async fn admin_listen_moves_the_admin_api_off_the_public_listener() {
    let db = tempfile::tempdir().unwrap();
    let ops = api_key::generate("ops").unwrap();
    let billing = api_key::generate("billing").unwrap();
    let text = config_text(
        &billing,
        user_hash(),
        &directory_extra(&sqlite_url(&db), &ops, ""),
    )
    .replacen(
        "[server]\n",
        "[server]\nadmin_listen = \"127.0.0.1:0\"\n",
        1,
    );
    let s = TestServer::with_config(text, billing).await;
    let token = s.login(&ops).await.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let public = s
        .http
        .get(s.url("/admin/v1/clients"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(public.status(), 404);
    let admin = s.admin_url.clone().expect("admin listener bound");
    let r = s
        .http
        .post(format!("{admin}/admin/v1/clients"))
        .bearer_auth(&token)
        .json(&json!({"id": "via-admin"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let key = r.json::<Value>().await.unwrap()["api_key"]
        .as_str()
        .unwrap()
        .to_owned();
    // Only the admin API is there.
    let r = s.http.post(format!("{admin}/login")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(s.login(&key).await.status(), 200);
}

#[tokio::test]
async fn an_id_in_both_the_file_and_the_directory_is_refused_at_start() {
    let db = tempfile::tempdir().unwrap();
    let url = sqlite_url(&db);
    {
        let a = Replica::start(&url, "").await;
        a.create_client("twice").await;
    }
    let ops = api_key::generate("ops").unwrap();
    let billing = api_key::generate("billing").unwrap();
    let extra = format!(
        "{}\n[[clients]]\nid = \"twice\"\nkey_hash = \"{}\"\n",
        directory_extra(&url, &ops, ""),
        KeyHash::sha256_of("some hand-made key")
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keygate.toml");
    std::fs::write(&path, config_text(&billing, user_hash(), &extra)).unwrap();
    let e = keygate_server::AppState::from_path(path).unwrap_err();
    assert_eq!(e.setting, "clients/users");
    assert!(e.to_string().contains("`twice`"), "{e}");
}

/// Two replicas on one PostgreSQL: what one creates the other authenticates within a
/// second; what one revokes the other refuses within a second, with its tokens.
#[tokio::test]
async fn two_replicas_on_postgres_see_each_others_changes_within_a_second() {
    let pg = Postgres::start().await;
    let ops = api_key::generate("ops").unwrap();
    let a = Replica::with_ops(&pg.url(), &ops, "").await;
    let b = Replica::with_ops(&pg.url(), &ops, "").await;
    // Each round is two changes (a create on A, a revocation on B). 20 rounds here;
    // PROPAGATION_ROUNDS=500 measures 1 000 changes (docs/benchmarks.md).
    let rounds: usize = std::env::var("PROPAGATION_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let mut lags = Vec::new();
    for i in 0..rounds {
        let id = format!("pg-{i}");
        let key = a.create_client(&id).await;
        let started = Instant::now();
        let seen = eventually(Duration::from_secs(1), || async {
            b.server.login(&key).await.status() == 200
        })
        .await;
        assert!(seen.is_some(), "{id} created on A never logged in on B");
        lags.push(started.elapsed());
        let token = token_of(&b.server, &key).await;
        assert_eq!(a.server.verify(&token).await.status(), 200);
        let r = b
            .call("POST", &format!("/admin/v1/clients/{id}/revoke"), None)
            .await;
        assert_eq!(r.status(), 200);
        let started = Instant::now();
        let refused = eventually(Duration::from_secs(1), || async {
            a.server.verify(&token).await.status() == 401
                && a.server.login(&key).await.status() != 200
        })
        .await;
        assert!(refused.is_some(), "{id} revoked on B still worked on A");
        lags.push(started.elapsed());
    }
    lags.sort();
    eprintln!(
        "postgres propagation over {} changes: p50 {:?}, p99 {:?}, max {:?}",
        lags.len(),
        lags[lags.len() / 2],
        lags[lags.len() * 99 / 100],
        lags[lags.len() - 1]
    );
}

/// PostgreSQL gone: keys keep working from the copy, admin writes answer 503 and write
/// nothing, `/readyz` says `directory_unavailable`, logins answer 503 past
/// `max_staleness`; all back once the database is.
#[tokio::test]
async fn a_lost_postgres_leaves_keys_working_until_max_staleness() {
    let mut pg = Postgres::start().await;
    let a = Replica::start(&pg.url(), "").await;
    let key = a.create_client("steady").await;
    let token = token_of(&a.server, &key).await;
    pg.kill();
    // Within max_staleness (2 s): served from the copy.
    assert_eq!(a.server.login(&key).await.status(), 200);
    assert_eq!(a.server.verify(&token).await.status(), 200);
    let r = a
        .call("POST", "/admin/v1/clients", Some(json!({"id": "during"})))
        .await;
    assert_eq!(r.status(), 503);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"],
        "temporarily_unavailable"
    );
    let unready = eventually(Duration::from_secs(2), || async {
        let r = a
            .server
            .http
            .get(a.server.url("/readyz"))
            .send()
            .await
            .unwrap();
        r.status() == 503 && r.json::<Value>().await.unwrap()["status"] == "directory_unavailable"
    })
    .await;
    assert!(unready.is_some(), "/readyz kept saying ready");
    let stale = eventually(Duration::from_secs(5), || async {
        a.server.login(&key).await.status() == 503
    })
    .await;
    assert!(stale.is_some(), "logins kept working past max_staleness");
    // Tokens already issued still verify: /verify never waits on the database.
    assert_eq!(a.server.verify(&token).await.status(), 200);
    pg.restart().await;
    let back = Instant::now();
    let recovered = eventually(Duration::from_secs(5), || async {
        a.server.login(&key).await.status() == 200
    })
    .await;
    assert!(
        recovered.is_some(),
        "logins did not come back within 5 s of the database"
    );
    eprintln!("logins back {:?} after the database", back.elapsed());
    let r = a.call("GET", "/admin/v1/clients/during", None).await;
    assert_eq!(r.status(), 404, "the write refused with 503 left nothing");
}

/// 16 concurrent creates of overlapping ids on two replicas: each id is created once;
/// every other attempt is a 409, none is lost or doubled.
#[tokio::test]
async fn concurrent_creates_on_postgres_land_once_or_fail_loudly() {
    let pg = Postgres::start().await;
    let ops = api_key::generate("ops").unwrap();
    let a = std::sync::Arc::new(Replica::with_ops(&pg.url(), &ops, "").await);
    let b = std::sync::Arc::new(Replica::with_ops(&pg.url(), &ops, "").await);
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..16 {
        let r = if i % 2 == 0 { a.clone() } else { b.clone() };
        calls.spawn(async move {
            let id = format!("race-{}", i % 4);
            let resp = r
                .call("POST", "/admin/v1/clients", Some(json!({"id": id})))
                .await;
            let status = resp.status().as_u16();
            let key = resp.json::<Value>().await.unwrap()["api_key"]
                .as_str()
                .map(str::to_owned);
            (id, status, key)
        });
    }
    let mut created = std::collections::HashMap::new();
    while let Some(done) = calls.join_next().await {
        let (id, status, key) = done.unwrap();
        match status {
            201 => assert!(created.insert(id, key.unwrap()).is_none(), "created twice"),
            409 => {}
            other => panic!("{id}: {other}"),
        }
    }
    assert_eq!(created.len(), 4);
    for key in created.values() {
        let ok = eventually(Duration::from_secs(1), || async {
            b.server.login(key).await.status() == 200
        })
        .await;
        assert!(ok.is_some());
    }
}

/// `last_used_at` is written in batches, at most once a minute, never per request: a client
/// used twenty times shows one minute-truncated time after the next batch; one never used
/// shows none.
#[tokio::test]
async fn last_used_at_is_written_in_a_batch_within_a_minute() {
    let db = tempfile::tempdir().unwrap();
    let a = Replica::start(&sqlite_url(&db), "").await;
    let used = a.create_client("used").await;
    a.create_client("idle").await;
    let now = time::OffsetDateTime::now_utc();
    let minute = now
        .replace_second(0)
        .unwrap()
        .replace_nanosecond(0)
        .unwrap();
    for _ in 0..20 {
        assert_eq!(a.server.login(&used).await.status(), 200);
    }
    let get = |id: &'static str| {
        let a = &a;
        async move {
            let r = a
                .call("GET", &format!("/admin/v1/clients/{id}"), None)
                .await;
            assert_eq!(r.status(), 200);
            r.json::<Value>().await.unwrap()
        }
    };
    assert_eq!(
        get("used").await["last_used_at"],
        Value::Null,
        "not per request"
    );
    let written = eventually(Duration::from_secs(75), || async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        !get("used").await["last_used_at"].is_null()
    })
    .await;
    assert!(written.is_some(), "no batch within 75 s");
    let at = get("used").await["last_used_at"]
        .as_str()
        .unwrap()
        .to_owned();
    let at =
        time::OffsetDateTime::parse(&at, &time::format_description::well_known::Rfc3339).unwrap();
    assert_eq!((at.second(), at.nanosecond()), (0, 0), "{at}");
    assert!(at >= minute, "{at} before the logins ({minute})");
    assert_eq!(get("idle").await["last_used_at"], Value::Null);
}
