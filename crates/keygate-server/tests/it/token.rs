//! `POST /token`: client credentials and the password grant (RFC 6749).

use crate::util::*;
use serde_json::{Value, json};

#[tokio::test]
async fn client_credentials_with_basic_and_with_form() {
    let s = TestServer::start().await;
    let r = s
        .http
        .post(s.url("/token"))
        .basic_auth("billing", Some(&s.billing_key))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("grant_type=client_credentials&scope=orders:read")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["scope"], "orders:read");
    assert_eq!(body["token_type"], "Bearer");

    let r = s
        .token_form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "legacy"),
            ("client_secret", SEED_KEY),
        ])
        .await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["scope"], "orders:read");
}

#[tokio::test]
async fn token_endpoint_errors_follow_rfc_6749() {
    let s = TestServer::start().await;
    let key = s.billing_key.clone();

    let r = s
        .token_form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "billing"),
            ("client_secret", "nope"),
        ])
        .await;
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.headers()["www-authenticate"],
        "Basic realm=\"keygate\", charset=\"UTF-8\""
    );
    assert_eq!(error_of(r).await, "invalid_client");

    let r = s.token_form(&[("grant_type", "client_credentials")]).await;
    assert_eq!(r.status(), 401);
    assert_eq!(error_of(r).await, "invalid_client");

    let r = s
        .http
        .post(s.url("/token"))
        .basic_auth("billing", Some(&key))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "grant_type=client_credentials&client_id=billing&client_secret={key}"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "two client authentication methods");
    assert_eq!(error_of(r).await, "invalid_request");

    let r = s
        .token_form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "billing"),
            ("client_secret", &key),
            ("scope", "orders:delete"),
        ])
        .await;
    assert_eq!(r.status(), 400);
    assert_eq!(error_of(r).await, "invalid_scope");

    let r = s.token_form(&[("grant_type", "authorization_code")]).await;
    assert_eq!(r.status(), 400);
    assert_eq!(error_of(r).await, "unsupported_grant_type");

    let r = s.token_form(&[("scope", "x")]).await;
    assert_eq!(r.status(), 400);
    assert_eq!(error_of(r).await, "invalid_request");

    let r = s
        .http
        .post(s.url("/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("grant_type=client_credentials&grant_type=password")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(error_of(r).await, "invalid_request");

    let r = s
        .http
        .post(s.url("/token"))
        .json(&json!({"grant_type": "client_credentials"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "JSON is the wrong content type");
    assert_eq!(error_of(r).await, "invalid_request");

    let r = s.http.get(s.url("/token")).send().await.unwrap();
    assert_eq!(r.status(), 405);
}

#[tokio::test]
async fn password_grant_with_scope_narrowing() {
    let s = TestServer::start().await;
    let r = s
        .token_form(&[
            ("grant_type", "password"),
            ("username", "alice"),
            ("password", USER_PASSWORD),
        ])
        .await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["scope"], "orders:read");
    let token = body["access_token"].as_str().unwrap();
    let v = s.verify(token).await;
    assert_eq!(v.status(), 200);
    assert_eq!(v.headers()["x-auth-subject"], "alice");
    assert_eq!(v.headers()["x-auth-role"], "admin");

    let r = s
        .token_form(&[
            ("grant_type", "password"),
            ("username", "alice"),
            ("password", USER_PASSWORD),
            ("scope", "orders:write"),
        ])
        .await;
    assert_eq!(r.status(), 400);
    assert_eq!(error_of(r).await, "invalid_scope");

    let wrong = s
        .token_form(&[
            ("grant_type", "password"),
            ("username", "alice"),
            ("password", "wrong"),
        ])
        .await;
    let unknown = s
        .token_form(&[
            ("grant_type", "password"),
            ("username", "mallory"),
            ("password", "wrong"),
        ])
        .await;
    assert_eq!(wrong.status(), 400);
    assert_eq!(unknown.status(), 400);
    let (w, u): (Value, Value) = (wrong.json().await.unwrap(), unknown.json().await.unwrap());
    assert_eq!(w, u, "unknown user and wrong password look the same");
    assert_eq!(w["error"], "invalid_grant");

    let r = s
        .token_form(&[("grant_type", "password"), ("username", "alice")])
        .await;
    assert_eq!(r.status(), 400);
    assert_eq!(error_of(r).await, "invalid_request");
}

#[tokio::test]
async fn oversized_passwords_are_refused_without_hashing() {
    let s = TestServer::start().await;
    let huge = "p".repeat(2048);
    let r = s
        .token_form(&[
            ("grant_type", "password"),
            ("username", "alice"),
            ("password", &huge),
        ])
        .await;
    assert_eq!(r.status(), 400);
    assert_eq!(error_of(r).await, "invalid_grant");
    let metrics = s.text("/metrics").await;
    assert!(
        metrics.contains(
            "keygate_tokens_refused_total{grant=\"password\",reason=\"password_too_long\"}"
        ),
        "refused for its length, before any hash"
    );
}

#[tokio::test]
async fn password_grant_is_off_without_users() {
    let key = keygate::api_key::generate("billing").unwrap();
    let text = config_text(&key, user_hash(), "");
    let text = text[..text.find("[[users]]").unwrap()].to_owned();
    let s = TestServer::with_config(text, key).await;
    let r = s
        .token_form(&[
            ("grant_type", "password"),
            ("username", "alice"),
            ("password", USER_PASSWORD),
        ])
        .await;
    assert_eq!(r.status(), 400);
    assert_eq!(error_of(r).await, "unsupported_grant_type");
}
