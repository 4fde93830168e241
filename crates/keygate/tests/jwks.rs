//! `JwksVerifier` against JWKS servers that stall, fail, redirect or lie: a real listener
//! on 127.0.0.1:0 whose next answers each test chooses.
#![cfg(feature = "jwks")]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keygate::Error;
use keygate::error::TokenError;
use keygate::token::{
    Grant, Issuer, JwksVerifier, KeySet, MAX_JWKS_BYTES, SigningAlgorithm, SigningKey, TokenPolicy,
};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What the server answers to the next requests.
#[derive(Clone)]
enum Answer {
    Json(String),
    Status(u16),
    Redirect(String),
    /// Reads the request, never answers.
    Stall,
    /// A chunked body that never ends.
    Endless,
    /// Waits for the gate to open, then answers the JSON.
    Gated(String, tokio::sync::watch::Receiver<bool>),
}

struct JwksServer {
    url: String,
    hits: Arc<AtomicUsize>,
    answer: Arc<Mutex<Answer>>,
}

impl JwksServer {
    fn answer(&self, a: Answer) {
        *self.answer.lock().unwrap() = a;
    }

    fn keys(&self, keys: &[&Value]) {
        self.answer(Answer::Json(json!({ "keys": keys }).to_string()));
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

async fn jwks_server(first: Answer) -> JwksServer {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/.well-known/jwks.json",
        listener.local_addr().unwrap()
    );
    let hits = Arc::new(AtomicUsize::new(0));
    let answer = Arc::new(Mutex::new(first));
    let (h, a) = (hits.clone(), answer.clone());
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            h.fetch_add(1, Ordering::SeqCst);
            let answer = a.lock().unwrap().clone();
            tokio::spawn(respond(socket, answer));
        }
    });
    JwksServer { url, hits, answer }
}

async fn respond(mut socket: TcpStream, answer: Answer) {
    let mut request = Vec::new();
    let mut buf = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        match socket.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
    }
    let simple = |status: u16, extra: &str, body: &str| {
        format!(
            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n{extra}\r\n{body}",
            body.len()
        )
    };
    let text = match answer {
        Answer::Json(body) => simple(200, "", &body),
        Answer::Gated(body, mut gate) => {
            let _ = gate.wait_for(|open| *open).await;
            simple(200, "", &body)
        }
        Answer::Status(code) => simple(code, "", ""),
        Answer::Redirect(to) => simple(307, &format!("location: {to}\r\n"), ""),
        Answer::Stall => {
            std::future::pending::<()>().await;
            unreachable!()
        }
        Answer::Endless => {
            let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\nA\r\n{\"keys\": [\r\n";
            let _ = socket.write_all(head.as_bytes()).await;
            let chunk = format!("4000\r\n{}\r\n", " ".repeat(0x4000));
            while socket.write_all(chunk.as_bytes()).await.is_ok() {}
            return;
        }
    };
    let _ = socket.write_all(text.as_bytes()).await;
    let _ = socket.shutdown().await;
}

fn policy() -> TokenPolicy {
    TokenPolicy::new("https://keygate.test")
}

/// A signing key: its public JWK and tokens signed with it.
struct Signer {
    jwk: Value,
    issuer: Issuer,
}

impl Signer {
    fn new(alg: SigningAlgorithm) -> Self {
        let (key, _) = SigningKey::generate(alg).unwrap();
        let jwk = serde_json::to_value(key.public_jwk().unwrap()).unwrap();
        Self {
            jwk,
            issuer: Issuer::new(Arc::new(KeySet::single(key)), policy()),
        }
    }

    fn token(&self) -> String {
        let grant = Grant {
            subject: "billing",
            client_id: "billing",
            role: "service",
            scopes: &[],
        };
        self.issuer.issue(&grant).unwrap().token
    }
}

async fn verifier(url: &str) -> JwksVerifier {
    JwksVerifier::builder(url, SigningAlgorithm::ES256, policy())
        .timeout(Duration::from_secs(600))
        .fetch()
        .await
        .unwrap()
}

