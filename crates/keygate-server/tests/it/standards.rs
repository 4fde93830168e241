//! Public-key signing, JWKS, rotation, discovery, revocation and introspection, over HTTP.

use crate::util::*;
use serde_json::{Value, json};

const ALGS: [&str; 3] = ["ES256", "EdDSA", "RS256"];

fn header_of(token: &str) -> Value {
    serde_json::from_slice(&unb64(token.split('.').next().unwrap())).unwrap()
}

async fn jwks(s: &TestServer) -> Value {
    let r = s
        .http
        .get(s.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "public, max-age=300");
    r.json().await.unwrap()
}

/// Sets `created_at` of every key in `keys/keyring.toml` that has `kid` to `at`.
fn set_created_at(s: &TestServer, kid: &str, at: &str) {
    let path = s.dir().join("keys/keyring.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut doc: toml_edit::DocumentMut = text.parse().unwrap();
    for t in doc["keys"].as_array_of_tables_mut().unwrap().iter_mut() {
        if t["kid"].as_str() == Some(kid) {
            t["created_at"] = toml_edit::value(at);
        }
    }
    std::fs::write(&path, doc.to_string()).unwrap();
}

#[tokio::test]
async fn every_public_key_algorithm_signs_and_publishes_its_key() {
    for alg in ALGS {
        let s = TestServer::signing_with(alg).await;
        let token = s.token().await;
        let header = header_of(&token);
        assert_eq!(header["alg"], alg);
        assert_eq!(header["typ"], "at+jwt");
        let doc = jwks(&s).await;
        let keys = doc["keys"].as_array().unwrap();
        assert_eq!(keys.len(), 1, "{alg}: {doc}");
        let jwk = &keys[0];
        assert_eq!(jwk["kid"], header["kid"]);
        assert_eq!(jwk["use"], "sig");
        assert_eq!(jwk["alg"], alg);
        match alg {
            "ES256" => {
                assert_eq!(jwk["kty"], "EC");
                assert_eq!(jwk["crv"], "P-256");
                assert_eq!(unb64(jwk["x"].as_str().unwrap()).len(), 32);
                assert_eq!(unb64(jwk["y"].as_str().unwrap()).len(), 32);
            }
            "EdDSA" => {
                assert_eq!(jwk["kty"], "OKP");
                assert_eq!(jwk["crv"], "Ed25519");
                assert_eq!(unb64(jwk["x"].as_str().unwrap()).len(), 32);
            }
            _ => {
                assert_eq!(jwk["kty"], "RSA");
                assert_eq!(unb64(jwk["n"].as_str().unwrap()).len(), 256);
                assert_eq!(jwk["e"], "AQAB");
            }
        }
        for private in ["d", "p", "q", "dp", "dq", "qi", "k"] {
            assert!(jwk.get(private).is_none(), "{alg} JWKS leaks `{private}`");
        }
        assert_eq!(s.verify(&token).await.status(), 200, "{alg}");
        let pem = std::fs::read_dir(s.dir().join("keys"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|x| x == "pem"))
            .unwrap();
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&pem).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
    }
}

#[tokio::test]
async fn hmac_servers_publish_an_empty_jwks() {
    let s = TestServer::start().await;
    assert_eq!(jwks(&s).await, json!({"keys": []}));
}

