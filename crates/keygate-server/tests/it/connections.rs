//! Slow and idle clients (SPEC §9): a connection that has not sent its request headers
//! within `server.header_timeout` is closed; at most `server.max_connections` are served at
//! once, the rest waiting in the accept queue; hundreds of half-sent connections leave
//! `/healthz` answering within `header_timeout` plus a second. Also `server.metrics_listen`.

use std::time::{Duration, Instant};

use keygate::api_key;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::tls::get_on;
use crate::util::*;

async fn server_with(server_lines: &str) -> TestServer {
    let billing_key = api_key::generate("billing").unwrap();
    let text = config_with_server(&billing_key, server_lines, "");
    TestServer::with_config(text, billing_key).await
}

fn addr(s: &TestServer) -> String {
    s.base.trim_start_matches("http://").to_owned()
}

/// Waits for the server to close `conn`, at most `limit`; how long it took.
async fn closed_within(conn: &mut TcpStream, limit: Duration) -> Duration {
    let start = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(limit.saturating_sub(start.elapsed()), conn.read(&mut buf)).await
        {
            Ok(Ok(0) | Err(_)) => return start.elapsed(),
            // Whatever the server says before closing (hyper says nothing), it is no 200.
            Ok(Ok(n)) => assert!(!buf[..n].starts_with(b"HTTP/1.1 200"), "served"),
            Err(_) => panic!("still open after {limit:?}"),
        }
    }
}

#[tokio::test]
async fn a_connection_without_complete_headers_is_closed_after_header_timeout() {
    let s = server_with("header_timeout = \"1s\"\n").await;
    let mut half = TcpStream::connect(addr(&s)).await.unwrap();
    half.write_all(b"GET /healthz HT").await.unwrap();
    let mut silent = TcpStream::connect(addr(&s)).await.unwrap();
    // A prefix of the HTTP/2 preface, which the server waits on to tell h2c from HTTP/1.1.
    let mut h2_prefix = TcpStream::connect(addr(&s)).await.unwrap();
    h2_prefix.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    for conn in [&mut half, &mut silent, &mut h2_prefix] {
        let took = closed_within(conn, Duration::from_secs(3)).await;
        assert!(took <= Duration::from_millis(2500), "closed after {took:?}");
    }
    // A client sending its headers in time is served; its connection, left idle, is closed
    // after header_timeout too.
    let mut ok = TcpStream::connect(addr(&s)).await.unwrap();
    assert_eq!(get_on(&mut ok, "/healthz").await.0, 200);
    let took = closed_within(&mut ok, Duration::from_secs(3)).await;
    assert!(
        took <= Duration::from_millis(2500),
        "idle closed after {took:?}"
    );
}

#[tokio::test]
async fn an_http2_connection_without_a_request_is_closed_after_header_timeout() {
    let s = server_with("header_timeout = \"1s\"\n").await;
    let mut idle = TcpStream::connect(addr(&s)).await.unwrap();
    // The HTTP/2 preface and an empty SETTINGS frame: a valid connection, no request.
    idle.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .unwrap();
    // GOAWAY after header_timeout; closed a second later even though this client never
    // answers the server's PING.
    let took = closed_within(&mut idle, Duration::from_secs(4)).await;
    assert!(took <= Duration::from_millis(3000), "closed after {took:?}");
    // A client that uses its HTTP/2 connection is served.
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let r = client.get(s.url("/healthz")).send().await.unwrap();
    assert_eq!(
        (r.version(), r.status().as_u16()),
        (reqwest::Version::HTTP_2, 200)
    );
}

#[tokio::test]
async fn an_https_connection_without_a_handshake_is_closed_after_header_timeout() {
    let ca = TestCa::new();
    let pair = ca.server_cert("keygate");
    let billing_key = api_key::generate("billing").unwrap();
    let text = config_with_server(
        &billing_key,
        &format!("{TLS_SETTINGS}header_timeout = \"1s\"\n"),
        "",
    );
    let s = TestServer::with_setup(text, billing_key, |dir| pair.install(dir)).await;
    let mut silent = TcpStream::connect(s.base.trim_start_matches("https://"))
        .await
        .unwrap();
    let took = closed_within(&mut silent, Duration::from_secs(3)).await;
    assert!(took <= Duration::from_millis(2500), "closed after {took:?}");
}

