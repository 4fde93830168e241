//! Principals — clients (machines with API keys) and users (people with passwords) — and
//! the [`Directory`] that finds and authenticates them.

use std::collections::HashMap;
use std::sync::Arc;

use time::OffsetDateTime;

use crate::api_key::{self, KeyHash, PresentedKey, hash::digest};
use crate::error::{Error, Result};
use crate::password::{PasswordHash, PasswordVerifier};

/// Whether a principal is a machine or a person.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrincipalKind {
    /// Authenticates with an API key (`/login`, `client_credentials`).
    Client,
    /// Authenticates with a username and password (`grant_type=password`).
    User,
}

/// One credential of a principal, with the end of its validity when it has one.
#[derive(Debug, Clone)]
pub struct Credential {
    /// The stored hash.
    pub hash: KeyHash,
    /// After this instant the credential no longer authenticates (a rotated-out key's
    /// grace period, or the client's `expires_at`).
    pub valid_until: Option<OffsetDateTime>,
}

/// A client or user as configured.
#[derive(Debug, Clone)]
pub struct Principal {
    /// Client id or username; becomes the token's `sub`.
    pub id: String,
    /// Client or user.
    pub kind: PrincipalKind,
    /// The `role` claim.
    pub role: String,
    /// Scopes this principal may be granted.
    pub scopes: Vec<String>,
    /// Credentials, newest first; more than one only during a key rotation's grace.
    pub credentials: Vec<Credential>,
    /// Set by `keygate key revoke`: from this instant the key no longer authenticates and
    /// keygate's own endpoints refuse every token issued to this principal.
    pub revoked_at: Option<OffsetDateTime>,
    /// Tokens issued before this instant are refused by keygate's own endpoints: the
    /// principal was created then (a removed principal's tokens stay dead when the name
    /// comes back), or its old key was revoked by a rotation.
    pub not_before: Option<OffsetDateTime>,
}

impl Principal {
    /// True when this principal may still authenticate at `now`.
    pub fn is_active(&self, now: OffsetDateTime) -> bool {
        self.revoked_at.is_none_or(|at| at > now)
    }

    /// True when a token issued to this principal at `iat` (seconds since the epoch, as in
    /// the token) is still good at `now`: the principal is active and the token is not
    /// older than `not_before`. A token from within the second of a fractional
    /// `not_before` is refused: `iat` cannot tell whether it came before or after.
    pub fn accepts_token_issued_at(&self, iat: u64, now: OffsetDateTime) -> bool {
        let issued = i64::try_from(iat)
            .ok()
            .and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok());
        self.is_active(now)
            && match (self.not_before, issued) {
                (None, _) => true,
                (Some(not_before), Some(issued)) => issued >= not_before,
                (Some(_), None) => false,
            }
    }

    fn live_credentials(&self, now: OffsetDateTime) -> impl Iterator<Item = &Credential> {
        self.credentials
            .iter()
            .filter(move |c| c.valid_until.is_none_or(|until| until > now))
    }
}

/// True for a valid role or scope: 1-128 of `A-Z a-z 0-9 _ . : / -`. Narrower than
/// RFC 6749 §3.3 scope tokens on purpose: these values travel in `X-Auth-Role` and
/// `X-Auth-Scope` headers, space-separated `scope` claims and `key list` columns, where a
/// space, comma, quote or line break would split or forge a value.
pub fn is_valid_name(value: &str) -> bool {
    (1..=128).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.:/-".contains(&b))
}

/// All principals, indexed for O(1) lookup by id and by key digest.
#[derive(Debug, Default)]
pub struct Directory {
    by_id: HashMap<String, Arc<Principal>>,
    by_digest: HashMap<[u8; 32], Arc<Principal>>,
    /// Real users' password hashes. An unknown username is checked (and always refused)
    /// against one of them, picked by the name: a given name always costs the same, and
    /// unknown names cost what known names cost, in the same proportions, whatever mix of
    /// schemes and cost settings the users have (a stand-in that were always the costliest
    /// hash would make every fast answer a known name).
    stand_ins: Vec<PasswordHash>,
    /// Keys that pick, so which stand-in a name gets cannot be worked out from outside.
    stand_in_key: std::hash::RandomState,
}

/// A second principal with an id already taken (clients and users share one namespace,
/// so a client can never mint tokens whose `sub` names a user).
#[derive(Debug, thiserror::Error)]
#[error("two principals have the id `{0}`")]
pub struct DuplicateId(pub String);

