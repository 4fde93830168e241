//! Slow and idle clients (docs/security.md): a connection that has not sent its request headers
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

// ---------------------------------------------------------------------------------------
// Slow bodies, unread responses, stalled HTTP/2 streams (`server.request_timeout`).

use std::io::BufRead as _;

use axum::body::Bytes;
use axum::http;

/// A complete `POST /token` head announcing 60 000 body bytes, then 11 of them.
const SLOW_BODY: &[u8] = b"POST /token HTTP/1.1\r\nhost: keygate\r\n\
content-type: application/x-www-form-urlencoded\r\ncontent-length: 60000\r\n\r\ngrant_type=";

const TIMEOUT_BODY: &str =
    r#"{"error":"invalid_request","error_description":"the request did not arrive in time"}"#;

/// Reads `conn` to its end (EOF or reset), at most `limit`: what it said, and how long it
/// took; `None` if it was still open after `limit`.
async fn read_to_close(conn: &mut TcpStream, limit: Duration) -> Option<(Vec<u8>, Duration)> {
    let start = Instant::now();
    let mut all = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let left = limit.saturating_sub(start.elapsed());
        match tokio::time::timeout(left, conn.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return Some((all, start.elapsed())),
            Ok(Ok(n)) => all.extend_from_slice(&buf[..n]),
            Err(_) => return None,
        }
    }
}

#[tokio::test]
async fn a_request_whose_body_is_late_is_answered_408_and_its_connection_closed() {
    let s = server_with("header_timeout = \"1s\"\nrequest_timeout = \"2s\"\n").await;
    let conn = TcpStream::connect(addr(&s)).await.unwrap();
    let (mut reader, mut writer) = conn.into_split();
    let opened = Instant::now();
    writer.write_all(SLOW_BODY).await.unwrap();
    // A byte every 300 ms does not move the deadline: it is the whole request's. Real time
    // must pass: the deadline under test is the server's clock.
    let trickle = tokio::spawn(async move {
        for _ in 0..20 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            if writer.write_all(b"a").await.is_err() {
                break;
            }
        }
    });
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), reader.read_to_end(&mut answer))
        .await
        .expect("closed within 5 s")
        .unwrap();
    let took = opened.elapsed();
    trickle.abort();
    let answer = String::from_utf8(answer).unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
        "{answer}"
    );
    let head = answer.to_ascii_lowercase();
    assert!(
        head.contains("\r\ncontent-type: application/json\r\n"),
        "{answer}"
    );
    assert!(
        head.contains("\r\nx-content-type-options: nosniff\r\n"),
        "{answer}"
    );
    assert!(head.contains("\r\nconnection: close\r\n"), "{answer}");
    assert!(
        answer.ends_with(&format!("\r\n\r\n{TIMEOUT_BODY}")),
        "{answer}"
    );
    // request_timeout, + 1.5 s of slack for a loaded machine.
    assert!(
        took >= Duration::from_millis(1900) && took <= Duration::from_millis(3500),
        "answered after {took:?}"
    );
    println!("late body answered 408 and closed {took:?} after the request began");
}

#[tokio::test]
async fn a_request_begins_at_its_first_byte_not_at_its_last_header() {
    // Headers slow (longer than request_timeout, within header_timeout): the deadline
    // counts from the first byte, so the body is late the moment it is awaited; counted
    // from the headers, the 408 would come 2 s after them, at 4.5 s.
    let s = server_with("header_timeout = \"5s\"\nrequest_timeout = \"2s\"\n").await;
    let mut conn = TcpStream::connect(addr(&s)).await.unwrap();
    let opened = Instant::now();
    let (head, body) = SLOW_BODY.split_at(20);
    conn.write_all(head).await.unwrap();
    // Real time must pass: headers slower than request_timeout, by the server's clock.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    conn.write_all(body).await.unwrap();
    let (answer, _) = read_to_close(&mut conn, Duration::from_secs(4))
        .await
        .expect("closed");
    let took = opened.elapsed();
    assert!(
        answer.starts_with(b"HTTP/1.1 408 "),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    assert!(
        took <= Duration::from_millis(3600),
        "answered after {took:?}"
    );
}

/// `GET /docs/swagger-ui-bundle.js`, the largest answer keygate gives (~1.4 MB).
const BIG_GET: &[u8] = b"GET /docs/swagger-ui-bundle.js HTTP/1.1\r\nhost: keygate\r\n\r\n";

/// A client with a small receive buffer that asks for `BIG_GET` `times`, pipelined, and
/// reads nothing.
async fn non_reader(addr: &str, times: usize) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut conn = socket.connect(addr.parse().unwrap()).await.unwrap();
    conn.write_all(&BIG_GET.repeat(times)).await.unwrap();
    conn
}

