//! `GET /verify` and `GET /userinfo`: forward auth and the claims of a token.

use crate::util::*;
use serde_json::{Value, json};

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

/// A service guarded by `keygate::axum::RequireAuthLayer` and keygate's own `/verify`
/// refuse a token in the same bytes: status, challenge, headers and body.
#[tokio::test]
async fn a_service_and_keygate_refuse_a_token_in_the_same_words() {
    use axum::routing::get;
    use keygate::token::{HmacSecret, SigningAlgorithm, TokenPolicy, Verifier};

    let s = TestServer::start().await;
    let secret: HmacSecret = SECRET.parse().unwrap();
    let mut policy = TokenPolicy::new(ISSUER);
    policy.audience = vec!["orders-api".to_owned()];
    let verifier = Verifier::hmac(SigningAlgorithm::HS256, &secret, policy).unwrap();
    let service = axum::Router::new()
        .route("/orders", get(|| async { "orders" }))
        .layer(keygate::axum::RequireAuthLayer::new(verifier).scope("orders:admin"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let service_url = format!("http://{}/orders", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, service).await });

    let good = s.token().await;
    let forged = format!("{}A", &good[..good.len() - 1]);
    let cases = [
        ("no token", None),
        ("a forged token", Some(forged.as_str())),
        ("a token without the scope", Some(good.as_str())),
    ];
    for (what, token) in cases {
        let mut at_service = s.http.get(&service_url);
        let mut at_keygate = s.http.get(s.url("/verify?scope=orders:admin"));
        if let Some(t) = token {
            at_service = at_service.bearer_auth(t);
            at_keygate = at_keygate.bearer_auth(t);
        }
        let (a, b) = (
            at_service.send().await.unwrap(),
            at_keygate.send().await.unwrap(),
        );
        assert_ne!(a.status(), 200, "{what}");
        assert_eq!(a.status(), b.status(), "{what}");
        for h in ["www-authenticate", "cache-control", "content-type"] {
            assert_eq!(a.headers().get(h), b.headers().get(h), "{what}: {h}");
        }
        assert_eq!(a.bytes().await.unwrap(), b.bytes().await.unwrap(), "{what}");
    }
}
