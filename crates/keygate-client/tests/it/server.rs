//! The client against a real keygate server on 127.0.0.1:0.

use std::sync::Arc;

use keygate::api_key::{self, KeyHash};
use keygate_client::{ClientError, Credentials, TokenClient};
use keygate_server::AppState;

const SECRET: &str = "4f1c0f9a7d6e8b2c3a5d7e9f1b3c5d7e9a1b3c5d7e9f1a2b3c4d5e6f7a8b9c0d";

struct Server {
    base: String,
    key: String,
    _dir: tempfile::TempDir,
}

async fn server(ttl: &str) -> Server {
    let key = api_key::generate("billing").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keygate.toml");
    std::fs::write(
        &path,
        format!(
            "[token]\nsecret = \"{SECRET}\"\nttl = \"{ttl}\"\nleeway = \"0s\"\n\n[[clients]]\nid = \"billing\"\nkey_hash = \"{}\"\nrole = \"service\"\nscopes = [\"orders:read\", \"orders:write\"]\n",
            KeyHash::sha256_of(&key)
        ),
    )
    .unwrap();
    let state = AppState::from_path(path).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(keygate_server::serve(
        listener,
        state,
        std::future::pending(),
    ));
    Server {
        base,
        key,
        _dir: dir,
    }
}

fn jti(token: &str) -> String {
    keygate::dangerous::decode_unverified(token).unwrap().1["jti"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn a_token_is_fetched_once_and_then_served_from_the_cache() {
    let s = server("30m").await;
    let client = TokenClient::with_api_key(&s.base, &s.key);
    let first = client.token().await.unwrap();
    let second = client.token().await.unwrap();
    assert_eq!(first, second);
    let http = reqwest::Client::new();
    let r = client
        .send(http.get(format!("{}/userinfo", s.base)))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let claims: serde_json::Value = r.json().await.unwrap();
    assert_eq!(claims["jti"], jti(&first));
}

#[tokio::test]
async fn client_credentials_with_a_narrowed_scope() {
    let s = server("30m").await;
    let client = TokenClient::new(
        &s.base,
        Credentials::ClientCredentials {
            client_id: "billing".into(),
            secret: s.key.clone(),
            scope: Some("orders:read".into()),
        },
    );
    let token = client.token().await.unwrap();
    let claims = keygate::dangerous::decode_unverified(&token).unwrap().1;
    assert_eq!(claims["scope"], "orders:read");
}

#[tokio::test]
async fn a_token_in_its_last_tenth_of_life_is_renewed() {
    // 2 s of life: renewal is due after 1.8 s. Real time must pass: the client schedules
    // renewal on the monotonic clock, against tokens a real server dates.
    let s = server("2s").await;
    let client = TokenClient::with_api_key(&s.base, &s.key);
    let first = client.token().await.unwrap();
    assert_eq!(client.token().await.unwrap(), first, "not due yet");
    tokio::time::sleep(std::time::Duration::from_millis(1900)).await;
    let second = client.token().await.unwrap();
    assert_ne!(jti(&first), jti(&second));
}

#[tokio::test]
async fn concurrent_callers_share_one_renewal() {
    let s = server("30m").await;
    let client = Arc::new(TokenClient::with_api_key(&s.base, &s.key));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let c = client.clone();
        tasks.spawn(async move { c.token().await.unwrap() });
    }
    let mut tokens = Vec::new();
    while let Some(t) = tasks.join_next().await {
        tokens.push(t.unwrap());
    }
    tokens.dedup();
    assert_eq!(tokens.len(), 1, "twenty callers, one token fetched");
}

#[tokio::test]
async fn a_401_renews_the_token_once_and_retries() {
    let s = server("30m").await;
    let client = Arc::new(TokenClient::with_api_key(&s.base, &s.key));
    let http = reqwest::Client::new();
    let revoked = client.token().await.unwrap();
    let r = http
        .post(format!("{}/logout", s.base))
        .bearer_auth(&revoked)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    // Several requests hit the revoked token at once; one renewal serves them all.
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..5 {
        let (c, h, url) = (client.clone(), http.clone(), format!("{}/userinfo", s.base));
        tasks.spawn(async move {
            c.send(h.get(url))
                .await
                .unwrap()
                .json::<serde_json::Value>()
                .await
                .unwrap()
        });
    }
    let mut jtis = Vec::new();
    while let Some(claims) = tasks.join_next().await {
        jtis.push(claims.unwrap()["jti"].as_str().unwrap().to_owned());
    }
    jtis.dedup();
    assert_eq!(jtis.len(), 1, "one renewal");
    assert_ne!(jtis[0], jti(&revoked));
}

#[tokio::test]
async fn refused_credentials_say_why() {
    let s = server("30m").await;
    let wrong = api_key::generate("billing").unwrap();
    let err = TokenClient::with_api_key(&s.base, &wrong)
        .token()
        .await
        .unwrap_err();
    match err {
        ClientError::Refused { status, error, .. } => {
            assert_eq!(status, 401);
            assert_eq!(error, "invalid_client");
        }
        other => panic!("expected a refusal, got {other}"),
    }
    let unreachable = TokenClient::with_api_key("http://127.0.0.1:1", &s.key);
    assert!(matches!(
        unreachable.token().await,
        Err(ClientError::Transport(_))
    ));
}

#[tokio::test]
async fn an_api_refusing_every_token_costs_one_renewal_not_one_per_request() {
    let s = server("30m").await;
    // An API that answers 401 to everything, and remembers the tokens it was shown.
    let seen = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let record = seen.clone();
    let api = axum::Router::new().fallback(move |headers: axum::http::HeaderMap| {
        let record = record.clone();
        async move {
            let bearer = headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            record.lock().unwrap().push(bearer);
            axum::http::StatusCode::UNAUTHORIZED
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api_url = format!("http://{}/orders", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, api).await.unwrap() });

    let client = TokenClient::with_api_key(&s.base, &s.key);
    let http = reqwest::Client::new();
    for _ in 0..5 {
        let r = client.send(http.get(&api_url)).await.unwrap();
        assert_eq!(r.status(), 401, "the API's answer reaches the caller");
    }
    let mut tokens = seen.lock().unwrap().clone();
    assert_eq!(tokens.len(), 6, "one retry, after the only renewal");
    tokens.sort();
    tokens.dedup();
    assert_eq!(tokens.len(), 2, "the first token and one renewal");
}

#[tokio::test]
async fn debug_output_never_shows_the_cached_token() {
    let s = server("30m").await;
    let client = TokenClient::with_api_key(&s.base, &s.key);
    let token = client.token().await.unwrap();
    let shown = format!("{client:?}");
    assert!(!shown.contains(&token), "{shown}");
    assert!(!shown.contains(&s.key), "{shown}");
}
