//! The directory's lookups and checks, principal by principal.

use super::*;
use crate::password::hash_password;
use time::Duration;

fn client(id: &str, key: &str) -> Principal {
    Principal {
        id: id.into(),
        kind: PrincipalKind::Client,
        access: Arc::new(Access {
            role: "service".into(),
            scopes: vec![],
        }),
        credentials: Credentials::one(Credential {
            hash: KeyHash::sha256_of(key),
            valid_until: None,
        }),
        revoked_at: None,
        not_before: None,
    }
}

fn verifier() -> PasswordVerifier {
    PasswordVerifier::new(2, 16).unwrap()
}

#[tokio::test]
async fn generated_key_finds_its_client() {
    let key = api_key::generate("billing").unwrap();
    let dir = Directory::new([client("billing", &key)]).unwrap();
    let now = OffsetDateTime::now_utc();
    let p = dir.authenticate_key(&key, &verifier(), now).await.unwrap();
    assert_eq!(&*p.id, "billing");
}

#[tokio::test]
async fn hand_made_key_is_found_by_digest() {
    let dir = Directory::new([client("legacy", "seed-style-key")]).unwrap();
    let now = OffsetDateTime::now_utc();
    let p = dir
        .authenticate_key("seed-style-key", &verifier(), now)
        .await
        .unwrap();
    assert_eq!(&*p.id, "legacy");
    assert!(matches!(
        dir.authenticate_key("seed-style-kez", &verifier(), now)
            .await,
        Err(Error::Credential(CredentialError::Wrong))
    ));
}

#[tokio::test]
async fn key_of_an_unknown_client_is_wrong_not_malformed() {
    let dir = Directory::new([]).unwrap();
    let key = api_key::generate("ghost").unwrap();
    let now = OffsetDateTime::now_utc();
    assert!(matches!(
        dir.authenticate_key(&key, &verifier(), now).await,
        Err(Error::Credential(CredentialError::Wrong))
    ));
}

#[tokio::test]
async fn rotated_key_works_until_its_grace_ends() {
    let old = api_key::generate("billing").unwrap();
    let new = api_key::generate("billing").unwrap();
    let now = OffsetDateTime::now_utc();
    let mut p = client("billing", &new);
    p.credentials = p.credentials.with_previous(Credential {
        hash: KeyHash::sha256_of(&old),
        valid_until: Some(now + Duration::hours(1)),
    });
    let dir = Directory::new([p]).unwrap();
    let v = verifier();
    dir.authenticate_key(&new, &v, now).await.unwrap();
    dir.authenticate_key(&old, &v, now).await.unwrap();
    let later = now + Duration::hours(2);
    dir.authenticate_key(&new, &v, later).await.unwrap();
    assert!(matches!(
        dir.authenticate_key(&old, &v, later).await,
        Err(Error::Credential(CredentialError::Expired))
    ));
}

#[tokio::test]
async fn revoked_client_is_refused() {
    let key = api_key::generate("billing").unwrap();
    let now = OffsetDateTime::now_utc();
    let mut p = client("billing", &key);
    p.revoked_at = Some(now - Duration::seconds(1));
    let dir = Directory::new([p]).unwrap();
    assert!(matches!(
        dir.authenticate_key(&key, &verifier(), now).await,
        Err(Error::Credential(CredentialError::Wrong))
    ));
}

#[test]
fn tokens_older_than_not_before_are_refused() {
    let mut p = client("billing", "k");
    let t = OffsetDateTime::from_unix_timestamp(1_900_000_000).unwrap();
    let now = t + Duration::minutes(1);
    assert!(
        p.accepts_token_issued_at(1_800_000_000, now),
        "no not_before"
    );
    p.not_before = Some(t);
    assert!(!p.accepts_token_issued_at(1_899_999_999, now));
    assert!(p.accepts_token_issued_at(1_900_000_000, now));
    p.not_before = Some(t + Duration::milliseconds(500));
    assert!(
        !p.accepts_token_issued_at(1_900_000_000, now),
        "the same second, maybe before"
    );
    assert!(p.accepts_token_issued_at(1_900_000_001, now));
    assert!(!p.accepts_token_issued_at(u64::MAX, now), "no such instant");
    p.revoked_at = Some(now - Duration::seconds(1));
    assert!(
        !p.accepts_token_issued_at(1_900_000_030, now),
        "a revoked principal's tokens are all refused"
    );
}

#[tokio::test]
async fn client_credentials_with_a_password_hashed_key() {
    let now = OffsetDateTime::now_utc();
    let mut p = client("imported", "unused");
    p.credentials = Credentials::one(Credential {
        hash: KeyHash::Password(hash_password(b"old-secret").unwrap()),
        valid_until: None,
    });
    let dir = Directory::new([p]).unwrap();
    let v = verifier();
    dir.authenticate_client("imported", "old-secret", &v, now)
        .await
        .unwrap();
    assert!(
        dir.authenticate_client("imported", "old-secreT", &v, now)
            .await
            .is_err()
    );
}

