//! `edit`: locking, the server's checks, rotations, owner, mode and symlinks.

use super::*;

const START: &str = "# my notes\n[token]\nsecret = \"4f1c0f9a7d6e8b2c3a5d7e9f1b3c5d7e9a1b3c5d7e9f1a2b3c4d5e6f7a8b9c0d\" # keep me\n\n[[clients]]\nid = \"a\"\nkey_hash = \"sha256:0000000000000000000000000000000000000000000000000000000000000000\"\nrole = \"r\"\n";
const HASH: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";

fn file(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keygate.toml");
    fs::write(&path, text).unwrap();
    (dir, path)
}

fn at(unix: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(unix).unwrap()
}

fn new_client<'a>(id: &'a str, role: &'a str, scopes: &'a [String]) -> NewClient<'a> {
    NewClient {
        id,
        key_hash: HASH,
        role,
        scopes,
        expires_at: None,
        created_at: at(1_900_000_000),
    }
}

#[test]
fn adding_a_client_keeps_comments_entries_and_mode() {
    let (dir, path) = file(START);
    fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
    let scopes = ["orders:read".to_owned()];
    edit(&path, |f| {
        f.add_client(&new_client("b", "service", &scopes))
    })
    .unwrap();
    let text = fs::read_to_string(&path).unwrap();
    assert!(text.starts_with("# my notes\n[token]\nsecret = \"4f1c"));
    assert!(text.contains(" # keep me\n"));
    assert!(text.contains("id = \"a\""));
    assert!(text.contains(&format!(
        "id = \"b\"\nkey_hash = \"{HASH}\"\nrole = \"service\"\nscopes = [\"orders:read\"]\nnot_before = \"2030-03-17T17:46:40Z\""
    )));
    let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o640);
    let mut left: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    left.sort();
    assert_eq!(
        left,
        ["keygate.toml", "keygate.toml.lock"],
        "no temporary file"
    );
}

#[test]
fn an_edit_the_server_would_refuse_writes_nothing() {
    let (_dir, path) = file(START);
    let bad = ["a b".to_owned()];
    let err = edit(&path, |f| f.add_client(&new_client("b", "r", &bad))).unwrap_err();
    assert!(
        err.setting.ends_with("keygate.toml: clients[1].scopes[0]"),
        "{err}"
    );
    assert!(err.message.ends_with("nothing was written"), "{err}");
    let err = edit(&path, |f| {
        f.add_client(&new_client("b", "reader,admin", &[]))
    })
    .unwrap_err();
    assert!(err.setting.ends_with("clients[1].role"), "{err}");
    assert_eq!(fs::read_to_string(&path).unwrap(), START);
}

#[test]
fn an_unset_variable_limits_the_check_to_clients_and_users() {
    let text = START.replace(
        "\"4f1c0f9a7d6e8b2c3a5d7e9f1b3c5d7e9a1b3c5d7e9f1a2b3c4d5e6f7a8b9c0d\"",
        "\"${KEYGATE_TEST_UNSET_SECRET_7F3A}\"",
    );
    let (_dir, path) = file(&text);
    let done = edit(&path, |f| f.add_client(&new_client("b", "r", &[]))).unwrap();
    assert_eq!(done.unset_variables, ["KEYGATE_TEST_UNSET_SECRET_7F3A"]);
    let err = edit(&path, |f| f.add_client(&new_client("c", "r\r\n", &[]))).unwrap_err();
    assert!(err.setting.ends_with("clients[2].role"), "{err}");
}

#[test]
fn ids_stay_unique() {
    let (_dir, path) = file(START);
    assert!(edit(&path, |f| f.add_user("a", "$2b$…", "r", &[], at(0))).is_err());
}

#[test]
fn rotation_keeps_the_old_hash_with_its_deadline() {
    let (_dir, path) = file(START);
    let now = at(1_900_000_000);
    let grace = Duration::from_secs(3600);
    let done = edit(&path, |f| {
        assert!(f.rotate_client_key("zz", HASH, now, grace).is_err());
        f.rotate_client_key("a", HASH, now, grace)
    })
    .unwrap();
    assert_eq!(done.value, Rotation::Grace(at(1_900_003_600)));
    let text = fs::read_to_string(&path).unwrap();
    assert!(text.contains(&format!("key_hash = \"{HASH}\"")));
    assert!(text.contains("previous_key_hash = \"sha256:0000"));
    assert!(text.contains("previous_key_expires_at = \"2030-03-17T18:46:40Z\""));
    assert!(!text.contains("not_before"), "{text}");
}

#[test]
fn rotating_a_revoked_client_keeps_the_old_key_dead() {
    let (_dir, path) = file(START);
    let now = at(1_900_000_000);
    edit(&path, |f| f.revoke_client("a", at(1_899_999_000))).unwrap();
    let done = edit(&path, |f| {
        f.rotate_client_key("a", HASH, now, Duration::from_secs(3600))
    })
    .unwrap();
    assert_eq!(done.value, Rotation::OldKeyDead);
    let text = fs::read_to_string(&path).unwrap();
    assert!(!text.contains("previous_key_hash"), "{text}");
    assert!(!text.contains("revoked_at"), "{text}");
    assert!(
        !text.contains("sha256:0000"),
        "the old hash is gone: {text}"
    );
    assert!(
        text.contains("not_before = \"2030-03-17T17:46:40Z\""),
        "{text}"
    );
}

#[test]
fn a_zero_grace_rotation_is_a_revocation_of_the_old_key() {
    let (_dir, path) = file(START);
    let done = edit(&path, |f| {
        f.rotate_client_key("a", HASH, at(1_900_000_000), Duration::ZERO)
    })
    .unwrap();
    assert_eq!(done.value, Rotation::OldKeyDead);
    let text = fs::read_to_string(&path).unwrap();
    assert!(!text.contains("previous_key_hash"), "{text}");
    assert!(
        text.contains("not_before = \"2030-03-17T17:46:40Z\""),
        "{text}"
    );
}

#[test]
fn a_symlink_stays_a_link_and_its_target_changes() {
    let (dir, target) = file(START);
    let link = dir.path().join("link.toml");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    edit(&link, |f| f.remove_user("nobody").or(Ok(()))).unwrap();
    edit(&link, |f| f.add_client(&new_client("b", "r", &[]))).unwrap();
    assert!(
        fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert!(fs::read_to_string(&target).unwrap().contains("id = \"b\""));
    assert!(
        dir.path().join("keygate.toml.lock").exists(),
        "the target's lock"
    );
}

#[test]
fn next_second_starts_a_second_that_has_begun() {
    let before = OffsetDateTime::now_utc();
    let next = next_second();
    assert_eq!(next.nanosecond(), 0);
    assert!(next > before && next <= OffsetDateTime::now_utc());
}

#[test]
fn removing_an_unknown_user_is_an_error() {
    let (_dir, path) = file(START);
    let err = edit(&path, |f| f.remove_user("nobody")).unwrap_err();
    assert_eq!(err.to_string(), "users: no user `nobody`");
}