/// Compared against when no principal matches, so that an unknown key costs what a
/// wrong one costs.
const DUMMY_DIGEST: [u8; 32] = [0x5a; 32];

impl Directory {
    /// Indexes `principals`; refuses two with one id.
    pub fn new(principals: impl IntoIterator<Item = Principal>) -> Result<Self, DuplicateId> {
        let mut dir = Directory::default();
        for p in principals {
            let p = Arc::new(p);
            if dir.by_id.insert(p.id.clone(), p.clone()).is_some() {
                return Err(DuplicateId(p.id.clone()));
            }
            if p.kind == PrincipalKind::Client {
                for c in &p.credentials {
                    if let Some(d) = c.hash.sha256() {
                        dir.by_digest.insert(*d, p.clone());
                    }
                }
            }
        }
        let mut users: Vec<&Arc<Principal>> = dir
            .by_id
            .values()
            .filter(|p| p.kind == PrincipalKind::User)
            .collect();
        users.sort_by(|a, b| a.id.cmp(&b.id));
        dir.stand_ins = users
            .iter()
            .filter_map(|u| {
                u.credentials.iter().find_map(|c| match &c.hash {
                    KeyHash::Password(h) => Some(h.clone()),
                    KeyHash::Sha256(_) => None,
                })
            })
            .collect();
        Ok(dir)
    }

    /// The principal with this id.
    pub fn get(&self, id: &str) -> Option<&Arc<Principal>> {
        self.by_id.get(id)
    }

    /// Every principal, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Principal>> {
        self.by_id.values()
    }

    /// Number of principals.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// True when there are no principals.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// True when at least one user exists (the password grant is on only then).
    pub fn has_users(&self) -> bool {
        self.by_id.values().any(|p| p.kind == PrincipalKind::User)
    }

    /// Finds the client an API key belongs to and checks the key.
    ///
    /// A `kg_` key is found by the id it carries; any other key by its SHA-256 digest.
    /// Keys stored as password hashes need the id, so they work as `kg_` keys or through
    /// `client_credentials`, where the client id is given.
    pub async fn authenticate_key(
        &self,
        key: &str,
        passwords: &PasswordVerifier,
        now: OffsetDateTime,
    ) -> Result<Arc<Principal>> {
        match api_key::classify(key)? {
            PresentedKey::Generated { id } => {
                let client = self.client(id);
                check_secret(client, key, passwords, now).await
            }
            PresentedKey::HandMade => {
                let presented = digest(key);
                let found = self.by_digest.get(&presented);
                let client = found.filter(|p| p.kind == PrincipalKind::Client);
                check_secret(client, key, passwords, now).await
            }
        }
    }

    /// Checks `client_id` + secret (`client_credentials`, HTTP Basic or form).
    pub async fn authenticate_client(
        &self,
        client_id: &str,
        secret: &str,
        passwords: &PasswordVerifier,
        now: OffsetDateTime,
    ) -> Result<Arc<Principal>> {
        if let PresentedKey::Generated { id } = api_key::classify(secret)?
            && id != client_id
        {
            return Err(Error::WrongCredential);
        }
        check_secret(self.client(client_id), secret, passwords, now).await
    }

    /// Checks a username and password (`grant_type=password`). Usernames are matched
    /// exactly as configured (ids are ASCII only, see [`api_key::is_valid_id`]).
    pub async fn authenticate_user(
        &self,
        username: &str,
        password: &str,
        passwords: &PasswordVerifier,
        now: OffsetDateTime,
    ) -> Result<Arc<Principal>> {
        let user = self
            .by_id
            .get(username)
            .filter(|p| p.kind == PrincipalKind::User);
        let hash = user.and_then(|u| {
            u.live_credentials(now).find_map(|c| match &c.hash {
                KeyHash::Password(p) => Some(p),
                KeyHash::Sha256(_) => None,
            })
        });
        match (hash, self.stand_in(username)) {
            (Some(h), _) => passwords.verify(Some(h), password.as_bytes()).await?,
            (None, Some(stand_in)) => {
                passwords
                    .verify_unknown(stand_in, password.as_bytes())
                    .await?;
            }
            (None, None) => passwords.verify(None, password.as_bytes()).await?,
        }
        let user = user.ok_or(Error::WrongCredential)?;
        if !user.is_active(now) {
            return Err(Error::WrongCredential);
        }
        Ok(user.clone())
    }

    /// The real user's hash an unknown `username` is checked against.
    fn stand_in(&self, username: &str) -> Option<&PasswordHash> {
        use std::hash::BuildHasher;
        if self.stand_ins.is_empty() {
            return None;
        }
        let pick = self.stand_in_key.hash_one(username) % self.stand_ins.len() as u64;
        self.stand_ins.get(usize::try_from(pick).ok()?)
    }

    fn client(&self, id: &str) -> Option<&Arc<Principal>> {
        self.by_id
            .get(id)
            .filter(|p| p.kind == PrincipalKind::Client)
    }
}

