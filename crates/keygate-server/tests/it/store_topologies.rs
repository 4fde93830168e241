//! The store on each topology, real servers started by the test: a Sentinel set whose
//! primary is killed mid-test, a three-node Redis Cluster, and Redis over TLS.

use std::time::{Duration, Instant};

use crate::redis_servers::*;
use crate::util::*;

async fn refused_within_a_second(s: &TestServer, token: &str) {
    let took = eventually(Duration::from_secs(1), || async {
        s.verify(token).await.status() == 401
    })
    .await;
    assert!(took.is_some(), "refused within a second");
}

/// Entries of the revocation list on one node.
async fn revocations_on(node: &Redis) -> usize {
    let mut c = node.connection().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("keygate:*:revoked")
        .query_async(&mut c)
        .await
        .unwrap();
    let mut n = 0;
    for k in keys {
        let count: usize = redis::cmd("ZCARD")
            .arg(&k)
            .query_async(&mut c)
            .await
            .unwrap();
        n += count;
    }
    n
}

#[tokio::test]
async fn a_sentinel_failover_is_followed_without_a_restart() {
    let mut set = SentinelSet::start().await;
    let servers = replicas_with(&set.store_toml(), 2).await;
    let (a, b) = (&servers[0], &servers[1]);
    let before = a.token().await;
    assert_eq!(a.logout(&before).await.status(), 204);
    refused_within_a_second(b, &before).await;
    let replicated = eventually(Duration::from_secs(2), || async {
        revocations_on(&set.replica).await == 1
    })
    .await;
    assert!(replicated.is_some());

    set.primary.kill();
    let killed = Instant::now();
    for s in &servers {
        let back = eventually(Duration::from_secs(10), || async {
            s.http.get(s.url("/readyz")).send().await.unwrap().status() == 200
                && s.login(&s.billing_key).await.status() == 200
        })
        .await;
        assert!(back.is_some(), "the failover was followed within 10 s");
    }
    eprintln!("sentinel failover followed in {:?}", killed.elapsed());
    // What the promoted replica held is still refused, and new revocations still travel.
    assert_eq!(a.verify(&before).await.status(), 401);
    assert_eq!(b.verify(&before).await.status(), 401);
    let after = a.token().await;
    assert_eq!(b.verify(&after).await.status(), 200);
    assert_eq!(b.logout(&after).await.status(), 204);
    refused_within_a_second(a, &after).await;
    assert_eq!(
        revocations_on(&set.replica).await,
        2,
        "written to the promoted replica"
    );
    let text = std::fs::read_to_string(&a.config_path).unwrap();
    let c = TestServer::with_config(text, a.billing_key.clone()).await;
    c.wait_in_sync().await;
    assert_eq!(
        c.verify(&before).await.status(),
        401,
        "a replica started after the failover"
    );
}

#[tokio::test]
async fn a_redis_cluster_holds_revocations_and_counters() {
    let cluster = Cluster::start().await;
    let servers = replicas_with(&cluster.store_toml(), 2).await;
    let (a, b) = (&servers[0], &servers[1]);
    let token = a.token().await;
    assert_eq!(b.verify(&token).await.status(), 200);
    assert_eq!(a.logout(&token).await.status(), 204);
    refused_within_a_second(b, &token).await;

    // One failure counts against the address and the key id in one script: both keys
    // share the deployment's hash tag, or the cluster would refuse it (CROSSSLOT) and
    // the replicas would count apart.
    let wrong = keygate::api_key::generate("billing").unwrap();
    for s in [a, b, a, b, a] {
        assert_eq!(s.login(&wrong).await.status(), 401);
    }
    assert_eq!(b.login(&b.billing_key).await.status(), 429);
    assert_eq!(a.login(&a.billing_key).await.status(), 429);
    let mut held = 0;
    for n in &cluster.nodes {
        held += revocations_on(n).await;
    }
    assert_eq!(held, 1);
}

