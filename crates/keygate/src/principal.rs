//! Principals — clients (machines with API keys) and users (people with passwords) — and
//! the [`Directory`] that finds and authenticates them.

use std::fmt;
use std::hash::BuildHasher;
use std::sync::Arc;

use hashbrown::HashTable;
use hashbrown::hash_table::Entry;

use time::OffsetDateTime;

use crate::api_key::{self, KeyHash, PresentedKey, hash::digest};
use crate::error::{CredentialError, Error, Result};
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

/// A principal's credentials, newest first: the current one, and during a key rotation's
/// grace the one it replaced. The current one is held inline and the previous one boxed,
/// so that the usual principal with one key costs no allocation for it (a directory may
/// hold a million of them).
#[derive(Debug, Clone)]
pub struct Credentials {
    current: Credential,
    previous: Option<Box<Credential>>,
}

impl Credentials {
    /// One credential.
    pub fn one(current: Credential) -> Self {
        Self {
            current,
            previous: None,
        }
    }

    /// `self` with the credential `current` replaced, kept until its grace ends.
    #[must_use]
    pub fn with_previous(mut self, previous: Credential) -> Self {
        self.previous = Some(Box::new(previous));
        self
    }

    /// The newest credential.
    pub fn current(&self) -> &Credential {
        &self.current
    }

    /// Every credential, newest first.
    pub fn iter(&self) -> impl Iterator<Item = &Credential> {
        std::iter::once(&self.current).chain(self.previous.as_deref())
    }
}

impl<'a> IntoIterator for &'a Credentials {
    type Item = &'a Credential;
    type IntoIter =
        std::iter::Chain<std::iter::Once<&'a Credential>, std::option::IntoIter<&'a Credential>>;

    fn into_iter(self) -> Self::IntoIter {
        std::iter::once(&self.current).chain(self.previous.as_deref())
    }
}

/// What a principal is granted: its role and the scopes it may ask for. One copy is
/// shared (`Arc`) by every principal with the same, see [`SharedAccess`]: a million
/// clients usually have a handful of roles.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Access {
    /// The `role` claim; empty for none.
    pub role: String,
    /// Scopes the principal may be granted.
    pub scopes: Vec<String>,
}

/// A client id or username, held inline when short (most are: `billing`, `client-42`), so
/// that a directory of a million clients makes no allocation per id: every part of it is
/// then in a few large blocks, which go back to the system whole when a reload replaces it.
#[derive(Clone)]
pub struct Id(IdRepr);

#[derive(Clone)]
enum IdRepr {
    Inline { len: u8, bytes: [u8; INLINE_ID] },
    Heap(Box<str>),
}

/// The longest id held inline: with its length and the variant's tag, as big as a `String`.
const INLINE_ID: usize = 22;

impl Id {
    /// The id.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            // Built from a `&str` only, so always UTF-8: the empty fallback is never taken.
            IdRepr::Inline { len, bytes } => {
                std::str::from_utf8(&bytes[..usize::from(*len)]).unwrap_or_default()
            }
            IdRepr::Heap(id) => id,
        }
    }
}

impl From<&str> for Id {
    fn from(id: &str) -> Self {
        match u8::try_from(id.len()) {
            Ok(len) if id.len() <= INLINE_ID => {
                let mut bytes = [0; INLINE_ID];
                bytes[..id.len()].copy_from_slice(id.as_bytes());
                Id(IdRepr::Inline { len, bytes })
            }
            _ => Id(IdRepr::Heap(id.into())),
        }
    }
}

impl std::ops::Deref for Id {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq for Id {
    fn eq(&self, other: &Id) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Id {}

impl PartialEq<str> for Id {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Id {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// A client or user as configured.
#[derive(Debug, Clone)]
pub struct Principal {
    /// Client id or username; becomes the token's `sub`.
    pub id: Id,
    /// Client or user.
    pub kind: PrincipalKind,
    /// Role and scopes, shared with the principals that have the same.
    pub access: Arc<Access>,
    /// Credentials, newest first; more than one only during a key rotation's grace.
    pub credentials: Credentials,
    /// Set by `keygate key revoke`: from this instant the key no longer authenticates and
    /// keygate's own endpoints refuse every token issued to this principal.
    pub revoked_at: Option<OffsetDateTime>,
    /// Tokens issued before this instant are refused by keygate's own endpoints: the
    /// principal was created then (a removed principal's tokens stay dead when the name
    /// comes back), or its old key was revoked by a rotation.
    pub not_before: Option<OffsetDateTime>,
}

impl Principal {
    /// The `role` claim.
    pub fn role(&self) -> &str {
        &self.access.role
    }

