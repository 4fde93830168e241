//! The client against keygates that misbehave: real listeners on 127.0.0.1:0 that
//! redirect, stall, fail, or answer with nonsense.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use keygate_client::{ClientError, Credentials, TokenClient, TokenClientBuilder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    base
}

fn api_key() -> Credentials {
    Credentials::ApiKey {
        key: "kg_billing_canary".into(),
        header: "X-API-Key".into(),
    }
}

fn builder(base: &str) -> TokenClientBuilder {
    TokenClient::builder(base, api_key())
}

fn token_response(token: &str, expires_in: u64) -> Response {
    let body = serde_json::json!({
        "access_token": token, "token_type": "Bearer", "expires_in": expires_in
    });
    axum::Json(body).into_response()
}

/// A keygate whose `/login` answers `t<n>` for the n-th request, or 500 while `failing`.
struct Flaky {
    base: String,
    hits: Arc<AtomicUsize>,
    failing: Arc<AtomicBool>,
}

async fn flaky(expires_in: u64) -> Flaky {
    let hits = Arc::new(AtomicUsize::new(0));
    let failing = Arc::new(AtomicBool::new(false));
    let (h, f) = (hits.clone(), failing.clone());
    let router = Router::new().route(
        "/login",
        post(move || async move {
            let n = h.fetch_add(1, Ordering::SeqCst) + 1;
            if f.load(Ordering::SeqCst) {
                return (StatusCode::INTERNAL_SERVER_ERROR, "boom").into_response();
            }
            token_response(&format!("t{n}"), expires_in)
        }),
    );
    Flaky {
        base: serve(router).await,
        hits,
        failing,
    }
}

async fn eventually(what: &str, mut f: impl AsyncFnMut() -> bool) {
    for _ in 0..200 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("never happened: {what}");
}

#[tokio::test]
async fn a_redirect_is_refused_and_the_key_never_reaches_the_other_host() {
    let trap_hits = Arc::new(AtomicUsize::new(0));
    let t = trap_hits.clone();
    let trap = serve(
        Router::new().fallback(move |headers: HeaderMap| async move {
            if headers.contains_key("x-api-key") || headers.contains_key(header::AUTHORIZATION) {
                t.fetch_add(1, Ordering::SeqCst);
            }
            token_response("stolen", 1800)
        }),
    )
    .await;
    let redirecting = serve(Router::new().fallback(move || {
        let trap = trap.clone();
        async move {
            (
                StatusCode::TEMPORARY_REDIRECT,
                [(header::LOCATION, format!("{trap}/login"))],
            )
        }
    }))
    .await;

    let err = builder(&redirecting)
        .build()
        .unwrap()
        .token()
        .await
        .unwrap_err();
    assert!(
        matches!(err, ClientError::Redirected { status: 307, ref location } if location.ends_with("/login")),
        "{err}"
    );
    let credentials = Credentials::ClientCredentials {
        client_id: "billing".into(),
        secret: "canary".into(),
        scope: None,
    };
    let err = TokenClient::builder(&redirecting, credentials)
        .build()
        .unwrap()
        .token()
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Redirected { .. }), "{err}");
    assert_eq!(trap_hits.load(Ordering::SeqCst), 0, "credentials left home");
}