#[tokio::test]
async fn a_client_that_does_not_read_its_responses_is_dropped() {
    let s = server_with("header_timeout = \"10s\"\nrequest_timeout = \"2s\"\n").await;
    let size = s
        .http
        .get(s.url("/docs/swagger-ui-bundle.js"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
        .len();
    assert!(size > 1_000_000, "bundle of {size} bytes");
    let mut conn = non_reader(&addr(&s), 20).await;
    let opened = Instant::now();
    // The server's writes stall as soon as the socket buffers are full; it must give up
    // on this client request_timeout (+ 1 s) after that. Real time must pass: the timeout
    // under test runs on the server's clock.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let (got, took) = read_to_close(&mut conn, Duration::from_secs(2))
        .await
        .expect("a client that did not read was still served after request_timeout + 1.5 s");
    assert!(
        got.len() < 20 * size,
        "all {} bytes were written: nothing stalled",
        got.len()
    );
    println!(
        "non-reading client dropped; {} of {} bytes taken; drained in {took:?}, {:?} after opening",
        got.len(),
        20 * size,
        opened.elapsed()
    );
}

/// An HTTP/2 connection with prior knowledge, driven in the background; `closed` resolves
/// when the server closes it.
struct H2Conn {
    send: h2::client::SendRequest<Bytes>,
    closed: tokio::task::JoinHandle<Instant>,
}

async fn h2_connect(addr: &str, window: Option<u32>) -> H2Conn {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let mut builder = h2::client::Builder::new();
    if let Some(w) = window {
        builder.initial_window_size(w);
    }
    let (send, connection) = builder.handshake(tcp).await.unwrap();
    let closed = tokio::spawn(async move {
        let _ = connection.await;
        Instant::now()
    });
    H2Conn { send, closed }
}

/// A `POST /token` stream announcing 60 000 body bytes, sending 11 and stalling.
async fn h2_stalled_stream(
    conn: &mut H2Conn,
) -> Option<(h2::client::ResponseFuture, h2::SendStream<Bytes>)> {
    let req = http::Request::post("http://keygate/token")
        .header("content-type", "application/x-www-form-urlencoded")
        .header("content-length", "60000")
        .body(())
        .unwrap();
    let mut send = conn.send.clone().ready().await.ok()?;
    let (response, mut body) = send.send_request(req, false).ok()?;
    body.send_data(Bytes::from_static(b"grant_type="), false)
        .ok()?;
    Some((response, body))
}

#[tokio::test]
async fn http2_caps_streams_and_headers_and_a_stalled_stream_closes_its_connection() {
    let s = server_with("header_timeout = \"10s\"\nrequest_timeout = \"2s\"\n").await;
    let mut conn = h2_connect(&addr(&s), None).await;
    // The server's SETTINGS arrive with the first exchange.
    let healthz = http::Request::get("http://keygate/healthz")
        .body(())
        .unwrap();
    let (r, _) = conn
        .send
        .clone()
        .ready()
        .await
        .unwrap()
        .send_request(healthz, true)
        .unwrap();
    assert_eq!(r.await.unwrap().status(), 200);
    assert_eq!(conn.send.current_max_send_streams(), 32);
    // Headers over 16 KiB: 431 (sent by the HTTP/2 layer itself, without a body).
    let big = http::Request::get("http://keygate/healthz")
        .header("x-filler", "a".repeat(17 * 1024))
        .body(())
        .unwrap();
    let (r, _) = conn
        .send
        .clone()
        .ready()
        .await
        .unwrap()
        .send_request(big, true)
        .unwrap();
    assert_eq!(r.await.unwrap().status(), 431);

    let opened = Instant::now();
    let mut stalled = Vec::new();
    for _ in 0..8 {
        stalled.push(h2_stalled_stream(&mut conn).await.expect("stream opened"));
    }
    for (response, _body) in stalled {
        let r = tokio::time::timeout(Duration::from_secs(4), response)
            .await
            .expect("answered")
            .unwrap();
        assert_eq!(r.status(), 408);
        assert_eq!(r.headers()["content-type"], "application/json");
        assert_eq!(r.headers()["x-content-type-options"], "nosniff");
        let mut body = r.into_body();
        let mut text = Vec::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.unwrap();
            let _ = body.flow_control().release_capacity(chunk.len());
            text.extend_from_slice(&chunk);
        }
        assert_eq!(String::from_utf8(text).unwrap(), TIMEOUT_BODY);
    }
    let answered = opened.elapsed();
    assert!(
        answered >= Duration::from_millis(1900),
        "408 after {answered:?}"
    );
    // And the connection goes (GOAWAY, then closed).
    let closed = tokio::time::timeout(Duration::from_secs(3), conn.closed)
        .await
        .expect("the connection of stalled streams was closed")
        .unwrap();
    let took = closed - opened;
    assert!(took <= Duration::from_millis(3500), "closed after {took:?}");
    println!("stalled HTTP/2 streams: 408 after {answered:?}, connection closed after {took:?}");
}

#[tokio::test]
async fn an_http2_stream_whose_response_is_not_taken_gets_its_connection_dropped() {
    let s = server_with("header_timeout = \"10s\"\nrequest_timeout = \"2s\"\n").await;
    // A window of 0: the server cannot send a byte of any body, and no body error
    // ends the stream; each request stays in flight.
    let conn = h2_connect(&addr(&s), Some(0)).await;
    let opened = Instant::now();
    let req = http::Request::get("http://keygate/docs/swagger-ui-bundle.js")
        .body(())
        .unwrap();
    let (r, _) = conn
        .send
        .clone()
        .ready()
        .await
        .unwrap()
        .send_request(req, true)
        .unwrap();
    // Held, not read: dropping it would cancel the stream.
    let response = r.await.unwrap();
    assert_eq!(response.status(), 200);
    let closed = tokio::time::timeout(Duration::from_secs(5), conn.closed)
        .await
        .expect("a connection with a response stuck for request_timeout was dropped")
        .unwrap();
    let took = closed - opened;
    assert!(
        took >= Duration::from_millis(1900) && took <= Duration::from_millis(3800),
        "dropped after {took:?}"
    );
    drop(response);
}

#[tokio::test]
async fn requests_over_the_slots_are_refused_503_but_probes_answer() {
    let s = server_with("max_connections = 2\nrequest_timeout = \"5s\"\n").await;
    let mut conn = h2_connect(&addr(&s), None).await;
    // Two stalled streams take both request slots.
    let _a = h2_stalled_stream(&mut conn).await.unwrap();
    let _b = h2_stalled_stream(&mut conn).await.unwrap();
    let verify = http::Request::get("http://keygate/verify")
        .body(())
        .unwrap();
    let (r, _) = conn
        .send
        .clone()
        .ready()
        .await
        .unwrap()
        .send_request(verify, true)
        .unwrap();
    let r = r.await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "1");
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    let mut body = r.into_body();
    let chunk = body.data().await.unwrap().unwrap();
    assert_eq!(
        &chunk[..],
        br#"{"error":"temporarily_unavailable","error_description":"the server is temporarily unable to handle the request"}"#
    );
    for probe in ["/healthz", "/readyz"] {
        let req = http::Request::get(format!("http://keygate{probe}"))
            .body(())
            .unwrap();
        let (r, _) = conn
            .send
            .clone()
            .ready()
            .await
            .unwrap()
            .send_request(req, true)
            .unwrap();
        assert_eq!(r.await.unwrap().status(), 200, "{probe}");
    }
}

