//! Failed-attempt limits, body limits and the hashing queue.

use crate::util::*;

#[tokio::test]
async fn failed_attempts_from_one_address_get_429_with_retry_after() {
    let s = TestServer::start().await;
    for _ in 0..5 {
        assert_eq!(s.login("wrong-key").await.status(), 401);
    }
    let r = s.login("wrong-key").await;
    assert_eq!(r.status(), 429);
    retry_after(&r);
    assert_eq!(error_of(r).await, "too_many_attempts");
    assert_eq!(
        s.login(&s.billing_key).await.status(),
        429,
        "the address is blocked, not just the key"
    );
}

#[tokio::test]
async fn failed_attempts_against_one_key_id_are_limited_across_addresses() {
    let s = TestServer::start().await;
    // Re-write with a trusted proxy so X-Forwarded-For sets the client address.
    let text = std::fs::read_to_string(&s.config_path).unwrap().replacen(
        "shutdown_timeout = \"5s\"",
        "shutdown_timeout = \"5s\"\ntrusted_proxies = [\"127.0.0.1\"]",
        1,
    );
    s.rewrite_config(&text).unwrap();
    let wrong = keygate::api_key::generate("billing").unwrap();
    for i in 0..5 {
        let r = s
            .http
            .post(s.url("/login"))
            .header("X-API-Key", &wrong)
            .header("X-Forwarded-For", format!("198.51.100.{i}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
    }
    let r = s
        .http
        .post(s.url("/login"))
        .header("X-API-Key", &s.billing_key)
        .header("X-Forwarded-For", "198.51.100.77")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        429,
        "the key id is blocked from a fresh address"
    );
    let r = s
        .http
        .post(s.url("/login"))
        .header("X-API-Key", SEED_KEY)
        .header("X-Forwarded-For", "198.51.100.78")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        200,
        "other clients from fresh addresses are not"
    );
}

#[tokio::test]
async fn bodies_over_64_kib_get_413() {
    let s = TestServer::start().await;
    let r = s
        .http
        .post(s.url("/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "grant_type=client_credentials&pad={}",
            "a".repeat(70 * 1024)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let r = s
        .http
        .post(s.url("/login"))
        .body(vec![b'a'; 65 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let metrics = s.text("/metrics").await;
    assert!(
        metrics.contains(
            "keygate_http_requests_total{route=\"/login\",method=\"POST\",status=\"413\"}"
        ),
        "413s are counted"
    );
}

#[tokio::test]
async fn a_flood_of_password_logins_does_not_stall_verify() {
    let key = keygate::api_key::generate("billing").unwrap();
    let text = config_text(&key, user_hash(), "")
        .replace("failed_attempts = 5", "failed_attempts = 1000")
        .replace(
            "window = \"1m\"",
            "window = \"1m\"\nhashing_concurrency = 1\nhashing_queue = 1000",
        );
    let s = std::sync::Arc::new(TestServer::with_config(text, key).await);
    let token = s.token().await;
    let mut logins = tokio::task::JoinSet::new();
    for i in 0..40 {
        let s = s.clone();
        logins.spawn(async move {
            s.token_form(&[
                ("grant_type", "password"),
                ("username", "alice"),
                ("password", &format!("guess-{i}")),
            ])
            .await
            .status()
        });
    }
    // 40 argon2id checks on one hashing thread take far longer than these verifications;
    // each must be answered while the logins are still queued.
    for _ in 0..20 {
        assert_eq!(s.verify(&token).await.status(), 200);
    }
    assert!(!logins.is_empty());
    let still_running = logins.len();
    let mut finished_before = 0;
    while let Some(Ok(status)) = logins.try_join_next() {
        finished_before += 1;
        assert_ne!(status, 500);
    }
    assert!(
        finished_before < still_running,
        "verifications finished before the login storm"
    );
    while let Some(status) = logins.join_next().await {
        assert_eq!(status.unwrap(), 400, "every guess was checked and refused");
    }
}
