//! What every answer carries and what no request can grow (docs/security.md): nosniff everywhere,
//! the OAuth error shape for 404, 405 and 413, CSP and framing headers on `/docs`, a
//! logout that changes nothing when refused, and metrics labels from fixed sets.

use serde_json::Value;

use crate::util::*;

async fn assert_oauth_error(r: reqwest::Response, status: u16, error: &str, what: &str) {
    assert_eq!(r.status(), status, "{what}");
    assert_eq!(r.headers()["content-type"], "application/json", "{what}");
    assert_eq!(r.headers()["x-content-type-options"], "nosniff", "{what}");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], error, "{what}");
    assert!(body["error_description"].is_string(), "{what}");
    assert_eq!(body.as_object().unwrap().len(), 2, "{what}: {body}");
}

#[tokio::test]
async fn framework_errors_have_the_oauth_shape() {
    let s = TestServer::start().await;
    let r = s.http.get(s.url("/nope")).send().await.unwrap();
    assert_oauth_error(r, 404, "not_found", "unknown path").await;
    let r = s.http.get(s.url("/token")).send().await.unwrap();
    assert_eq!(r.headers()["allow"], "POST");
    assert_oauth_error(r, 405, "method_not_allowed", "GET /token").await;
    let r = s.http.delete(s.url("/verify")).send().await.unwrap();
    assert_oauth_error(r, 405, "method_not_allowed", "DELETE /verify").await;
    // Refused by its Content-Length before any handler runs.
    let r = s
        .http
        .post(s.url("/login"))
        .body(vec![b'a'; 65 * 1024])
        .send()
        .await
        .unwrap();
    assert_oauth_error(r, 413, "invalid_request", "declared oversized body").await;
    // Chunked, no length: refused while it is read.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = s.base.trim_start_matches("http://").to_owned();
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut request = b"POST /token HTTP/1.1\r\nhost: keygate\r\ncontent-type: application/x-www-form-urlencoded\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n".to_vec();
    for _ in 0..6 {
        request.extend_from_slice(format!("{:x}\r\n", 16 * 1024).as_bytes());
        request.extend(std::iter::repeat_n(b'a', 16 * 1024));
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    // The server may answer and close before reading everything.
    let _ = conn.write_all(&request).await;
    let mut answer = Vec::new();
    let _ = conn.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(
        answer.contains("x-content-type-options: nosniff"),
        "{answer}"
    );
    assert!(
        answer.ends_with(
            r#"{"error":"invalid_request","error_description":"the request body is too large"}"#
        ),
        "{answer}"
    );
}

#[tokio::test]
async fn every_answer_says_nosniff_and_docs_refuse_framing() {
    let s = TestServer::start().await;
    let token = s.token().await;
    for (path, status) in [
        ("/healthz", 200),
        ("/openapi.json", 200),
        ("/.well-known/jwks.json", 200),
        ("/verify", 401),
        ("/metrics", 200),
    ] {
        let r = s.http.get(s.url(path)).send().await.unwrap();
        assert_eq!(r.status(), status, "{path}");
        assert_eq!(r.headers()["x-content-type-options"], "nosniff", "{path}");
        assert!(
            r.headers().get("content-security-policy").is_none(),
            "{path}"
        );
    }
    let r = s.verify(&token).await;
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    let r = s.login(&s.billing_key).await;
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");

    let r = s.http.get(s.url("/docs/")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-frame-options"], "DENY");
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    let csp = r.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(csp.contains("script-src 'self'"), "{csp}");
}

#[tokio::test]
async fn a_refused_logout_leaves_the_cookie_alone() {
    let s = TestServer::with_extra("[cookie]\nenabled = true\n").await;
    let r = s
        .http
        .post(s.url("/logout"))
        .header("cookie", "keygate_token=not-a-token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(
        r.headers().get("set-cookie").is_none(),
        "401 clears nothing"
    );
    assert!(r.headers().get("clear-site-data").is_none());
    let token = s.token().await;
    let r = s.logout(&token).await;
    assert_eq!(r.status(), 204);
    assert!(
        r.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .starts_with("keygate_token=; Max-Age=0"),
        "a successful logout clears the cookie"
    );
}

#[tokio::test]
async fn made_up_methods_do_not_grow_the_metrics() {
    let s = TestServer::start().await;
    for i in 0..200 {
        let method = reqwest::Method::from_bytes(format!("RANDOM{i}").as_bytes()).unwrap();
        let r = s
            .http
            .request(method, s.url("/verify"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 405);
    }
    let metrics = s.text("/metrics").await;
    assert!(
        !metrics.contains("RANDOM"),
        "a method label per made-up method"
    );
    assert!(
        metrics.contains(
            "keygate_http_requests_total{route=\"/verify\",method=\"other\",status=\"405\"}"
        ),
        "{metrics}"
    );
}

/// A key that existed once (rotated out) and a key that never did are refused alike, in
/// the answer and in `/metrics`, which is no oracle for guessed keys.
#[tokio::test]
async fn metrics_do_not_tell_an_expired_key_from_a_wrong_one() {
    let s = TestServer::start().await;
    let old = s.billing_key.clone();
    let new = keygate::api_key::generate("billing").unwrap();
    let text = std::fs::read_to_string(&s.config_path).unwrap();
    let old_hash = keygate::api_key::KeyHash::sha256_of(&old).to_string();
    let new_hash = keygate::api_key::KeyHash::sha256_of(&new).to_string();
    s.rewrite_config(&text.replacen(
        &format!("key_hash = \"{old_hash}\""),
        &format!("key_hash = \"{new_hash}\"\nprevious_key_hash = \"{old_hash}\"\nprevious_key_expires_at = \"2020-01-01T00:00:00Z\""),
        1,
    ))
    .unwrap();
    let expired = s.login(&old).await;
    let wrong = s
        .login(&keygate::api_key::generate("billing").unwrap())
        .await;
    assert_eq!(expired.status(), 401);
    assert_eq!(wrong.status(), 401);
    assert_eq!(expired.text().await.unwrap(), wrong.text().await.unwrap());
    let metrics = s.text("/metrics").await;
    assert!(!metrics.contains("credential_expired"), "{metrics}");
    assert!(
        metrics.contains(
            "keygate_tokens_refused_total{grant=\"api_key\",reason=\"invalid_credential\"}"
        )
    );
}

/// `request` sent raw on a fresh connection: everything the server says before closing.
async fn raw_exchange(s: &TestServer, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = s.base.trim_start_matches("http://").to_owned();
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    // The server may answer and close before it has read everything.
    let _ = conn.write_all(request).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        conn.read_to_end(&mut answer),
    )
    .await
    .expect("closed within 5 s");
    String::from_utf8_lossy(&answer).into_owned()
}

/// Requests hyper refuses before any handler runs (it cannot parse them) get the same
/// shape as every other refusal, and the connection is closed.
#[tokio::test]
async fn requests_hyper_cannot_parse_get_the_oauth_shape_and_nosniff() {
    let s = TestServer::start().await;
    let filler = "a".repeat(17 * 1024);
    let cases: Vec<(&str, Vec<u8>, &str, &str)> = vec![
        (
            "malformed request line",
            b"GET /healthz HTTP/1.1 junk\r\nhost: keygate\r\n\r\n".to_vec(),
            "400 Bad Request",
            "the request is malformed",
        ),
        (
            "bad method token",
            b"G\x01T /healthz HTTP/1.1\r\nhost: keygate\r\n\r\n".to_vec(),
            "400 Bad Request",
            "the request is malformed",
        ),
        (
            "duplicate Content-Length",
            b"POST /token HTTP/1.1\r\nhost: keygate\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\nhello"
                .to_vec(),
            "400 Bad Request",
            "the request is malformed",
        ),
        (
            "a header line without a colon",
            b"GET /healthz HTTP/1.1\r\nhost: keygate\r\nno colon here\r\n\r\n".to_vec(),
            "400 Bad Request",
            "the request is malformed",
        ),
        (
            "headers over 16 KiB",
            format!("GET /healthz HTTP/1.1\r\nhost: keygate\r\nx-filler: {filler}\r\n\r\n")
                .into_bytes(),
            "431 Request Header Fields Too Large",
            "the request headers are too large",
        ),
    ];
    for (what, request, status, description) in cases {
        let answer = raw_exchange(&s, &request).await;
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status}\r\n")),
            "{what}: {answer}"
        );
        let head = answer.to_ascii_lowercase();
        for line in [
            "\r\ncontent-type: application/json\r\n",
            "\r\nx-content-type-options: nosniff\r\n",
            "\r\ncache-control: no-store\r\n",
            "\r\nconnection: close\r\n",
        ] {
            assert!(head.contains(line), "{what}: no {line:?} in {answer}");
        }
        let body = format!(r#"{{"error":"invalid_request","error_description":"{description}"}}"#);
        assert!(
            answer.ends_with(&format!("\r\n\r\n{body}")),
            "{what}: {answer}"
        );
    }
    // Just under the cap is served, and the server is unharmed.
    let filler = "a".repeat(15 * 1024);
    let answer = raw_exchange(
        &s,
        format!(
            "GET /healthz HTTP/1.1\r\nhost: keygate\r\nx-filler: {filler}\r\nconnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
}
