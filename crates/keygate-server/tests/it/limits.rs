//! Failed-attempt limits, body limits and the hashing queue.

use crate::util::*;

#[tokio::test]
async fn failed_attempts_from_one_address_get_429_with_retry_after() {
    let s = TestServer::start().await;
    for _ in 0..5 {
        assert_eq!(s.login("wrong-key").await.status(), 401);
    }
    let sent = std::time::Instant::now();
    let r = s.login("wrong-key").await;
    assert_eq!(r.status(), 429);
    // Held before it is sent, so a guessing loop gets a few answers a second per
    // connection and costs timers rather than CPU.
    assert!(sent.elapsed() >= std::time::Duration::from_millis(250));
    retry_after(&r);
    assert_eq!(error_of(r).await, "too_many_attempts");
    assert_eq!(
        s.login(&s.billing_key).await.status(),
        429,
        "the address is blocked, not just the key"
    );
}

/// Trusts 127.0.0.1 as a proxy, so `X-Forwarded-For` sets the client address.
fn behind_a_proxy(s: &TestServer) {
    let text = std::fs::read_to_string(&s.config_path).unwrap().replacen(
        "shutdown_timeout = \"5s\"",
        "shutdown_timeout = \"5s\"\ntrusted_proxies = [\"127.0.0.1\"]",
        1,
    );
    s.rewrite_config(&text).unwrap();
}

/// The checksum of a `kg_` key is public, so anyone can make well-formed wrong keys for a
/// client; from however many addresses, they must not lock the genuine key out (docs/security.md).
#[tokio::test]
async fn strangers_cannot_lock_a_client_out() {
    let s = TestServer::start().await;
    behind_a_proxy(&s);
    for i in 0..50 {
        let wrong = keygate::api_key::generate("billing").unwrap();
        let addr = format!("198.51.100.{}", i % 10);
        let r = s
            .http
            .post(s.url("/login"))
            .header("X-API-Key", &wrong)
            .header("X-Forwarded-For", &addr)
            .send()
            .await
            .unwrap();
        assert!([401, 429].contains(&r.status().as_u16()), "{}", r.status());
    }
    let r = s
        .http
        .post(s.url("/login"))
        .header("X-API-Key", &s.billing_key)
        .header("X-Forwarded-For", "203.0.113.9")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the genuine key from its own address");
    let r = s
        .token_form_from(
            "203.0.113.9",
            &[
                ("grant_type", "client_credentials"),
                ("client_id", "billing"),
                ("client_secret", &s.billing_key),
            ],
        )
        .await;
    assert_eq!(r.status(), 200, "and as a client secret");
}

/// A username's failures count per (username, address): a stranger guessing alice's
/// password from elsewhere does not block alice; the guessing address is blocked.
#[tokio::test]
async fn a_username_is_limited_per_address() {
    let s = TestServer::start().await;
    behind_a_proxy(&s);
    let guess = |i: usize| {
        [
            ("grant_type", "password"),
            ("username", "alice"),
            (
                "password",
                if i == usize::MAX {
                    USER_PASSWORD
                } else {
                    "wrong guess"
                },
            ),
        ]
    };
    for _ in 0..5 {
        assert_eq!(
            s.token_form_from("198.51.100.1", &guess(0)).await.status(),
            400
        );
    }
    assert_eq!(
        s.token_form_from("198.51.100.1", &guess(0)).await.status(),
        429
    );
    assert_eq!(
        s.token_form_from("198.51.100.1", &guess(usize::MAX))
            .await
            .status(),
        429,
        "the guessing address stays blocked for its window"
    );
    assert_eq!(
        s.token_form_from("203.0.113.5", &guess(usize::MAX))
            .await
            .status(),
        200,
        "alice from her own address"
    );
}

