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

/// The claims of a token, read without verifying (the server issued it in this test).
fn claims_of(token: &str) -> Value {
    serde_json::from_slice(&unb64(token.split('.').nth(1).unwrap())).unwrap()
}

/// A password-grant request with the form `extra` and, when given, HTTP Basic.
async fn password_grant(
    s: &TestServer,
    basic: Option<(&str, &str)>,
    password: &str,
    extra: &[(&str, &str)],
) -> reqwest::Response {
    let mut form = vec![
        ("grant_type", "password"),
        ("username", "alice"),
        ("password", password),
    ];
    form.extend_from_slice(extra);
    s.post_form("/token", basic, &form).await
}

async fn expect_invalid_client(r: reqwest::Response, what: &str) {
    assert_eq!(r.status(), 401, "{what}");
    assert_eq!(
        r.headers()["www-authenticate"],
        "Basic realm=\"keygate\", charset=\"UTF-8\"",
        "{what}"
    );
    assert_eq!(error_of(r).await, "invalid_client", "{what}");
}

#[tokio::test]
async fn password_grant_authenticates_included_client_credentials_first() {
    let s = TestServer::start().await;
    let key = s.billing_key.clone();
    let wrong = format!("{key}x");
    // RFC 6749 §4.3.2: client authentication, when included, is checked before the
    // password, and a wrong one is 401 invalid_client (§5.2), good password or not.
    let r = password_grant(&s, Some(("billing", &wrong)), USER_PASSWORD, &[]).await;
    expect_invalid_client(r, "Basic with a wrong key").await;
    let r = password_grant(
        &s,
        None,
        USER_PASSWORD,
        &[("client_id", "billing"), ("client_secret", &wrong)],
    )
    .await;
    expect_invalid_client(r, "form client_secret with a wrong key").await;
    let r = s
        .http
        .post(s.url("/token"))
        .header("X-API-Key", &wrong)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "grant_type=password&username=alice&password={}",
            USER_PASSWORD.replace(' ', "+")
        ))
        .send()
        .await
        .unwrap();
    expect_invalid_client(r, "the API-key header with a wrong key").await;
    let r = password_grant(&s, None, USER_PASSWORD, &[("client_secret", &key)]).await;
    expect_invalid_client(r, "a client_secret without its client_id").await;
    // A confidential client must authenticate (§3.2.1): its id alone is not enough.
    let r = password_grant(&s, None, USER_PASSWORD, &[("client_id", "billing")]).await;
    expect_invalid_client(r, "a client's id without its secret").await;

    // A good client and a wrong password: the grant is what is refused.
    let r = password_grant(&s, Some(("billing", &key)), "wrong", &[]).await;
    assert_eq!(r.status(), 400);
    assert_eq!(error_of(r).await, "invalid_grant");
    let r = password_grant(&s, Some(("billing", &key)), USER_PASSWORD, &[]).await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn password_grant_tokens_name_the_client_that_requested_them() {
    let s = TestServer::start().await;
    let key = s.billing_key.clone();
    let token_of = |body: Value| body["access_token"].as_str().unwrap().to_owned();

    // RFC 9068 §2.2: `client_id` is the client that requested the token, `sub` the user.
    let r = password_grant(&s, Some(("billing", &key)), USER_PASSWORD, &[]).await;
    assert_eq!(r.status(), 200);
    let token = token_of(r.json().await.unwrap());
    let claims = claims_of(&token);
    assert_eq!(
        (claims["sub"].as_str(), claims["client_id"].as_str()),
        (Some("alice"), Some("billing"))
    );
    let v = s.verify(&token).await;
    assert_eq!(v.status(), 200);
    assert_eq!(v.headers()["x-auth-subject"], "alice");
    assert_eq!(v.headers()["x-auth-client-id"], "billing");
    assert_eq!(v.headers()["x-auth-role"], "admin");

    // Without client authentication: the public client, named by `client_id` or not.
    for extra in [&[][..], &[("client_id", "keygate")][..]] {
        let r = password_grant(&s, None, USER_PASSWORD, extra).await;
        assert_eq!(r.status(), 200, "{extra:?}");
        let claims = claims_of(&token_of(r.json().await.unwrap()));
        assert_eq!(claims["sub"], "alice");
        assert_eq!(claims["client_id"], "keygate", "{extra:?}");
    }

    // HTTP Basic with an empty secret authenticates nothing: Swagger UI sends `Basic` of
    // ":" when its client fields are empty. It may name the public client, no other.
    for (id, expected) in [("", 200), ("keygate", 200), ("billing", 401)] {
        let r = password_grant(&s, Some((id, "")), USER_PASSWORD, &[]).await;
        assert_eq!(r.status(), expected, "Basic {id:?} with no secret");
        if expected == 200 {
            let claims = claims_of(&token_of(r.json().await.unwrap()));
            assert_eq!(claims["client_id"], "keygate");
        } else {
            expect_invalid_client(r, "a client named by Basic without a secret").await;
        }
    }

    // `token.public_client_id` names it.
    let text = std::fs::read_to_string(&s.config_path).unwrap().replacen(
        "leeway = \"30s\"",
        "leeway = \"30s\"\npublic_client_id = \"orders-web\"",
        1,
    );
    s.rewrite_config(&text).unwrap();
    let r = password_grant(&s, None, USER_PASSWORD, &[("client_id", "orders-web")]).await;
    assert_eq!(r.status(), 200);
    let token = token_of(r.json().await.unwrap());
    assert_eq!(claims_of(&token)["client_id"], "orders-web");
    assert_eq!(
        s.verify(&token).await.headers()["x-auth-client-id"],
        "orders-web"
    );
    let r = password_grant(&s, None, USER_PASSWORD, &[("client_id", "keygate")]).await;
    expect_invalid_client(r, "the default id once another is configured").await;
}

#[tokio::test]
async fn password_grant_tokens_count_against_the_quota_of_the_client_that_requested_them() {
    let key = keygate::api_key::generate("billing").unwrap();
    let text = config_text(&key, user_hash(), "").replacen(
        "scopes = [\"orders:read\", \"orders:write\"]",
        "scopes = [\"orders:read\", \"orders:write\"]\nrate_limit = \"2/1h\"",
        1,
    );
    let s = TestServer::with_config(text, key.clone()).await;
    // The request is the client's: its /token request is charged…
    let r = password_grant(&s, Some(("billing", &key)), USER_PASSWORD, &[]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["ratelimit"], "\"default\";r=1;t=1800");
    let body: Value = r.json().await.unwrap();
    let token = body["access_token"].as_str().unwrap().to_owned();
    // …and so is every /verify of the token, by its `client_id`.
    let v = s.verify(&token).await;
    assert_eq!(v.status(), 200);
    assert_eq!(v.headers()["ratelimit"], "\"default\";r=0;t=3600");
    let v = s.verify(&token).await;
    assert_eq!(v.status(), 429);
    assert_eq!(error_of(v).await, "rate_limited");

    // The public client is no configured client: no quota, no fields.
    let r = password_grant(&s, None, USER_PASSWORD, &[]).await;
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("ratelimit").is_none());
    let body: Value = r.json().await.unwrap();
    let v = s.verify(body["access_token"].as_str().unwrap()).await;
    assert_eq!(v.status(), 200);
    assert!(v.headers().get("ratelimit").is_none());
}
