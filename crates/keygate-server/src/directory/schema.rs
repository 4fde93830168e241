//! The directory's schema, one list of migrations per engine (docs/directory.md#schema).
//!
//! Both engines hold the same tables with the same columns; only the sequence's type is
//! spelled differently. `keygate_schema` holds the version applied; a database of a newer
//! version than this build knows is refused rather than misread.

/// The schema version this build writes and reads.
pub(crate) const VERSION: i64 = 1;

/// Migrations for SQLite, the i-th bringing version i to i + 1.
pub(crate) const SQLITE: &[&str] = &["
CREATE TABLE keygate_principals (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('client', 'user')),
    role TEXT NOT NULL,
    scopes TEXT NOT NULL,
    hash TEXT NOT NULL,
    previous_hash TEXT,
    previous_until BIGINT,
    expires_at BIGINT,
    revoked_at BIGINT,
    not_before BIGINT,
    rate_limit TEXT,
    metadata TEXT,
    created_at BIGINT NOT NULL,
    last_used_at BIGINT
);
CREATE INDEX keygate_principals_kind_id ON keygate_principals (kind, id);
CREATE TABLE keygate_changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL,
    at BIGINT NOT NULL
);
CREATE TABLE keygate_removed (
    id TEXT PRIMARY KEY,
    removed_at BIGINT NOT NULL
);
"];

/// Migrations for PostgreSQL, the i-th bringing version i to i + 1.
pub(crate) const POSTGRES: &[&str] = &["
CREATE TABLE keygate_principals (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('client', 'user')),
    role TEXT NOT NULL,
    scopes TEXT NOT NULL,
    hash TEXT NOT NULL,
    previous_hash TEXT,
    previous_until BIGINT,
    expires_at BIGINT,
    revoked_at BIGINT,
    not_before BIGINT,
    rate_limit TEXT,
    metadata TEXT,
    created_at BIGINT NOT NULL,
    last_used_at BIGINT
);
CREATE INDEX keygate_principals_kind_id ON keygate_principals (kind, id);
CREATE TABLE keygate_changes (
    seq BIGSERIAL PRIMARY KEY,
    id TEXT NOT NULL,
    at BIGINT NOT NULL
);
CREATE TABLE keygate_removed (
    id TEXT PRIMARY KEY,
    removed_at BIGINT NOT NULL
);
"];

/// Holds the version, and the last sequence number dropped from the change log; created
/// before any migration.
pub(crate) const VERSION_TABLE: &str = "CREATE TABLE IF NOT EXISTS keygate_schema (version BIGINT NOT NULL, pruned_through BIGINT NOT NULL)";

/// The columns of a principal, in the order [`Row`](super::store) reads them.
pub(crate) const COLUMNS: &str = "id, kind, role, scopes, hash, previous_hash, previous_until, \
     expires_at, revoked_at, not_before, rate_limit, metadata, created_at, last_used_at";

/// The PostgreSQL channel every edit notifies, so that replicas read the log at once.
pub(crate) const CHANNEL: &str = "keygate_directory";

/// How long the change log keeps an edit. A replica that has not read the log for longer
/// (it could not reach the database) loads the whole directory again.
pub(crate) const LOG_KEPT_MS: i64 = 7 * 24 * 3600 * 1000;

/// The most changes read in one poll; more are read by the next one at once.
pub(crate) const CHANGES_PER_READ: i64 = 10_000;