    /// Scopes this principal may be granted.
    pub fn scopes(&self) -> &[String] {
        &self.access.scopes
    }

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

/// One copy of each [`Access`], handed out to every principal that has it: building a
/// directory of a million clients with one role and one list of scopes allocates them once.
#[derive(Debug, Default)]
pub struct SharedAccess {
    known: HashTable<Arc<Access>>,
    hasher: std::hash::RandomState,
}

impl SharedAccess {
    /// The shared copy of `role` with `scopes` (the same scopes in the same order).
    pub fn get(&mut self, role: &str, scopes: &[String]) -> Arc<Access> {
        let hash = self.hasher.hash_one((role, scopes));
        let same = |a: &Arc<Access>| a.role == role && a.scopes == scopes;
        if let Some(shared) = self.known.find(hash, same) {
            return shared.clone();
        }
        let shared = Arc::new(Access {
            role: role.to_owned(),
            scopes: scopes.to_vec(),
        });
        let hasher = &self.hasher;
        let rehash = |a: &Arc<Access>| hasher.hash_one((a.role.as_str(), a.scopes.as_slice()));
        self.known.insert_unique(hash, shared.clone(), rehash);
        shared
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
///
/// The principals sit in one vector; both indexes hold positions in it (4 bytes each)
/// rather than keys or pointers, so a million clients cost one allocation each (the id)
/// plus their share of three large arrays.
#[derive(Debug, Default)]
pub struct Directory {
    principals: Vec<Principal>,
    /// Positions, found by the id's hash.
    by_id: HashTable<u32>,
    /// Clients' SHA-256 credentials, found by the digest's hash: the position shifted
    /// left by one, and which credential in the low bit (see [`digest_at`]).
    by_digest: HashTable<u32>,
    /// Keys the two tables' hashes, so that no outsider can aim ids at one bucket.
    hasher: std::hash::RandomState,
    has_users: bool,
    /// Real users' password hashes. An unknown username is checked (and always refused)
    /// against one of them, picked by the name: a given name always costs the same, and
    /// unknown names cost what known names cost, in the same proportions, whatever mix of
    /// schemes and cost settings the users have (a stand-in that were always the costliest
    /// hash would make every fast answer a known name).
    stand_ins: Vec<PasswordHash>,
    /// Keys the pick (HMAC-SHA256 of the name), so which stand-in a name gets cannot be
    /// worked out from outside. Derived from the configuration, never per process: every
    /// replica of one file, and the same file after a reload, give a name the same
    /// stand-in and so the same cost (see [`Directory::with_stand_in_key`]).
    stand_in_key: StandInKey,
}

/// The key of the stand-in choice; `Debug` does not show it.
#[derive(Clone, Default)]
struct StandInKey([u8; 32]);

impl fmt::Debug for StandInKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StandInKey(..)")
    }
}

/// Why a set of principals cannot be a [`Directory`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DirectoryError {
    /// A second principal with an id already taken (clients and users share one
    /// namespace, so a client can never mint tokens whose `sub` names a user).
    #[error("two principals have the id `{0}`")]
    DuplicateId(String),
    /// More principals than a directory indexes (2^31).
    #[error("more than 2^31 principals")]
    TooMany,
}

/// Compared against when no principal matches, so that an unknown key costs what a
/// wrong one costs.
const DUMMY_DIGEST: [u8; 32] = [0x5a; 32];

impl Directory {
    /// Indexes `principals`; refuses two with one id. Two clients with the same SHA-256
    /// key: a hand-made key finds the later one.
    pub fn new(principals: impl IntoIterator<Item = Principal>) -> Result<Self, DirectoryError> {
        let mut principals: Vec<Principal> = principals.into_iter().collect();
        // Grown by doubling while the file was read: up to half of it unused.
        principals.shrink_to_fit();
        let count = u32::try_from(principals.len())
            .ok()
            .filter(|n| *n < 1 << 31)
            .ok_or(DirectoryError::TooMany)?;
        let hasher = std::hash::RandomState::new();
        let mut by_id = HashTable::with_capacity(principals.len());
        let mut by_digest = HashTable::with_capacity(principals.len());
        let id_of = |at: &u32| &*principals[*at as usize].id;
        for (at, p) in (0..count).zip(&principals) {
            let hash = hasher.hash_one(&*p.id);
            match by_id.entry(
                hash,
                |other| id_of(other) == &*p.id,
                |other| hasher.hash_one(id_of(other)),
            ) {
                Entry::Occupied(_) => return Err(DirectoryError::DuplicateId(p.id.to_string())),
                Entry::Vacant(slot) => {
                    slot.insert(at);
                }
            }
            if p.kind != PrincipalKind::Client {
                continue;
            }
            for (slot, c) in (0..).zip(p.credentials.iter()) {
                let Some(d) = c.hash.sha256() else { continue };
                let holds = |other: &u32| digest_at(&principals, *other) == Some(d);
                let rehash = |other: &u32| hasher.hash_one(digest_at(&principals, *other));
                match by_digest.entry(hasher.hash_one(Some(d)), holds, rehash) {
                    Entry::Occupied(mut taken) => *taken.get_mut() = at << 1 | slot,
                    Entry::Vacant(free) => {
                        free.insert(at << 1 | slot);
                    }
                }
            }
        }
        let mut users: Vec<&Principal> = principals
            .iter()
            .filter(|p| p.kind == PrincipalKind::User)
            .collect();
        users.sort_by(|a, b| a.id.cmp(&b.id));
        let stand_ins: Vec<PasswordHash> = users
            .iter()
            .filter_map(|u| {
                u.credentials.iter().find_map(|c| match &c.hash {
                    KeyHash::Password(h) => Some(h.clone()),
                    KeyHash::Sha256(_) => None,
                })
            })
            .collect();
        let has_users = !users.is_empty();
        let stand_in_key = StandInKey(stand_in_key_of(&stand_ins));
        Ok(Directory {
            principals,
            by_id,
            by_digest,
            hasher,
            has_users,
            stand_ins,
            stand_in_key,
        })
    }