#[tokio::test]
async fn a_stalled_keygate_costs_at_most_the_request_timeout() {
    // Accepts connections, reads the request, never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut buf = [0u8; 1024];
            let _ = socket.read(&mut buf).await;
            held.push(socket);
        }
    });
    let client = builder(&base)
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(10), client.token())
        .await
        .expect("the client waited past its own timeout");
    assert!(
        matches!(outcome, Err(ClientError::TimedOut { .. })),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn callers_share_one_fetch_and_a_caller_giving_up_does_not_cancel_it() {
    let hits = Arc::new(AtomicUsize::new(0));
    let (arrived_tx, mut arrived) = tokio::sync::mpsc::unbounded_channel();
    let (release, released) = tokio::sync::watch::channel(false);
    let h = hits.clone();
    let base = serve(Router::new().route(
        "/login",
        post(move || {
            let (h, arrived_tx, mut released) = (h.clone(), arrived_tx.clone(), released.clone());
            async move {
                let n = h.fetch_add(1, Ordering::SeqCst) + 1;
                let _ = arrived_tx.send(());
                let _ = released.wait_for(|r| *r).await;
                token_response(&format!("t{n}"), 1800)
            }
        }),
    ))
    .await;
    let client = builder(&base).build().unwrap();

    // The first caller starts the fetch, then gives up (a request timeout, a client gone).
    let first = {
        let c = client.clone();
        tokio::spawn(async move { c.token().await })
    };
    arrived.recv().await.unwrap();
    first.abort();
    assert!(first.await.unwrap_err().is_cancelled());

    let mut waiters = tokio::task::JoinSet::new();
    for _ in 0..10 {
        let c = client.clone();
        waiters.spawn(async move { c.token().await });
    }
    release.send(true).unwrap();
    while let Some(token) = waiters.join_next().await {
        assert_eq!(token.unwrap().unwrap(), "t1");
    }
    assert_eq!(
        hits.load(Ordering::SeqCst),
        1,
        "the abandoned fetch was thrown away and started again"
    );
}

#[tokio::test]
async fn after_a_failure_callers_get_the_error_without_a_new_request_during_backoff() {
    let keygate = flaky(1800).await;
    keygate.failing.store(true, Ordering::SeqCst);
    let client = builder(&keygate.base)
        .backoff(Duration::from_secs(60), Duration::from_secs(60))
        .build()
        .unwrap();
    let mut callers = tokio::task::JoinSet::new();
    for _ in 0..10 {
        let c = client.clone();
        callers.spawn(async move { c.token().await });
    }
    while let Some(r) = callers.join_next().await {
        let err = r.unwrap().unwrap_err();
        assert!(
            matches!(err, ClientError::ServerError { status: 500, .. }),
            "{err}"
        );
        assert!(!err.is_refused(), "a 500 is no verdict on the key");
    }
    for _ in 0..5 {
        assert!(matches!(
            client.token().await,
            Err(ClientError::ServerError { status: 500, .. })
        ));
    }
    assert_eq!(keygate.hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_held_token_is_served_while_its_renewal_fails_and_renewed_in_the_background() {
    let keygate = flaky(1800).await;
    // Renewal due at once: every call after the first is inside the renewal window.
    let client = builder(&keygate.base)
        .renew_before(Duration::from_secs(3600))
        .backoff(Duration::ZERO, Duration::ZERO)
        .build()
        .unwrap();
    assert_eq!(client.token().await.unwrap(), "t1");

    keygate.failing.store(true, Ordering::SeqCst);
    assert_eq!(
        client.token().await.unwrap(),
        "t1",
        "served, not waited for"
    );
    eventually("a failed renewal", async || {
        keygate.hits.load(Ordering::SeqCst) >= 2
    })
    .await;
    assert_eq!(client.token().await.unwrap(), "t1", "still served");

    keygate.failing.store(false, Ordering::SeqCst);
    eventually("a background renewal", async || {
        client.token().await.unwrap() != "t1"
    })
    .await;
}

#[tokio::test]
async fn a_huge_expires_in_is_believed_up_to_a_day_without_panicking() {
    let base = serve(Router::new().route(
        "/login",
        post(|| async { token_response("forever", u64::MAX) }),
    ))
    .await;
    let client = builder(&base).build().unwrap();
    assert_eq!(client.token().await.unwrap(), "forever");
    assert_eq!(client.token().await.unwrap(), "forever");
}

#[tokio::test]
async fn an_endless_answer_is_cut_off() {
    // A chunked body that never ends.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = socket.read(&mut buf).await;
                let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n";
                if socket.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let chunk = format!("4000\r\n{}\r\n", " ".repeat(0x4000));
                while socket.write_all(chunk.as_bytes()).await.is_ok() {}
            });
        }
    });
    let client = builder(&base)
        .timeout(Duration::from_secs(600))
        .build()
        .unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(20), client.token())
        .await
        .expect("the client kept reading");
    assert!(
        matches!(outcome, Err(ClientError::InvalidResponse(ref m)) if m.contains("larger than")),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn a_refusal_is_told_apart_from_a_failing_keygate() {
    let base = serve(Router::new().route(
        "/login",
        post(|| async {
            (
                StatusCode::UNAUTHORIZED,
                axum::Json(serde_json::json!({
                    "error": "invalid_client", "error_description": "no"
                })),
            )
        }),
    ))
    .await;
    let err = builder(&base).build().unwrap().token().await.unwrap_err();
    assert!(err.is_refused(), "{err}");
    let keygate = flaky(1800).await;
    keygate.failing.store(true, Ordering::SeqCst);
    let err = builder(&keygate.base)
        .build()
        .unwrap()
        .token()
        .await
        .unwrap_err();
    assert!(!err.is_refused(), "{err}");
}
