//! Black-box tests: the real server on 127.0.0.1:0, spoken to over HTTP.

mod util;

use std::time::Duration;

use serde_json::{Value, json};
use util::*;

// ---------------------------------------------------------------- /login

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

// ---------------------------------------------------------------- /token

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

// ---------------------------------------------------------------- /verify, /userinfo

#[tokio::test]
async fn verify_sets_forward_auth_headers_and_checks_demands() {
    let s = TestServer::start().await;
    let token = s.token().await;
    let r = s.verify(&token).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-auth-subject"], "billing");
    assert_eq!(r.headers()["x-auth-role"], "service");
    assert_eq!(r.headers()["x-auth-scope"], "orders:read orders:write");
    assert_eq!(r.headers()["x-auth-client-id"], "billing");

    for q in [
        "?role=service",
        "?role=admin,service",
        "?scope=orders:read",
        "?scope=orders:read%20orders:write&role=service",
    ] {
        let r = s.get_with_token(&format!("/verify{q}"), &token).await;
        assert_eq!(r.status(), 200, "{q}");
    }
    let r = s.get_with_token("/verify?role=admin", &token).await;
    assert_eq!(r.status(), 403);
    assert_eq!(
        r.headers()["www-authenticate"],
        "Bearer realm=\"keygate\", error=\"insufficient_scope\""
    );
    assert_eq!(error_of(r).await, "insufficient_scope");
    let r = s
        .get_with_token("/verify?scope=orders:delete", &token)
        .await;
    assert_eq!(r.status(), 403);
    assert_eq!(
        r.headers()["www-authenticate"],
        "Bearer realm=\"keygate\", error=\"insufficient_scope\", scope=\"orders:delete\""
    );
}