    /// Keys the choice of stand-in hashes with `key`, a secret of the deployment (the
    /// server derives it from the token secret or signing key). Without it the choice is
    /// keyed by the users' own password hashes, whose random salts are as much a secret of
    /// the configuration file; either way it depends on the configuration alone.
    #[must_use]
    pub fn with_stand_in_key(mut self, key: [u8; 32]) -> Self {
        self.stand_in_key = StandInKey(key);
        self
    }

    /// The principal with this id.
    pub fn get(&self, id: &str) -> Option<&Principal> {
        let at = self.by_id.find(self.hasher.hash_one(id), |at| {
            &*self.principals[*at as usize].id == id
        })?;
        self.principals.get(*at as usize)
    }

    /// Every principal, in the order given to [`Directory::new`].
    pub fn iter(&self) -> impl Iterator<Item = &Principal> {
        self.principals.iter()
    }

    /// Number of principals.
    pub fn len(&self) -> usize {
        self.principals.len()
    }

    /// True when there are no principals.
    pub fn is_empty(&self) -> bool {
        self.principals.is_empty()
    }

    /// True when at least one user exists (the password grant is on only then).
    pub fn has_users(&self) -> bool {
        self.has_users
    }

    /// The client holding a SHA-256 credential with this digest.
    fn by_digest(&self, digest: &[u8; 32]) -> Option<&Principal> {
        let holds = |entry: &u32| digest_at(&self.principals, *entry) == Some(digest);
        let entry = self
            .by_digest
            .find(self.hasher.hash_one(Some(digest)), holds)?;
        self.principals.get((*entry >> 1) as usize)
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
    ) -> Result<&Principal> {
        self.authenticate_classified(api_key::classify(key)?, key, passwords, now)
            .await
    }