const BOUND: Duration = Duration::from_secs(10);

/// Runs `work`, telling `polled` as soon as its first poll is over whether that poll left
/// it waiting (`true`) or finished it.
async fn after_first_poll<T>(
    work: impl std::future::Future<Output = T>,
    polled: tokio::sync::mpsc::UnboundedSender<bool>,
) -> T {
    let mut work = std::pin::pin!(work);
    let first = std::future::poll_fn(|cx| std::task::Poll::Ready(work.as_mut().poll(cx))).await;
    let _ = polled.send(first.is_pending());
    match first {
        std::task::Poll::Ready(out) => out,
        std::task::Poll::Pending => work.await,
    }
}

#[tokio::test]
async fn verification_never_waits_for_a_stalled_refresh() {
    let a = Signer::new(SigningAlgorithm::ES256);
    let server = jwks_server(Answer::Stall).await;
    server.keys(&[&a.jwk]);
    // Keys are stale at once: every verification wants a refresh.
    let v = verifier(&server.url)
        .await
        .max_age(Duration::ZERO)
        .min_refresh_interval(Duration::ZERO);
    server.answer(Answer::Stall);
    for _ in 0..3 {
        let claims = tokio::time::timeout(BOUND, v.verify(&a.token()))
            .await
            .expect("verification waited for the JWKS");
        assert_eq!(claims.unwrap().sub, "billing");
    }
    // The refresh runs as its own task: wait for it to reach the server, then verify
    // more while it hangs there.
    for _ in 0..400 {
        if server.hits() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    for _ in 0..3 {
        let verified = tokio::time::timeout(BOUND, v.verify(&a.token())).await;
        assert!(verified.expect("verification waited for the JWKS").is_ok());
    }
    assert_eq!(server.hits(), 2, "one refresh, still in flight, shared");
}

#[tokio::test]
async fn an_unknown_kid_waits_for_one_shared_refetch_and_follows_a_rotation() {
    let (a, b) = (
        Signer::new(SigningAlgorithm::ES256),
        Signer::new(SigningAlgorithm::ES256),
    );
    let server = jwks_server(Answer::Stall).await;
    server.keys(&[&a.jwk]);
    let v = Arc::new(
        verifier(&server.url)
            .await
            .min_refresh_interval(Duration::ZERO),
    );
    let (open, gate) = tokio::sync::watch::channel(false);
    server.answer(Answer::Gated(
        json!({ "keys": [&a.jwk, &b.jwk] }).to_string(),
        gate,
    ));
    let mut verifications = tokio::task::JoinSet::new();
    let (polled, mut polled_rx) = tokio::sync::mpsc::unbounded_channel();
    for _ in 0..10 {
        let (v, token, polled) = (v.clone(), b.token(), polled.clone());
        verifications.spawn(after_first_poll(
            async move { v.verify(&token).await },
            polled,
        ));
    }
    // A verification's first poll runs up to its wait for the refetch: once all ten are
    // past it, every one has found the kid unknown and is waiting on the refetch.
    for _ in 0..10 {
        assert!(
            polled_rx.recv().await.unwrap(),
            "an unknown kid waits for the refetch"
        );
    }
    open.send(true).unwrap();
    while let Some(r) = verifications.join_next().await {
        assert_eq!(r.unwrap().unwrap().sub, "billing");
    }
    assert_eq!(server.hits(), 2, "ten unknown kids, one refetch");
    assert_eq!(v.verify(&a.token()).await.unwrap().sub, "billing");
}

#[tokio::test]
async fn made_up_kids_refetch_at_most_once_per_floor() {
    let a = Signer::new(SigningAlgorithm::ES256);
    let server = jwks_server(Answer::Stall).await;
    server.keys(&[&a.jwk]);
    let v = verifier(&server.url).await;
    for _ in 0..20 {
        let other = Signer::new(SigningAlgorithm::ES256);
        assert!(matches!(
            v.verify(&other.token()).await,
            Err(Error::Token(TokenError::UnknownKeyId))
        ));
    }
    assert_eq!(server.hits(), 1, "within the 10 s floor: no refetch");
}

#[tokio::test]
async fn a_bad_answer_never_replaces_good_keys() {
    let a = Signer::new(SigningAlgorithm::ES256);
    let server = jwks_server(Answer::Stall).await;
    server.keys(&[&a.jwk]);
    let v = verifier(&server.url).await;

    let trap = jwks_server(Answer::Json(json!({"keys": []}).to_string())).await;
    let mut enc_only = Signer::new(SigningAlgorithm::ES256).jwk;
    enc_only["use"] = "enc".into();
    let bad = [
        ("no keys", Answer::Json(json!({"keys": []}).to_string())),
        ("not JSON", Answer::Json("<html>oops</html>".into())),
        ("a 500", Answer::Status(500)),
        ("a 404", Answer::Status(404)),
        ("a redirect", Answer::Redirect(trap.url.clone())),
        (
            "an encryption key only",
            Answer::Json(json!({ "keys": [enc_only] }).to_string()),
        ),
        (
            "a body over the cap",
            Answer::Json(format!(
                "{{\"keys\": [], \"pad\": \"{}\"}}",
                "x".repeat(MAX_JWKS_BYTES)
            )),
        ),
        ("an endless body", Answer::Endless),
    ];
    for (what, answer) in bad {
        server.answer(answer);
        let refreshed = tokio::time::timeout(BOUND, v.refresh())
            .await
            .unwrap_or_else(|_| panic!("{what}: the fetch did not stop"));
        let err = refreshed.expect_err(what);
        assert!(matches!(err, Error::Jwks(_)), "{what}: {err}");
        assert_eq!(
            v.verify(&a.token()).await.unwrap().sub,
            "billing",
            "{what} replaced the keys"
        );
    }
    assert_eq!(trap.hits(), 0, "the redirect was followed");
}

#[tokio::test]
async fn keys_published_for_encryption_never_verify() {
    let (a, evil) = (
        Signer::new(SigningAlgorithm::ES256),
        Signer::new(SigningAlgorithm::ES256),
    );
    let mut enc = evil.jwk.clone();
    enc["use"] = "enc".into();
    let mut encrypt_ops = evil.jwk.clone();
    encrypt_ops.as_object_mut().unwrap().remove("use");
    encrypt_ops["key_ops"] = json!(["encrypt"]);
    for published in [enc, encrypt_ops] {
        let server = jwks_server(Answer::Stall).await;
        server.keys(&[&a.jwk, &published]);
        let v = verifier(&server.url).await;
        assert!(v.verify(&a.token()).await.is_ok());
        assert!(matches!(
            v.verify(&evil.token()).await,
            Err(Error::Token(TokenError::UnknownKeyId))
        ));
    }
}

#[tokio::test]
async fn a_weak_rsa_key_is_not_taken_for_a_usable_one() {
    let a = Signer::new(SigningAlgorithm::RS256);
    let server = jwks_server(Answer::Stall).await;
    server.keys(&[&a.jwk]);
    let v = JwksVerifier::fetch(&server.url, SigningAlgorithm::RS256, policy())
        .await
        .unwrap();
    // A 1024-bit modulus under a new kid: the set's only key.
    let mut weak = a.jwk.clone();
    let n = weak["n"].as_str().unwrap();
    weak["n"] = n[..n.len() / 2].into();
    weak["kid"] = "weak".into();
    server.keys(&[&weak]);
    let err = v.refresh().await.unwrap_err();
    assert!(err.to_string().contains("no usable"), "{err}");
    assert_eq!(v.verify(&a.token()).await.unwrap().sub, "billing");
}

#[tokio::test]
async fn the_first_fetch_fails_without_a_usable_key() {
    let server = jwks_server(Answer::Json(json!({"keys": []}).to_string())).await;
    let err = JwksVerifier::fetch(&server.url, SigningAlgorithm::ES256, policy())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Jwks(_)), "{err}");
}
