//! The guarantee "Revoked stays revoked" (docs/security.md), each sequence that could revive a key run with the real
//! `keygate` binary against a real `keygate serve`: the old key and the old token get 401,
//! the new key 200, whether or not the server saw the revocation in between.

use serde_json::Value;

use super::{
    eventually, init, keygate, keygate_stdin, login, password_grant, serve, stderr, stdout, verify,
};

/// `keygate key …` that must succeed; its stdout, trimmed.
fn ok(dir: &std::path::Path, args: &[&str]) -> String {
    let out = keygate(dir, args);
    assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
    stdout(&out).trim().to_owned()
}

fn token(base: &str, key: &str) -> String {
    let r = login(base, key);
    assert_eq!(r.status(), 200);
    r.json::<Value>().unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn rotating_a_revoked_key_never_brings_it_back() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    init(d);
    let old_key = ok(d, &["key", "add", "victim", "--role", "service"]);
    let server = serve(d);
    let base = server.base.as_str();
    let old_token = token(base, &old_key);

    ok(d, &["key", "revoke", "victim"]);
    eventually("the revoked key is refused", || {
        login(base, &old_key).status() == 401
    });
    assert_eq!(verify(base, &old_token), 401);

    let rotate = keygate(d, &["key", "rotate", "victim"]);
    assert_eq!(rotate.status.code(), Some(0), "{}", stderr(&rotate));
    assert!(
        stderr(&rotate)
            .contains("the old key of `victim` and the tokens issued before now are refused"),
        "{}",
        stderr(&rotate)
    );
    let new_key = stdout(&rotate).trim().to_owned();
    eventually("the new key works", || {
        login(base, &new_key).status() == 200
    });
    assert_eq!(
        login(base, &old_key).status(),
        401,
        "the old key stays dead"
    );
    assert_eq!(verify(base, &old_token), 401, "so does its token");
    assert_eq!(verify(base, &token(base, &new_key)), 200);

    let text = std::fs::read_to_string(d.join("keygate.toml")).unwrap();
    assert!(!text.contains("previous_key_hash"), "{text}");
}

#[test]
fn revoke_then_rotate_before_the_server_looked_still_kills_the_old_token() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    init(d);
    let old_key = ok(d, &["key", "add", "victim", "--role", "service"]);
    let server = serve(d);
    let base = server.base.as_str();
    let old_token = token(base, &old_key);
    // Both edits within one reload interval: the server may never see `revoked_at`.
    ok(d, &["key", "revoke", "victim"]);
    let new_key = ok(d, &["key", "rotate", "victim", "--grace", "1h"]);
    eventually("the new key works", || {
        login(base, &new_key).status() == 200
    });
    assert_eq!(login(base, &old_key).status(), 401);
    assert_eq!(verify(base, &old_token), 401);
    assert_eq!(verify(base, &token(base, &new_key)), 200);
}

#[test]
fn a_zero_grace_rotation_revokes_the_old_key_and_its_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    init(d);
    let old_key = ok(d, &["key", "add", "victim", "--role", "service"]);
    let server = serve(d);
    let base = server.base.as_str();
    // The token and the rotation within one second: `iat` alone cannot order them, so the
    // rotation's `not_before` must be the next second (and the file written once it began).
    super::edits::just_before_a_second(std::time::Duration::from_millis(990));
    let old_token = token(base, &old_key);
    let new_key = ok(d, &["key", "rotate", "victim", "--grace", "0s"]);
    eventually("the new key works", || {
        login(base, &new_key).status() == 200
    });
    assert_eq!(login(base, &old_key).status(), 401);
    assert_eq!(verify(base, &old_token), 401);
    assert_eq!(verify(base, &token(base, &new_key)), 200);
}

#[test]
fn a_removed_user_added_again_does_not_revive_old_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    init(d);
    let add_bob = || {
        let out = keygate_stdin(d, &["user", "add", "bob", "--role", "r"], "same-password-1");
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    };
    add_bob();
    let server = serve(d);
    let base = server.base.as_str();
    let r = password_grant(base, "bob", "same-password-1");
    assert_eq!(r.status(), 200);
    let old_token = r.json::<Value>().unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();

    // Removed and added again at once, same name and password: the server may see both
    // edits in one reload. A marker client added last says when it has.
    ok(d, &["user", "remove", "bob"]);
    add_bob();
    let marker = ok(d, &["key", "add", "marker", "--role", "r"]);
    eventually("the file is loaded", || {
        login(base, &marker).status() == 200
    });
    assert_eq!(verify(base, &old_token), 401, "the old bob's token");
    let r = password_grant(base, "bob", "same-password-1");
    assert_eq!(r.status(), 200);
    let new_token = r.json::<Value>().unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(verify(base, &new_token), 200, "the new bob's token");
}

#[test]
fn a_client_removed_by_hand_and_added_again_does_not_revive_old_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    init(d);
    let old_key = ok(d, &["key", "add", "victim", "--role", "service"]);
    let server = serve(d);
    let base = server.base.as_str();
    let old_token = token(base, &old_key);
    let path = d.join("keygate.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let start = text.find("[[clients]]\nid = \"victim\"").unwrap();
    std::fs::write(&path, &text[..start]).unwrap();
    let new_key = ok(d, &["key", "add", "victim", "--role", "service"]);
    eventually("the new key works", || {
        login(base, &new_key).status() == 200
    });
    assert_eq!(login(base, &old_key).status(), 401);
    assert_eq!(verify(base, &old_token), 401);
    assert_eq!(verify(base, &token(base, &new_key)), 200);
}