    /// [`Directory::authenticate_key`] for a key already classified (`presented` is
    /// [`api_key::classify`] of `key`), so that a caller that looks elsewhere too checks
    /// the checksum once.
    pub async fn authenticate_classified(
        &self,
        presented: PresentedKey<'_>,
        key: &str,
        passwords: &PasswordVerifier,
        now: OffsetDateTime,
    ) -> Result<&Principal> {
        match presented {
            PresentedKey::Generated { id } => {
                let client = self.client(id);
                check_secret(client, key, passwords, now).await
            }
            PresentedKey::HandMade => {
                let presented = digest(key);
                let found = self.by_digest(&presented);
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
    ) -> Result<&Principal> {
        secret_may_be_of(secret, client_id)?;
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
    ) -> Result<&Principal> {
        let user = self.get(username);
        self.authenticate_found_user(user, username, password, passwords, now)
            .await
    }

    /// The real user's hash an unknown `username` is checked against (`None` without
    /// users). Public so that deployments can check that replicas agree.
    pub fn stand_in(&self, username: &str) -> Option<&PasswordHash> {
        if self.stand_ins.is_empty() {
            return None;
        }
        let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &self.stand_in_key.0);
        let tag = aws_lc_rs::hmac::sign(&key, username.as_bytes());
        let mut first = [0u8; 8];
        first.copy_from_slice(&tag.as_ref()[..8]);
        // 64 bits modulo a few thousand users at most: the bias is far below noise.
        let pick = u64::from_be_bytes(first) % self.stand_ins.len() as u64;
        self.stand_ins.get(usize::try_from(pick).ok()?)
    }

    fn client(&self, id: &str) -> Option<&Principal> {
        self.get(id).filter(|p| p.kind == PrincipalKind::Client)
    }

    /// Checks a username and password against `user`, a user found outside this
    /// directory (a server's database-backed copy): the same steps and costs as
    /// [`Directory::authenticate_user`], with this directory's stand-ins for an unknown name.
    pub async fn authenticate_found_user<'a>(
        &self,
        user: Option<&'a Principal>,
        username: &str,
        password: &str,
        passwords: &PasswordVerifier,
        now: OffsetDateTime,
    ) -> Result<&'a Principal> {
        let user = user.filter(|p| p.kind == PrincipalKind::User);
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
        let user = user.ok_or(Error::Credential(CredentialError::Wrong))?;
        if !user.is_active(now) {
            return Err(Error::Credential(CredentialError::Wrong));
        }
        Ok(user)
    }
}

/// Checks an API key or client secret against `client`, a client found outside a
/// [`Directory`] (a server's database-backed copy), with the same steps and costs as
/// [`Directory::authenticate_key`]: every credential compared, then the client's state.
pub async fn check_client_secret<'a>(
    client: Option<&'a Principal>,
    secret: &str,
    passwords: &PasswordVerifier,
    now: OffsetDateTime,
) -> Result<&'a Principal> {
    let client = client.filter(|p| p.kind == PrincipalKind::Client);
    check_secret(client, secret, passwords, now).await
}

/// The default key of the stand-in choice: a digest of the stand-in hashes themselves
/// (PHC strings with their salts), in user-id order.
fn stand_in_key_of(stand_ins: &[PasswordHash]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(b"keygate stand-in key\0");
    for s in stand_ins {
        h.update(s.as_str().as_bytes());
        h.update(b"\0");
    }
    h.finalize().into()
}

/// The digest a `by_digest` entry stands for: the credential (low bit: 0 current, 1
/// previous) of the principal at the entry's other bits.
fn digest_at(principals: &[Principal], entry: u32) -> Option<&[u8; 32]> {
    let principal = principals.get((entry >> 1) as usize)?;
    let credential = principal.credentials.iter().nth((entry & 1) as usize)?;
    credential.hash.sha256()
}

/// Refuses a generated key presented as the secret of `client_id` when it names another
/// client (`kg_<id>_…` carries its owner): wrong, without any lookup or hash. Anything else
/// is left to the secret check.
pub fn secret_may_be_of(secret: &str, client_id: &str) -> Result<()> {
    match api_key::classify(secret)? {
        PresentedKey::Generated { id } if id != client_id => {
            Err(Error::Credential(CredentialError::Wrong))
        }
        _ => Ok(()),
    }
}

/// Checks `secret` against every credential of `principal` without stopping at the first
/// mismatch, then the principal's state. With no principal, a dummy comparison of the
/// same cost runs and the answer is [`CredentialError::Wrong`].
async fn check_secret<'a>(
    principal: Option<&'a Principal>,
    secret: &str,
    passwords: &PasswordVerifier,
    now: OffsetDateTime,
) -> Result<&'a Principal> {
    let presented = digest(secret);
    let Some(principal) = principal else {
        let _ = KeyHash::Sha256(DUMMY_DIGEST).matches_digest(&presented);
        return Err(Error::Credential(CredentialError::Wrong));
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
        Ok(principal)
    } else if expired && principal.is_active(now) {
        Err(Error::Credential(CredentialError::Expired))
    } else {
        Err(Error::Credential(CredentialError::Wrong))
    }
}

async fn verify_password_key(
    passwords: &PasswordVerifier,
    hash: &PasswordHash,
    secret: &str,
) -> Result<bool> {
    match passwords.verify(Some(hash), secret.as_bytes()).await {
        Ok(()) => Ok(true),
        Err(
            Error::Credential(CredentialError::Wrong)
            | Error::Credential(CredentialError::PasswordTooLong(_)),
        ) => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests;
