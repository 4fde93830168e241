//! `POST /logout` and the token cookie.

use crate::util::*;
use serde_json::Value;

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

/// One client logging out more tokens than its share of the revocation list
/// (`limits.revocations_per_principal`, 3 here) has them folded into one record refusing
/// every token it obtained until then: it logs out only itself. Another client's logout
/// still answers 204 and its revoked token is refused.
#[tokio::test]
async fn a_client_past_its_revocation_share_logs_out_only_itself() {
    let s = TestServer::with_extra("revocations_per_principal = 3").await;
    let kept = s.token().await;
    let legacy_live = s.token_of_legacy().await;
    for _ in 0..3 {
        let t = s.token().await;
        assert_eq!(s.logout(&t).await.status(), 204);
        assert_invalid(&s, &t, "listed").await;
    }
    assert_eq!(s.verify(&kept).await.status(), 200, "within its share");
    let fourth = s.token().await;
    assert_eq!(
        s.logout(&fourth).await.status(),
        204,
        "past its share: folded"
    );
    assert_invalid(&s, &fourth, "folded").await;
    assert_invalid(&s, &kept, "every token billing held is refused").await;
    assert_eq!(
        s.verify(&legacy_live).await.status(),
        200,
        "not another client's"
    );

    let legacy = s.token_of_legacy().await;
    assert_eq!(s.logout(&legacy).await.status(), 204);
    assert_invalid(&s, &legacy, "legacy's own logout").await;
    assert_eq!(s.verify(&legacy_live).await.status(), 200);

    // Tokens billing obtains once the second of the fold has passed work again (`iat`
    // has whole seconds, so those of that very second may predate it).
    let fresh = eventually_token(&s).await;
    assert_eq!(s.verify(&fresh).await.status(), 200);
}

impl TestServer {
    /// A token of the `legacy` client.
    async fn token_of_legacy(&self) -> String {
        let r = self.login(SEED_KEY).await;
        assert_eq!(r.status(), 200);
        let body: Value = r.json().await.unwrap();
        body["access_token"].as_str().unwrap().to_owned()
    }
}

/// A billing token that verifies, within 2 s.
async fn eventually_token(s: &TestServer) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        let t = s.token().await;
        if s.verify(&t).await.status() == 200 {
            return t;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "billing's new tokens are refused"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
