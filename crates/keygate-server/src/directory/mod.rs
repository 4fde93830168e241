//! The directory (docs/directory.md): clients and users kept in SQLite or PostgreSQL, next
//! to those of the file.
//!
//! The database is the truth and every replica keeps a copy in memory ([`LiveCopy`]),
//! loaded at start and kept current from a change log (one row per edit, numbered by a
//! monotonic sequence): `/login`, `/token` and `/verify` read the copy and never wait on
//! the database. Edits ([`Store`]) come from the CLI and the admin API, each one
//! transaction that changes a principal and appends its id to the log.

mod live;
mod postgres;
mod record;
mod schema;
mod sqlite;
mod store;

use std::path::{Path, PathBuf};

pub use live::{Entry, Found, LiveCopy, Staleness};
pub use record::{Kind, MAX_METADATA, Record, record_of};
pub use store::{Changes, Page, Store};

use crate::config::{ConfigError, DirectoryConfig};

/// Where the directory is: `directory.url` parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// An SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL connection string (`postgres://…` or `postgresql://…`).
    Postgres(String),
}

impl Location {
    /// The location `directory.url` names, relative paths against `base_dir`; `None`
    /// without `[directory]`.
    pub fn of(config: &DirectoryConfig, base_dir: &Path) -> Result<Option<Self>, ConfigError> {
        let Some(url) = config.url.as_deref() else {
            return Ok(None);
        };
        if config.poll_interval.is_zero() {
            return Err(ConfigError::new(
                "directory.poll_interval",
                "must be longer than 0s",
            ));
        }
        if config.timeout.is_zero() {
            return Err(ConfigError::new(
                "directory.timeout",
                "must be longer than 0s",
            ));
        }
        if config.max_staleness < config.poll_interval {
            return Err(ConfigError::new(
                "directory.max_staleness",
                "must be at least directory.poll_interval",
            ));
        }
        if let Some(path) = url.strip_prefix("sqlite://") {
            if path.is_empty() {
                return Err(ConfigError::new(
                    "directory.url",
                    "sqlite:// needs a file: sqlite://keygate.db (beside the configuration) or sqlite:///var/lib/keygate/keygate.db",
                ));
            }
            return Ok(Some(Location::Sqlite(base_dir.join(path))));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            url.parse::<tokio_postgres::Config>().map_err(|e| {
                ConfigError::new("directory.url", format!("not a PostgreSQL URL: {e}"))
            })?;
            return Ok(Some(Location::Postgres(url.to_owned())));
        }
        Err(ConfigError::new(
            "directory.url",
            "must be sqlite://FILE or postgres://USER@HOST/DATABASE",
        ))
    }

    /// The location for messages: the file, or the URL without its password.
    pub fn describe(&self) -> String {
        match self {
            Location::Sqlite(path) => format!("sqlite://{}", path.display()),
            Location::Postgres(url) => match url.parse::<tokio_postgres::Config>() {
                Ok(c) => {
                    let hosts: Vec<String> = c
                        .get_hosts()
                        .iter()
                        .map(|h| match h {
                            tokio_postgres::config::Host::Tcp(h) => h.clone(),
                            tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
                        })
                        .collect();
                    format!(
                        "postgres://{}@{}/{}",
                        c.get_user().unwrap_or(""),
                        hosts.join(","),
                        c.get_dbname().unwrap_or("")
                    )
                }
                Err(_) => "postgres://…".into(),
            },
        }
    }
}

/// Why a directory call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DirectoryError {
    /// The database could not be reached or did not answer in time: nothing was written.
    #[error("the directory is unavailable: {0}")]
    Unavailable(String),
    /// A principal with this id exists (in the directory, or in the file).
    #[error("`{0}` already exists")]
    Exists(String),
    /// No principal of that kind with this id.
    #[error("no {kind} `{id}` in the directory")]
    NotFound {
        /// `client` or `user`.
        kind: &'static str,
        /// The id asked for.
        id: String,
    },
    /// The edit is not valid (the message says which field and why).
    #[error("{0}")]
    Invalid(String),
    /// The database holds what this keygate cannot read (a newer schema, a broken row).
    #[error("the directory's contents are unreadable: {0}")]
    Corrupt(String),
}

/// Milliseconds since the epoch, as the database stores instants.
pub(crate) fn to_ms(t: time::OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

/// The instant of a stored millisecond count.
pub(crate) fn from_ms(ms: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}
