//! Several replicas sharing one real Redis (`redis-server` from Debian): a revocation or a
//! failure counted on one replica holds on the others; `/verify` reads each replica's
//! local copy of the revocation list and never waits on Redis; a dead or silent Redis is
//! handled by `store.on_unavailable`, never by a crash or a hang.

use std::time::{Duration, Instant};

use crate::redis_servers::*;
use crate::util::*;
use serde_json::Value;

async fn replicas(redis: &Redis, on_unavailable: &str) -> (TestServer, TestServer) {
    let store = format!(
        "[store]\nurl = \"{}\"\non_unavailable = \"{on_unavailable}\"\n",
        redis.url()
    );
    let mut r = replicas_with(&store, 2).await;
    let b = r.pop().unwrap();
    (r.pop().unwrap(), b)
}

/// The claims of a token, read without checking (the test signed nothing itself).
fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&unb64(payload)).unwrap()
}

#[tokio::test]
async fn a_revocation_on_one_replica_is_honoured_by_the_other() {
    let redis = Redis::start(&[]).await;
    let (a, b) = replicas(&redis, "deny").await;
    let token = a.token().await;
    assert_eq!(
        b.verify(&token).await.status(),
        200,
        "tokens need no shared state"
    );
    assert_eq!(a.logout(&token).await.status(), 204);
    assert_eq!(
        a.verify(&token).await.status(),
        401,
        "refused at once where revoked"
    );
    let took = eventually(Duration::from_secs(1), || async {
        b.verify(&token).await.status() == 401
    })
    .await;
    assert!(took.is_some(), "B refuses within a second");
    assert_invalid(&b, &token, "a token revoked on A").await;

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
    let took = eventually(Duration::from_secs(1), || async {
        a.verify(&second).await.status() == 401
    })
    .await;
    assert!(took.is_some());
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
async fn verify_makes_no_redis_round_trip() {
    let redis = Redis::start(&[]).await;
    let (a, b) = replicas(&redis, "deny").await;
    let token = a.token().await;
    let revoked = a.token().await;
    assert_eq!(a.logout(&revoked).await.status(), 204);
    eventually(Duration::from_secs(1), || async {
        b.verify(&revoked).await.status() == 401
    })
    .await
    .unwrap();

    let before = redis.command_calls().await;
    let started = Instant::now();
    for _ in 0..500 {
        assert_eq!(b.verify(&token).await.status(), 200);
        assert_eq!(b.get_with_token("/userinfo", &token).await.status(), 200);
        assert_eq!(a.verify(&revoked).await.status(), 401);
    }
    let elapsed = started.elapsed();
    let after = redis.command_calls().await;
    let mut sent: Vec<(String, u64)> = after
        .iter()
        .map(|(cmd, n)| (cmd.clone(), n - before.get(cmd).copied().unwrap_or(0)))
        .filter(|(cmd, n)| *n > 0 && cmd != "info")
        .collect();
    // The only traffic is each replica's subscription heartbeat: one PING per 500 ms.
    let heartbeats = 2 * (elapsed.as_millis() as u64 / 500 + 2);
    if let Some(i) = sent.iter().position(|(cmd, _)| cmd == "ping") {
        let (_, pings) = sent.remove(i);
        assert!(pings <= heartbeats, "{pings} pings in {elapsed:?}");
    }
    assert_eq!(
        sent,
        vec![],
        "1 500 token checks sent these commands to Redis"
    );
}

#[tokio::test]
async fn a_thousand_revocations_reach_the_other_replica_within_a_second() {
    let redis = Redis::start(&[]).await;
    let (a, b) = replicas(&redis, "deny").await;
    let mut tokens = Vec::with_capacity(1000);
    for _ in 0..1000 {
        tokens.push(a.token().await);
    }
    let mut took = Vec::with_capacity(tokens.len());
    for token in &tokens {
        let started = Instant::now();
        assert_eq!(a.logout(token).await.status(), 204);
        while b.verify(token).await.status() != 401 {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "never refused on B"
            );
        }
        took.push(started.elapsed());
    }
    took.sort();
    let at = |q: f64| took[((took.len() as f64 * q) as usize).min(took.len() - 1)];
    let (p50, p99, max) = (at(0.5), at(0.99), took[took.len() - 1]);
    // The figures for docs/benchmarks.md (debug build, both replicas in this process).
    eprintln!(
        "revocation A → refused on B, 1000 revocations: p50 {p50:?}, p99 {p99:?}, max {max:?}"
    );
    assert!(p99 <= Duration::from_secs(1), "p99 {p99:?}");
}

