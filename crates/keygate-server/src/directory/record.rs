//! [`Record`]: one principal as the database holds it, and the [`Principal`] it becomes.

use keygate::api_key::{self, KeyHash};
use keygate::principal::{self, Credential, Credentials, Principal, PrincipalKind, SharedAccess};
use serde::Serialize;
use time::OffsetDateTime;

use super::DirectoryError;
use crate::quota::{self, RateLimit};

/// Client or user, as the `kind` column spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A machine with an API key.
    Client,
    /// A person with a password.
    User,
}

impl Kind {
    /// `client` or `user`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Client => "client",
            Kind::User => "user",
        }
    }

    pub(crate) fn parse(s: &str) -> Result<Self, DirectoryError> {
        match s {
            "client" => Ok(Kind::Client),
            "user" => Ok(Kind::User),
            other => Err(DirectoryError::Corrupt(format!("unknown kind `{other}`"))),
        }
    }

    fn principal_kind(self) -> PrincipalKind {
        match self {
            Kind::Client => PrincipalKind::Client,
            Kind::User => PrincipalKind::User,
        }
    }
}

/// One principal in the directory. Instants are whole milliseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Client id or username.
    pub id: String,
    /// Client or user.
    pub kind: Kind,
    /// The `role` claim; empty for none.
    pub role: String,
    /// Scopes it may be granted.
    pub scopes: Vec<String>,
    /// The current credential: `sha256:…` of a client's key, a PHC password hash
    /// (`$argon2id$…`, `$2b$…`) of a user's password.
    pub hash: String,
    /// During a rotation's grace: the old key's hash, and when it stops working.
    pub previous: Option<(String, OffsetDateTime)>,
    /// When the key stops working.
    pub expires_at: Option<OffsetDateTime>,
    /// From this instant the principal is refused and so are its tokens.
    pub revoked_at: Option<OffsetDateTime>,
    /// Tokens issued before this instant are refused.
    pub not_before: Option<OffsetDateTime>,
    /// A quota of its own (`100/s`, `5000/h`).
    pub rate_limit: Option<String>,
    /// A JSON object kept for the caller (an owner id, a plan name), as given.
    pub metadata: Option<String>,
    /// When it was created.
    pub created_at: OffsetDateTime,
    /// When it last authenticated, to the minute (written in batches).
    pub last_used_at: Option<OffsetDateTime>,
}

/// The most bytes of `metadata`.
pub const MAX_METADATA: usize = 4096;