#[tokio::test]
async fn algorithm_confusion_with_the_public_key_as_hmac_secret_is_refused() {
    for alg in ALGS {
        let s = TestServer::signing_with(alg).await;
        let doc = jwks(&s).await;
        let jwk = doc["keys"][0].clone();
        let kid = jwk["kid"].as_str().unwrap().to_owned();
        let pem_path = s.dir().join(format!("keys/{kid}.pem"));
        let private_pem = std::fs::read(&pem_path).unwrap();
        let header = format!(r#"{{"alg":"HS256","typ":"at+jwt","kid":"{kid}"}}"#);
        let claims = claims_with(json!({}));
        for secret in [
            jwk.to_string().into_bytes(),
            kid.clone().into_bytes(),
            private_pem,
        ] {
            let forged = sign_hs256(&header, &claims, &secret);
            let r = s.verify(&forged).await;
            assert_eq!(r.status(), 401, "{alg}");
        }
    }
}

#[tokio::test]
async fn jku_x5u_and_embedded_jwk_headers_are_never_followed() {
    // A listener that would record any request keygate made to the jku/x5u URL.
    let trap = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let trap_addr = trap.local_addr().unwrap();
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = hits.clone();
    tokio::spawn(async move {
        while let Ok((_sock, _)) = trap.accept().await {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    });
    let s = TestServer::signing_with("ES256").await;
    let (attacker, attacker_pem) =
        keygate::token::SigningKey::generate(keygate::token::SigningAlgorithm::ES256).unwrap();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.typ = Some("at+jwt".into());
    header.jku = Some(format!("http://{trap_addr}/jwks.json"));
    header.x5u = Some(format!("http://{trap_addr}/cert.pem"));
    header.jwk = attacker.public_jwk().cloned();
    let claims: Value = serde_json::from_str(&claims_with(json!({}))).unwrap();
    let key = jsonwebtoken::EncodingKey::from_ec_pem(attacker_pem.as_bytes()).unwrap();
    for kid in [
        Some(attacker.kid().to_owned()),
        jwks(&s).await["keys"][0]["kid"].as_str().map(str::to_owned),
        None,
    ] {
        header.kid = kid;
        let forged = jsonwebtoken::encode(&header, &claims, &key).unwrap();
        assert_eq!(s.verify(&forged).await.status(), 401);
    }
    assert_eq!(
        hits.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "keygate fetched a URL from a token"
    );
}

#[tokio::test]
async fn rotation_publishes_first_signs_after_the_delay_and_keeps_old_tokens_valid() {
    let s = TestServer::signing_with("ES256").await;
    let old_kid = jwks(&s).await["keys"][0]["kid"]
        .as_str()
        .unwrap()
        .to_owned();
    set_created_at(&s, &old_kid, "2020-01-01T00:00:00Z");
    s.state.reload().unwrap();
    let old_token = s.token().await;
    assert_eq!(header_of(&old_token)["kid"], old_kid.as_str());

    // A new key: published at once, but the old one keeps signing for the 1h delay.
    let new_kid = keygate_server::config::keyring::generate(
        &s.dir().join("keys"),
        keygate::token::SigningAlgorithm::ES256,
    )
    .unwrap();
    s.state.reload().unwrap();
    let kids: Vec<String> = jwks(&s).await["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(kids, vec![old_kid.clone(), new_kid.clone()]);
    assert_eq!(
        header_of(&s.token().await)["kid"],
        old_kid.as_str(),
        "still in its publish delay"
    );

    // The delay has passed: the new key signs, the old token still verifies.
    set_created_at(&s, &new_kid, "2021-01-01T00:00:00Z");
    s.state.reload().unwrap();
    let new_token = s.token().await;
    assert_eq!(header_of(&new_token)["kid"], new_kid.as_str());
    assert_eq!(s.verify(&old_token).await.status(), 200);
    assert_eq!(s.verify(&new_token).await.status(), 200);

    // Retired: stays published and verifying for ttl + leeway.
    keygate_server::config::keyring::retire(&s.dir().join("keys"), &old_kid).unwrap();
    s.state.reload().unwrap();
    assert_eq!(jwks(&s).await["keys"].as_array().unwrap().len(), 2);
    assert_eq!(s.verify(&old_token).await.status(), 200);

    // Long retired: gone from the JWKS, and its tokens no longer verify.
    let path = s.dir().join("keys/keyring.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let long_ago = regex_free_replace_retired(&text, "2020-06-01T00:00:00Z");
    std::fs::write(&path, long_ago).unwrap();
    s.state.reload().unwrap();
    let doc = jwks(&s).await;
    assert_eq!(doc["keys"].as_array().unwrap().len(), 1);
    assert_eq!(doc["keys"][0]["kid"], new_kid.as_str());
    assert_eq!(s.verify(&old_token).await.status(), 401);
    assert_eq!(s.verify(&new_token).await.status(), 200);
}

fn regex_free_replace_retired(text: &str, at: &str) -> String {
    text.lines()
        .map(|l| {
            if l.starts_with("retired_at") {
                format!("retired_at = \"{at}\"")
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn keyring_changes_are_picked_up_without_a_restart() {
    let s = TestServer::signing_with("EdDSA").await;
    keygate_server::reload::spawn(s.state.clone(), std::time::Duration::from_millis(50));
    assert_eq!(jwks(&s).await["keys"].as_array().unwrap().len(), 1);
    keygate_server::config::keyring::generate(
        &s.dir().join("keys"),
        keygate::token::SigningAlgorithm::EdDSA,
    )
    .unwrap();
    for _ in 0..100 {
        if jwks(&s).await["keys"].as_array().unwrap().len() == 2 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the new key was not published within 5 s");
}

// ---------------------------------------------------------------- discovery

#[tokio::test]
async fn discovery_documents_name_every_endpoint() {
    let s = TestServer::signing_with("ES256").await;
    let r = s
        .http
        .get(s.url("/.well-known/oauth-authorization-server"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let doc: Value = r.json().await.unwrap();
    assert_eq!(
        doc,
        json!({
            "issuer": ISSUER,
            "token_endpoint": "https://keygate.test/token",
            "jwks_uri": "https://keygate.test/.well-known/jwks.json",
            "revocation_endpoint": "https://keygate.test/revoke",
            "introspection_endpoint": "https://keygate.test/introspect",
            "userinfo_endpoint": "https://keygate.test/userinfo",
            "grant_types_supported": ["client_credentials", "password"],
            "response_types_supported": [],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "scopes_supported": ["orders:read", "orders:write"],
        })
    );
    // keygate is not an OpenID Provider: the OIDC path serves the RFC 8414 document as
    // it is, claiming no ID tokens, subject types or authorization endpoint.
    let r = s
        .http
        .get(s.url("/.well-known/openid-configuration"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let oidc: Value = r.json().await.unwrap();
    assert_eq!(oidc, doc);
    for member in [
        "authorization_endpoint",
        "subject_types_supported",
        "id_token_signing_alg_values_supported",
    ] {
        assert!(oidc.get(member).is_none(), "{member} claimed");
    }
}

// ---------------------------------------------------------------- revocation

#[tokio::test]
async fn revoke_requires_client_auth_and_answers_200_for_unknown_tokens() {
    let s = TestServer::start().await;
    let key = s.billing_key.clone();
    let token = s.token().await;
    let r = s.post_form("/revoke", None, &[("token", &token)]).await;
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.headers()["www-authenticate"],
        "Basic realm=\"keygate\", charset=\"UTF-8\""
    );
    assert_eq!(
        s.verify(&token).await.status(),
        200,
        "nothing revoked without auth"
    );

    for garbage in ["garbage", "a.b.c", &"x".repeat(9000)] {
        let r = s
            .post_form("/revoke", Some(("billing", &key)), &[("token", garbage)])
            .await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["cache-control"], "no-store");
        assert_eq!(r.text().await.unwrap(), "");
    }
    let r = s.post_form("/revoke", Some(("billing", &key)), &[]).await;
    assert_eq!(r.status(), 400);
    assert_eq!(error_of(r).await, "invalid_request");

    let r = s
        .post_form(
            "/revoke",
            Some(("billing", &key)),
            &[("token", &token), ("token_type_hint", "access_token")],
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(s.verify(&token).await.status(), 401);
}

#[tokio::test]
async fn a_client_revokes_only_its_own_tokens_unless_admin() {
    let admin_key = keygate::api_key::generate("ops").unwrap();
    let billing_key = keygate::api_key::generate("billing").unwrap();
    let extra = format!(
        "[[clients]]\nid = \"ops\"\nkey_hash = \"{}\"\nrole = \"admin\"\n",
        keygate::api_key::KeyHash::sha256_of(&admin_key)
    );
    let s =
        TestServer::with_config(config_text(&billing_key, user_hash(), &extra), billing_key).await;
    let billing_token = s.token().await;
    let r = s
        .post_form(
            "/revoke",
            Some(("legacy", SEED_KEY)),
            &[("token", &billing_token)],
        )
        .await;
    assert_eq!(r.status(), 400);
    assert_eq!(error_of(r).await, "unauthorized_client");
    assert_eq!(s.verify(&billing_token).await.status(), 200);

    let r = s
        .post_form(
            "/revoke",
            Some(("ops", &admin_key)),
            &[("token", &billing_token)],
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(s.verify(&billing_token).await.status(), 401);
}

/// RFC 6749 §3.1/§3.2: unrecognised parameters are ignored, repeated or not (the pair
/// schemathesis sent); only the endpoint's own parameters must not repeat.
#[tokio::test]
async fn unrecognised_parameters_are_ignored_even_when_repeated() {
    let s = TestServer::start().await;
    let token = s.token().await;
    let post = |path: &'static str, body: String| {
        s.http
            .post(s.url(path))
            .basic_auth("legacy", Some(SEED_KEY))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
    };
    let odd = "%C3%BC%C2%B5=1&%C3%BC%C2%B5=2";
    let r = post("/introspect", format!("{odd}&token={token}&x=a&x=b"))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["active"], true);
    let r = post("/revoke", format!("token=garbage&{odd}"))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = s
        .http
        .post(s.url("/token"))
        .basic_auth("legacy", Some(SEED_KEY))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("grant_type=client_credentials&{odd}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    for path in ["/introspect", "/revoke"] {
        let r = post(path, format!("token={token}&token={token}"))
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{path}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(
            body,
            json!({"error": "invalid_request", "error_description": "a parameter is repeated"}),
            "{path}"
        );
    }
    assert_eq!(s.verify(&token).await.status(), 200);
}

// ---------------------------------------------------------------- introspection

#[tokio::test]
async fn introspection_tells_active_tokens_from_everything_else() {
    let s = TestServer::start().await;
    let token = s.token().await;
    let r = s.post_form("/introspect", None, &[("token", &token)]).await;
    assert_eq!(r.status(), 401);
    assert_eq!(error_of(r).await, "invalid_client");

    // Any authenticated client may introspect any token: here `legacy` looks at billing's.
    let r = s
        .post_form(
            "/introspect",
            Some(("legacy", SEED_KEY)),
            &[("token", &token)],
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["active"], true);
    assert_eq!(body["sub"], "billing");
    assert_eq!(body["client_id"], "billing");
    assert_eq!(body["scope"], "orders:read orders:write");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["iss"], ISSUER);
    assert!(body["exp"].as_u64().unwrap() > now());

    // The configured API-key header also authenticates the caller.
    let r = s
        .http
        .post(s.url("/introspect"))
        .header("X-API-Key", SEED_KEY)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["active"], true);

    let n = now();
    let expired = sign_hs256(
        r#"{"alg":"HS256","typ":"at+jwt"}"#,
        &claims_with(json!({"exp": n - 120, "iat": n - 2000, "nbf": n - 2000})),
        SECRET.as_bytes(),
    );
    assert_eq!(s.logout(&token).await.status(), 204);
    for inactive in [token.as_str(), expired.as_str(), "garbage", "a.b.c"] {
        let r = s
            .post_form(
                "/introspect",
                Some(("legacy", SEED_KEY)),
                &[("token", inactive)],
            )
            .await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.text().await.unwrap(), r#"{"active":false}"#, "{inactive}");
    }
}

/// P-256 group order n, big-endian.
const P256_N: [u8; 32] = [
    0xFF, 0xFF, 0xFF, 0xFF, 0x00, 0x00, 0x00, 0x00, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
    0xBC, 0xE6, 0xFA, 0xAD, 0xA7, 0x17, 0x9E, 0x84, 0xF3, 0xB9, 0xCA, 0xC2, 0xFC, 0x63, 0x25, 0x51,
];

/// `a - b` for 256-bit big-endian numbers with `a >= b`.
fn sub_256(a: &[u8; 32], b: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; 32];
    let mut borrow = 0i16;
    for i in (0..32).rev() {
        let mut d = i16::from(a[i]) - i16::from(b[i]) - borrow;
        borrow = i16::from(d < 0);
        if d < 0 {
            d += 256;
        }
        out[i] = u8::try_from(d).unwrap();
    }
    out
}

#[tokio::test]
async fn a_re_encoded_ecdsa_signature_does_not_escape_revocation() {
    let s = TestServer::signing_with("ES256").await;
    let token = s.token().await;
    let (unsigned, sig) = token.rsplit_once('.').unwrap();
    let sig = unb64(sig);
    // (r, s) → (r, n − s): a different signature of the same message (ECDSA malleability).
    let mut malleated = sig[..32].to_vec();
    malleated.extend(sub_256(&P256_N, &sig[32..]));
    let twin = format!("{unsigned}.{}", b64(&malleated));
    assert_ne!(twin, token);
    assert_eq!(
        s.verify(&twin).await.status(),
        200,
        "the twin carries a valid signature: a list keyed by token bytes would miss it"
    );
    assert_eq!(s.logout(&token).await.status(), 204);
    assert_eq!(s.verify(&token).await.status(), 401);
    assert_eq!(
        s.verify(&twin).await.status(),
        401,
        "revocation is by iss + jti, so the re-encoded twin is refused too"
    );
}

// ---------------------------------------------------------------- JWKS verifier (library)

/// A JWKS endpoint serving `doc`, counting its hits.
async fn counting_jwks(doc: Value) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = hits.clone();
    let doc = std::sync::Arc::new(std::sync::Mutex::new(doc));
    let app = axum::Router::new().route(
        "/jwks.json",
        axum::routing::get(move || {
            let (counter, doc) = (counter.clone(), doc.clone());
            async move {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                axum::Json(doc.lock().unwrap().clone())
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, hits)
}

fn verifier_policy() -> keygate::token::TokenPolicy {
    let mut policy = keygate::token::TokenPolicy::new(ISSUER);
    policy.audience = vec!["orders-api".into()];
    policy
}

#[tokio::test]
async fn a_service_verifies_with_keygates_jwks_and_follows_a_rotation() {
    use keygate::token::{JwksVerifier, SigningAlgorithm};
    let s = TestServer::signing_with("ES256").await;
    let url = s.url("/.well-known/jwks.json");
    let verifier = JwksVerifier::fetch(&url, SigningAlgorithm::ES256, verifier_policy())
        .await
        .unwrap()
        .min_refresh_interval(std::time::Duration::ZERO);
    let old = s.token().await;
    assert_eq!(verifier.verify(&old).await.unwrap().sub, "billing");

    // keygate rotates: a new key, past its delay, signs the next token.
    let new_kid =
        keygate_server::config::keyring::generate(&s.dir().join("keys"), SigningAlgorithm::ES256)
            .unwrap();
    set_created_at(&s, &new_kid, "2021-01-01T00:00:00Z");
    s.state.reload().unwrap();
    let new = s.token().await;
    assert_eq!(header_of(&new)["kid"], new_kid.as_str());
    // Unknown kid → one re-fetch → verified; the old token still verifies.
    assert_eq!(verifier.verify(&new).await.unwrap().sub, "billing");
    assert_eq!(verifier.verify(&old).await.unwrap().sub, "billing");

    // A token signed elsewhere stays refused.
    let forged = sign_hs256(
        r#"{"alg":"HS256","typ":"at+jwt"}"#,
        &claims_with(json!({})),
        b"k",
    );
    assert!(verifier.verify(&forged).await.is_err());
}

#[tokio::test]
async fn made_up_kids_cannot_flood_the_jwks_endpoint() {
    use keygate::token::{JwksVerifier, SigningAlgorithm};
    let s = TestServer::signing_with("EdDSA").await;
    let doc: Value = s.json("/.well-known/jwks.json").await;
    let (url, hits) = counting_jwks(doc).await;
    let verifier = JwksVerifier::fetch(&url, SigningAlgorithm::EdDSA, verifier_policy())
        .await
        .unwrap();
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 1);
    let token = s.token().await;
    let (_, payload_and_sig) = token.split_once('.').unwrap();
    for i in 0..20 {
        let header =
            b64(format!(r#"{{"alg":"EdDSA","typ":"at+jwt","kid":"made-up-{i}"}}"#).as_bytes());
        let forged = format!("{header}.{payload_and_sig}");
        assert!(verifier.verify(&forged).await.is_err());
    }
    assert_eq!(
        hits.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "no re-fetch within min_refresh_interval (10 s by default)"
    );
    assert_eq!(verifier.verify(&token).await.unwrap().sub, "billing");
}

#[tokio::test]
async fn an_axum_service_trusts_keygate_through_its_jwks() {
    use keygate::axum::RequireAuthLayer;
    use keygate::token::{Authority, JwksVerifier, SigningAlgorithm};
    let s = TestServer::signing_with("RS256").await;
    let verifier = JwksVerifier::fetch(
        s.url("/.well-known/jwks.json"),
        SigningAlgorithm::RS256,
        verifier_policy(),
    )
    .await
    .unwrap();
    let app = axum::Router::new()
        .route(
            "/orders",
            axum::routing::get(
                |axum::Extension(c): axum::Extension<keygate::token::Claims>| async move { c.sub },
            ),
        )
        .layer(RequireAuthLayer::new(Authority::from(verifier)).scope("orders:read"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api = format!("http://{}/orders", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let token = s.token().await;
    let r = s.http.get(&api).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "billing");
    let r = s.http.get(&api).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer realm=\"keygate\"");
}
