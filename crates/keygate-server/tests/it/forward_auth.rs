//! `/verify` behind a real nginx with `auth_request`, as the README shows it: the upstream
//! is reached only with a valid token of the demanded role, and sees only the identity
//! headers keygate produced, whatever the client sent.
//!
//! nginx comes from Debian (`cargo xtask test` installs it); a missing nginx fails the test.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::util::*;
use axum::Router;
use axum::http::HeaderMap;
use axum::routing::get;
use serde_json::json;

fn nginx() -> PathBuf {
    system_program(&["/usr/sbin/nginx", "/usr/bin/nginx"], "nginx")
}

struct Nginx(Child);

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_nginx(bin: &Path, dir: &Path, port: u16, keygate: &str, upstream: &str) -> Nginx {
    let conf = format!(
        r#"daemon off;
master_process off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    server {{
        listen 127.0.0.1:{port};
        location = /_auth {{
            internal;
            proxy_pass {keygate}/verify?role=service;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
        }}
        location /orders/ {{
            auth_request /_auth;
            auth_request_set $sub $upstream_http_x_auth_subject;
            auth_request_set $scope $upstream_http_x_auth_scope;
            proxy_set_header X-Auth-Subject $sub;
            proxy_set_header X-Auth-Scope $scope;
            proxy_pass {upstream};
        }}
    }}
}}
"#,
        dir = dir.display()
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf).unwrap();
    let child = Command::new(bin)
        .arg("-c")
        .arg(&path)
        .arg("-p")
        .arg(dir)
        .arg("-e")
        .arg(dir.join("error.log"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Nginx(child)
}

#[tokio::test]
async fn nginx_auth_request_lets_only_valid_tokens_through_with_keygate_identity() {
    let bin = nginx();
    let s = TestServer::start().await;

    // The protected API: echoes the identity headers it received, counts its hits.
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let app = Router::new().route(
        "/orders/{id}",
        get(move |headers: HeaderMap| {
            let counter = counter.clone();
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                let h = |n: &str| {
                    headers
                        .get(n)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned)
                };
                axum::Json(json!({"subject": h("x-auth-subject"), "scope": h("x-auth-scope")}))
            }
        }),
    );
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream_url = format!("http://{}", upstream.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(upstream, app).await });

    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _nginx = start_nginx(&bin, dir.path(), port, &s.base, &upstream_url);
    let front = format!("http://127.0.0.1:{port}/orders/42");
    let http = reqwest::Client::new();
    let mut up = false;
    for _ in 0..100 {
        if http.get(&front).send().await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        up,
        "nginx did not start: {}",
        std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default()
    );
    hits.store(0, Ordering::SeqCst);

    // A valid token of role `service`: through, with keygate's identity, not the client's.
    let token = s.token().await;
    let r = http
        .get(&front)
        .bearer_auth(&token)
        .header("X-Auth-Subject", "admin")
        .header("X-Auth-Scope", "everything")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap(),
        json!({"subject": "billing", "scope": "orders:read orders:write"})
    );
    assert_eq!(hits.load(Ordering::SeqCst), 1);

    // No token, a forged one, a revoked one, a valid token of another role: never through.
    let forged = sign_hs256(
        r#"{"alg":"HS256","typ":"at+jwt"}"#,
        &claims_with(json!({})),
        b"not-the-secret-not-the-secret-not-the-secret",
    );
    let alice = s
        .token_form(&[
            ("grant_type", "password"),
            ("username", "alice"),
            ("password", USER_PASSWORD),
        ])
        .await
        .json::<serde_json::Value>()
        .await
        .unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let revoked = s.token().await;
    assert_eq!(s.logout(&revoked).await.status(), 204);
    let cases: [(Option<&str>, u16); 4] = [
        (None, 401),
        (Some(forged.as_str()), 401),
        (Some(revoked.as_str()), 401),
        (Some(alice.as_str()), 403),
    ];
    for (bearer, status) in cases {
        let mut req = http.get(&front).header("X-Auth-Subject", "billing");
        if let Some(t) = bearer {
            req = req.bearer_auth(t);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), status, "{bearer:?}");
    }
    assert_eq!(
        hits.load(Ordering::SeqCst),
        1,
        "refused requests never reached the API"
    );
}
