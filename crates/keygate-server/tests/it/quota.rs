//! Per-client quotas (README, Quotas): exact under concurrency, the IETF RateLimit header fields
//! byte for byte, `/login`, `/token`, `/verify` and `/userinfo` counted against one quota,
//! and clients without a quota untouched.

use std::sync::Arc;

use crate::util::*;
use serde_json::{Value, json};

/// The base configuration with `billing` limited to `billing_quota`; `extra` as in
/// `config_text` (lines right after it land in `[limits]`).
pub(crate) fn quota_config(key: &str, billing_quota: &str, extra: &str) -> String {
    config_text(key, user_hash(), extra).replacen(
        "scopes = [\"orders:read\", \"orders:write\"]\n",
        &format!(
            "scopes = [\"orders:read\", \"orders:write\"]\nrate_limit = \"{billing_quota}\"\n"
        ),
        1,
    )
}

async fn server_with_quota(billing_quota: &str, extra: &str) -> TestServer {
    let key = keygate::api_key::generate("billing").unwrap();
    TestServer::with_config(quota_config(&key, billing_quota, extra), key).await
}

fn header(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
}

#[tokio::test]
async fn counted_answers_carry_the_ratelimit_fields_exactly() {
    let s = server_with_quota("50/1h", "").await;
    // 50 an hour: one every 72 s, a burst of 50. The first answer leaves 49, and the
    // quota is whole again 72 s later.
    let r = s.login(&s.billing_key).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        header(&r, "ratelimit-policy").as_deref(),
        Some("\"default\";q=50;w=3600")
    );
    assert_eq!(
        header(&r, "ratelimit").as_deref(),
        Some("\"default\";r=49;t=72")
    );
    let token: Value = r.json().await.unwrap();
    let token = token["access_token"].as_str().unwrap().to_owned();
    let r = s.verify(&token).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        header(&r, "ratelimit").as_deref(),
        Some("\"default\";r=48;t=144")
    );
    let r = s.get_with_token("/userinfo", &token).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        header(&r, "ratelimit").as_deref(),
        Some("\"default\";r=47;t=216")
    );
    // An unmet demand is still an answer about this client's token: counted, with fields.
    let r = s.get_with_token("/verify?role=admin", &token).await;
    assert_eq!(r.status(), 403);
    assert_eq!(
        header(&r, "ratelimit").as_deref(),
        Some("\"default\";r=46;t=288")
    );
    let r = s
        .post_form(
            "/token",
            Some(("billing", &s.billing_key)),
            &[("grant_type", "client_credentials")],
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        header(&r, "ratelimit").as_deref(),
        Some("\"default\";r=45;t=360")
    );
}

#[tokio::test]
async fn over_quota_is_429_rate_limited_with_retry_after() {
    let s = server_with_quota("2/1m", "").await;
    let token = s.token().await;
    assert_eq!(s.verify(&token).await.status(), 200);
    let r = s.verify(&token).await;
    assert_eq!(r.status(), 429);
    // Two a minute: the next one in 30 s; the quota is whole in 60 s.
    assert_eq!(header(&r, "retry-after").as_deref(), Some("30"));
    assert_eq!(
        header(&r, "ratelimit-policy").as_deref(),
        Some("\"default\";q=2;w=60")
    );
    assert_eq!(
        header(&r, "ratelimit").as_deref(),
        Some("\"default\";r=0;t=60")
    );
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"error": "rate_limited", "error_description": "the client's quota is used up; retry later"})
    );
    // The same quota holds at /login and /token: a new token does not buy more.
    let r = s.login(&s.billing_key).await;
    assert_eq!(r.status(), 429);
    assert_eq!(error_of(r).await, "rate_limited");
    let r = s
        .post_form(
            "/token",
            Some(("billing", &s.billing_key)),
            &[("grant_type", "client_credentials")],
        )
        .await;
    assert_eq!(r.status(), 429);
    assert_eq!(s.get_with_token("/userinfo", &token).await.status(), 429);
    // The recorder is one per test process: other tests count too.
    let metrics = s.text("/metrics").await;
    for route in ["/login", "/token", "/verify", "/userinfo"] {
        assert!(
            metrics.contains(&format!("keygate_quota_refused_total{{route=\"{route}\"}}")),
            "{metrics}"
        );
    }
}