#[tokio::test]
async fn at_most_max_connections_are_served_and_the_next_waits_for_a_free_slot() {
    let s = server_with("max_connections = 3\nheader_timeout = \"60s\"\n").await;
    // Three keep-alive connections, each served once and then idle: all slots taken.
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut c = TcpStream::connect(addr(&s)).await.unwrap();
        assert_eq!(get_on(&mut c, "/healthz").await.0, 200);
        held.push(c);
    }
    // The fourth is accepted by the kernel but not served.
    let mut fourth = TcpStream::connect(addr(&s)).await.unwrap();
    fourth
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: keygate\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    assert!(
        tokio::time::timeout(Duration::from_millis(700), fourth.read(&mut buf))
            .await
            .is_err(),
        "a fourth connection was served with max_connections = 3"
    );
    // One closes: the waiting one is served at once.
    drop(held.pop());
    let freed = Instant::now();
    let mut response = String::new();
    tokio::time::timeout(Duration::from_secs(2), fourth.read_to_string(&mut response))
        .await
        .expect("served once a slot was free")
        .unwrap();
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
    println!(
        "waiting connection served {:?} after a slot freed",
        freed.elapsed()
    );
    // It said `Connection: close`, so its slot is free again: a fresh client gets in.
    let r = tokio::time::timeout(
        Duration::from_secs(2),
        reqwest::Client::new().get(s.url("/healthz")).send(),
    )
    .await
    .expect("/healthz answers from a fresh connection once a slot is free")
    .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn hundreds_of_half_sent_connections_leave_healthz_answering() {
    let s = server_with("header_timeout = \"1s\"\n").await;
    let mut attackers = Vec::new();
    for i in 0..500 {
        let mut c = TcpStream::connect(addr(&s)).await.unwrap();
        let half: &[u8] = if i % 2 == 0 {
            b"GET /healthz HTTP/1.1\r\nHost: k"
        } else {
            b"PO"
        };
        c.write_all(half).await.unwrap();
        attackers.push(c);
    }
    let opened = Instant::now();
    let r = tokio::time::timeout(
        Duration::from_secs(2),
        reqwest::Client::new().get(s.url("/healthz")).send(),
    )
    .await
    .expect("/healthz within header_timeout + 1 s")
    .unwrap();
    assert_eq!(r.status(), 200);
    println!(
        "/healthz answered {:?} after 500 half-sent connections",
        opened.elapsed()
    );
    // And none of them is held past header_timeout (+ 1 s of slack).
    let mut buf = [0u8; 256];
    for c in &mut attackers {
        let left = Duration::from_secs(2).saturating_sub(opened.elapsed());
        match tokio::time::timeout(left, c.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => {}
            Ok(Ok(_)) => {}
            Err(_) => panic!("a half-sent connection was held past header_timeout + 1 s"),
        }
    }
    println!("all 500 closed {:?} after opening", opened.elapsed());
}

#[tokio::test]
async fn metrics_listen_serves_metrics_there_only() {
    let s = server_with("metrics_listen = \"127.0.0.1:0\"\n").await;
    let metrics = s.metrics_url.clone().unwrap();
    assert_ne!(metrics, s.url("/metrics"));
    assert_eq!(s.login(&s.billing_key).await.status(), 200);

    let r = s.http.get(s.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.headers()["content-type"], "application/json");
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    assert_eq!(error_of(r).await, "not_found");

    let r = s.http.get(&metrics).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    assert_eq!(
        r.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = r.text().await.unwrap();
    assert!(
        text.contains("keygate_tokens_issued_total{grant=\"api_key\"}"),
        "{text}"
    );
    // Only /metrics there: the API is not reachable on the metrics address.
    let r = s
        .http
        .get(metrics.replace("/metrics", "/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(error_of(r).await, "not_found");
}
