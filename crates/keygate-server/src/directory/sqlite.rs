//! The SQLite engine: one file in WAL mode (readers never wait for the writer), each edit
//! one `BEGIN IMMEDIATE` transaction (the write lock taken up front, so that two processes
//! editing at once queue on `busy_timeout` instead of failing half-way), `synchronous =
//! FULL` (a committed edit survives a power cut, not only a crash).
//!
//! rusqlite is synchronous: [`super::Store`] calls these functions on tokio's blocking
//! threads, one at a time per process (the connection sits behind a mutex).

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, Row, Transaction, TransactionBehavior, params};
use time::OffsetDateTime;

use super::record::{Kind, Record};
use super::schema::{self, COLUMNS};
use super::store::{Changes, Edit, Edited};
use super::{DirectoryError, from_ms, to_ms};

fn fail(e: rusqlite::Error) -> DirectoryError {
    match e {
        rusqlite::Error::SqliteFailure(code, _)
            if matches!(
                code.code,
                rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
            ) =>
        {
            DirectoryError::Unavailable(format!("the database stayed locked: {e}"))
        }
        rusqlite::Error::FromSqlConversionFailure(..)
        | rusqlite::Error::InvalidColumnType(..)
        | rusqlite::Error::IntegralValueOutOfRange(..) => DirectoryError::Corrupt(e.to_string()),
        e => DirectoryError::Unavailable(e.to_string()),
    }
}

/// Opens (creating when missing) the file and brings its schema to this build's version.
pub(super) fn open(path: &Path, timeout: Duration) -> Result<Connection, DirectoryError> {
    let conn = Connection::open(path)
        .map_err(|e| DirectoryError::Unavailable(format!("{}: {e}", path.display())))?;
    conn.busy_timeout(timeout).map_err(fail)?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(fail)?;
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(fail)?;
    let mut conn = conn;
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(fail)?;
    tx.execute_batch(schema::VERSION_TABLE).map_err(fail)?;
    let version: Option<i64> = tx
        .query_row("SELECT version FROM keygate_schema", [], |r| r.get(0))
        .optional()
        .map_err(fail)?;
    let version = match version {
        Some(v) => v,
        None => {
            tx.execute(
                "INSERT INTO keygate_schema (version, pruned_through) VALUES (0, 0)",
                [],
            )
            .map_err(fail)?;
            0
        }
    };
    if version > schema::VERSION {
        return Err(newer(version));
    }
    for (v, sql) in (0..)
        .zip(schema::SQLITE)
        .skip(usize::try_from(version).unwrap_or(0))
    {
        tx.execute_batch(sql).map_err(fail)?;
        tx.execute("UPDATE keygate_schema SET version = ?1", [v + 1])
            .map_err(fail)?;
    }
    tx.commit().map_err(fail)?;
    // The migrations above need the write lock; everything else starts with a read.
    Ok(conn)
}

pub(super) fn newer(version: i64) -> DirectoryError {
    DirectoryError::Corrupt(format!(
        "its schema is version {version}, newer than this keygate's ({}): upgrade keygate",
        schema::VERSION
    ))
}

fn read(r: &Row<'_>) -> rusqlite::Result<Result<Record, DirectoryError>> {
    let kind: String = r.get(1)?;
    let scopes: String = r.get(3)?;
    let previous_hash: Option<String> = r.get(5)?;
    let previous_until: Option<i64> = r.get(6)?;
    let opt = |v: Option<i64>| v.map(from_ms);
    Ok(Kind::parse(&kind).map(|kind| Record {
        id: r.get(0).unwrap_or_default(),
        kind,
        role: r.get(2).unwrap_or_default(),
        scopes: scopes.split_whitespace().map(str::to_owned).collect(),
        hash: r.get(4).unwrap_or_default(),
        previous: previous_hash.zip(previous_until.map(from_ms)),
        expires_at: opt(r.get(7).unwrap_or_default()),
        revoked_at: opt(r.get(8).unwrap_or_default()),
        not_before: opt(r.get(9).unwrap_or_default()),
        rate_limit: r.get(10).unwrap_or_default(),
        metadata: r.get(11).unwrap_or_default(),
        created_at: from_ms(r.get(12).unwrap_or_default()),
        last_used_at: opt(r.get(13).unwrap_or_default()),
    }))
}

fn get(tx: &Connection, id: &str) -> Result<Option<Record>, DirectoryError> {
    let sql = format!("SELECT {COLUMNS} FROM keygate_principals WHERE id = ?1");
    tx.query_row(&sql, [id], read)
        .optional()
        .map_err(fail)?
        .transpose()
}

