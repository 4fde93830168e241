//! The `[[clients]]` and `[[users]]` entries turned into [`Principal`]s one at a time, as
//! the file is read (see `Config::load`), into the [`Directory`] and the quota table.

use std::collections::HashMap;
use std::sync::Arc;

use keygate::api_key::{self, KeyHash};
use keygate::principal::{
    self, Access, Credential, Credentials, Directory, Principal, PrincipalKind, SharedAccess,
};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::config::{ClientConfig, ConfigError, Entry, LimitsConfig, UserConfig};
use crate::quota::{QuotaTable, RateLimit};

/// The principals of the entries read so far, with the clients' own quotas: built one
/// entry at a time while the file is read, so that the entries are never all held at once.
/// The first error is kept, and reported once the settings are checked.
#[derive(Debug, Default)]
pub(super) struct Principals {
    list: Vec<Principal>,
    access: SharedAccess,
    own_quotas: HashMap<Box<str>, RateLimit>,
    clients: usize,
    error: Option<ConfigError>,
}

impl Principals {
    pub(super) fn add(&mut self, entry: Entry) {
        match entry {
            Entry::Client(i, c) => self.add_client(i, &c),
            Entry::User(i, u) => self.add_user(i, &u),
        }
    }

    pub(super) fn add_client(&mut self, i: usize, c: &ClientConfig) {
        if self.error.is_some() {
            return;
        }
        let built = client_principal(i, c, &mut self.access).and_then(|p| {
            let setting = || format!("clients[{i}].rate_limit");
            Ok((
                p,
                crate::quota::parse_rate_limit(c.rate_limit.as_deref(), setting)?,
            ))
        });
        match built {
            Ok((principal, own)) => {
                if let Some(limit) = own {
                    self.own_quotas.insert(principal.id.as_str().into(), limit);
                }
                self.clients += 1;
                self.list.push(principal);
            }
            Err(e) => self.error = Some(e),
        }
    }

    pub(super) fn add_user(&mut self, i: usize, u: &UserConfig) {
        if self.error.is_some() {
            return;
        }
        match user_principal(i, u, &mut self.access) {
            Ok(principal) => self.list.push(principal),
            Err(e) => self.error = Some(e),
        }
    }

    /// The directory, and the quota table under `limits.default_rate_limit`.
    pub(super) fn finish(
        self,
        limits: &LimitsConfig,
    ) -> Result<(Directory, QuotaTable), ConfigError> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let directory = Directory::new(self.list).map_err(|e| {
            ConfigError::new(
                "clients/users",
                format!("{e}; ids must be unique across clients and users"),
            )
        })?;
        let quotas = QuotaTable::new(limits, self.own_quotas, self.clients)?;
        Ok((directory, quotas))
    }
}

fn client_principal(
    i: usize,
    c: &ClientConfig,
    shared: &mut SharedAccess,
) -> Result<Principal, ConfigError> {
    let at = |field| Field("clients", i, field);
    check_id(&c.id, at("id"))?;
    let hash: KeyHash = c
        .key_hash
        .parse()
        .map_err(|e| ConfigError::new(at("key_hash").to_string(), keygate::error::chain(&e)))?;
    let expires_at = parse_time(c.expires_at.as_deref(), at("expires_at"))?;
    let mut credentials = Credentials::one(Credential {
        hash,
        valid_until: expires_at,
    });
    match (&c.previous_key_hash, &c.previous_key_expires_at) {
        (Some(prev), Some(until)) => {
            let hash: KeyHash = prev.parse().map_err(|e| {
                ConfigError::new(
                    at("previous_key_hash").to_string(),
                    keygate::error::chain(&e),
                )
            })?;
            let until = parse_time(Some(until), at("previous_key_expires_at"))?;
            let valid_until = match (until, expires_at) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            credentials = credentials.with_previous(Credential { hash, valid_until });
        }
        (None, None) => {}
        _ => {
            return Err(ConfigError::new(
                at("previous_key_hash").to_string(),
                "previous_key_hash and previous_key_expires_at go together",
            ));
        }
    }
    Ok(Principal {
        id: c.id.as_str().into(),
        kind: PrincipalKind::Client,
        access: check_access(&c.role, &c.scopes, at, shared)?,
        credentials,
        revoked_at: parse_time(c.revoked_at.as_deref(), at("revoked_at"))?,
        not_before: parse_time(c.not_before.as_deref(), at("not_before"))?,
    })
}

