//! Health, readiness, metrics, shutdown and logs.

use std::time::Duration;

use crate::util::*;
use serde_json::{Value, json};

#[tokio::test]
async fn health_readiness_and_metrics() {
    let s = TestServer::start().await;
    let r = s.http.get(s.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"status": "ok"}));
    let r = s.http.get(s.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"status": "ready"}));

    let token = s.token().await;
    assert_eq!(s.login("wrong-key-for-metrics").await.status(), 401);
    assert_eq!(s.verify(&token).await.status(), 200);
    let r = s.http.get(s.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = r.text().await.unwrap();
    for needle in [
        "keygate_http_requests_total{route=\"/login\",method=\"POST\",status=\"200\"}",
        "keygate_http_requests_total{route=\"/login\",method=\"POST\",status=\"401\"}",
        "keygate_tokens_issued_total{grant=\"api_key\"}",
        "keygate_tokens_refused_total{grant=\"api_key\",reason=\"invalid_credential\"}",
        "keygate_token_verifications_total{result=\"valid\",reason=\"\"}",
        "keygate_http_request_duration_seconds_bucket{route=\"/verify\",method=\"GET\",le=\"0.001\"}",
    ] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }
    for secret in [
        s.billing_key.as_str(),
        token.as_str(),
        SECRET,
        "wrong-key-for-metrics",
    ] {
        assert!(!text.contains(secret), "metrics leak a credential");
    }
}

#[tokio::test]
async fn unknown_paths_get_a_json_404() {
    let s = TestServer::start().await;
    let r = s.http.get(s.url("/nope")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(error_of(r).await, "not_found");
}

#[tokio::test]
async fn shutdown_lets_in_flight_requests_finish() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = TestServer::start().await;
    // A request whose body is still arriving when shutdown starts: in flight for sure.
    let body =
        "grant_type=client_credentials&client_id=legacy&client_secret=seed-style-hand-made-api-key";
    let addr = s.base.trim_start_matches("http://").to_owned();
    let mut conn = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /token HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n{}",
        body.len(),
        &body[..10]
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    expect_continue(&mut conn).await;
    let state = s.state.clone();
    let mut stopping = tokio::spawn(s.stop());
    wait_draining(&state).await;
    // Real time must pass to show that something does not happen: serve, draining, has
    // not returned 100 ms later.
    let returned = tokio::time::timeout(Duration::from_millis(100), &mut stopping).await;
    assert!(returned.is_err(), "serve waits for the in-flight request");
    conn.write_all(&body.as_bytes()[10..]).await.unwrap();
    let mut response = String::new();
    conn.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
    stopping.await.unwrap().unwrap();
    let ready = keygate_server::router(state);
    let r = tower::ServiceExt::oneshot(
        ready,
        axum::http::Request::get("/readyz")
            .body(axum::body::Body::empty())
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 503, "readiness turned false while draining");
}