#[tokio::test]
async fn a_concurrent_burst_never_gets_more_than_the_quota() {
    let s = Arc::new(server_with_quota("50/1h", "").await);
    let token = Arc::new(s.token().await);
    let mut tasks = Vec::new();
    for _ in 0..200 {
        let (s, token) = (s.clone(), token.clone());
        tasks.push(tokio::spawn(async move {
            s.verify(&token).await.status().as_u16()
        }));
    }
    let mut ok = 0;
    let mut limited = 0;
    for t in tasks {
        match t.await.unwrap() {
            200 => ok += 1,
            429 => limited += 1,
            other => panic!("unexpected {other}"),
        }
    }
    // The login took one of the 50.
    assert_eq!((ok, limited), (49, 151));
}

#[tokio::test]
async fn clients_without_a_quota_get_no_ratelimit_fields() {
    let s = server_with_quota("50/1h", "").await;
    let r = s.login(SEED_KEY).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "ratelimit"), None);
    let token: Value = r.json().await.unwrap();
    let token = token["access_token"].as_str().unwrap();
    for _ in 0..60 {
        let r = s.verify(token).await;
        assert_eq!(r.status(), 200);
        assert_eq!(header(&r, "ratelimit"), None);
        assert_eq!(header(&r, "ratelimit-policy"), None);
    }
    // Users are not clients: the password grant is never counted.
    let r = s
        .token_form(&[
            ("grant_type", "password"),
            ("username", "alice"),
            ("password", USER_PASSWORD),
        ])
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "ratelimit"), None);
}

#[tokio::test]
async fn the_default_quota_covers_clients_without_their_own() {
    // Right after `[limits]`'s lines: this is `limits.default_rate_limit`.
    let s = server_with_quota("50/1h", "default_rate_limit = \"3/1m\"").await;
    let r = s.login(SEED_KEY).await;
    assert_eq!(
        header(&r, "ratelimit-policy").as_deref(),
        Some("\"default\";q=3;w=60")
    );
    let r = s.login(&s.billing_key).await;
    assert_eq!(
        header(&r, "ratelimit-policy").as_deref(),
        Some("\"default\";q=50;w=3600"),
        "a client's own quota wins"
    );
    assert_eq!(s.login(SEED_KEY).await.status(), 200);
    assert_eq!(s.login(SEED_KEY).await.status(), 200);
    assert_eq!(s.login(SEED_KEY).await.status(), 429);
}