/// A CA and a certificate for 127.0.0.1 signed by it, as PEM files in `dir`.
fn tls_files(
    dir: &std::path::Path,
) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let paths = (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    );
    std::fs::write(&paths.0, ca_cert.pem()).unwrap();
    std::fs::write(&paths.1, cert.pem()).unwrap();
    std::fs::write(&paths.2, key.serialize_pem()).unwrap();
    paths
}

#[tokio::test]
async fn rediss_with_a_private_ca() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = tls_files(dir.path());
    let redis = Redis::start_tls(&cert, &key).await;
    let url = format!("rediss://127.0.0.1:{}", redis.port);
    let store = format!("[store]\nurl = \"{url}\"\nca_file = \"{}\"\n", ca.display());
    let servers = replicas_with(&store, 2).await;
    let token = servers[0].token().await;
    assert_eq!(servers[0].logout(&token).await.status(), 204);
    refused_within_a_second(&servers[1], &token).await;

    // Without the CA the server is not trusted: never in sync, so deny answers 503.
    let billing = keygate::api_key::generate("billing").unwrap();
    let text = config_text(
        &billing,
        user_hash(),
        &format!("[store]\nurl = \"{url}\"\n"),
    );
    let untrusting = TestServer::with_config(text, billing.clone()).await;
    // Answered only once `serve` has waited its full second for a first sync (the request
    // waits in the listen queue meanwhile): a server that trusted the store would be in
    // sync by then and answer 200.
    assert_eq!(untrusting.login(&billing).await.status(), 503);
}

/// `ROLE`'s first word, or `None` while the node drops connections (a failover does).
async fn role_of(node: &Redis) -> Option<String> {
    let client = redis::Client::open(node.url()).ok()?;
    let mut c = client.get_multiplexed_async_connection().await.ok()?;
    let role: Vec<redis::Value> = redis::cmd("ROLE").query_async(&mut c).await.ok()?;
    match role.first() {
        Some(redis::Value::BulkString(r)) => Some(String::from_utf8_lossy(r).into_owned()),
        _ => None,
    }
}

