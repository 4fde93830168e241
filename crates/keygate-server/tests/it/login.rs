//! `POST /login`: API keys for tokens.

use crate::util::*;
use serde_json::{Value, json};

#[tokio::test]
async fn login_returns_a_token_response_that_an_independent_jws_implementation_verifies() {
    let s = TestServer::start().await;
    let r = s.login(&s.billing_key).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "no-store");
    assert_eq!(r.headers()["pragma"], "no-cache");
    assert_eq!(r.headers()["content-type"], "application/json");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 1800);
    assert_eq!(body["scope"], "orders:read orders:write");
    let token = body["access_token"].as_str().unwrap();

    // Re-sign header.payload with hmac+sha2 (not jsonwebtoken): same signature.
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3);
    let header = String::from_utf8(unb64(parts[0])).unwrap();
    let payload = String::from_utf8(unb64(parts[1])).unwrap();
    assert_eq!(sign_hs256(&header, &payload, SECRET.as_bytes()), token);

    let header: Value = serde_json::from_str(&header).unwrap();
    assert_eq!(header["alg"], "HS256");
    assert_eq!(header["typ"], "at+jwt");
    assert!(header["kid"].is_string());
    let claims: Value = serde_json::from_str(&payload).unwrap();
    assert_eq!(claims["iss"], ISSUER);
    assert_eq!(claims["sub"], "billing");
    assert_eq!(claims["aud"], "orders-api");
    assert_eq!(claims["client_id"], "billing");
    assert_eq!(claims["role"], "service");
    assert_eq!(claims["scope"], "orders:read orders:write");
    let (iat, exp, nbf) = (
        claims["iat"].as_u64().unwrap(),
        claims["exp"].as_u64().unwrap(),
        claims["nbf"].as_u64().unwrap(),
    );
    assert_eq!(exp - iat, 1800);
    assert_eq!(nbf, iat);
    assert!(iat.abs_diff(now()) < 5);
    assert_eq!(claims["jti"].as_str().unwrap().len(), 22);

    let second: Value = s.login(&s.billing_key).await.json().await.unwrap();
    let second_claims: Value = serde_json::from_slice(&unb64(
        second["access_token"]
            .as_str()
            .unwrap()
            .split('.')
            .nth(1)
            .unwrap(),
    ))
    .unwrap();
    assert_ne!(second_claims["jti"], claims["jti"], "jti is unique");
}

