//! Key rotation and configuration reload.

use std::time::Duration;

use crate::util::*;

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
