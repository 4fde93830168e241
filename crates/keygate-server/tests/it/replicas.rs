//! Several replicas sharing a real Redis (`redis-server` from Debian; `.ci/run` installs
//! it): a revocation or a failure counted on one replica holds on the other, and a dead or
//! silent Redis is handled by `store.on_unavailable`, never by a crash or a hang.
//!
//! A missing redis-server fails the test; `cargo xtask test` installs it.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::util::*;
use serde_json::Value;

fn redis_server() -> PathBuf {
    system_program(
        &["/usr/bin/redis-server", "/usr/local/bin/redis-server"],
        "redis-server",
    )
}

/// A redis-server on a port of its own; killed on drop.
struct Redis {
    child: Child,
    port: u16,
    bin: PathBuf,
}

impl Redis {
    async fn start(bin: PathBuf, port: u16) -> Self {
        let child = Command::new(&bin)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let redis = Self { child, port, bin };
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return redis;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("redis-server did not start on port {port}");
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    async fn restart(&mut self) {
        self.stop();
        *self = Redis::start(self.bin.clone(), self.port).await;
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Two replicas of one configuration (same secret, keys and store).
async fn replicas(store: &str, on_unavailable: &str) -> (TestServer, TestServer) {
    let key = keygate::api_key::generate("billing").unwrap();
    let extra = format!("[store]\nurl = \"{store}\"\non_unavailable = \"{on_unavailable}\"\n");
    let text = config_text(&key, user_hash(), &extra);
    (
        TestServer::with_config(text.clone(), key.clone()).await,
        TestServer::with_config(text, key).await,
    )
}

#[tokio::test]
async fn a_revocation_on_one_replica_is_honoured_by_the_other() {
    let bin = redis_server();
    let redis = Redis::start(bin, free_port()).await;
    let (a, b) = replicas(&redis.url(), "deny").await;
    let token = a.token().await;
    assert_eq!(
        b.verify(&token).await.status(),
        200,
        "tokens need no shared state"
    );
    let r = a.logout(&token).await;
    assert_eq!(r.status(), 204);
    // B checks Redis on every request: the very next request is refused.
    assert_eq!(b.verify(&token).await.status(), 401);

    // RFC 7009 revocation on B, honoured by A.
    let second = b.token().await;
    let r = b
        .post_form(
            "/revoke",
            Some(("billing", &b.billing_key)),
            &[("token", &second)],
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(a.verify(&second).await.status(), 401);
    let introspected: Value = a
        .post_form(
            "/introspect",
            Some(("billing", &a.billing_key)),
            &[("token", &second)],
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(introspected, serde_json::json!({"active": false}));
    assert_eq!(
        a.http.get(a.url("/readyz")).send().await.unwrap().status(),
        200
    );
}

#[tokio::test]
async fn failed_attempts_count_across_replicas() {
    let bin = redis_server();
    let redis = Redis::start(bin, free_port()).await;
    let (a, b) = replicas(&redis.url(), "deny").await;
    let wrong = keygate::api_key::generate("billing").unwrap();
    for _ in 0..3 {
        assert_eq!(a.login(&wrong).await.status(), 401);
    }
    for _ in 0..2 {
        assert_eq!(b.login(&wrong).await.status(), 401);
    }
    // Five failures in all, against one key id: both replicas now refuse it.
    let r = b.login(&b.billing_key).await;
    assert_eq!(r.status(), 429);
    retry_after(&r);
    assert_eq!(a.login(&a.billing_key).await.status(), 429);
}

#[tokio::test]
async fn a_dead_redis_fails_closed_and_recovers() {
    let bin = redis_server();
    let mut redis = Redis::start(bin, free_port()).await;
    let (a, _b) = replicas(&redis.url(), "deny").await;
    let token = a.token().await;
    assert_eq!(a.verify(&token).await.status(), 200);

    redis.stop();
    let r = a.verify(&token).await;
    assert_eq!(r.status(), 503, "deny: no revocation check, no pass");
    assert_eq!(r.headers()["retry-after"], "1");
    assert_eq!(error_of(r).await, "temporarily_unavailable");
    let r = a.http.get(a.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(
        r.json::<Value>().await.unwrap()["status"],
        "store_unavailable"
    );
    let r = a.logout(&token).await;
    assert_eq!(
        r.status(),
        503,
        "a revocation that cannot be stored is not acknowledged"
    );
    // Issuing needs no shared state; attempt limits fall back to this replica's counts.
    assert_eq!(a.login(&a.billing_key).await.status(), 200);
    assert_eq!(
        a.http.get(a.url("/healthz")).send().await.unwrap().status(),
        200
    );

    redis.restart().await;
    let mut recovered = false;
    for _ in 0..50 {
        if a.verify(&token).await.status() == 200 {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(recovered, "the store reconnected within 5 s");
    assert_eq!(
        a.http.get(a.url("/readyz")).send().await.unwrap().status(),
        200
    );
}

#[tokio::test]
async fn allow_lets_verified_tokens_through_while_redis_is_down() {
    let bin = redis_server();
    let mut redis = Redis::start(bin, free_port()).await;
    let (a, _b) = replicas(&redis.url(), "allow").await;
    let token = a.token().await;
    redis.stop();
    assert_eq!(a.verify(&token).await.status(), 200);
    let forged = format!("{}x", &token[..token.len() - 1]);
    assert_eq!(
        a.verify(&forged).await.status(),
        401,
        "signatures are still checked"
    );
}

#[tokio::test]
async fn a_silent_redis_costs_a_deadline_not_a_hang() {
    // Accepts connections and never answers, like a paused (SIGSTOP) server.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("redis://{}", silent.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = silent.accept().await {
            held.push(sock);
        }
    });
    let (a, _b) = replicas(&url, "deny").await;
    let token = a.token().await;
    let r = tokio::time::timeout(Duration::from_secs(10), a.verify(&token))
        .await
        .expect("an unanswering store must not hang the request");
    assert_eq!(r.status(), 503);
}