#[tokio::test]
async fn missing_token_gets_a_bare_bearer_challenge() {
    let s = TestServer::start().await;
    for path in ["/verify", "/userinfo"] {
        let r = s.http.get(s.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 401, "{path}");
        assert_eq!(r.headers()["www-authenticate"], "Bearer realm=\"keygate\"");
    }
    let r = s.http.post(s.url("/logout")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer realm=\"keygate\"");
    let r = s
        .http
        .get(s.url("/verify"))
        .basic_auth("billing", Some("x"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "Basic is not a bearer token");
    assert_eq!(r.headers()["www-authenticate"], "Bearer realm=\"keygate\"");
}

const INVALID_TOKEN_CHALLENGE: &str = "Bearer realm=\"keygate\", error=\"invalid_token\", error_description=\"the token is invalid, expired or revoked\"";

async fn assert_invalid(s: &TestServer, token: &str, what: &str) {
    for path in ["/verify", "/userinfo"] {
        let r = s.get_with_token(path, token).await;
        assert_eq!(r.status(), 401, "{what} on {path}");
        assert_eq!(
            r.headers()["www-authenticate"],
            INVALID_TOKEN_CHALLENGE,
            "{what}"
        );
        assert_eq!(error_of(r).await, "invalid_token", "{what}");
    }
}

#[tokio::test]
async fn forged_tokens_are_refused_over_http() {
    let s = TestServer::start().await;
    let good = s.token().await;
    let parts: Vec<&str> = good.split('.').collect();
    let n = now();

    for alg in ["none", "None", "NONE", "nOnE"] {
        let h = b64(format!(r#"{{"alg":"{alg}","typ":"at+jwt"}}"#).as_bytes());
        assert_invalid(&s, &format!("{h}.{}.", parts[1]), alg).await;
        assert_invalid(&s, &format!("{h}.{}", parts[1]), alg).await;
    }
    let admin = b64(claims_with(json!({"role": "admin"})).as_bytes());
    assert_invalid(
        &s,
        &format!("{}.{admin}.{}", parts[0], parts[2]),
        "tampered",
    )
    .await;

    let hs = r#"{"alg":"HS256","typ":"at+jwt"}"#;
    let other_secret = b"9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b";
    assert_invalid(
        &s,
        &sign_hs256(hs, &claims_with(json!({})), other_secret),
        "wrong secret",
    )
    .await;
    assert_invalid(
        &s,
        &sign_hs256(hs, &claims_with(json!({})), b""),
        "blank key",
    )
    .await;
    let expired = claims_with(json!({"exp": n - 120, "iat": n - 2000, "nbf": n - 2000}));
    assert_invalid(&s, &sign_hs256(hs, &expired, SECRET.as_bytes()), "expired").await;
    let future = claims_with(json!({"iat": n + 3600}));
    assert_invalid(
        &s,
        &sign_hs256(hs, &future, SECRET.as_bytes()),
        "future iat",
    )
    .await;
    let nbf = claims_with(json!({"nbf": n + 3600}));
    assert_invalid(&s, &sign_hs256(hs, &nbf, SECRET.as_bytes()), "future nbf").await;
    let str_exp = claims_with(json!({"exp": "99999999999"}));
    assert_invalid(
        &s,
        &sign_hs256(hs, &str_exp, SECRET.as_bytes()),
        "string exp",
    )
    .await;
    let aud = claims_with(json!({"aud": "other-api"}));
    assert_invalid(&s, &sign_hs256(hs, &aud, SECRET.as_bytes()), "audience").await;
    let iss = claims_with(json!({"iss": "https://keygate.test/"}));
    assert_invalid(&s, &sign_hs256(hs, &iss, SECRET.as_bytes()), "issuer").await;
    let jwt = r#"{"alg":"HS256","typ":"JWT"}"#;
    assert_invalid(
        &s,
        &sign_hs256(jwt, &claims_with(json!({})), SECRET.as_bytes()),
        "typ JWT",
    )
    .await;
    let crit = r#"{"alg":"HS256","typ":"at+jwt","crit":["exp"]}"#;
    assert_invalid(
        &s,
        &sign_hs256(crit, &claims_with(json!({})), SECRET.as_bytes()),
        "crit",
    )
    .await;
    let ghost = claims_with(json!({"sub": "ghost", "client_id": "ghost"}));
    assert_invalid(
        &s,
        &sign_hs256(hs, &ghost, SECRET.as_bytes()),
        "unknown subject",
    )
    .await;
    assert_invalid(&s, "not-a-token", "garbage").await;
    assert_invalid(&s, &"a".repeat(9000), "oversized").await;

    // The helper itself signs acceptable tokens: the refusals above are the checks'.
    let ok = sign_hs256(hs, &claims_with(json!({})), SECRET.as_bytes());
    assert_eq!(s.verify(&ok).await.status(), 200);
}

#[tokio::test]
async fn userinfo_returns_the_claims() {
    let s = TestServer::start().await;
    let token = s.token().await;
    let r = s.get_with_token("/userinfo", &token).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let claims: Value = r.json().await.unwrap();
    assert_eq!(claims["sub"], "billing");
    assert_eq!(claims["role"], "service");
    assert_eq!(claims["iss"], ISSUER);
}

// ---------------------------------------------------------------- /logout and cookies

#[tokio::test]
async fn logout_revokes_the_token_until_it_expires() {
    let s = TestServer::start().await;
    let token = s.token().await;
    let other = s.token().await;
    let r = s.logout(&token).await;
    assert_eq!(r.status(), 204);
    assert_invalid(&s, &token, "after logout").await;
    let r = s.logout(&token).await;
    assert_eq!(r.status(), 401);
    assert_eq!(
        s.verify(&other).await.status(),
        200,
        "only that token is revoked"
    );
}

#[tokio::test]
async fn cookie_mode_sets_and_clears_the_token_cookie() {
    let s =
        TestServer::with_extra("[cookie]\nenabled = true\nsecure = true\nsame_site = \"Strict\"\n")
            .await;
    let r = s.login(&s.billing_key).await;
    assert_eq!(r.status(), 200);
    let set = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    let body: Value = r.json().await.unwrap();
    let token = body["access_token"].as_str().unwrap();
    assert_eq!(
        set,
        format!("keygate_token={token}; Max-Age=1800; Path=/; HttpOnly; Secure; SameSite=Strict")
    );
    let cookie = format!("keygate_token={token}");
    let r = s
        .http
        .get(s.url("/verify"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let r = s
        .http
        .post(s.url("/logout"))
        .header("cookie", &cookie)
        .header("origin", "https://evil.test")
        .header("sec-fetch-site", "cross-site")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "cross-site logout with only the cookie");
    assert_eq!(
        s.http
            .get(s.url("/verify"))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    let r = s
        .http
        .post(s.url("/logout"))
        .header("cookie", &cookie)
        .header("origin", "https://keygate.test")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(
        r.headers()["set-cookie"],
        "keygate_token=; Max-Age=0; Path=/; HttpOnly; Secure; SameSite=Strict"
    );
    let r = s
        .http
        .get(s.url("/verify"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    let fresh = s.token().await;
    let r = s
        .http
        .get(s.url("/verify"))
        .bearer_auth(&fresh)
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "header and cookie disagree");
}

// ---------------------------------------------------------------- limits

#[tokio::test]
async fn failed_attempts_from_one_address_get_429_with_retry_after() {
    let s = TestServer::start().await;
    for _ in 0..5 {
        assert_eq!(s.login("wrong-key").await.status(), 401);
    }
    let r = s.login("wrong-key").await;
    assert_eq!(r.status(), 429);
    retry_after(&r);
    assert_eq!(error_of(r).await, "too_many_attempts");
    assert_eq!(
        s.login(&s.billing_key).await.status(),
        429,
        "the address is blocked, not just the key"
    );
}

#[tokio::test]
async fn failed_attempts_against_one_key_id_are_limited_across_addresses() {
    let s = TestServer::start().await;
    // Re-write with a trusted proxy so X-Forwarded-For sets the client address.
    let text = std::fs::read_to_string(&s.config_path).unwrap().replacen(
        "shutdown_timeout = \"5s\"",
        "shutdown_timeout = \"5s\"\ntrusted_proxies = [\"127.0.0.1\"]",
        1,
    );
    s.rewrite_config(&text).unwrap();
    let wrong = keygate::api_key::generate("billing").unwrap();
    for i in 0..5 {
        let r = s
            .http
            .post(s.url("/login"))
            .header("X-API-Key", &wrong)
            .header("X-Forwarded-For", format!("198.51.100.{i}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
    }
    let r = s
        .http
        .post(s.url("/login"))
        .header("X-API-Key", &s.billing_key)
        .header("X-Forwarded-For", "198.51.100.77")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        429,
        "the key id is blocked from a fresh address"
    );
    let r = s
        .http
        .post(s.url("/login"))
        .header("X-API-Key", SEED_KEY)
        .header("X-Forwarded-For", "198.51.100.78")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        200,
        "other clients from fresh addresses are not"
    );
}

#[tokio::test]
async fn bodies_over_64_kib_get_413() {
    let s = TestServer::start().await;
    let r = s
        .http
        .post(s.url("/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "grant_type=client_credentials&pad={}",
            "a".repeat(70 * 1024)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let r = s
        .http
        .post(s.url("/login"))
        .body(vec![b'a'; 65 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let metrics = s.text("/metrics").await;
    assert!(
        metrics.contains(
            "keygate_http_requests_total{route=\"/login\",method=\"POST\",status=\"413\"}"
        ),
        "413s are counted"
    );
}

#[tokio::test]
async fn a_flood_of_password_logins_does_not_stall_verify() {
    let key = keygate::api_key::generate("billing").unwrap();
    let text = config_text(&key, user_hash(), "")
        .replace("failed_attempts = 5", "failed_attempts = 1000")
        .replace(
            "window = \"1m\"",
            "window = \"1m\"\nhashing_concurrency = 1\nhashing_queue = 1000",
        );
    let s = std::sync::Arc::new(TestServer::with_config(text, key).await);
    let token = s.token().await;
    let mut logins = tokio::task::JoinSet::new();
    for i in 0..40 {
        let s = s.clone();
        logins.spawn(async move {
            s.token_form(&[
                ("grant_type", "password"),
                ("username", "alice"),
                ("password", &format!("guess-{i}")),
            ])
            .await
            .status()
        });
    }
    // 40 argon2id checks on one hashing thread take far longer than these verifications;
    // each must be answered while the logins are still queued.
    for _ in 0..20 {
        assert_eq!(s.verify(&token).await.status(), 200);
    }
    assert!(!logins.is_empty());
    let still_running = logins.len();
    let mut finished_before = 0;
    while let Some(Ok(status)) = logins.try_join_next() {
        finished_before += 1;
        assert_ne!(status, 500);
    }
    assert!(
        finished_before < still_running,
        "verifications finished before the login storm"
    );
    while let Some(status) = logins.join_next().await {
        assert_eq!(status.unwrap(), 400, "every guess was checked and refused");
    }
}

// ---------------------------------------------------------------- rotation and reload

#[tokio::test]
async fn rotated_key_keeps_working_for_its_grace_and_not_after() {
    let s = TestServer::start().await;
    let old = s.billing_key.clone();
    let new = keygate::api_key::generate("billing").unwrap();
    let text = std::fs::read_to_string(&s.config_path).unwrap();
    let old_hash = keygate::api_key::KeyHash::sha256_of(&old).to_string();
    let new_hash = keygate::api_key::KeyHash::sha256_of(&new).to_string();
    let in_grace = text.replacen(
        &format!("key_hash = \"{old_hash}\""),
        &format!("key_hash = \"{new_hash}\"\nprevious_key_hash = \"{old_hash}\"\nprevious_key_expires_at = \"2999-01-01T00:00:00Z\""),
        1,
    );
    s.rewrite_config(&in_grace).unwrap();
    assert_eq!(s.login(&old).await.status(), 200);
    assert_eq!(s.login(&new).await.status(), 200);
    let after_grace = in_grace.replace("2999-01-01T00:00:00Z", "2020-01-01T00:00:00Z");
    s.rewrite_config(&after_grace).unwrap();
    assert_eq!(s.login(&old).await.status(), 401);
    assert_eq!(s.login(&new).await.status(), 200);
}

#[tokio::test]
async fn a_broken_config_is_refused_and_the_old_one_keeps_serving() {
    let s = TestServer::start().await;
    let good = std::fs::read_to_string(&s.config_path).unwrap();
    for broken in [
        "this is not toml [".to_owned(),
        good.replace(SECRET, "short"),
        good.replace("id = \"legacy\"", "id = \"billing\""),
    ] {
        assert!(s.rewrite_config(&broken).is_err());
        assert_eq!(s.login(&s.billing_key).await.status(), 200);
    }
}

#[tokio::test]
async fn file_changes_are_picked_up_without_a_restart() {
    let s = TestServer::start().await;
    keygate_server::reload::spawn(s.state.clone(), Duration::from_millis(50));
    let token = s.token().await;
    let text = std::fs::read_to_string(&s.config_path).unwrap();
    // Remove the client: its key and the tokens it holds stop working.
    let start = text.find("[[clients]]\nid = \"billing\"").unwrap();
    let end = text.find("[[clients]]\nid = \"legacy\"").unwrap();
    let without = format!("{}{}", &text[..start], &text[end..]);
    tokio::time::sleep(Duration::from_millis(1100)).await; // a distinct mtime second
    std::fs::write(&s.config_path, without).unwrap();
    let mut refused = false;
    for _ in 0..100 {
        if s.login(&s.billing_key).await.status() == 401 {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(refused, "the removed client was still accepted after 5 s");
    assert_invalid(&s, &token, "token of a removed client").await;
}

// ---------------------------------------------------------------- operations

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
        "keygate_tokens_refused_total{grant=\"api_key\",reason=\"wrong_credential\"}",
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
        "POST /token HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
        body.len(),
        &body[..10]
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let state = s.state.clone();
    let stopping = tokio::spawn(s.stop());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !stopping.is_finished(),
        "serve waits for the in-flight request"
    );
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

// ---------------------------------------------------------------- OpenAPI and Swagger UI

#[tokio::test]
async fn openapi_json_describes_the_running_configuration() {
    let s = TestServer::with_extra("[api_key]\nheader = \"access_token\"\ncookie = \"api_key\"\n")
        .await;
    let r = s.http.get(s.url("/openapi.json")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let doc: Value = r.json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(
        schemes["api_key_header"],
        json!({"type": "apiKey", "in": "header", "name": "access_token", "description": "An API key (`kg_…`), for `/login`"})
    );
    assert_eq!(schemes["api_key_cookie"]["name"], "api_key");
    assert_eq!(
        schemes["oauth2"]["flows"]["password"]["scopes"],
        json!({"orders:read": "", "orders:write": ""})
    );
    assert_eq!(
        doc["paths"]["/login"]["post"]["security"],
        json!([{"api_key_header": []}, {"api_key_cookie": []}])
    );
}

#[tokio::test]
async fn swagger_ui_is_served_from_the_binary() {
    let s = TestServer::start().await;
    let r = s.http.get(s.url("/docs/")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let html = r.text().await.unwrap();
    assert!(html.contains("<div id=\"swagger-ui\"></div>"), "{html}");
    assert!(!html.contains("https://"), "no asset comes from a CDN");
    for asset in [
        "swagger-ui-bundle.js",
        "swagger-ui.css",
        "swagger-initializer.js",
    ] {
        let r = s
            .http
            .get(s.url(&format!("/docs/{asset}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{asset}");
        let body = r.text().await.unwrap();
        assert!(body.len() > 100, "{asset}");
        if asset == "swagger-initializer.js" {
            assert!(
                body.contains("/openapi.json"),
                "the UI reads keygate's document: {body}"
            );
        }
    }
}