/// Checks `secret` against every credential of `principal` without stopping at the first
/// mismatch, then the principal's state. With no principal, a dummy comparison of the
/// same cost runs and the answer is [`Error::WrongCredential`].
async fn check_secret(
    principal: Option<&Arc<Principal>>,
    secret: &str,
    passwords: &PasswordVerifier,
    now: OffsetDateTime,
) -> Result<Arc<Principal>> {
    let presented = digest(secret);
    let Some(principal) = principal else {
        let _ = KeyHash::Sha256(DUMMY_DIGEST).matches_digest(&presented);
        return Err(Error::WrongCredential);
    };
    let mut matched = false;
    let mut expired = false;
    for credential in &principal.credentials {
        let ok = match &credential.hash {
            KeyHash::Sha256(_) => credential.hash.matches_digest(&presented),
            KeyHash::Password(hash) => verify_password_key(passwords, hash, secret).await?,
        };
        if ok {
            if credential.valid_until.is_none_or(|until| until > now) {
                matched = true;
            } else {
                expired = true;
            }
        }
    }
    if matched && principal.is_active(now) {
        Ok(principal.clone())
    } else if expired && principal.is_active(now) {
        Err(Error::CredentialExpired)
    } else {
        Err(Error::WrongCredential)
    }
}

async fn verify_password_key(
    passwords: &PasswordVerifier,
    hash: &PasswordHash,
    secret: &str,
) -> Result<bool> {
    match passwords.verify(Some(hash), secret.as_bytes()).await {
        Ok(()) => Ok(true),
        Err(Error::WrongCredential | Error::PasswordTooLong(_)) => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::password::hash_password;
    use time::Duration;

    fn client(id: &str, key: &str) -> Principal {
        Principal {
            id: id.into(),
            kind: PrincipalKind::Client,
            role: "service".into(),
            scopes: vec![],
            credentials: vec![Credential {
                hash: KeyHash::sha256_of(key),
                valid_until: None,
            }],
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
        assert_eq!(p.id, "billing");
    }

    #[tokio::test]
    async fn hand_made_key_is_found_by_digest() {
        let dir = Directory::new([client("legacy", "seed-style-key")]).unwrap();
        let now = OffsetDateTime::now_utc();
        let p = dir
            .authenticate_key("seed-style-key", &verifier(), now)
            .await
            .unwrap();
        assert_eq!(p.id, "legacy");
        assert!(matches!(
            dir.authenticate_key("seed-style-kez", &verifier(), now)
                .await,
            Err(Error::WrongCredential)
        ));
    }

    #[tokio::test]
    async fn key_of_an_unknown_client_is_wrong_not_malformed() {
        let dir = Directory::new([]).unwrap();
        let key = api_key::generate("ghost").unwrap();
        let now = OffsetDateTime::now_utc();
        assert!(matches!(
            dir.authenticate_key(&key, &verifier(), now).await,
            Err(Error::WrongCredential)
        ));
    }

    #[tokio::test]
    async fn rotated_key_works_until_its_grace_ends() {
        let old = api_key::generate("billing").unwrap();
        let new = api_key::generate("billing").unwrap();
        let now = OffsetDateTime::now_utc();
        let mut p = client("billing", &new);
        p.credentials.push(Credential {
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
            Err(Error::CredentialExpired)
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
            Err(Error::WrongCredential)
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
        p.credentials = vec![Credential {
            hash: KeyHash::Password(hash_password(b"old-secret").unwrap()),
            valid_until: None,
        }];
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
            role: "admin".into(),
            scopes: vec![],
            credentials: vec![Credential {
                hash: KeyHash::Password(hash_password(b"wonderland").unwrap()),
                valid_until: None,
            }],
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
            role: "user".into(),
            scopes: vec![],
            credentials: vec![Credential {
                hash: KeyHash::Password(hash),
                valid_until: None,
            }],
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
}