#[tokio::test]
async fn login_refuses_missing_wrong_and_malformed_keys_alike() {
    let s = TestServer::start().await;
    let r = s.http.post(s.url("/login")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "ApiKey realm=\"keygate\"");
    let missing: Value = r.json().await.unwrap();
    assert_eq!(
        missing,
        json!({"error": "invalid_client", "error_description": "client authentication failed"})
    );
    let wrong = keygate::api_key::generate("billing").unwrap();
    let mut typo = s.billing_key.clone();
    typo.replace_range(20..21, if &typo[20..21] == "a" { "b" } else { "a" });
    let unknown = keygate::api_key::generate("nobody").unwrap();
    for key in [
        wrong.as_str(),
        typo.as_str(),
        unknown.as_str(),
        "",
        "x",
        "kg_billing_",
    ] {
        let r = s.login(key).await;
        assert_eq!(r.status(), 401, "{key}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body, missing, "same body for every refusal: {key}");
    }
}

#[tokio::test]
async fn seed_style_key_in_the_access_token_header() {
    let s = TestServer::with_extra("[api_key]\nheader = \"access_token\"\n").await;
    let r = s
        .http
        .post(s.url("/login"))
        .header("access_token", SEED_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["scope"], "orders:read");
    // The default header is no longer read.
    assert_eq!(s.login(SEED_KEY).await.status(), 401);
}

#[tokio::test]
async fn a_hand_made_key_that_starts_with_kg_is_found_by_its_digest() {
    // The anchors' demo key: a plain string to its owner, not in keygate's generated shape.
    let key = "kg_test_5f2b8c1e9a7d4036b1e8f0c2d4a6b8e0f1a3c5e7";
    let s = TestServer::with_extra(&format!(
        "[[clients]]\nid = \"seed-kg\"\nkey_hash = \"{}\"\nrole = \"admin\"\n",
        keygate::api_key::KeyHash::sha256_of(key)
    ))
    .await;
    let r = s.login(key).await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    let v = s.verify(body["access_token"].as_str().unwrap()).await;
    assert_eq!(v.status(), 200);
    assert_eq!(v.headers()["x-auth-subject"], "seed-kg");
    // One character off is still refused.
    assert_eq!(s.login(&key[..key.len() - 1]).await.status(), 401);
}

#[tokio::test]
async fn query_and_cookie_keys_work_only_when_configured() {
    let off = TestServer::start().await;
    let r = off
        .http
        .post(off.url(&format!("/login?api_key={SEED_KEY}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "query keys are off by default");

    let s = TestServer::with_extra("[api_key]\nquery = \"api_key\"\ncookie = \"api_key\"\n").await;
    let r = s
        .http
        .post(s.url(&format!("/login?api_key={SEED_KEY}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = s
        .http
        .post(s.url("/login"))
        .header("cookie", format!("api_key={SEED_KEY}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = s
        .http
        .post(s.url(&format!("/login?api_key={SEED_KEY}")))
        .header("X-API-Key", &s.billing_key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "two different keys");
    assert_eq!(error_of(r).await, "invalid_request");
}

#[tokio::test]
async fn expired_and_revoked_clients_cannot_log_in() {
    let key = keygate::api_key::generate("billing").unwrap();
    let extra = format!(
        "[[clients]]\nid = \"old\"\nkey_hash = \"{}\"\nrole = \"r\"\nexpires_at = \"2020-01-01T00:00:00Z\"\n\n[[clients]]\nid = \"gone\"\nkey_hash = \"{}\"\nrole = \"r\"\nrevoked_at = \"2020-01-01T00:00:00Z\"\n",
        keygate::api_key::KeyHash::sha256_of("old-key-000"),
        keygate::api_key::KeyHash::sha256_of("gone-key-000"),
    );
    let s = TestServer::with_config(config_text(&key, user_hash(), &extra), key).await;
    assert_eq!(s.login("old-key-000").await.status(), 401);
    assert_eq!(s.login("gone-key-000").await.status(), 401);
    assert_eq!(s.login(&s.billing_key.clone()).await.status(), 200);
}

/// An unknown username is checked against one real user's hash, chosen by a key derived
/// from the configuration: two replicas of one file, and one replica after a reload,
/// choose the same for every name, so a name's cost tells nothing about which replica
/// answered or when.
#[tokio::test]
async fn replicas_and_reloads_pick_the_same_stand_in() {
    let key = keygate::api_key::generate("billing").unwrap();
    let mut text = config_text(&key, user_hash(), "");
    for i in 0..3 {
        let hash = keygate::password::hash_password(format!("password {i}").as_bytes()).unwrap();
        text.push_str(&format!(
            "\n[[users]]\nusername = \"user-{i}\"\npassword_hash = \"{}\"\nrole = \"user\"\n",
            hash.as_str()
        ));
    }
    let a = TestServer::with_config(text.clone(), key.clone()).await;
    let b = TestServer::with_config(text.clone(), key).await;
    let names: Vec<String> = (0..50).map(|i| format!("nobody-{i}")).collect();
    let picks = |s: &TestServer| -> Vec<String> {
        let rt = s.state.runtime();
        names
            .iter()
            .map(|n| rt.directory.stand_in(n).unwrap().as_str().to_owned())
            .collect()
    };
    let first = picks(&a);
    assert_eq!(first, picks(&b), "two replicas of one file");
    let distinct: std::collections::BTreeSet<&String> = first.iter().collect();
    assert_eq!(distinct.len(), 4, "every user stands in for some name");
    a.rewrite_config(&text.replace("ttl = \"30m\"", "ttl = \"20m\""))
        .unwrap();
    assert_eq!(
        a.state.runtime().config.token.ttl,
        std::time::Duration::from_secs(1200),
        "reloaded"
    );
    assert_eq!(first, picks(&a), "after a reload");
}
