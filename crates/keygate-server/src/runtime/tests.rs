//! Validation: defaults, every bad value naming its setting, one-line errors.

use std::collections::BTreeMap;

use super::*;
use crate::config::{OnUnavailable, initial_config};

const SECRET: &str = "4f1c0f9a7d6e8b2c3a5d7e9f1b3c5d7e9a1b3c5d7e9f1a2b3c4d5e6f7a8b9c0d";

fn minimal() -> String {
    format!("[token]\nsecret = \"{SECRET}\"\n")
}

fn check(text: &str) -> Result<Runtime, ConfigError> {
    Config::parse(text, &BTreeMap::new())?.validate()
}

#[test]
fn minimal_config_takes_the_documented_defaults() {
    let rt = check(&minimal()).unwrap();
    let c = &rt.config;
    assert_eq!(c.server.listen, "127.0.0.1:8080");
    assert_eq!(c.token.ttl, Duration::from_secs(1800));
    assert_eq!(c.token.leeway, Duration::from_secs(30));
    assert_eq!(c.api_key.header, "X-API-Key");
    assert!(c.api_key.query.is_empty());
    assert!(!c.cookie.enabled);
    assert_eq!(c.limits.failed_attempts, 10);
    assert_eq!(c.store.on_unavailable, OnUnavailable::Deny);
    assert_eq!(c.store.timeout, Duration::from_millis(250));
    assert_eq!(rt.verifier.policy().issuer, "http://127.0.0.1:8080");
}

#[test]
fn the_initial_config_is_valid() {
    let (text, key) = initial_config().unwrap();
    let rt = check(&text).unwrap();
    assert_eq!(rt.directory.len(), 1);
    assert!(key.starts_with("kg_"));
}

#[test]
fn the_initial_config_with_a_directory_names_it_and_stays_valid() {
    let (text, _) = initial_config().unwrap();
    for url in [
        "sqlite://keygate.db",
        "postgres://kg@db.internal/kg?sslmode=disable",
    ] {
        let with = crate::config::with_directory(&text, url);
        let rt = check(&with).unwrap();
        assert_eq!(rt.config.directory.url.as_deref(), Some(url));
        assert_eq!(rt.directory.len(), 1, "the first client stays in the file");
    }
    // Without it the section stays a comment.
    assert_eq!(check(&text).unwrap().config.directory.url, None);
}

#[test]
fn bad_values_name_their_setting() {
    let cases: &[(&str, &str)] = &[
        ("[token]\nsecret = \"short\"\n", "token.secret"),
        (
            "[token]\nsecret = \"09d25e094faa6ca2556c818166b7a9563b93f7099f6f0f4caa6cf63b88e8d3e7\"\n",
            "token.secret",
        ),
        (
            "[token]\nsecret = \"hex:09d25e094faa6ca2556c818166b7a9563b93f7099f6f0f4caa6cf63b88e8d3e7\"\n",
            "token.secret",
        ),
        ("[token]\n", "token.secret"),
        (
            "[token]\nalgorithm = \"none\"\nsecret = \"x\"\n",
            "token.algorithm",
        ),
        (
            "[token]\nalgorithm = \"hs256\"\nsecret = \"x\"\n",
            "token.algorithm",
        ),
        (&format!("{}ttl = \"forever\"\n", minimal()), "token.ttl"),
        (&format!("{}ttl = \"0s\"\n", minimal()), "token.ttl"),
        (&format!("{}colour = \"blue\"\n", minimal()), "token"),
        (
            &format!("{}[server]\nlisten = \"nowhere\"\n", minimal()),
            "server.listen",
        ),
        (
            &format!("{}[cookie]\nsame_site = \"lax\"\n", minimal()),
            "cookie.same_site",
        ),
        (
            &format!("{}[store]\non_unavailable = \"maybe\"\n", minimal()),
            "store.on_unavailable",
        ),
        (
            &format!("{}[limits]\nfailed_attempts = 0\n", minimal()),
            "limits.failed_attempts",
        ),
        (
            &format!(
                "{}[[clients]]\nid = \"a\"\nkey_hash = \"sha256:00\"\n",
                minimal()
            ),
            "clients[0].key_hash",
        ),
        (
            &format!(
                "{}[[clients]]\nid = \"a b\"\nkey_hash = \"sha256:{}\"\n",
                minimal(),
                "0".repeat(64)
            ),
            "clients[0].id",
        ),
        (
            &format!(
                "{}[[users]]\nusername = \"bob\"\npassword_hash = \"$argon2id$v=19$m=1,t=1,p=1$c2FsdHNhbHQ$aGFzaA\"\n",
                minimal()
            ),
            "users[0].password_hash",
        ),
        (
            &format!(
                "{}[[clients]]\nid = \"a\"\nkey_hash = \"sha256:{z}\"\n[[users]]\nusername = \"a\"\npassword_hash = \"$2b$12$EixZaYVK1fsbw1ZfbX3OXePaWxn96p36WQoeG6Lruj3vjPGga31lW\"\n",
                minimal(),
                z = "0".repeat(64)
            ),
            "clients/users",
        ),
        ("not toml at all [", "file"),
    ];
    for (text, setting) in cases {
        let err = check(text).unwrap_err();
        assert!(
            err.to_string().starts_with(setting),
            "expected {setting}, got: {err}"
        );
        assert!(!err.to_string().contains('\n'), "one line: {err}");
    }
}