#[tokio::test]
async fn zero_or_malformed_quotas_are_refused_naming_the_setting() {
    let key = keygate::api_key::generate("billing").unwrap();
    for (quota, extra, setting) in [
        ("0/1m", "", "clients[0].rate_limit"),
        ("ten/1m", "", "clients[0].rate_limit"),
        ("10/0s", "", "clients[0].rate_limit"),
        (
            "10/1m",
            "default_rate_limit = \"5\"",
            "limits.default_rate_limit",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keygate.toml");
        std::fs::write(&path, quota_config(&key, quota, extra)).unwrap();
        let err = keygate_server::AppState::from_path(path).unwrap_err();
        assert_eq!(
            err.setting,
            format!("{}: {setting}", dir.path().join("keygate.toml").display()),
            "{err}"
        );
    }
}

/// A redis-server of this test's own on a free port; killed on drop.
struct Redis(std::process::Child, u16);

impl Redis {
    async fn start() -> Self {
        let bin = system_program(
            &["/usr/bin/redis-server", "/usr/local/bin/redis-server"],
            "redis-server",
        );
        let port = free_port();
        let child = std::process::Command::new(bin)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let redis = Self(child, port);
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return redis;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("redis-server did not start on port {port}");
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn two_replicas_share_one_quota_through_redis() {
    let redis = Redis::start().await;
    let key = keygate::api_key::generate("billing").unwrap();
    let store = format!("[store]\nurl = \"redis://127.0.0.1:{}\"\n", redis.1);
    let text = quota_config(&key, "20/1h", &store);
    let a = Arc::new(TestServer::with_config(text.clone(), key.clone()).await);
    let b = Arc::new(TestServer::with_config(text, key).await);
    let token = Arc::new(a.token().await);
    // One on A left 19; B sees the same count.
    let r = b.verify(&token).await;
    assert_eq!(
        header(&r, "ratelimit").as_deref(),
        Some("\"default\";r=18;t=360")
    );
    // 100 at once, half on each replica: exactly the 18 left get through.
    let mut tasks = Vec::new();
    for i in 0..100 {
        let s = if i % 2 == 0 { a.clone() } else { b.clone() };
        let token = token.clone();
        tasks.push(tokio::spawn(async move {
            s.verify(&token).await.status().as_u16()
        }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            200 => ok += 1,
            429 => {}
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(ok, 18);
    assert_eq!(a.login(&a.billing_key).await.status(), 429);
    assert_eq!(b.login(&b.billing_key).await.status(), 429);
}

/// Requests of one client arriving together on one replica share round trips to Redis (one
/// script counts a batch), and the batches still grant exactly what the quota has left.
#[tokio::test]
async fn concurrent_requests_of_a_client_share_round_trips_and_stay_exact() {
    let redis = crate::redis_servers::Redis::start(&[]).await;
    let key = keygate::api_key::generate("billing").unwrap();
    let store = format!("[store]\nurl = \"{}\"\n", redis.url());
    let s = Arc::new(TestServer::with_config(quota_config(&key, "60/1h", &store), key).await);
    let token = Arc::new(s.token().await);
    let evals = || async {
        redis
            .command_calls()
            .await
            .get("eval")
            .copied()
            .unwrap_or(0)
    };
    let before = evals().await;
    let mut tasks = Vec::new();
    for _ in 0..200 {
        let (s, token) = (s.clone(), token.clone());
        tasks.push(tokio::spawn(async move {
            s.verify(&token).await.status().as_u16()
        }));
    }
    let (mut ok, mut limited) = (0, 0);
    for t in tasks {
        match t.await.unwrap() {
            200 => ok += 1,
            429 => limited += 1,
            other => panic!("unexpected {other}"),
        }
    }
    // The login took one of the 60.
    assert_eq!((ok, limited), (59, 141));
    let scripts = evals().await - before;
    assert!(
        scripts < 200,
        "200 requests cost {scripts} scripts: none were counted together"
    );
    println!("200 concurrent requests of one client: {scripts} quota scripts");
}

/// The README's nginx configuration: `auth_request` answers 500 for any status but 2xx, 401
/// and 403, so the 429 is turned back into a 429 with keygate's fields.
const NGINX_QUOTA_LOCATIONS: &str = r#"
        location = /_auth {
            internal;
            proxy_pass KEYGATE/verify;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
        }
        location /orders/ {
            auth_request /_auth;
            auth_request_set $auth_status $upstream_status;
            auth_request_set $ratelimit $upstream_http_ratelimit;
            auth_request_set $ratelimit_policy $upstream_http_ratelimit_policy;
            auth_request_set $retry_after $upstream_http_retry_after;
            add_header RateLimit $ratelimit always;
            add_header RateLimit-Policy $ratelimit_policy always;
            error_page 500 = @keygate_error;
            proxy_pass UPSTREAM;
        }
        location @keygate_error {
            default_type application/json;
            if ($auth_status = 429) {
                add_header Retry-After $retry_after always;
                add_header RateLimit $ratelimit always;
                add_header RateLimit-Policy $ratelimit_policy always;
                return 429 '{"error":"rate_limited","error_description":"the client\'s quota is used up; retry later"}';
            }
            return 500 '{"error":"server_error","error_description":"internal error"}';
        }
"#;

/// nginx in the foreground in `dir`; killed on drop.
struct Nginx(std::process::Child);

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_nginx(dir: &std::path::Path, port: u16, locations: &str) -> Nginx {
    let bin = system_program(&["/usr/sbin/nginx", "/usr/bin/nginx"], "nginx");
    let d = dir.display();
    let conf = format!(
        "daemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
         events {{ worker_connections 64; }}\nhttp {{\n    access_log off;\n\
         client_body_temp_path {d}/body;\n    proxy_temp_path {d}/proxy;\n\
         fastcgi_temp_path {d}/fastcgi;\n    uwsgi_temp_path {d}/uwsgi;\n    scgi_temp_path {d}/scgi;\n\
         server {{\n        listen 127.0.0.1:{port};\n{locations}\n    }}\n}}\n"
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf).unwrap();
    let child = std::process::Command::new(bin)
        .arg("-c")
        .arg(&path)
        .arg("-p")
        .arg(dir)
        .arg("-e")
        .arg(dir.join("error.log"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    Nginx(child)
}

#[tokio::test]
async fn nginx_auth_request_passes_the_429_and_its_fields_on() {
    let s = server_with_quota("2/1h", "").await;
    let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = hits.clone();
    let app = axum::Router::new().route(
        "/orders/{id}",
        axum::routing::get(move || {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async { "order" }
        }),
    );
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream_url = format!("http://{}", upstream.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(upstream, app).await });

    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let locations = NGINX_QUOTA_LOCATIONS
        .replace("KEYGATE", &s.base)
        .replace("UPSTREAM", &upstream_url);
    let _nginx = start_nginx(dir.path(), port, &locations);
    let front = format!("http://127.0.0.1:{port}/orders/42");
    let http = reqwest::Client::new();
    let mut up = false;
    for _ in 0..100 {
        if http.get(&front).send().await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        up,
        "nginx did not start: {}",
        std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default()
    );

    let token = s.token().await; // one of the two
    let r = http.get(&front).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        header(&r, "ratelimit-policy").as_deref(),
        Some("\"default\";q=2;w=3600")
    );
    assert_eq!(
        header(&r, "ratelimit").as_deref(),
        Some("\"default\";r=0;t=3600")
    );
    assert_eq!(r.text().await.unwrap(), "order");

    let r = http.get(&front).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(header(&r, "retry-after").as_deref(), Some("1800"));
    assert_eq!(
        header(&r, "ratelimit-policy").as_deref(),
        Some("\"default\";q=2;w=3600")
    );
    assert_eq!(
        header(&r, "ratelimit").as_deref(),
        Some("\"default\";r=0;t=3600")
    );
    assert_eq!(error_of(r).await, "rate_limited");
    assert_eq!(
        hits.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "the refused request never reached the API"
    );
    // A token keygate refuses is still a 401, not mistaken for the quota.
    let r = http
        .get(&front)
        .bearer_auth("not-a-token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn an_unreachable_store_follows_on_unavailable_for_quotas() {
    let mut redis = Redis::start().await;
    let key = keygate::api_key::generate("billing").unwrap();
    let store = |policy: &str| {
        format!(
            "[store]\nurl = \"redis://127.0.0.1:{}\"\non_unavailable = \"{policy}\"\n",
            redis.1
        )
    };
    let deny =
        TestServer::with_config(quota_config(&key, "5/1h", &store("deny")), key.clone()).await;
    let allow = TestServer::with_config(quota_config(&key, "5/1h", &store("allow")), key).await;
    let token = allow.token().await;
    let _ = redis.0.kill();
    let _ = redis.0.wait();

    // deny: a quota that cannot be counted is not granted.
    let r = deny.login(&deny.billing_key).await;
    assert_eq!(r.status(), 503);
    assert_eq!(error_of(r).await, "temporarily_unavailable");
    // allow: this replica counts alone, from a whole quota, and still answers with the fields.
    let r = allow.verify(&token).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        header(&r, "ratelimit").as_deref(),
        Some("\"default\";r=4;t=720")
    );
    for _ in 0..4 {
        assert_eq!(allow.verify(&token).await.status(), 200);
    }
    assert_eq!(allow.verify(&token).await.status(), 429);
}