#[tokio::test]
async fn kg_key_must_belong_to_the_named_client() {
    let key = api_key::generate("billing").unwrap();
    let dir = Directory::new([client("billing", &key), client("other", "x")]).unwrap();
    let now = OffsetDateTime::now_utc();
    let v = verifier();
    dir.authenticate_client("billing", &key, &v, now)
        .await
        .unwrap();
    assert!(
        dir.authenticate_client("other", &key, &v, now)
            .await
            .is_err()
    );
}

#[tokio::test]
async fn user_and_client_cannot_share_an_id() {
    let mut user = client("alice", "k");
    user.kind = PrincipalKind::User;
    let err = Directory::new([client("alice", "k2"), user]).unwrap_err();
    assert_eq!(err.to_string(), "two principals have the id `alice`");
}

#[tokio::test]
async fn user_password_login() {
    let now = OffsetDateTime::now_utc();
    let user = Principal {
        id: "alice".into(),
        kind: PrincipalKind::User,
        access: Arc::new(Access {
            role: "admin".into(),
            scopes: vec![],
        }),
        credentials: Credentials::one(Credential {
            hash: KeyHash::Password(hash_password(b"wonderland").unwrap()),
            valid_until: None,
        }),
        revoked_at: None,
        not_before: None,
    };
    let dir = Directory::new([user]).unwrap();
    let v = verifier();
    dir.authenticate_user("alice", "wonderland", &v, now)
        .await
        .unwrap();
    assert!(
        dir.authenticate_user("alice", "Wonderland", &v, now)
            .await
            .is_err()
    );
    assert!(
        dir.authenticate_user("bob", "wonderland", &v, now)
            .await
            .is_err()
    );
    assert!(
        dir.authenticate_user("ALICE", "wonderland", &v, now)
            .await
            .is_err()
    );
}

/// Unknown usernames are checked against the users' own hashes in their proportions
/// (each name always against the same one), not always against the costliest: with
/// one bcrypt user among argon2 users, a fast answer must not mean "a known name".
#[test]
fn unknown_names_stand_in_for_every_kind_of_user() {
    let user = |id: &str, hash: PasswordHash| Principal {
        id: id.into(),
        kind: PrincipalKind::User,
        access: Arc::new(Access {
            role: "user".into(),
            scopes: vec![],
        }),
        credentials: Credentials::one(Credential {
            hash: KeyHash::Password(hash),
            valid_until: None,
        }),
        revoked_at: None,
        not_before: None,
    };
    let argon = hash_password(b"argon user password").unwrap();
    let bcrypt: PasswordHash = "$2b$12$EixZaYVK1fsbw1ZfbX3OXePaWxn96p36WQoeG6Lruj3vjPGga31lW"
        .parse()
        .unwrap();
    let dir = Directory::new([
        user("alice", argon.clone()),
        user("bob", argon.clone()),
        user("carol", bcrypt.clone()),
    ])
    .unwrap();
    let (mut as_argon, mut as_bcrypt) = (0, 0);
    for i in 0..300 {
        let name = format!("unknown-{i}");
        let pick = dir.stand_in(&name).unwrap();
        assert_eq!(
            pick,
            dir.stand_in(&name).unwrap(),
            "a name keeps its stand-in"
        );
        if *pick == bcrypt {
            as_bcrypt += 1;
        } else {
            assert_eq!(*pick, argon);
            as_argon += 1;
        }
    }
    assert!(
        as_argon > 120 && as_bcrypt > 50,
        "{as_argon} argon2, {as_bcrypt} bcrypt"
    );
}

/// A million clients usually share a handful of roles and scope lists: each pair is
/// stored once, not once per client.
#[test]
fn same_role_and_scopes_are_one_allocation() {
    let mut shared = SharedAccess::default();
    let scopes = ["orders:read".to_owned(), "orders:write".to_owned()];
    let a = shared.get("service", &scopes);
    let b = shared.get("service", &scopes.clone());
    assert!(Arc::ptr_eq(&a, &b));
    assert_eq!(
        (a.role.as_str(), a.scopes.as_slice()),
        ("service", &scopes[..])
    );
    assert!(!Arc::ptr_eq(&a, &shared.get("admin", &scopes)));
    assert!(!Arc::ptr_eq(&a, &shared.get("service", &scopes[..1])));
    let reversed = [scopes[1].clone(), scopes[0].clone()];
    assert!(
        !Arc::ptr_eq(&a, &shared.get("service", &reversed)),
        "order is kept"
    );
    for i in 0..1000 {
        shared.get(&format!("role-{i}"), &[]);
    }
    assert!(
        Arc::ptr_eq(&a, &shared.get("service", &scopes)),
        "kept as the table grows"
    );
}