impl Record {
    /// `active`, `rotating` (an old key in its grace) or `revoked`, at `now`.
    pub fn state(&self, now: OffsetDateTime) -> &'static str {
        if self.revoked_at.is_some_and(|at| at <= now) {
            "revoked"
        } else if self
            .previous
            .as_ref()
            .is_some_and(|(_, until)| *until > now)
        {
            "rotating"
        } else {
            "active"
        }
    }

    /// `self` as created now, after a principal of the same id was removed at
    /// `removed_at`: tokens issued to the removed one (up to its removal, whose second
    /// `iat` cannot split) never pass as this one's.
    pub(crate) fn created(mut self, removed_at: Option<OffsetDateTime>) -> Self {
        if let Some(at) = removed_at {
            let after = at.replace_nanosecond(0).unwrap_or(at) + time::Duration::SECOND;
            self.not_before = Some(self.not_before.map_or(after, |n| n.max(after)));
        }
        self
    }

    /// Checks every field as the file's entries are checked (README, Configuration), so
    /// that nothing the server would refuse to load is ever written.
    pub fn check(&self) -> Result<(), DirectoryError> {
        self.check_fields()?;
        let bad = DirectoryError::Invalid;
        let hash: KeyHash = self
            .hash
            .parse()
            .map_err(|e| bad(format!("hash: {}", keygate::error::chain(&e))))?;
        if self.kind == Kind::User && matches!(hash, KeyHash::Sha256(_)) {
            return Err(bad("a user's password needs a slow hash".into()));
        }
        if let Some((prev, _)) = &self.previous {
            prev.parse::<KeyHash>()
                .map_err(|e| bad(format!("previous hash: {}", keygate::error::chain(&e))))?;
        }
        Ok(())
    }

    /// [`Record::check`] without the hashes.
    pub fn check_fields(&self) -> Result<(), DirectoryError> {
        let bad = DirectoryError::Invalid;
        if !api_key::is_valid_id(&self.id) {
            return Err(bad(format!(
                "id: `{}` is not 1-64 of A-Z a-z 0-9 . _ - @",
                self.id.chars().take(64).collect::<String>()
            )));
        }
        if !self.role.is_empty() && !principal::is_valid_name(&self.role) {
            return Err(bad(
                "role: 1-128 of A-Z a-z 0-9 _ . : / - (or empty for none)".into(),
            ));
        }
        if self.scopes.len() > 64 {
            return Err(bad("scopes: at most 64".into()));
        }
        for s in &self.scopes {
            if !principal::is_valid_name(s) {
                return Err(bad(format!(
                    "scopes: {:?} is not 1-128 of A-Z a-z 0-9 _ . : / -",
                    s.chars().take(64).collect::<String>()
                )));
            }
        }
        if let Some(limit) = &self.rate_limit {
            quota::parse_rate_limit(Some(limit), || "rate_limit".into())
                .map_err(|e| bad(e.to_string()))?;
        }
        if let Some(m) = &self.metadata {
            if m.len() > MAX_METADATA {
                return Err(bad(format!("metadata: at most {MAX_METADATA} bytes")));
            }
            match serde_json::from_str::<serde_json::Value>(m) {
                Ok(serde_json::Value::Object(_)) => {}
                _ => return Err(bad("metadata: must be a JSON object".into())),
            }
        }
        Ok(())
    }

    /// The principal this record authenticates as, and its own quota.
    pub(crate) fn principal(
        &self,
        shared: &mut SharedAccess,
    ) -> Result<(Principal, Option<RateLimit>), DirectoryError> {
        let corrupt = |what: &str, e: &dyn std::fmt::Display| {
            DirectoryError::Corrupt(format!("`{}`: {what}: {e}", self.id))
        };
        let hash: KeyHash = self.hash.parse().map_err(|e| corrupt("hash", &e))?;
        let mut credentials = Credentials::one(Credential {
            hash,
            valid_until: self.expires_at,
        });
        if let Some((prev, until)) = &self.previous {
            let hash: KeyHash = prev.parse().map_err(|e| corrupt("previous hash", &e))?;
            let valid_until = Some(self.expires_at.map_or(*until, |e| e.min(*until)));
            credentials = credentials.with_previous(Credential { hash, valid_until });
        }
        let rate_limit =
            quota::parse_rate_limit(self.rate_limit.as_deref(), || "rate_limit".into())
                .map_err(|e| corrupt("rate_limit", &e))?;
        let principal = Principal {
            id: self.id.as_str().into(),
            kind: self.kind.principal_kind(),
            access: shared.get(&self.role, &self.scopes),
            credentials,
            revoked_at: self.revoked_at,
            not_before: self.not_before,
        };
        Ok((principal, rate_limit))
    }
}

/// The record of a principal read from the file (`keygate directory import`), with its
/// `rate_limit` as written there.
pub fn record_of(p: &Principal, rate_limit: Option<String>, created_at: OffsetDateTime) -> Record {
    let mut creds = p.credentials.iter();
    let current = creds.next().unwrap_or(p.credentials.current());
    let previous = creds
        .next()
        .and_then(|c| c.valid_until.map(|until| (c.hash.to_string(), until)));
    Record {
        id: p.id.to_string(),
        kind: match p.kind {
            PrincipalKind::Client => Kind::Client,
            PrincipalKind::User => Kind::User,
        },
        role: p.role().to_owned(),
        scopes: p.scopes().to_vec(),
        hash: current.hash.to_string(),
        previous,
        expires_at: current.valid_until,
        revoked_at: p.revoked_at,
        not_before: p.not_before,
        rate_limit,
        metadata: None,
        created_at,
        last_used_at: None,
    }
}
