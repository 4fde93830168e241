//! Redis stalled (`SIGSTOP`), killed and restarted while two replicas are under load:
//! no 5xx but the `on_unavailable` policy's 503, no request waits longer than
//! `store.timeout` plus a second, and service is back within 5 s of Redis.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::redis_servers::*;
use crate::util::*;

/// What one request saw.
struct Outcome {
    what: &'static str,
    status: u16,
    took: Duration,
}

/// Requests from 6 tasks (verify, login, a wrong key in turn) until `stop` is set.
fn load(
    servers: Arc<Vec<TestServer>>,
    token: String,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Vec<Outcome>> {
    tokio::spawn(async move {
        let mut tasks = Vec::new();
        for n in 0..6usize {
            let (servers, token, stop) = (servers.clone(), token.clone(), stop.clone());
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
    let running = load(servers.clone(), token.clone(), stop.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;
    redis.pause();
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

#[tokio::test]
async fn redis_killed_and_restarted_under_load() {
    let mut redis = Redis::start(&[]).await;
    let (servers, token) = setup(&redis).await;
    let stop = Arc::new(AtomicBool::new(false));
    let running = load(servers.clone(), token.clone(), stop.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;
    redis.kill();
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