#[tokio::test]
async fn failed_attempts_count_across_replicas() {
    let redis = Redis::start(&[]).await;
    let (a, b) = replicas(&redis, "deny").await;
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
    let mut redis = Redis::start(&[]).await;
    let (a, _b) = replicas(&redis, "deny").await;
    let token = a.token().await;
    assert_eq!(a.verify(&token).await.status(), 200);

    redis.kill();
    let closed = eventually(Duration::from_secs(2), || async {
        a.verify(&token).await.status() == 503
    })
    .await;
    assert!(closed.is_some(), "deny: a copy out of sync is no pass");
    let r = a.verify(&token).await;
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
        "a revocation that cannot be checked or stored is refused"
    );
    // Logins need the list too (a credential may be revoked in the store): deny says 503.
    assert_eq!(a.login(&a.billing_key).await.status(), 503);
    assert_eq!(
        a.http.get(a.url("/healthz")).send().await.unwrap().status(),
        200
    );

    redis.restart().await;
    let fresh = eventually(Duration::from_secs(5), || async {
        a.login(&a.billing_key).await.status() == 200
    })
    .await;
    assert!(fresh.is_some(), "back within 5 s");
    assert_eq!(
        a.http.get(a.url("/readyz")).send().await.unwrap().status(),
        200
    );
    assert_eq!(a.verify(&token).await.status(), 200);
}

