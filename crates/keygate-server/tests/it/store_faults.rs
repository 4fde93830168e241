//! Redis stalled (`SIGSTOP`), killed and restarted while two replicas are under load:
//! no 5xx but the `on_unavailable` policy's 503, no request waits longer than
//! `store.timeout` plus a second, and service is back within 5 s of Redis.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::redis_servers::*;
use crate::util::*;

/// What one request saw.
struct Outcome {
    what: &'static str,
    status: u16,
    took: Duration,
}

/// Requests from 6 tasks (verify, login, a wrong key in turn) until `stop` is set;
/// `answered` counts the answers as they come.
fn load(
    servers: Arc<Vec<TestServer>>,
    token: String,
    stop: Arc<AtomicBool>,
    answered: Arc<AtomicUsize>,
) -> tokio::task::JoinHandle<Vec<Outcome>> {
    tokio::spawn(async move {
        let mut tasks = Vec::new();
        for n in 0..6usize {
            let (servers, token, stop) = (servers.clone(), token.clone(), stop.clone());
            let answered = answered.clone();
            tasks.push(tokio::spawn(async move {
                let mut seen = Vec::new();
                let s = &servers[n % servers.len()];
                let wrong = keygate::api_key::generate("billing").unwrap();
                let mut i = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    let (what, r) = match i % 3 {
                        0 => ("verify", s.verify(&token).await),
                        1 => ("login", s.login(&s.billing_key).await),
                        _ => ("wrong key", s.login(&wrong).await),
                    };
                    seen.push(Outcome {
                        what,
                        status: r.status().as_u16(),
                        took: started.elapsed(),
                    });
                    answered.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
                seen
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        all
    })
}

fn check(outcomes: &[Outcome], timeout: Duration) {
    assert!(outcomes.len() > 50, "the load ran: {}", outcomes.len());
    for o in outcomes {
        assert!(
            matches!(
                (o.what, o.status),
                ("verify" | "login", 200 | 503) | ("wrong key", 401 | 429 | 503)
            ),
            "{} answered {}",
            o.what,
            o.status
        );
        assert!(
            o.took <= timeout + Duration::from_secs(1),
            "{} took {:?}",
            o.what,
            o.took
        );
    }
    assert!(
        outcomes.iter().any(|o| o.status == 503),
        "deny answered 503 during the outage"
    );
}

/// Starts [`load`] and returns once 30 of its requests have been answered: a fault
/// brought on then meets requests flowing.
async fn running_load(
    servers: &Arc<Vec<TestServer>>,
    token: &str,
    stop: &Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Vec<Outcome>> {
    let answered = Arc::new(AtomicUsize::new(0));
    let running = load(
        servers.clone(),
        token.to_owned(),
        stop.clone(),
        answered.clone(),
    );
    let started = Instant::now();
    while answered.load(Ordering::Relaxed) < 30 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the load was not answered within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    running
}

fn slowest(outcomes: &[Outcome]) -> Duration {
    outcomes.iter().map(|o| o.took).max().unwrap_or_default()
}

async fn back_within_5s(servers: &[TestServer], token: &str) -> Duration {
    let started = Instant::now();
    for s in servers {
        let ok = eventually(Duration::from_secs(5), || async {
            s.verify(token).await.status() == 200 && s.login(&s.billing_key).await.status() == 200
        })
        .await;
        assert!(ok.is_some(), "service back within 5 s of Redis");
    }
    started.elapsed()
}

async fn setup(redis: &Redis) -> (Arc<Vec<TestServer>>, String) {
    let store = format!("[store]\nurl = \"{}\"\ntimeout = \"250ms\"\n", redis.url());
    let servers = replicas_with(&store, 2).await;
    for s in &servers {
        s.lift_attempt_limit();
    }
    let token = servers[0].token().await;
    (Arc::new(servers), token)
}

#[tokio::test]
async fn a_stalled_redis_under_load_costs_at_most_the_timeout() {
    let redis = Redis::start(&[]).await;
    let (servers, token) = setup(&redis).await;
    let stop = Arc::new(AtomicBool::new(false));
    let running = running_load(&servers, &token, &stop).await;
    redis.pause();
    // Real time must pass: the stall lasts many times store.timeout, long enough for
    // requests to meet it at every stage of their store round trip.
    tokio::time::sleep(Duration::from_secs(3)).await;
    redis.resume();
    let back = back_within_5s(&servers, &token).await;
    stop.store(true, Ordering::Relaxed);
    let outcomes = running.await.unwrap();
    check(&outcomes, Duration::from_millis(250));
    eprintln!(
        "SIGSTOP 3 s: {} requests, slowest {:?}, back {back:?} after SIGCONT",
        outcomes.len(),
        slowest(&outcomes)
    );
}

/// A client with a quota in Redis, 16 of its requests at once when Redis stops: they share
/// round trips (one script per batch), and the batch that meets the stall answers its
/// error to those queued behind it, so none waits more than one `store.timeout` (1 s
/// here; a second round trip would make it 2 s).
#[tokio::test]
async fn a_stalled_redis_costs_a_batched_quota_request_one_timeout() {
    let redis = Redis::start(&[]).await;
    let key = keygate::api_key::generate("billing").unwrap();
    let store = format!("[store]\nurl = \"{}\"\ntimeout = \"1s\"\n", redis.url());
    let text = crate::quota::quota_config(&key, "100000/1h", &store);
    let s = Arc::new(TestServer::with_config(text, key).await);
    s.wait_in_sync().await;
    let token = Arc::new(s.token().await);
    assert_eq!(s.verify(&token).await.status(), 200);
    redis.pause();
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (s, token) = (s.clone(), token.clone());
        tasks.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            let started = Instant::now();
            while started.elapsed() < Duration::from_millis(2500) {
                let sent = Instant::now();
                let status = s.verify(&token).await.status().as_u16();
                seen.push((status, sent.elapsed()));
            }
            seen
        }));
    }
    let mut seen = Vec::new();
    for t in tasks {
        seen.extend(t.await.unwrap());
    }
    redis.resume();
    let slowest = seen.iter().map(|(_, took)| *took).max().unwrap();
    eprintln!(
        "16 tasks, Redis stopped: {} answers, slowest {slowest:?}",
        seen.len()
    );
    assert!(
        seen.iter().all(|(status, _)| *status == 503),
        "deny: 503 while the store cannot count: {seen:?}"
    );
    assert!(
        slowest < Duration::from_millis(1600),
        "one store.timeout (1 s) and scheduling at most: {slowest:?}"
    );
    let back = eventually(Duration::from_secs(5), || async {
        s.verify(&token).await.status() == 200
    })
    .await;
    assert!(back.is_some(), "counted again once Redis answers");
}

#[tokio::test]
async fn redis_killed_and_restarted_under_load() {
    let mut redis = Redis::start(&[]).await;
    let (servers, token) = setup(&redis).await;
    let stop = Arc::new(AtomicBool::new(false));
    let running = running_load(&servers, &token, &stop).await;
    redis.kill();
    // Real time must pass: the outage lasts long enough for the replicas to notice it and
    // for requests to meet the store gone, not just a restart.
    tokio::time::sleep(Duration::from_secs(2)).await;
    redis.restart().await;
    let back = back_within_5s(&servers, &token).await;
    stop.store(true, Ordering::Relaxed);
    let outcomes = running.await.unwrap();
    check(&outcomes, Duration::from_millis(250));
    eprintln!(
        "killed 2 s: {} requests, slowest {:?}, back {back:?} after restart",
        outcomes.len(),
        slowest(&outcomes)
    );
}

/// `/readyz`: status code and `status` member.
async fn readiness(s: &TestServer) -> (u16, String) {
    let r = s.http.get(s.url("/readyz")).send().await.unwrap();
    let code = r.status().as_u16();
    let body: serde_json::Value = r.json().await.unwrap();
    (code, body["status"].as_str().unwrap_or_default().to_owned())
}

/// Redis refuses writes for 2 s (`CLIENT PAUSE 2000 WRITE`), reads still answered: a
/// logout on A answers 503 and is pending (A refuses the token, `/readyz` says
/// `revocations_pending`), repeating it answers 503 again rather than 401, and once Redis
/// takes writes again the revocation reaches it without any further request: B refuses
/// the token and A is ready.
#[tokio::test]
async fn a_logout_during_a_write_pause_reaches_the_store_once_it_takes_writes() {
    let redis = Redis::start(&[]).await;
    let store = format!("[store]\nurl = \"{}\"\ntimeout = \"250ms\"\n", redis.url());
    let servers = replicas_with(&store, 2).await;
    let (a, b) = (&servers[0], &servers[1]);
    let token = a.token().await;
    let mut c = redis.connection().await;
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(2000)
        .arg("WRITE")
        .query_async(&mut c)
        .await
        .unwrap();
    let paused = Instant::now();
    let r = a.logout(&token).await;
    assert_eq!(r.status(), 503);
    assert_eq!(retry_after(&r), 1);
    assert_eq!(readiness(a).await, (503, "revocations_pending".into()));
    assert_eq!(a.verify(&token).await.status(), 401, "applied on A at once");
    let r = a.logout(&token).await;
    assert!(
        paused.elapsed() < Duration::from_millis(1800),
        "still paused"
    );
    assert_eq!(r.status(), 503, "a repeated logout retries the write");
    let landed = eventually(Duration::from_secs(6), || async {
        b.verify(&token).await.status() == 401 && readiness(a).await.0 == 200
    })
    .await;
    assert!(landed.is_some(), "the pending revocation reached the store");
    eprintln!(
        "write pause: the revocation reached B {:?} after the pause began",
        paused.elapsed()
    );
    let mut c = redis.connection().await;
    let held: Vec<String> = redis::cmd("KEYS")
        .arg("keygate:*:revoked")
        .query_async(&mut c)
        .await
        .unwrap();
    let n: u64 = redis::cmd("ZCARD")
        .arg(&held[0])
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(n, 1);
    assert_eq!(a.logout(&token).await.status(), 401, "now revoked for good");
}

/// Redis killed, `on_unavailable = "allow"`: a logout on A is applied there and answers
/// 204 (it is pending, not lost: `/readyz` answers 503 meanwhile). Redis restarted
/// empty: A writes it to the store, and B refuses the token.
#[tokio::test]
async fn a_logout_while_the_store_is_down_is_written_when_it_returns() {
    let mut redis = Redis::start(&[]).await;
    let store = format!(
        "[store]\nurl = \"{}\"\ntimeout = \"250ms\"\non_unavailable = \"allow\"\n",
        redis.url()
    );
    let servers = replicas_with(&store, 2).await;
    let (a, b) = (&servers[0], &servers[1]);
    let token = a.token().await;
    redis.kill();
    let out = eventually(Duration::from_secs(3), || async {
        readiness(a).await.0 == 503
    })
    .await;
    assert!(out.is_some(), "A noticed the outage");
    assert_eq!(
        a.logout(&token).await.status(),
        204,
        "applied here, pending"
    );
    assert_eq!(a.verify(&token).await.status(), 401);
    assert_eq!(
        b.verify(&token).await.status(),
        200,
        "B answers from its copy"
    );
    redis.restart().await;
    let landed = eventually(Duration::from_secs(6), || async {
        b.verify(&token).await.status() == 401 && readiness(a).await.0 == 200
    })
    .await;
    assert!(landed.is_some(), "written to the store once it came back");
}