fn user_principal(
    i: usize,
    u: &UserConfig,
    shared: &mut SharedAccess,
) -> Result<Principal, ConfigError> {
    let at = |field| Field("users", i, field);
    check_id(&u.username, at("username"))?;
    let hash: KeyHash = u.password_hash.parse().map_err(|e| {
        ConfigError::new(at("password_hash").to_string(), keygate::error::chain(&e))
    })?;
    if matches!(hash, KeyHash::Sha256(_)) {
        return Err(ConfigError::new(
            at("password_hash").to_string(),
            "passwords need a slow hash ($argon2id$… or $2b$…); create one with `keygate hash`",
        ));
    }
    Ok(Principal {
        id: u.username.as_str().into(),
        kind: PrincipalKind::User,
        access: check_access(&u.role, &u.scopes, at, shared)?,
        credentials: Credentials::one(Credential {
            hash,
            valid_until: None,
        }),
        revoked_at: None,
        not_before: parse_time(u.not_before.as_deref(), at("not_before"))?,
    })
}

/// `clients[3].role`: an entry's setting, formatted only for an error message (a million
/// entries are checked on the way to none).
#[derive(Debug, Clone, Copy)]
struct Field(&'static str, usize, &'static str);

impl std::fmt::Display for Field {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}[{}].{}", self.0, self.1, self.2)
    }
}

/// A client id or username: it names the principal in tokens and in API keys.
fn check_id(id: &str, setting: Field) -> Result<(), ConfigError> {
    if api_key::is_valid_id(id) {
        Ok(())
    } else {
        Err(ConfigError::new(
            setting.to_string(),
            format!("`{id}` is not 1-64 of A-Z a-z 0-9 . _ - @"),
        ))
    }
}

/// A role (or none: the empty string is what an entry without `role` gets) and scopes,
/// as the copy shared with the entries that have the same.
fn check_access(
    role: &str,
    scopes: &[String],
    at: impl Fn(&'static str) -> Field,
    shared: &mut SharedAccess,
) -> Result<Arc<Access>, ConfigError> {
    if !role.is_empty() {
        check_name(role, "role", || at("role").to_string())?;
    }
    for (i, s) in scopes.iter().enumerate() {
        check_name(s, "scope", || format!("{}[{i}]", at("scopes")))?;
    }
    Ok(shared.get(role, scopes))
}

/// A role or scope: see [`principal::is_valid_name`].
pub(super) fn check_name(
    value: &str,
    what: &str,
    setting: impl FnOnce() -> String,
) -> Result<(), ConfigError> {
    if principal::is_valid_name(value) {
        return Ok(());
    }
    let shown: String = value.chars().take(64).collect();
    let why = format!("{shown:?} is not a valid {what}: 1-128 of A-Z a-z 0-9 _ . : / -");
    Err(ConfigError::new(setting(), why))
}

fn parse_time(
    value: Option<&str>,
    setting: impl std::fmt::Display,
) -> Result<Option<OffsetDateTime>, ConfigError> {
    value
        .map(|v| {
            OffsetDateTime::parse(v, &Rfc3339).map_err(|_| {
                ConfigError::new(
                    setting.to_string(),
                    format!("`{v}` is not an RFC 3339 time like 2027-06-30T00:00:00Z"),
                )
            })
        })
        .transpose()
}