// ---------------------------------------------------------------------------------------
// The three attacks at scale, against a server in a process of its own (whose RSS is
// then the server's alone).

/// Set to a configuration path: [`child_server_process`] serves it.
const CHILD_ENV: &str = "KEYGATE_IT_CHILD_CONFIG";
const CHILD_READY: &str = "keygate-child listening on ";

/// Not a test of its own: the server of [`ChildServer`], run in a process of its own when
/// the parent sets [`CHILD_ENV`]; without it, it returns at once.
#[test]
fn child_server_process() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let state = keygate_server::AppState::from_path(path.into()).unwrap();
        let listeners = keygate_server::Listeners::bind(&state.runtime())
            .await
            .unwrap();
        println!("{CHILD_READY}{}", listeners.url().unwrap());
        keygate_server::serve(listeners, state, std::future::pending())
            .await
            .unwrap();
    });
}

struct ChildServer {
    child: std::process::Child,
    base: String,
    _stdout: std::io::BufReader<std::process::ChildStdout>,
    _dir: tempfile::TempDir,
}

/// How long after request_timeout `/healthz` must answer while attackers hold every slot.
/// The aim is 1 s (each test prints the figure it saw, under a second on a quiet machine);
/// the suite runs these beside a hundred other tests and their
/// servers on two cores, so the assertion allows 3 s more. Without the request timeout
/// `/healthz` never answers at all.
const HEALTHZ_SLACK: Duration = Duration::from_secs(4);