/// Every principal, each handed to `each` as its row is read, and the sequence number of
/// the last change they include.
pub(super) fn snapshot_into<T>(
    conn: &mut Connection,
    mut acc: T,
    each: fn(&mut T, &Record),
) -> Result<(i64, T), DirectoryError> {
    let tx = conn.transaction().map_err(fail)?;
    let seq = last_seq(&tx)?;
    let sql = format!("SELECT {COLUMNS} FROM keygate_principals");
    let mut stmt = tx.prepare(&sql).map_err(fail)?;
    let rows = stmt.query_map([], read).map_err(fail)?;
    for r in rows {
        each(&mut acc, &r.map_err(fail)??);
    }
    Ok((seq, acc))
}

fn last_seq(tx: &Connection) -> Result<i64, DirectoryError> {
    tx.query_row(
        "SELECT COALESCE(MAX(seq), 0) FROM keygate_changes",
        [],
        |r| r.get(0),
    )
    .map_err(fail)
}

/// The changes after `seq`: each changed id with its principal now (`None`: removed).
pub(super) fn changes_since(conn: &mut Connection, seq: i64) -> Result<Changes, DirectoryError> {
    let tx = conn.transaction().map_err(fail)?;
    let pruned: i64 = tx
        .query_row("SELECT pruned_through FROM keygate_schema", [], |r| {
            r.get(0)
        })
        .map_err(fail)?;
    if seq < pruned {
        return Ok(Changes::reset());
    }
    let mut stmt = tx
        .prepare("SELECT seq, id FROM keygate_changes WHERE seq > ?1 ORDER BY seq LIMIT ?2")
        .map_err(fail)?;
    let rows = stmt
        .query_map(params![seq, schema::CHANGES_PER_READ], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
        })
        .map_err(fail)?;
    let mut log = Vec::new();
    for r in rows {
        log.push(r.map_err(fail)?);
    }
    let mut changes = Changes::from_log(seq, &log);
    for (id, record) in &mut changes.principals {
        *record = get(&tx, id)?;
    }
    Ok(changes)
}

pub(super) fn get_one(conn: &Connection, id: &str) -> Result<Option<Record>, DirectoryError> {
    get(conn, id)
}

/// A page of `kind` in id order, after `after`.
pub(super) fn list(
    conn: &Connection,
    kind: Kind,
    after: &str,
    limit: usize,
) -> Result<Vec<Record>, DirectoryError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM keygate_principals WHERE kind = ?1 AND id > ?2 ORDER BY id LIMIT ?3"
    );
    let mut stmt = conn.prepare(&sql).map_err(fail)?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = stmt
        .query_map(params![kind.as_str(), after, limit], read)
        .map_err(fail)?;
    let mut records = Vec::new();
    for r in rows {
        records.push(r.map_err(fail)??);
    }
    Ok(records)
}

fn write(tx: &Transaction<'_>, r: &Record, insert: bool) -> Result<(), DirectoryError> {
    let sql = if insert {
        format!(
            "INSERT INTO keygate_principals ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)"
        )
    } else {
        "UPDATE keygate_principals SET kind = ?2, role = ?3, scopes = ?4, hash = ?5, \
         previous_hash = ?6, previous_until = ?7, expires_at = ?8, revoked_at = ?9, \
         not_before = ?10, rate_limit = ?11, metadata = ?12, created_at = ?13, \
         last_used_at = ?14 WHERE id = ?1"
            .to_owned()
    };
    let ms = |t: Option<OffsetDateTime>| t.map(to_ms);
    tx.execute(
        &sql,
        params![
            r.id,
            r.kind.as_str(),
            r.role,
            r.scopes.join(" "),
            r.hash,
            r.previous.as_ref().map(|(h, _)| h.as_str()),
            ms(r.previous.as_ref().map(|(_, t)| *t)),
            ms(r.expires_at),
            ms(r.revoked_at),
            ms(r.not_before),
            r.rate_limit,
            r.metadata,
            to_ms(r.created_at),
            ms(r.last_used_at),
        ],
    )
    .map_err(fail)?;
    Ok(())
}