/// A graceful `SENTINEL FAILOVER` leaves the old primary running and taking writes until
/// the sentinels demote it. keygate follows the `+switch-master` event: within 10 s a
/// logout lands on the promoted replica, and nothing written since the switch is lost.
#[tokio::test]
async fn a_graceful_sentinel_failover_is_followed_within_10_s() {
    let set = SentinelSet::start().await;
    let servers = replicas_with(&set.store_toml(), 2).await;
    let (a, b) = (&servers[0], &servers[1]);
    let mut s0 = set.sentinels[0].connection().await;
    let _: () = redis::cmd("SENTINEL")
        .arg("FAILOVER")
        .arg("keygate")
        .query_async(&mut s0)
        .await
        .unwrap();
    let started = Instant::now();
    // The promoted replica says it is the primary first; then keygate writes there.
    let promoted = eventually(Duration::from_secs(10), || async {
        role_of(&set.replica).await.as_deref() == Some("master")
    })
    .await;
    assert!(promoted.is_some(), "the sentinels promoted the replica");
    let followed = eventually(Duration::from_secs(10), || async {
        let r = a.login(&a.billing_key).await;
        if r.status() != 200 {
            return false;
        }
        let body: serde_json::Value = r.json().await.unwrap();
        let t = body["access_token"].as_str().unwrap().to_owned();
        a.logout(&t).await.status() == 204 && revocations_on(&set.replica).await >= 1
    })
    .await;
    let took = started.elapsed();
    assert!(
        followed.is_some(),
        "keygate writes to the new primary within 10 s"
    );
    assert!(took < Duration::from_secs(10), "followed after {took:?}");
    eprintln!("graceful SENTINEL FAILOVER followed in {took:?}");
    // What was written to the new primary stays: it travels to B and is not discarded
    // when the old primary is demoted.
    // The sentinels are still reconfiguring (the old primary is demoted later): a request
    // may meet a store that answers for neither role and be refused 503 for a moment, as
    // docs/scale-out.md says; the next succeeds.
    let mut seen = Vec::new();
    let mut after = None;
    let settled = Instant::now();
    while after.is_none() && settled.elapsed() < Duration::from_secs(5) {
        let r = a.login(&a.billing_key).await;
        let status = r.status();
        let body: serde_json::Value = r.json().await.unwrap_or_default();
        if status != 200 {
            seen.push(format!("login {status} {body}"));
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        let t = body["access_token"].as_str().unwrap().to_owned();
        match a.logout(&t).await.status().as_u16() {
            204 => after = Some(t),
            other => seen.push(format!("logout {other}")),
        }
    }
    eprintln!("after the failover, refused first: {seen:?}");
    let after = after.expect("a login and logout within 5 s of the failover");
    b.wait_in_sync().await;
    refused_within_a_second(b, &after).await;
    let held = revocations_on(&set.replica).await;
    // Sentinels demote the old primary when they next read its INFO, which they do every
    // 10 s outside a failover: allow three such periods on a loaded machine.
    let demoted = eventually(Duration::from_secs(30), || async {
        role_of(&set.primary).await.as_deref() == Some("slave")
    })
    .await;
    assert!(demoted.is_some(), "the old primary was demoted");
    assert!(revocations_on(&set.replica).await >= held);
}

/// A Cluster without replicas losing the master of the deployment's slot cannot take
/// revocations or attempt counters any more: `/readyz` says so (503) on every replica
/// rather than staying 200. A logout meanwhile answers 503; once the shard is back (empty:
/// no persistence) it is either written there or was applied nowhere and can be repeated,
/// and the earlier revocation is written back: both replicas refuse both tokens.
#[tokio::test]
async fn a_cluster_master_lost_without_replicas_shows_in_readiness() {
    let mut cluster = Cluster::start().await;
    let servers = replicas_with(&cluster.store_toml(), 2).await;
    let token = servers[0].token().await;
    assert_eq!(servers[0].logout(&token).await.status(), 204);
    let mut owner = None;
    for (i, n) in cluster.nodes.iter().enumerate() {
        if revocations_on(n).await == 1 {
            owner = Some(i);
        }
    }
    let owner = owner.expect("one node holds the deployment's slot");
    let second = servers[0].token().await;
    cluster.nodes[owner].kill();
    let killed = Instant::now();
    for s in &servers {
        loop {
            let r = s.http.get(s.url("/readyz")).send().await.unwrap();
            let code = r.status().as_u16();
            let body: serde_json::Value = r.json().await.unwrap();
            if code == 503 {
                let status = body["status"].as_str().unwrap_or_default().to_owned();
                assert!(
                    ["store_degraded", "store_unavailable"].contains(&status.as_str()),
                    "{status}"
                );
                break;
            }
            assert!(
                killed.elapsed() < Duration::from_secs(5),
                "readiness still 200 5 s after the shard was lost"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let (a, b) = (&servers[0], &servers[1]);
    assert_eq!(a.logout(&second).await.status(), 503);
    cluster.nodes[owner].restart().await;
    let restarted = Instant::now();
    let done = eventually(Duration::from_secs(20), || async {
        matches!(a.logout(&second).await.status().as_u16(), 204 | 401)
            && b.verify(&second).await.status() == 401
            && b.verify(&token).await.status() == 401
            && a.verify(&token).await.status() == 401
    })
    .await;
    assert!(
        done.is_some(),
        "both revocations held after the shard came back"
    );
    eprintln!(
        "shard back: revocations whole {:?} after its restart",
        restarted.elapsed()
    );
    // In the store itself: a replica started now reads both.
    let text = std::fs::read_to_string(&a.config_path).unwrap();
    let c = TestServer::with_config(text, a.billing_key.clone()).await;
    c.wait_in_sync().await;
    let stored = eventually(Duration::from_secs(2), || async {
        c.verify(&token).await.status() == 401 && c.verify(&second).await.status() == 401
    })
    .await;
    assert!(stored.is_some(), "written back to the shard");
}
