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
