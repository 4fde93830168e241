//! Principals as a request finds them: in the file's [`Directory`](keygate::principal::Directory)
//! first, then in the directory's [`LiveCopy`](crate::directory::LiveCopy). One namespace: an id is in
//! one of the two (checked when either changes), so the order never picks between two.

use keygate::api_key::{self, PresentedKey, hash::digest};
use keygate::error::CredentialError;
use keygate::password::PasswordVerifier;
use keygate::principal::check_client_secret;
use keygate::{Error, Result};
use time::OffsetDateTime;

use crate::directory::Found;
use crate::runtime::Runtime;

impl Runtime {
    /// The principal `id`, from the file or the directory.
    pub fn principal(&self, id: &str) -> Option<Found<'_>> {
        if let Some(p) = self.directory.get(id) {
            return Some(Found::File(p));
        }
        self.live.as_ref()?.get(id).map(Found::Live)
    }

    /// The quota of client `id`: its own `rate_limit`, or `limits.default_rate_limit`.
    pub fn client_quota(&self, id: &str) -> Option<crate::quota::RateLimit> {
        match &self.live {
            Some(live) if self.directory.get(id).is_none() => {
                let entry = live.get(id)?;
                (entry.principal.kind == keygate::principal::PrincipalKind::Client)
                    .then(|| entry.rate_limit.or(self.quotas.default_limit()))
                    .flatten()
            }
            _ => self.quotas.get(id, &self.directory),
        }
    }

    /// True when at least one user exists, in the file or the directory (the password
    /// grant is on only then).
    pub fn has_users(&self) -> bool {
        self.directory.has_users() || self.live.as_ref().is_some_and(|l| l.has_users())
    }

    /// Finds the client an API key belongs to and checks the key (see
    /// [`keygate::principal::Directory::authenticate_key`]).
    pub async fn authenticate_key(
        &self,
        key: &str,
        passwords: &PasswordVerifier,
        now: OffsetDateTime,
    ) -> Result<Found<'_>> {
        let Some(live) = &self.live else {
            return self
                .directory
                .authenticate_key(key, passwords, now)
                .await
                .map(Found::File);
        };
        let presented = api_key::classify(key)?;
        let entry = match presented {
            PresentedKey::Generated { id } if self.directory.get(id).is_some() => {
                return self
                    .directory
                    .authenticate_classified(presented, key, passwords, now)
                    .await
                    .map(Found::File);
            }
            PresentedKey::Generated { id } => live.get(id),
            PresentedKey::HandMade => {
                match self
                    .directory
                    .authenticate_classified(presented, key, passwords, now)
                    .await
                {
                    Err(Error::Credential(CredentialError::Wrong)) => live.by_digest(&digest(key)),
                    other => return other.map(Found::File),
                }
            }
        };
        let checked =
            check_client_secret(entry.as_deref().map(|e| &e.principal), key, passwords, now).await;
        self.found_live(checked.map(|_| ()), entry)
    }

    /// Checks `client_id` + secret (`client_credentials`, HTTP Basic or form).
    pub async fn authenticate_client(
        &self,
        client_id: &str,
        secret: &str,
        passwords: &PasswordVerifier,
        now: OffsetDateTime,
    ) -> Result<Found<'_>> {
        let live = match &self.live {
            Some(live) if self.directory.get(client_id).is_none() => live,
            _ => {
                return self
                    .directory
                    .authenticate_client(client_id, secret, passwords, now)
                    .await
                    .map(Found::File);
            }
        };
        keygate::principal::secret_may_be_of(secret, client_id)?;
        let entry = live.get(client_id);
        let checked = check_client_secret(
            entry.as_deref().map(|e| &e.principal),
            secret,
            passwords,
            now,
        )
        .await;
        self.found_live(checked.map(|_| ()), entry)
    }

    /// Checks a username and password (`grant_type=password`).
    pub async fn authenticate_user(
        &self,
        username: &str,
        password: &str,
        passwords: &PasswordVerifier,
        now: OffsetDateTime,
    ) -> Result<Found<'_>> {
        let live = match &self.live {
            Some(live) if self.directory.get(username).is_none() => live,
            _ => {
                return self
                    .directory
                    .authenticate_user(username, password, passwords, now)
                    .await
                    .map(Found::File);
            }
        };
        let entry = live.get(username);
        let checked = self
            .directory
            .authenticate_found_user(
                entry.as_deref().map(|e| &e.principal),
                username,
                password,
                passwords,
                now,
            )
            .await;
        self.found_live(checked.map(|_| ()), entry)
    }

    /// The entry a successful check of the copy found, noted as used.
    fn found_live(
        &self,
        checked: Result<()>,
        entry: Option<std::sync::Arc<crate::directory::Entry>>,
    ) -> Result<Found<'_>> {
        checked?;
        let entry = entry.ok_or(Error::Credential(CredentialError::Wrong))?;
        if let Some(live) = &self.live {
            live.used(&entry.principal.id);
        }
        Ok(Found::Live(entry))
    }
}