impl ChildServer {
    fn start(server_lines: &str) -> Self {
        let billing_key = api_key::generate("billing").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keygate.toml");
        std::fs::write(&path, config_with_server(&billing_key, server_lines, "")).unwrap();
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "connections::child_server_process",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, &path)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .unwrap();
        let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        let base = loop {
            line.clear();
            assert!(
                stdout.read_line(&mut line).unwrap() > 0,
                "the child server exited"
            );
            // The harness may have written "test <name> ... " on the same line.
            if let Some(at) = line.find(CHILD_READY) {
                break line[at + CHILD_READY.len()..].trim().to_owned();
            }
        };
        Self {
            child,
            base,
            _stdout: stdout,
            _dir: dir,
        }
    }

    fn addr(&self) -> String {
        self.base.trim_start_matches("http://").to_owned()
    }

    /// The child's resident set (`VmRSS`), in KiB.
    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }

    /// How many descriptors the child has open (its sockets among them).
    fn open_fds(&self) -> u64 {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .unwrap()
            .count() as u64
    }

    /// `GET /healthz` on a fresh connection, waited for at most `limit`: how long it took.
    async fn healthz_within(&self, limit: Duration) -> Duration {
        let start = Instant::now();
        let mut conn = tokio::time::timeout(limit, TcpStream::connect(self.addr()))
            .await
            .expect("connected")
            .unwrap();
        let (status, _) = tokio::time::timeout(
            limit.saturating_sub(start.elapsed()),
            get_on(&mut conn, "/healthz"),
        )
        .await
        .unwrap_or_else(|_| panic!("/healthz did not answer within {limit:?}"));
        assert_eq!(status, 200);
        start.elapsed()
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Raises this process's open-file limit to `wanted` where the hard limit allows (the
/// child server inherits it); the limit it then has.
fn raise_fd_limit(wanted: u64) -> u64 {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    let current = limit.current.unwrap_or(u64::MAX);
    if current < wanted {
        limit.current = Some(limit.maximum.map_or(wanted, |max| max.min(wanted)));
        let _ = setrlimit(Resource::Nofile, limit);
    }
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

/// Runs `n` attackers at once (at most 256 opening at a time): each `open`s its connection,
/// then `hold`s it until the server closes it, and reports how long that took after it
/// opened (`None`: not closed in time). Resolves once all are open, with the running set.
async fn attack<C, O, OF, H, HF>(
    n: usize,
    open: O,
    hold: H,
) -> tokio::task::JoinSet<Option<Duration>>
where
    C: Send + 'static,
    O: Fn() -> OF + Send + Sync + 'static,
    OF: Future<Output = C> + Send,
    H: Fn(C) -> HF + Send + Sync + 'static,
    HF: Future<Output = bool> + Send,
{
    let open = std::sync::Arc::new(open);
    let hold = std::sync::Arc::new(hold);
    let opening = std::sync::Arc::new(tokio::sync::Semaphore::new(256));
    let (opened_tx, mut opened_rx) = tokio::sync::mpsc::channel::<()>(n);
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..n {
        let (open, hold, opening, opened_tx) = (
            open.clone(),
            hold.clone(),
            opening.clone(),
            opened_tx.clone(),
        );
        set.spawn(async move {
            let permit = opening.acquire_owned().await.unwrap();
            let conn = open().await;
            let began = Instant::now();
            drop(permit);
            let _ = opened_tx.send(()).await;
            hold(conn).await.then(|| began.elapsed())
        });
    }
    drop(opened_tx);
    for _ in 0..n {
        opened_rx.recv().await.expect("an attacker failed to open");
    }
    set
}

/// Every attacker's result: all closed in time; the latest close after opening.
async fn all_closed(mut set: tokio::task::JoinSet<Option<Duration>>, what: &str) -> Duration {
    let mut latest = Duration::ZERO;
    while let Some(r) = set.join_next().await {
        let took = r
            .unwrap()
            .unwrap_or_else(|| panic!("{what} was held past request_timeout + 2.5 s"));
        latest = latest.max(took);
    }
    latest
}

use std::future::Future;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_slow_bodies_leave_healthz_answering_and_are_closed() {
    const N: usize = 10_000;
    // Each process (this one, the child server) holds N sockets and some.
    let wanted = N as u64 + 1000;
    assert!(
        raise_fd_limit(wanted) >= wanted,
        "this test needs an open-file limit (ulimit -Hn) of at least {wanted}"
    );
    // 10 000 connections take seconds to open on a shared machine: the default deadline
    // (10 s) is long enough for all of them to be open at once.
    let server = ChildServer::start("");
    let request_timeout = Duration::from_secs(10);
    server.healthz_within(Duration::from_secs(2)).await;
    let before = server.rss_kib();
    let started = Instant::now();
    let addr = server.addr();
    let set = attack(
        N,
        move || {
            let addr = addr.clone();
            async move {
                let mut c = TcpStream::connect(addr).await.unwrap();
                c.write_all(SLOW_BODY).await.unwrap();
                c
            }
        },
        move |mut c: TcpStream| async move {
            match read_to_close(&mut c, request_timeout + Duration::from_millis(2500)).await {
                Some((answer, _)) => {
                    assert!(
                        answer.starts_with(b"HTTP/1.1 408 "),
                        "{:?}",
                        String::from_utf8_lossy(&answer)
                    );
                    true
                }
                None => false,
            }
        },
    )
    .await;
    let opened = started.elapsed();
    let peak = server.rss_kib();
    // Every slot is taken (max_connections = 10 000): /healthz waits in the accept queue
    // until the first attackers are closed, request_timeout after they began.
    let waited = server.healthz_within(request_timeout + HEALTHZ_SLACK).await;
    let peak = peak.max(server.rss_kib());
    let latest = all_closed(set, "a slow-body connection").await;
    let grew_kib = peak.saturating_sub(before);
    println!(
        "{N} slow bodies open after {opened:?}; /healthz answered {waited:?} later; each answered \
         408 and closed, the last {latest:?} after it opened; RSS {before} KiB -> peak {peak} KiB \
         (+{grew_kib} KiB, {} B per connection)",
        grew_kib * 1024 / N as u64
    );
    // The stated bound (README, "Memory"): under 64 KiB per slow-body connection.
    assert!(grew_kib < 64 * N as u64, "RSS grew by {grew_kib} KiB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_clients_not_reading_leave_healthz_answering_and_are_dropped() {
    const N: usize = 300;
    let server = ChildServer::start(
        "max_connections = 300\nheader_timeout = \"2s\"\nrequest_timeout = \"2s\"\n",
    );
    let request_timeout = Duration::from_secs(2);
    server.healthz_within(Duration::from_secs(2)).await;
    let before = server.rss_kib();
    let fds_before = server.open_fds();
    let mut opening = tokio::task::JoinSet::new();
    for _ in 0..N {
        let addr = server.addr();
        opening.spawn(async move { non_reader(&addr, 8).await });
    }
    let mut attackers = Vec::with_capacity(N);
    while let Some(c) = opening.join_next().await {
        attackers.push(c.unwrap());
    }
    let opened = Instant::now();
    let peak = server.rss_kib();
    // Every slot is taken: /healthz waits in the accept queue until the server gives up on
    // the first of them.
    let waited = server.healthz_within(request_timeout + HEALTHZ_SLACK).await;
    let peak = peak.max(server.rss_kib());
    // The server closes its side of each (what its kernel still holds for the client is no
    // longer the server's): its descriptors go back to where they were. The clients read
    // nothing all along. Polled, since nothing in another process can be waited on; the
    // bound is request_timeout + 1 s, plus slack for 300 buffer-filling writers on a
    // machine that runs the rest of the suite at the same time (CI saw 5.5 s there).
    // Without the request timeout they would be held for as long as the clients live.
    let bound = request_timeout + Duration::from_secs(10);
    let released = loop {
        let left = server.open_fds().saturating_sub(fds_before);
        if left <= 1 {
            break opened.elapsed();
        }
        assert!(
            opened.elapsed() < bound,
            "{left} of {N} non-reading clients still held {:?} after they opened",
            opened.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    drop(attackers);
    let grew_kib = peak.saturating_sub(before);
    println!(
        "{N} non-reading clients: /healthz answered {waited:?} after all were open; all dropped \
         by the server {released:?} after they opened; RSS {before} KiB -> peak {peak} KiB \
         (+{grew_kib} KiB)"
    );
    // The stated bound: under 160 KiB per connection (32 KiB write buffer, one 16 KiB piece
    // of a response in flight, hyper's state).
    assert!(grew_kib < 160 * N as u64, "RSS grew by {grew_kib} KiB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_stalled_http2_connections_leave_healthz_answering_and_are_closed() {
    const CONNS: usize = 200;
    const STREAMS: usize = 32;
    let server = ChildServer::start("header_timeout = \"10s\"\nrequest_timeout = \"2s\"\n");
    let request_timeout = Duration::from_secs(2);
    server.healthz_within(Duration::from_secs(2)).await;
    let before = server.rss_kib();
    let addr = server.addr();
    let set = attack(
        CONNS,
        move || {
            let addr = addr.clone();
            async move {
                let mut conn = h2_connect(&addr, None).await;
                let mut streams = Vec::with_capacity(STREAMS);
                for _ in 0..STREAMS {
                    streams.push(h2_stalled_stream(&mut conn).await.expect("stream opened"));
                }
                (conn, streams)
            }
        },
        move |(conn, streams)| async move {
            let closed =
                tokio::time::timeout(request_timeout + Duration::from_millis(2500), conn.closed)
                    .await
                    .is_ok();
            drop(streams);
            closed
        },
    )
    .await;
    let peak = server.rss_kib();
    let waited = server.healthz_within(request_timeout + HEALTHZ_SLACK).await;
    let peak = peak.max(server.rss_kib());
    let latest = all_closed(set, "a stalled HTTP/2 connection").await;
    let grew_kib = peak.saturating_sub(before);
    println!(
        "{CONNS} HTTP/2 connections x {STREAMS} stalled streams: /healthz answered {waited:?} \
         after all were open; all closed, the last {latest:?} after it opened; RSS {before} KiB \
         -> peak {peak} KiB (+{grew_kib} KiB)"
    );
    // The stated bound: under 1 MiB per HTTP/2 connection with 32 stalled streams.
    assert!(grew_kib < 1024 * CONNS as u64, "RSS grew by {grew_kib} KiB");
}