#[tokio::test]
async fn allow_answers_from_the_copy_while_redis_is_down() {
    let mut redis = Redis::start(&[]).await;
    let (a, b) = replicas(&redis, "allow").await;
    let revoked = a.token().await;
    let token = a.token().await;
    assert_eq!(a.logout(&revoked).await.status(), 204);
    eventually(Duration::from_secs(1), || async {
        b.verify(&revoked).await.status() == 401
    })
    .await
    .unwrap();
    redis.kill();
    eventually(Duration::from_secs(2), || async {
        b.http.get(b.url("/readyz")).send().await.unwrap().status() == 503
    })
    .await
    .expect("the outage is noticed");
    assert_eq!(b.verify(&token).await.status(), 200);
    assert_eq!(
        b.verify(&revoked).await.status(),
        401,
        "the copy still refuses what it holds"
    );
    let forged = format!("{}x", &token[..token.len() - 1]);
    assert_eq!(
        b.verify(&forged).await.status(),
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
    let key = keygate::api_key::generate("billing").unwrap();
    let text = config_text(&key, user_hash(), &format!("[store]\nurl = \"{url}\"\n"));
    let a = TestServer::with_config(text, key).await;
    let started = Instant::now();
    let r = a.login(&a.billing_key).await;
    assert_eq!(r.status(), 503, "never in sync, so deny");
    let r = a
        .post_form(
            "/token",
            None,
            &[
                ("grant_type", "password"),
                ("username", "alice"),
                ("password", "wrong"),
            ],
        )
        .await;
    assert_eq!(
        r.status(),
        400,
        "the attempt limiter falls back to local counts after store.timeout"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn the_local_copy_survives_a_store_restart_and_writes_back() {
    let mut redis = Redis::start(&[]).await;
    let (a, b) = replicas(&redis, "deny").await;
    let token = a.token().await;
    assert_eq!(a.logout(&token).await.status(), 204);
    eventually(Duration::from_secs(1), || async {
        b.verify(&token).await.status() == 401
    })
    .await
    .unwrap();

    // Restarted without persistence: Redis comes back empty.
    redis.restart().await;
    a.wait_in_sync().await;
    b.wait_in_sync().await;
    assert_eq!(a.verify(&token).await.status(), 401);
    assert_eq!(b.verify(&token).await.status(), 401);
    // The replicas wrote it back, so a replica started now learns it from the store.
    let text = std::fs::read_to_string(&a.config_path).unwrap();
    let c = TestServer::with_config(text, a.billing_key.clone()).await;
    c.wait_in_sync().await;
    assert_eq!(c.verify(&token).await.status(), 401);
}

#[tokio::test]
async fn revocations_outlive_every_token_they_cover() {
    let redis = Redis::start(&[]).await;
    let (a, _b) = replicas(&redis, "deny").await;
    let token = a.token().await;
    assert_eq!(a.logout(&token).await.status(), 204);
    let exp = claims(&token)["exp"].as_u64().unwrap();
    let mut c = redis.connection().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("keygate:*:revoked")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(keys.len(), 1);
    let entries: Vec<(String, u64)> = redis::cmd("ZRANGE")
        .arg(&keys[0])
        .arg(0)
        .arg(-1)
        .arg("WITHSCORES")
        .query_async(&mut c)
        .await
        .unwrap();
    // The verifier accepts up to and including exp + leeway (30 s): one second more.
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].1, exp + 30 + 1);
    let ttl: i64 = redis::cmd("PTTL")
        .arg(&keys[0])
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(
        ttl, -1,
        "the list itself never expires (or gets evicted under volatile-*)"
    );
}

#[tokio::test]
async fn attempt_counters_always_expire() {
    let redis = Redis::start(&[]).await;
    let (a, _b) = replicas(&redis, "deny").await;
    let text = std::fs::read_to_string(&a.config_path)
        .unwrap()
        .replace("window = \"1m\"", "window = \"1s\"");
    a.rewrite_config(&text).unwrap();
    let wrong = keygate::api_key::generate("billing").unwrap();
    let mut c = redis.connection().await;
    let started = Instant::now();
    let mut checked = 0;
    while started.elapsed() < Duration::from_secs(3) {
        let _ = a.login(&wrong).await;
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("keygate:*:attempts:*")
            .query_async(&mut c)
            .await
            .unwrap();
        for k in keys {
            let ttl: i64 = redis::cmd("PTTL")
                .arg(&k)
                .query_async(&mut c)
                .await
                .unwrap();
            assert!(ttl != -1, "a counter without expiry: {k}");
            checked += 1;
        }
    }
    assert!(checked > 10);

    // A counter left without a TTL (by an older keygate) heals at the next decision.
    // First the 1 s counters above expire (Redis drops them), so that these start afresh;
    // then a longer window, so that a loaded machine cannot let it end mid-check.
    let expired = eventually(Duration::from_secs(5), || {
        let mut c = c.clone();
        async move {
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg("keygate:*:attempts:*")
                .query_async(&mut c)
                .await
                .unwrap();
            keys.is_empty()
        }
    })
    .await;
    assert!(expired.is_some(), "1 s counters still there 5 s later");
    a.rewrite_config(&text.replace("window = \"1s\"", "window = \"10s\""))
        .unwrap();
    for _ in 0..5 {
        assert_eq!(a.login(&wrong).await.status(), 401);
    }
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("keygate:*:attempts:*")
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(!keys.is_empty());
    for k in &keys {
        let _: () = redis::cmd("PERSIST")
            .arg(k)
            .query_async(&mut c)
            .await
            .unwrap();
    }
    assert_eq!(a.login(&a.billing_key).await.status(), 429);
    for k in &keys {
        let ttl: i64 = redis::cmd("PTTL").arg(k).query_async(&mut c).await.unwrap();
        assert!((1..=10_000).contains(&ttl), "{k} healed: {ttl}");
    }
}

#[tokio::test]
async fn two_deployments_share_one_redis_without_colliding() {
    let redis = Redis::start(&[]).await;
    let store = format!("[store]\nurl = \"{}\"\n", redis.url());
    let key = keygate::api_key::generate("billing").unwrap();
    let text = config_text(&key, user_hash(), &store);
    let one = TestServer::with_config(text.clone(), key.clone()).await;
    let other = TestServer::with_config(
        text.replace(
            "issuer = \"https://keygate.test\"",
            "issuer = \"https://other.test\"",
        ),
        key.clone(),
    )
    .await;
    one.wait_in_sync().await;
    other.wait_in_sync().await;
    let wrong = keygate::api_key::generate("billing").unwrap();
    for _ in 0..5 {
        assert_eq!(one.login(&wrong).await.status(), 401);
    }
    assert_eq!(one.login(&key).await.status(), 429);
    assert_eq!(
        other.login(&key).await.status(),
        200,
        "another deployment's counters"
    );
}

/// A token of the `legacy` client from `s`.
async fn legacy_token(s: &TestServer) -> String {
    let r = s.login(SEED_KEY).await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    body["access_token"].as_str().unwrap().to_owned()
}

/// The key names of the test deployment (`keygate:{<ns>}:`).
fn key(name: &str) -> String {
    use sha2::Digest;
    let ns = &hex::encode(sha2::Sha256::digest(ISSUER.as_bytes()))[..16];
    format!("keygate:{{{ns}}}:{name}")
}

/// Item: one client cannot fill the store's list. Past its share (3 here) its token
/// revocations are folded into one principal revocation, on every replica; another
/// client's logout still answers 204 and travels.
#[tokio::test]
async fn a_client_past_its_share_is_folded_in_the_store_and_others_still_revoke() {
    let redis = Redis::start(&[]).await;
    let store = format!(
        "revocations_per_principal = 3\n\n[store]\nurl = \"{}\"\n",
        redis.url()
    );
    let servers = replicas_with(&store, 2).await;
    let (a, b) = (&servers[0], &servers[1]);
    let kept = a.token().await;
    let legacy_live = legacy_token(a).await;
    for _ in 0..3 {
        let t = a.token().await;
        assert_eq!(a.logout(&t).await.status(), 204);
    }
    let mut c = redis.connection().await;
    let held: u64 = redis::cmd("ZCARD")
        .arg(key("revoked"))
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(held, 3);
    assert_eq!(b.verify(&kept).await.status(), 200, "within its share");
    let fourth = a.token().await;
    assert_eq!(a.logout(&fourth).await.status(), 204, "folded, not refused");
    for s in [a, b] {
        let took = eventually(Duration::from_secs(1), || async {
            s.verify(&kept).await.status() == 401 && s.verify(&fourth).await.status() == 401
        })
        .await;
        assert!(took.is_some(), "billing's tokens refused on every replica");
        assert_eq!(s.verify(&legacy_live).await.status(), 200);
    }
    let held: u64 = redis::cmd("ZCARD")
        .arg(key("revoked"))
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(held, 0, "billing's entries left the list");
    let folds: Vec<String> = redis::cmd("ZRANGE")
        .arg(key("principals"))
        .arg(0)
        .arg(-1)
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(folds, vec!["logout billing".to_owned()]);

    let legacy = legacy_token(b).await;
    assert_eq!(b.logout(&legacy).await.status(), 204);
    let took = eventually(Duration::from_secs(1), || async {
        a.verify(&legacy).await.status() == 401
    })
    .await;
    assert!(took.is_some(), "another client's logout still travels");
    assert_eq!(a.verify(&legacy_live).await.status(), 200);
    // A replica started now reads the fold from the store.
    let text = std::fs::read_to_string(&a.config_path).unwrap();
    let c3 = TestServer::with_config(text, a.billing_key.clone()).await;
    c3.wait_in_sync().await;
    assert_eq!(c3.verify(&kept).await.status(), 401);
    assert_eq!(c3.verify(&legacy_live).await.status(), 200);
}

/// `key rotate --grace 0s` revokes the old key at a whole second T (the new key's
/// `not_before`): tokens with `iat == T` were issued at or after T and pass; a
/// revocation within a second still refuses that second's tokens.
#[tokio::test]
async fn a_principal_revocation_on_a_whole_second_spares_the_tokens_of_that_second() {
    let redis = Redis::start(&[]).await;
    let (a, b) = replicas(&redis, "deny").await;
    let real = a.token().await;
    let header = String::from_utf8(unb64(real.split('.').next().unwrap())).unwrap();
    let t = now() - 5;
    let signed = |iat: u64, n: &str| {
        let claims =
            claims_with(serde_json::json!({"iat": iat, "nbf": iat, "jti": format!("r-{n}")}));
        sign_hs256(&header, &claims, SECRET.as_bytes())
    };
    let (before, same, after) = (
        signed(t - 1, "before"),
        signed(t, "same"),
        signed(t + 1, "after"),
    );
    for s in [&a, &b] {
        for tok in [&before, &same, &after] {
            assert_eq!(s.verify(tok).await.status(), 200);
        }
    }
    let publish = |at_ms: i128| {
        let path = a.config_path.clone();
        tokio::task::spawn_blocking(move || {
            let pending = keygate_server::store::PendingRevocation::prepare(&path, "billing")
                .unwrap()
                .unwrap();
            let at = time::OffsetDateTime::from_unix_timestamp_nanos(at_ms * 1_000_000).unwrap();
            pending.publish(at).unwrap();
        })
    };
    publish(i128::from(t) * 1000).await.unwrap();
    for s in [&a, &b] {
        let took = eventually(Duration::from_secs(1), || async {
            s.verify(&before).await.status() == 401
        })
        .await;
        assert!(
            took.is_some(),
            "a token from before the revocation is refused"
        );
        assert_eq!(
            s.verify(&same).await.status(),
            200,
            "iat == the revocation's whole second: issued after it"
        );
    }
    publish(i128::from(t) * 1000 + 1).await.unwrap();
    for s in [&a, &b] {
        let took = eventually(Duration::from_secs(1), || async {
            s.verify(&same).await.status() == 401
        })
        .await;
        assert!(
            took.is_some(),
            "may predate a revocation made within its second"
        );
        assert_eq!(s.verify(&after).await.status(), 200);
    }
}

/// Principal revocations are pruned once every token they cover has expired (ttl 30 m +
/// leeway 30 s + 1 s after them), like token revocations.
#[tokio::test]
async fn principal_revocations_expire_once_no_token_they_cover_can_verify() {
    let redis = Redis::start(&[]).await;
    let (a, _b) = replicas(&redis, "deny").await;
    let now_ms = now() * 1000;
    let mut c = redis.connection().await;
    let _: () = redis::cmd("ZADD")
        .arg(key("principals"))
        .arg(now_ms - (1800 + 30 + 1) * 1000 - 2000)
        .arg("old gone-client")
        .arg(now_ms - (1800 + 30 + 1) * 1000 + 60_000)
        .arg("recent other-client")
        .query_async(&mut c)
        .await
        .unwrap();
    let token = a.token().await;
    assert_eq!(a.logout(&token).await.status(), 204);
    let left: Vec<String> = redis::cmd("ZRANGE")
        .arg(key("principals"))
        .arg(0)
        .arg(-1)
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(left, vec!["recent other-client".to_owned()]);
}