/// Appends `id` to the change log; now and then drops entries older than the log keeps.
fn log_change(tx: &Transaction<'_>, id: &str, now: i64) -> Result<(), DirectoryError> {
    tx.execute(
        "INSERT INTO keygate_changes (id, at) VALUES (?1, ?2)",
        params![id, now],
    )
    .map_err(fail)?;
    let seq = tx.last_insert_rowid();
    if seq % 1024 == 0 {
        let cutoff = now - schema::LOG_KEPT_MS;
        let through: Option<i64> = tx
            .query_row(
                "SELECT MAX(seq) FROM keygate_changes WHERE at < ?1",
                [cutoff],
                |r| r.get(0),
            )
            .map_err(fail)?;
        if let Some(through) = through {
            tx.execute("DELETE FROM keygate_changes WHERE seq <= ?1", [through])
                .map_err(fail)?;
            tx.execute(
                "UPDATE keygate_schema SET pruned_through = MAX(pruned_through, ?1)",
                [through],
            )
            .map_err(fail)?;
        }
    }
    Ok(())
}

/// Writes a new principal: its `not_before` after the removal of an earlier principal of
/// its id, if any, so that one's tokens stay refused (docs/directory.md, Failures).
fn created(
    tx: &Transaction<'_>,
    record: Record,
    now: OffsetDateTime,
) -> Result<Record, DirectoryError> {
    let removed = removed_at(tx, &record.id)?;
    let record = record.created(removed);
    write(tx, &record, true)?;
    tx.execute("DELETE FROM keygate_removed WHERE id = ?1", [&record.id])
        .map_err(fail)?;
    log_change(tx, &record.id, to_ms(now))?;
    Ok(record)
}

fn removed_at(tx: &Transaction<'_>, id: &str) -> Result<Option<OffsetDateTime>, DirectoryError> {
    tx.query_row(
        "SELECT removed_at FROM keygate_removed WHERE id = ?1",
        [id],
        |r| r.get::<_, i64>(0),
    )
    .optional()
    .map_err(fail)
    .map(|v| v.map(from_ms))
}

/// Runs `edit` in one write transaction.
pub(super) fn edit(conn: &mut Connection, edit: Edit) -> Result<Edited, DirectoryError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(fail)?;
    let now = OffsetDateTime::now_utc();
    let out = match edit {
        Edit::Create(record) => {
            if get(&tx, &record.id)?.is_some() {
                return Err(DirectoryError::Exists(record.id));
            }
            let record = created(&tx, *record, now)?;
            Edited::One(Box::new(record))
        }
        Edit::Update { id, kind, change } => {
            let mut record = get(&tx, &id)?.filter(|r| r.kind == kind).ok_or_else(|| {
                DirectoryError::NotFound {
                    kind: kind.as_str(),
                    id: id.clone(),
                }
            })?;
            change(&mut record, now)?;
            record.check()?;
            write(&tx, &record, false)?;
            log_change(&tx, &id, to_ms(now))?;
            Edited::One(Box::new(record))
        }
        Edit::Delete { id, kind } => {
            let removed = tx
                .execute(
                    "DELETE FROM keygate_principals WHERE id = ?1 AND kind = ?2",
                    params![id, kind.as_str()],
                )
                .map_err(fail)?;
            if removed == 0 {
                return Err(DirectoryError::NotFound {
                    kind: kind.as_str(),
                    id,
                });
            }
            tx.execute(
                "INSERT INTO keygate_removed (id, removed_at) VALUES (?1, ?2) \
                 ON CONFLICT (id) DO UPDATE SET removed_at = excluded.removed_at",
                params![id, to_ms(now)],
            )
            .map_err(fail)?;
            log_change(&tx, &id, to_ms(now))?;
            Edited::Removed
        }
        Edit::Import(records) => {
            let count = records.len();
            for record in &records {
                match get(&tx, &record.id)? {
                    Some(there) if there.kind == record.kind && there.hash == record.hash => {
                        continue;
                    }
                    Some(_) => return Err(DirectoryError::Exists(record.id.clone())),
                    None => {}
                }
                created(&tx, record.clone(), now)?;
            }
            Edited::Count(count)
        }
        Edit::Touch { ids, at } => {
            let mut stmt = tx
                .prepare(
                    "UPDATE keygate_principals SET last_used_at = ?2 WHERE id = ?1 \
                     AND (last_used_at IS NULL OR last_used_at < ?2)",
                )
                .map_err(fail)?;
            for id in &ids {
                stmt.execute(params![id, to_ms(at)]).map_err(fail)?;
            }
            drop(stmt);
            Edited::Count(ids.len())
        }
    };
    tx.commit().map_err(fail)?;
    Ok(out)
}