#[test]
fn roles_and_scopes_are_1_to_128_safe_characters() {
    let z = "0".repeat(64);
    let client = |extra: &str| {
        format!(
            "{}[[clients]]\nid = \"a\"\nkey_hash = \"sha256:{z}\"\n{extra}\n",
            minimal()
        )
    };
    let long = format!("role = \"{}\"", "r".repeat(129));
    for (text, setting) in [
        (
            client("role = \"reader\\r\\nX-Auth-Role: admin\""),
            "clients[0].role: \"reader\\r\\n",
        ),
        (client("role = \"reader,admin\""), "clients[0].role"),
        (client(&long), "clients[0].role"),
        (client("scopes = [\"ok\", \"a b\"]"), "clients[0].scopes[1]"),
        (
            client("not_before = \"yesterday\""),
            "clients[0].not_before",
        ),
        (
            format!("{}admin_roles = [\"a b\"]\n", minimal()),
            "token.admin_roles[0]",
        ),
    ] {
        let err = check(&text).unwrap_err().to_string();
        assert!(err.starts_with(setting), "expected {setting}, got: {err}");
        assert!(!err.contains('\n'), "one line: {err}");
    }
    check(&client(
        "role = \"svc:orders/read-1.x_Y\"\nscopes = [\"a:b/c\"]",
    ))
    .unwrap();
    check(&client("")).unwrap();
}

#[test]
fn parse_errors_never_quote_the_secret() {
    let text = format!("[token]\nsecret = \"{SECRET}\u{0}\"\n");
    let err = check(&text).unwrap_err().to_string();
    assert!(err.starts_with("file: TOML parse error at line 2"), "{err}");
    assert!(!err.contains(&SECRET[..16]), "{err}");
}

#[test]
fn duplicate_client_ids_are_refused() {
    let z = "0".repeat(64);
    let text = format!(
        "{}[[clients]]\nid = \"a\"\nkey_hash = \"sha256:{z}\"\n[[clients]]\nid = \"a\"\nkey_hash = \"sha256:{z}\"\n",
        minimal()
    );
    let err = check(&text).unwrap_err();
    assert_eq!(
        err.to_string(),
        "clients/users: two principals have the id `a`; ids must be unique across clients and users"
    );
}