/// Both keys of a client in a rotation's grace are found by digest (the index records
/// which credential each entry is), among enough clients for the table to grow.
#[tokio::test]
async fn both_keys_of_a_rotation_are_found_by_digest() {
    let now = OffsetDateTime::now_utc();
    let mut clients: Vec<Principal> = (0..2000)
        .map(|i| client(&format!("c{i}"), &format!("hand-made-{i}")))
        .collect();
    for (i, c) in clients.iter_mut().enumerate().filter(|(i, _)| i % 3 == 0) {
        c.credentials = c.credentials.clone().with_previous(Credential {
            hash: KeyHash::sha256_of(&format!("old-{i}")),
            valid_until: Some(now + Duration::hours(1)),
        });
    }
    let dir = Directory::new(clients).unwrap();
    let v = verifier();
    for i in (0..2000).step_by(3) {
        for key in [format!("hand-made-{i}"), format!("old-{i}")] {
            let p = dir.authenticate_key(&key, &v, now).await.unwrap();
            assert_eq!(&*p.id, format!("c{i}"));
        }
    }
    assert!(dir.authenticate_key("old-1", &v, now).await.is_err());
    assert_eq!(dir.len(), 2000);
    assert!(!dir.has_users());
}

/// Short ids are held inline, long ones (up to the 64 characters ids may have) on the
/// heap; both read back, compare and print as the text they were made from.
#[tokio::test]
async fn ids_of_every_length_are_found() {
    let ids: Vec<String> = (1..=64).map(|n| "i".repeat(n)).collect();
    let dir = Directory::new(ids.iter().map(|id| client(id, id))).unwrap();
    let (v, now) = (verifier(), OffsetDateTime::now_utc());
    for id in &ids {
        let p = dir.get(id).unwrap();
        assert_eq!(p.id.as_str(), id);
        assert_eq!(p.id.to_string(), *id);
        assert_eq!(format!("{:?}", p.id), format!("{id:?}"));
        assert_eq!(p.id, Id::from(id.as_str()));
        let found = dir.authenticate_key(id, &v, now).await.unwrap();
        assert_eq!(found.id, id.as_str());
    }
    assert!(dir.get("").is_none());
    assert!(dir.get(&"i".repeat(65)).is_none());
}

/// The stand-in a name gets depends on the configuration alone: two directories built
/// from the same users (two replicas of one file, or one file before and after a reload)
/// agree on every name, with or without a deployment key; another key picks otherwise.
#[test]
fn stand_ins_are_chosen_the_same_way_by_every_copy_of_one_configuration() {
    let hashes: Vec<PasswordHash> = (0..4)
        .map(|i| hash_password(format!("user password {i}").as_bytes()).unwrap())
        .collect();
    let users = || {
        hashes.iter().enumerate().map(|(i, h)| Principal {
            id: format!("user-{i}").as_str().into(),
            kind: PrincipalKind::User,
            access: Arc::new(Access {
                role: "user".into(),
                scopes: vec![],
            }),
            credentials: Credentials::one(Credential {
                hash: KeyHash::Password(h.clone()),
                valid_until: None,
            }),
            revoked_at: None,
            not_before: None,
        })
    };
    let names: Vec<String> = (0..50).map(|i| format!("unknown-{i}")).collect();
    let picks = |dir: &Directory| -> Vec<String> {
        names
            .iter()
            .map(|n| dir.stand_in(n).unwrap().as_str().to_owned())
            .collect()
    };
    let (a, b) = (
        Directory::new(users()).unwrap(),
        Directory::new(users()).unwrap(),
    );
    assert_eq!(picks(&a), picks(&b));
    let distinct: std::collections::BTreeSet<_> = picks(&a).into_iter().collect();
    assert_eq!(distinct.len(), 4, "all four users stand in for some name");

    let key = [7u8; 32];
    let keyed_a = Directory::new(users()).unwrap().with_stand_in_key(key);
    let keyed_b = Directory::new(users()).unwrap().with_stand_in_key(key);
    assert_eq!(picks(&keyed_a), picks(&keyed_b));
    let other = Directory::new(users())
        .unwrap()
        .with_stand_in_key([8u8; 32]);
    assert_ne!(picks(&keyed_a), picks(&other), "the key decides the choice");
}

#[test]
fn a_generated_key_may_only_be_the_secret_of_the_client_it_names() {
    let key = crate::api_key::generate("billing").unwrap();
    assert!(secret_may_be_of(&key, "billing").is_ok());
    assert!(matches!(
        secret_may_be_of(&key, "orders"),
        Err(Error::Credential(CredentialError::Wrong))
    ));
    assert!(secret_may_be_of("a hand-made secret", "orders").is_ok());
    let mut typo = key.into_bytes();
    let last = typo.len() - 1;
    typo[last] = if typo[last] == b'0' { b'1' } else { b'0' };
    assert!(matches!(
        secret_may_be_of(std::str::from_utf8(&typo).unwrap(), "billing"),
        Err(Error::Credential(CredentialError::MalformedKey))
    ));
}