/// Check and count are one step, before any hashing: concurrent wrong passwords from one
/// address get at most `failed_attempts` answers other than 429 (docs/security.md).
#[tokio::test]
async fn concurrent_wrong_passwords_never_exceed_the_limit() {
    let s = std::sync::Arc::new(TestServer::start().await);
    let mut guesses = tokio::task::JoinSet::new();
    for i in 0..60 {
        let s = s.clone();
        guesses.spawn(async move {
            s.token_form(&[
                ("grant_type", "password"),
                ("username", "alice"),
                ("password", &format!("guess-{i}")),
            ])
            .await
            .status()
            .as_u16()
        });
    }
    let mut answered = std::collections::BTreeMap::new();
    while let Some(status) = guesses.join_next().await {
        *answered.entry(status.unwrap()).or_insert(0) += 1;
    }
    let checked: u32 = answered
        .iter()
        .filter(|(status, _)| **status != 429 && **status != 503)
        .map(|(_, n)| *n)
        .sum();
    assert!(checked <= 5, "failed_attempts = 5, yet: {answered:?}");
    assert_eq!(answered.get(&400), Some(&5), "{answered:?}");
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
    // The last of the 40 logins waits for 39 hashes on one hashing thread, which runs at a
    // lower priority than everything else: on a machine busy with other work that takes
    // longer than the default request_timeout (10 s), which would then close its connection.
    // What this test holds is that /verify is answered meanwhile, not how fast hashing is.
    let text = config_text(&key, user_hash(), "")
        .replace("failed_attempts = 5", "failed_attempts = 1000")
        .replace(
            "window = \"1m\"",
            "window = \"1m\"\nhashing_concurrency = 1\nhashing_queue = 1000",
        )
        .replacen(
            "shutdown_timeout = \"5s\"",
            "shutdown_timeout = \"5s\"\nrequest_timeout = \"300s\"",
            1,
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

/// A server with `failed_attempts = {limit}`, 127.0.0.1 trusted as a proxy, and `store`.
async fn server_with(limit: u32, store: &str) -> std::sync::Arc<TestServer> {
    let key = keygate::api_key::generate("billing").unwrap();
    let text = config_text(&key, user_hash(), store)
        .replace("failed_attempts = 5", &format!("failed_attempts = {limit}"))
        .replacen(
            "shutdown_timeout = \"5s\"",
            "shutdown_timeout = \"5s\"\ntrusted_proxies = [\"127.0.0.1\"]",
            1,
        );
    std::sync::Arc::new(TestServer::with_config(text, key).await)
}

/// The statuses of `jobs` run at once, counted.
async fn statuses<F>(jobs: impl IntoIterator<Item = F>) -> std::collections::BTreeMap<u16, u32>
where
    F: std::future::Future<Output = reqwest::Response> + Send + 'static,
{
    let mut set = tokio::task::JoinSet::new();
    for job in jobs {
        set.spawn(async move { job.await.status().as_u16() });
    }
    let mut answered = std::collections::BTreeMap::new();
    while let Some(status) = set.join_next().await {
        *answered.entry(status.unwrap()).or_insert(0) += 1;
    }
    answered
}

/// Correct passwords in flight are no failures: 30 at once from one address, with 10
/// attempts allowed, are all served (the ones finding every attempt held wait for one).
#[tokio::test]
async fn concurrent_correct_passwords_from_one_address_are_all_served() {
    let s = server_with(10, "").await;
    let answered = statuses((0..30).map(|_| {
        let s = s.clone();
        async move {
            s.token_form(&[
                ("grant_type", "password"),
                ("username", "alice"),
                ("password", USER_PASSWORD),
            ])
            .await
        }
    }))
    .await;
    assert_eq!(answered, [(200, 30)].into(), "{answered:?}");
}

/// Wrong passwords for one user from 300 addresses of one /64: one sender, so at most
/// `failed_attempts` are checked and the rest get 429.
async fn one_slash_64_is_one_sender(s: std::sync::Arc<TestServer>) {
    let answered = statuses((0..300u32).map(|i| {
        let s = s.clone();
        async move {
            let addr = format!("2001:db8:7:64:{:x}::{:x}", i % 30, i);
            s.token_form_from(
                &addr,
                &[
                    ("grant_type", "password"),
                    ("username", "alice"),
                    ("password", &format!("guess-{i}")),
                ],
            )
            .await
        }
    }))
    .await;
    assert_eq!(answered.get(&400), Some(&10), "{answered:?}");
    assert_eq!(answered.get(&429), Some(&290), "{answered:?}");
    // Another /64 is another sender.
    let r = s
        .token_form_from(
            "2001:db8:7:65::1",
            &[
                ("grant_type", "password"),
                ("username", "alice"),
                ("password", USER_PASSWORD),
            ],
        )
        .await;
    assert_eq!(r.status(), 200);
}

/// An IPv4 address and its IPv6-mapped form are one sender.
async fn a_mapped_address_is_its_ipv4_sender(s: &TestServer) {
    for addr in ["198.51.100.7", "::ffff:198.51.100.7"].repeat(5) {
        let r = s
            .token_form_from(
                addr,
                &[
                    ("grant_type", "password"),
                    ("username", "alice"),
                    ("password", "wrong"),
                ],
            )
            .await;
        assert_eq!(r.status(), 400, "{addr}");
    }
    for addr in ["198.51.100.7", "::ffff:198.51.100.7"] {
        let r = s
            .token_form_from(
                addr,
                &[
                    ("grant_type", "password"),
                    ("username", "alice"),
                    ("password", USER_PASSWORD),
                ],
            )
            .await;
        assert_eq!(r.status(), 429, "{addr}");
    }
}

#[tokio::test]
async fn ipv6_senders_are_counted_per_slash_64() {
    let s = server_with(10, "").await;
    one_slash_64_is_one_sender(s.clone()).await;
    a_mapped_address_is_its_ipv4_sender(&s).await;
}

#[tokio::test]
async fn ipv6_prefix_is_configurable() {
    let s = server_with(10, "").await;
    let text = std::fs::read_to_string(&s.config_path)
        .unwrap()
        .replace("window = \"1m\"", "window = \"1m\"\nipv6_prefix = 128");
    s.rewrite_config(&text).unwrap();
    for i in 0..12 {
        let r = s
            .token_form_from(
                &format!("2001:db8:7:64::{i:x}"),
                &[
                    ("grant_type", "password"),
                    ("username", "alice"),
                    ("password", "wrong"),
                ],
            )
            .await;
        assert_eq!(r.status(), 400, "each /128 its own sender");
    }
}

mod with_redis {
    use super::*;
    use crate::redis_servers::Redis;

    fn store(redis: &Redis) -> String {
        format!("[store]\nurl = \"{}\"\n", redis.url())
    }

    /// Correct API keys in flight are no failures with the Redis counters either: 64
    /// logins at once from one address, with 5 attempts allowed, are all served.
    #[tokio::test]
    async fn concurrent_correct_logins_from_one_address_are_all_served() {
        let redis = Redis::start(&[]).await;
        let s = server_with(5, &store(&redis)).await;
        let answered = statuses((0..64).map(|_| {
            let s = s.clone();
            async move { s.login(&s.billing_key).await }
        }))
        .await;
        assert_eq!(answered, [(200, 64)].into(), "{answered:?}");
        // The limit still holds: concurrent wrong keys get at most 5 answers but 429.
        let answered = statuses((0..40).map(|_| {
            let s = s.clone();
            async move {
                s.login(&keygate::api_key::generate("billing").unwrap())
                    .await
            }
        }))
        .await;
        assert_eq!(answered.get(&401), Some(&5), "{answered:?}");
        assert_eq!(answered.get(&429), Some(&35), "{answered:?}");
    }

    /// Attempts in flight on one replica make the other's wait, not fail: 64 correct
    /// logins from one address, half on each of two replicas sharing the counters.
    #[tokio::test]
    async fn correct_logins_in_flight_on_two_replicas_are_all_served() {
        let redis = Redis::start(&[]).await;
        let a = server_with(5, &store(&redis)).await;
        let b = server_with(5, &store(&redis)).await;
        let answered = statuses((0..64).map(|i| {
            let s = if i % 2 == 0 { a.clone() } else { b.clone() };
            async move { s.login(&s.billing_key).await }
        }))
        .await;
        assert_eq!(answered, [(200, 64)].into(), "{answered:?}");
    }

    #[tokio::test]
    async fn ipv6_senders_are_counted_per_slash_64() {
        let redis = Redis::start(&[]).await;
        let s = server_with(10, &store(&redis)).await;
        one_slash_64_is_one_sender(s.clone()).await;
        a_mapped_address_is_its_ipv4_sender(&s).await;
    }
}