#[test]
fn store_url_is_checked_without_echoing_its_password() {
    let ok = format!(
        "{}[store]\nurl = \"redis://:hunter2@127.0.0.1:6379/0\"\n",
        minimal()
    );
    check(&ok).unwrap();
    let bad = format!(
        "{}[store]\nurl = \"http://:hunter2@127.0.0.1:6379\"\n",
        minimal()
    );
    let err = check(&bad).unwrap_err().to_string();
    assert!(err.starts_with("store.url"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
    let store = |t: &str| check(&format!("{}[store]\n{t}\n", minimal()));
    let fails = |t: &str| store(t).unwrap_err().to_string();
    store("sentinels = [\"rediss://10.0.0.1:26379\"]\nsentinel_master = \"kg\"").unwrap();
    store("cluster = [\"redis://10.0.0.1:7000\"]\ntimeout = \"1s\"").unwrap();
    assert!(fails("url = \"redis://a\"\ncluster = [\"redis://b\"]").starts_with("store:"));
    assert!(fails("sentinels = [\"redis://a\"]").starts_with("store.sentinel_master"));
    assert!(fails("cluster = [\"http://a\"]").starts_with("store.cluster"));
    assert!(fails("timeout = \"0s\"").starts_with("store.timeout"));
    assert!(fails("ca_file = \"/nonexistent.pem\"").starts_with("store.ca_file"));
}

#[test]
fn a_configuration_whose_tokens_its_verifier_refuses_is_refused() {
    // A 6 KB public_url (the default issuer) would make every token issued longer than
    // keygate::token::MAX_TOKEN_LEN: refused at load (fuzz target `config` keeps the input).
    let long_url = format!(
        "{}[server]\npublic_url = \"https://{}\"\n",
        minimal(),
        "a".repeat(7000)
    );
    let err = check(&long_url).unwrap_err();
    assert_eq!(err.setting, "token", "{err}");
    assert!(err.message.contains("would be refused"), "{err}");
    let long_role = format!(
        "{}[[clients]]\nid = \"a\"\nkey_hash = \"sha256:{}\"\nrole = \"{}\"\n",
        minimal(),
        "0".repeat(64),
        "r".repeat(7000)
    );
    // Roles are at most 128 characters: refused by that rule before any token is made.
    assert_eq!(check(&long_role).unwrap_err().setting, "clients[0].role");
    let fits = format!(
        "{}[server]\npublic_url = \"https://{}\"\n",
        minimal(),
        "a".repeat(3000)
    );
    check(&fits).unwrap();
}

#[test]
fn limits_are_bounded_above_too() {
    for (setting, line) in [
        ("limits.window", "window = \"18446744073709551615s\""),
        ("limits.window", "window = \"2d\""),
        (
            "limits.hashing_concurrency",
            "hashing_concurrency = 1000000",
        ),
        ("limits.hashing_queue", "hashing_queue = 100000000"),
    ] {
        let err = check(&format!("{}[limits]\n{line}\n", minimal())).unwrap_err();
        assert_eq!(err.setting, setting, "{line}: {err}");
    }
    check(&format!("{}[limits]\nwindow = \"1d\"\n", minimal())).unwrap();
}

#[test]
fn ipv6_prefix_is_between_1_and_128() {
    for line in ["ipv6_prefix = 0", "ipv6_prefix = 129"] {
        let err = check(&format!("{}[limits]\n{line}\n", minimal())).unwrap_err();
        assert_eq!(err.setting, "limits.ipv6_prefix", "{line}: {err}");
    }
    assert!(check(&format!("{}[limits]\nipv6_prefix = 300\n", minimal())).is_err());
    for prefix in [1, 48, 64, 128] {
        check(&format!("{}[limits]\nipv6_prefix = {prefix}\n", minimal())).unwrap();
    }
}

#[test]
fn the_revocation_share_is_between_one_and_the_whole_list() {
    for line in [
        "revocations_per_principal = 0",
        "revocations_per_principal = 1000001",
    ] {
        let err = check(&format!("{}[limits]\n{line}\n", minimal())).unwrap_err();
        assert_eq!(
            err.setting, "limits.revocations_per_principal",
            "{line}: {err}"
        );
    }
    check(&format!(
        "{}[limits]\nrevocations_per_principal = 1\n",
        minimal()
    ))
    .unwrap();
}

/// A file with many clients, written where `Config::load` reads it.
fn load_many(settings: &str, count: usize, broken: Option<usize>) -> Result<Runtime, ConfigError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keygate.toml");
    let mut text = settings.to_owned();
    for i in 0..count {
        let hash = if broken == Some(i) {
            "sha256:zz".to_owned()
        } else {
            format!("sha256:{i:064x}")
        };
        text.push_str(&format!(
            "[[clients]]\nid = \"c{i}\"\nkey_hash = \"{hash}\"\nrole = \"service\"\nscopes = [\"a\"]\n"
        ));
    }
    std::fs::write(&path, text).unwrap();
    Config::load(&path).map_err(|e| {
        let setting = e.setting.rsplit(": ").next().unwrap_or_default().to_owned();
        ConfigError::new(setting, e.message)
    })
}

/// The runtime holds the clients and users in its directory only: the configuration it
/// keeps has none, however many the file has, and clients with one role and one list of
/// scopes share one copy of them.
#[test]
fn the_runtime_keeps_principals_in_the_directory_only() {
    let rt = load_many(&minimal(), 1000, None).unwrap();
    assert!(rt.config.clients.is_empty() && rt.config.users.is_empty());
    assert_eq!(rt.directory.len(), 1000);
    let (a, b) = (
        rt.directory.get("c1").unwrap(),
        rt.directory.get("c999").unwrap(),
    );
    assert!(Arc::ptr_eq(&a.access, &b.access));
    assert_eq!((a.role(), b.scopes()), ("service", &["a".to_owned()][..]));
}

/// Entries are checked as they are read, but their errors keep their place: after the
/// settings' own, and named by the entry's index in the file.
#[test]
fn errors_of_streamed_entries_name_their_entry_after_the_settings() {
    let e = load_many(&minimal(), 1000, Some(700)).unwrap_err();
    assert_eq!(e.setting, "clients[700].key_hash");
    let e = load_many("[token]\nsecret = \"short\"\n", 1000, Some(700)).unwrap_err();
    assert_eq!(e.setting, "token.secret");
}

#[test]
fn the_public_client_id_is_a_valid_id_that_no_principal_has() {
    let rt = check(&minimal()).unwrap();
    assert_eq!(rt.config.token.public_client_id, "keygate");
    let own = format!("{}public_client_id = \"web-app\"\n", minimal());
    assert_eq!(
        check(&own).unwrap().config.token.public_client_id,
        "web-app"
    );
    let bad = format!("{}public_client_id = \"a b\"\n", minimal());
    assert_eq!(check(&bad).unwrap_err().setting, "token.public_client_id");
    let taken = format!(
        "{}\n[[clients]]\nid = \"keygate\"\nkey_hash = \"sha256:{}\"\nrole = \"service\"\n",
        minimal(),
        "ab".repeat(32)
    );
    let e = check(&taken).unwrap_err();
    assert_eq!(e.setting, "token.public_client_id", "{e}");
}

#[test]
fn the_initial_config_issues_rfc_9068_tokens_with_an_audience() {
    let (text, _) = initial_config().unwrap();
    let rt = check(&text).unwrap();
    let public_url = rt.public_url.clone();
    assert_eq!(rt.config.token.audience, vec![public_url.clone()]);
    let rt = check(&text).unwrap();
    let p = rt.directory.get("my-service").unwrap();
    let issued = rt
        .issuer
        .issue(&keygate::token::Grant {
            subject: &p.id,
            client_id: &p.id,
            role: p.role(),
            scopes: &[],
        })
        .unwrap();
    assert_eq!(
        issued.claims.aud,
        Some(keygate::token::Audience::One(public_url))
    );
}

/// With a public-key algorithm the stand-in choice is keyed by the earliest signing key:
/// two copies of one folder choose alike, a reload of one copy too, and a folder with
/// other keys chooses otherwise.
#[test]
fn stand_ins_follow_the_signing_keys_of_the_configuration() {
    let users: String = (0..4)
        .map(|i| {
            let hash = keygate::password::hash_password(format!("pw {i}").as_bytes()).unwrap();
            format!(
                "[[users]]\nusername = \"u{i}\"\npassword_hash = \"{}\"\nrole = \"r\"\n",
                hash.as_str()
            )
        })
        .collect();
    let text = format!(
        "[token]\nalgorithm = \"ES256\"\nsigning_keys = \"keys\"\nkey_publish_delay = \"0s\"\n{users}"
    );
    let copy = |keys_from: Option<&std::path::Path>| {
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("keys");
        match keys_from {
            Some(from) => {
                std::fs::create_dir(&keys).unwrap();
                for entry in std::fs::read_dir(from).unwrap() {
                    let entry = entry.unwrap();
                    std::fs::copy(entry.path(), keys.join(entry.file_name())).unwrap();
                }
            }
            None => {
                crate::config::keyring::generate(&keys, SigningAlgorithm::ES256).unwrap();
            }
        }
        std::fs::write(dir.path().join("keygate.toml"), &text).unwrap();
        dir
    };
    let names: Vec<String> = (0..50).map(|i| format!("nobody-{i}")).collect();
    let picks = |dir: &tempfile::TempDir| -> Vec<String> {
        let rt = Config::load(&dir.path().join("keygate.toml")).unwrap();
        names
            .iter()
            .map(|n| rt.directory.stand_in(n).unwrap().as_str().to_owned())
            .collect()
    };
    let a = copy(None);
    let b = copy(Some(&a.path().join("keys")));
    let first = picks(&a);
    assert_eq!(first, picks(&b), "two copies of one configuration");
    assert_eq!(first, picks(&a), "a reload");
    let other = copy(None);
    assert_ne!(first, picks(&other), "other signing keys, another choice");
}
