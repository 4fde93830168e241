//! The PostgreSQL engine, for several replicas sharing one directory.
//!
//! Every edit takes one transaction-scoped advisory lock before it appends to the change
//! log, so edits commit in the order of their sequence numbers: a replica that has read
//! the log up to `n` has seen every edit numbered `n` or less (a sequence alone does not
//! promise that: a transaction that drew `n` may commit after one that drew `n + 1`).
//! Each edit also sends `NOTIFY keygate_directory`, which wakes every replica's reader at
//! once; the poll catches up when a notification is lost. Reads of the log run in
//! `REPEATABLE READ` transactions: the log and the principals are read in one snapshot.

use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::{Mutex, mpsc};
use tokio_postgres::error::SqlState;
use tokio_postgres::{AsyncMessage, Client, IsolationLevel, NoTls, Row, Transaction};

use super::record::{Kind, Record};
use super::schema::{self, COLUMNS};
use super::store::{Changes, Edit, Edited};
use super::{DirectoryError, from_ms, to_ms};

/// The key of the advisory lock every edit holds while it appends to the log ("keygate"
/// in ASCII): the same on every replica.
/// The bound on reading the whole directory (at start, or after the change log was pruned
/// past a replica's copy): a million principals take seconds, not `directory.timeout`.
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(120);

const EDIT_LOCK: i64 = 0x006b_6579_6761_7465;

/// One connection, made again on the next call after it breaks.
#[derive(Debug)]
pub(super) struct Postgres {
    url: String,
    timeout: Duration,
    client: Mutex<Option<Client>>,
}

#[allow(clippy::needless_pass_by_value)] // used as `map_err(fail)`
fn fail(e: tokio_postgres::Error) -> DirectoryError {
    match e.code() {
        Some(c) if *c == SqlState::UNIQUE_VIOLATION => {
            DirectoryError::Invalid(format!("conflicting edit: {e}"))
        }
        _ if e.is_closed() => DirectoryError::Unavailable("the connection closed".into()),
        _ => DirectoryError::Unavailable(match e.as_db_error() {
            Some(db) => db.message().to_owned(),
            None => e.to_string(),
        }),
    }
}

async fn connect(url: &str, timeout: Duration) -> Result<Client, DirectoryError> {
    let mut config: tokio_postgres::Config = url.parse().map_err(fail)?;
    config.connect_timeout(timeout);
    let (client, connection) = tokio::time::timeout(timeout, config.connect(NoTls))
        .await
        .map_err(|_| DirectoryError::Unavailable("connecting timed out".into()))?
        .map_err(fail)?;
    tokio::spawn(async move {
        // Ends when the connection closes; the client then reports `is_closed`.
        let _ = connection.await;
    });
    Ok(client)
}

impl Postgres {
    /// Connects and brings the schema to this build's version (replicas starting at once
    /// migrate one after the other, under the edit lock).
    pub(super) async fn open(url: &str, timeout: Duration) -> Result<Self, DirectoryError> {
        let pg = Postgres {
            url: url.to_owned(),
            timeout,
            client: Mutex::new(None),
        };
        pg.call(|c| Box::pin(migrate(c))).await?;
        Ok(pg)
    }

    /// Runs `f` on the connection within the timeout; a broken connection is dropped, to
    /// be made again by the next call.
    async fn call<T>(
        &self,
        f: impl for<'c> FnOnce(
            &'c mut Client,
        ) -> std::pin::Pin<
            Box<dyn Future<Output = Result<T, DirectoryError>> + Send + 'c>,
        >,
    ) -> Result<T, DirectoryError> {
        self.call_within(self.timeout, f).await
    }

    /// [`Self::call`] bounded by `bound` instead of `directory.timeout`.
    async fn call_within<T>(
        &self,
        bound: Duration,
        f: impl for<'c> FnOnce(
            &'c mut Client,
        ) -> std::pin::Pin<
            Box<dyn Future<Output = Result<T, DirectoryError>> + Send + 'c>,
        >,
    ) -> Result<T, DirectoryError> {
        let work = async {
            let mut slot = self.client.lock().await;
            if slot.as_ref().is_none_or(Client::is_closed) {
                *slot = Some(connect(&self.url, self.timeout).await?);
            }
            let Some(client) = slot.as_mut() else {
                return Err(DirectoryError::Unavailable("not connected".into()));
            };
            let out = f(client).await;
            if matches!(out, Err(DirectoryError::Unavailable(_))) {
                *slot = None;
            }
            out
        };
        let bounded = async {
            match tokio::time::timeout(bound, work).await {
                Ok(out) => out,
                Err(_) => {
                    // The call may be stuck on a dead socket: start afresh next time.
                    if let Ok(mut slot) = self.client.try_lock() {
                        *slot = None;
                    }
                    Err(DirectoryError::Unavailable(format!(
                        "no answer within {bound:?}"
                    )))
                }
            }
        };
        super::store::traced("postgresql", bounded).await
    }

    /// Every principal, each handed to `each` as it is read (10 000 rows at a time, so a
    /// large directory is never held twice), and the sequence number of the last change
    /// they include. Bounded by [`SNAPSHOT_TIMEOUT`] rather than `directory.timeout`.
    pub(super) async fn snapshot_into<T: Send + 'static>(
        &self,
        acc: T,
        each: fn(&mut T, &Record),
    ) -> Result<(i64, T), DirectoryError> {
        let bound = self.timeout.max(SNAPSHOT_TIMEOUT);
        self.call_within(bound, move |c| {
            Box::pin(async move {
                let mut acc = acc;
                let tx = reading(c).await?;
                let seq = last_seq(&tx).await?;
                let sql = format!("SELECT {COLUMNS} FROM keygate_principals");
                let portal = tx.bind(sql.as_str(), &[]).await.map_err(fail)?;
                loop {
                    let rows = tx.query_portal(&portal, 10_000).await.map_err(fail)?;
                    if rows.is_empty() {
                        break;
                    }
                    for row in &rows {
                        each(&mut acc, &read(row)?);
                    }
                }
                tx.commit().await.map_err(fail)?;
                Ok((seq, acc))
            })
        })
        .await
    }

    pub(super) async fn changes_since(&self, seq: i64) -> Result<Changes, DirectoryError> {
        self.call(move |c| {
            Box::pin(async move {
                let tx = reading(c).await?;
                let pruned: i64 = tx
                    .query_one("SELECT pruned_through FROM keygate_schema", &[])
                    .await
                    .map_err(fail)?
                    .try_get(0)
                    .map_err(corrupt)?;
                if seq < pruned {
                    return Ok(Changes::reset());
                }
                let rows = tx
                    .query(
                        "SELECT seq, id FROM keygate_changes WHERE seq > $1 ORDER BY seq LIMIT $2",
                        &[&seq, &schema::CHANGES_PER_READ],
                    )
                    .await
                    .map_err(fail)?;
                let log = rows
                    .iter()
                    .map(|r| {
                        Ok((
                            r.try_get(0).map_err(corrupt)?,
                            r.try_get(1).map_err(corrupt)?,
                        ))
                    })
                    .collect::<Result<Vec<(i64, String)>, DirectoryError>>()?;
                let mut changes = Changes::from_log(seq, &log);
                let ids: Vec<&str> = changes
                    .principals
                    .iter()
                    .map(|(id, _)| id.as_str())
                    .collect();
                let sql = format!("SELECT {COLUMNS} FROM keygate_principals WHERE id = ANY($1)");
                let rows = tx.query(&sql, &[&ids]).await.map_err(fail)?;
                let mut found = std::collections::HashMap::with_capacity(rows.len());
                for row in &rows {
                    let r = read(row)?;
                    found.insert(r.id.clone(), r);
                }
                for (id, record) in &mut changes.principals {
                    *record = found.remove(id.as_str());
                }
                tx.commit().await.map_err(fail)?;
                Ok(changes)
            })
        })
        .await
    }

    pub(super) async fn get(&self, id: &str) -> Result<Option<Record>, DirectoryError> {
        let id = id.to_owned();
        self.call(move |c| {
            Box::pin(async move {
                let sql = format!("SELECT {COLUMNS} FROM keygate_principals WHERE id = $1");
                let row = c.query_opt(&sql, &[&id]).await.map_err(fail)?;
                row.as_ref().map(read).transpose()
            })
        })
        .await
    }

    pub(super) async fn list(
        &self,
        kind: Kind,
        after: &str,
        limit: usize,
    ) -> Result<Vec<Record>, DirectoryError> {
        let after = after.to_owned();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.call(move |c| {
            Box::pin(async move {
                let sql = format!(
                    "SELECT {COLUMNS} FROM keygate_principals WHERE kind = $1 AND id > $2 \
                     ORDER BY id LIMIT $3"
                );
                let rows = c
                    .query(&sql, &[&kind.as_str(), &after, &limit])
                    .await
                    .map_err(fail)?;
                rows.iter().map(read).collect()
            })
        })
        .await
    }

    pub(super) async fn edit(&self, edit: Edit) -> Result<Edited, DirectoryError> {
        // The edit moves into the first attempt; a broken connection fails the call
        // (nothing was committed) and the caller decides whether to repeat it.
        self.call(move |c| Box::pin(apply(c, edit))).await
    }
}

async fn reading(c: &mut Client) -> Result<Transaction<'_>, DirectoryError> {
    c.build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(fail)
}

#[allow(clippy::needless_pass_by_value)] // used as `map_err(corrupt)`
fn corrupt(e: tokio_postgres::Error) -> DirectoryError {
    DirectoryError::Corrupt(e.to_string())
}

async fn migrate(c: &mut Client) -> Result<(), DirectoryError> {
    let tx = c.transaction().await.map_err(fail)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&EDIT_LOCK])
        .await
        .map_err(fail)?;
    tx.batch_execute(schema::VERSION_TABLE)
        .await
        .map_err(fail)?;
    let version: i64 = match tx
        .query_opt("SELECT version FROM keygate_schema", &[])
        .await
        .map_err(fail)?
    {
        Some(row) => row.try_get(0).map_err(corrupt)?,
        None => {
            tx.execute(
                "INSERT INTO keygate_schema (version, pruned_through) VALUES (0, 0)",
                &[],
            )
            .await
            .map_err(fail)?;
            0
        }
    };
    if version > schema::VERSION {
        return Err(super::sqlite::newer(version));
    }
    for (v, sql) in (0i64..)
        .zip(schema::POSTGRES)
        .skip(usize::try_from(version).unwrap_or(0))
    {
        tx.batch_execute(sql).await.map_err(fail)?;
        tx.execute("UPDATE keygate_schema SET version = $1", &[&(v + 1)])
            .await
            .map_err(fail)?;
    }
    tx.commit().await.map_err(fail)
}

fn read(r: &Row) -> Result<Record, DirectoryError> {
    let scopes: String = r.try_get(3).map_err(corrupt)?;
    let previous_hash: Option<String> = r.try_get(5).map_err(corrupt)?;
    let previous_until: Option<i64> = r.try_get(6).map_err(corrupt)?;
    let opt = |i: usize| -> Result<Option<OffsetDateTime>, DirectoryError> {
        Ok(r.try_get::<_, Option<i64>>(i)
            .map_err(corrupt)?
            .map(from_ms))
    };
    let kind: String = r.try_get(1).map_err(corrupt)?;
    Ok(Record {
        id: r.try_get(0).map_err(corrupt)?,
        kind: Kind::parse(&kind)?,
        role: r.try_get(2).map_err(corrupt)?,
        scopes: scopes.split_whitespace().map(str::to_owned).collect(),
        hash: r.try_get(4).map_err(corrupt)?,
        previous: previous_hash.zip(previous_until.map(from_ms)),
        expires_at: opt(7)?,
        revoked_at: opt(8)?,
        not_before: opt(9)?,
        rate_limit: r.try_get(10).map_err(corrupt)?,
        metadata: r.try_get(11).map_err(corrupt)?,
        created_at: from_ms(r.try_get(12).map_err(corrupt)?),
        last_used_at: opt(13)?,
    })
}

async fn last_seq(tx: &Transaction<'_>) -> Result<i64, DirectoryError> {
    tx.query_one(
        "SELECT COALESCE(MAX(seq), 0)::BIGINT FROM keygate_changes",
        &[],
    )
    .await
    .map_err(fail)?
    .try_get(0)
    .map_err(corrupt)
}

async fn get_in(tx: &Transaction<'_>, id: &str) -> Result<Option<Record>, DirectoryError> {
    let sql = format!("SELECT {COLUMNS} FROM keygate_principals WHERE id = $1 FOR UPDATE");
    let row = tx.query_opt(&sql, &[&id]).await.map_err(fail)?;
    row.as_ref().map(read).transpose()
}

async fn write(tx: &Transaction<'_>, r: &Record, insert: bool) -> Result<(), DirectoryError> {
    let sql = if insert {
        format!(
            "INSERT INTO keygate_principals ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
        )
    } else {
        "UPDATE keygate_principals SET kind = $2, role = $3, scopes = $4, hash = $5, \
         previous_hash = $6, previous_until = $7, expires_at = $8, revoked_at = $9, \
         not_before = $10, rate_limit = $11, metadata = $12, created_at = $13, \
         last_used_at = $14 WHERE id = $1"
            .to_owned()
    };
    let ms = |t: Option<OffsetDateTime>| t.map(to_ms);
    let scopes = r.scopes.join(" ");
    let previous_hash = r.previous.as_ref().map(|(h, _)| h.clone());
    let previous_until = ms(r.previous.as_ref().map(|(_, t)| *t));
    let (expires, revoked, not_before) = (ms(r.expires_at), ms(r.revoked_at), ms(r.not_before));
    let created = to_ms(r.created_at);
    let used = ms(r.last_used_at);
    tx.execute(
        &sql,
        &[
            &r.id,
            &r.kind.as_str(),
            &r.role,
            &scopes,
            &r.hash,
            &previous_hash,
            &previous_until,
            &expires,
            &revoked,
            &not_before,
            &r.rate_limit,
            &r.metadata,
            &created,
            &used,
        ],
    )
    .await
    .map_err(fail)?;
    Ok(())
}

/// Writes a new principal (under the edit lock): its `not_before` after the removal of an
/// earlier principal of its id, if any, so that one's tokens stay refused
/// (docs/directory.md, Failures).
async fn created(
    tx: &Transaction<'_>,
    record: Record,
    now: OffsetDateTime,
) -> Result<Record, DirectoryError> {
    let removed: Option<i64> = tx
        .query_opt(
            "SELECT removed_at FROM keygate_removed WHERE id = $1",
            &[&record.id],
        )
        .await
        .map_err(fail)?
        .map(|r| r.try_get(0))
        .transpose()
        .map_err(corrupt)?;
    let record = record.created(removed.map(from_ms));
    write(tx, &record, true).await?;
    tx.execute("DELETE FROM keygate_removed WHERE id = $1", &[&record.id])
        .await
        .map_err(fail)?;
    log_change(tx, &record.id, to_ms(now)).await?;
    Ok(record)
}

/// Takes the edit lock, appends `id` to the log, and notifies the replicas (on commit).
async fn log_change(tx: &Transaction<'_>, id: &str, now: i64) -> Result<(), DirectoryError> {
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&EDIT_LOCK])
        .await
        .map_err(fail)?;
    let seq: i64 = tx
        .query_one(
            "INSERT INTO keygate_changes (id, at) VALUES ($1, $2) RETURNING seq",
            &[&id, &now],
        )
        .await
        .map_err(fail)?
        .try_get(0)
        .map_err(corrupt)?;
    tx.execute("SELECT pg_notify($1, '')", &[&schema::CHANNEL])
        .await
        .map_err(fail)?;
    if seq % 1024 == 0 {
        let cutoff = now - schema::LOG_KEPT_MS;
        let through: Option<i64> = tx
            .query_one(
                "SELECT MAX(seq) FROM keygate_changes WHERE at < $1",
                &[&cutoff],
            )
            .await
            .map_err(fail)?
            .try_get(0)
            .map_err(corrupt)?;
        if let Some(through) = through {
            tx.execute("DELETE FROM keygate_changes WHERE seq <= $1", &[&through])
                .await
                .map_err(fail)?;
            tx.execute(
                "UPDATE keygate_schema SET pruned_through = GREATEST(pruned_through, $1)",
                &[&through],
            )
            .await
            .map_err(fail)?;
        }
    }
    Ok(())
}

async fn apply(c: &mut Client, edit: Edit) -> Result<Edited, DirectoryError> {
    let tx = c.transaction().await.map_err(fail)?;
    let now = OffsetDateTime::now_utc();
    let out = match edit {
        Edit::Create(record) => {
            // The lock first: two creates of one id queue here, and the second sees the first.
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&EDIT_LOCK])
                .await
                .map_err(fail)?;
            if get_in(&tx, &record.id).await?.is_some() {
                return Err(DirectoryError::Exists(record.id));
            }
            let record = created(&tx, *record, now).await?;
            Edited::One(Box::new(record))
        }
        Edit::Update { id, kind, change } => {
            let mut record = get_in(&tx, &id)
                .await?
                .filter(|r| r.kind == kind)
                .ok_or_else(|| DirectoryError::NotFound {
                    kind: kind.as_str(),
                    id: id.clone(),
                })?;
            change(&mut record, now)?;
            record.check()?;
            write(&tx, &record, false).await?;
            log_change(&tx, &id, to_ms(now)).await?;
            Edited::One(Box::new(record))
        }
        Edit::Delete { id, kind } => {
            let removed = tx
                .execute(
                    "DELETE FROM keygate_principals WHERE id = $1 AND kind = $2",
                    &[&id, &kind.as_str()],
                )
                .await
                .map_err(fail)?;
            if removed == 0 {
                return Err(DirectoryError::NotFound {
                    kind: kind.as_str(),
                    id,
                });
            }
            tx.execute(
                "INSERT INTO keygate_removed (id, removed_at) VALUES ($1, $2) \
                 ON CONFLICT (id) DO UPDATE SET removed_at = excluded.removed_at",
                &[&id, &to_ms(now)],
            )
            .await
            .map_err(fail)?;
            log_change(&tx, &id, to_ms(now)).await?;
            Edited::Removed
        }
        Edit::Import(records) => {
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&EDIT_LOCK])
                .await
                .map_err(fail)?;
            let count = records.len();
            for record in &records {
                match get_in(&tx, &record.id).await? {
                    Some(there) if there.kind == record.kind && there.hash == record.hash => {
                        continue;
                    }
                    Some(_) => return Err(DirectoryError::Exists(record.id.clone())),
                    None => {}
                }
                created(&tx, record.clone(), now).await?;
            }
            Edited::Count(count)
        }
        Edit::Touch { ids, at } => {
            let at = to_ms(at);
            tx.execute(
                "UPDATE keygate_principals SET last_used_at = $2 WHERE id = ANY($1) \
                 AND (last_used_at IS NULL OR last_used_at < $2)",
                &[&ids, &at],
            )
            .await
            .map_err(fail)?;
            Edited::Count(ids.len())
        }
    };
    tx.commit().await.map_err(fail)?;
    Ok(out)
}

/// Listens on the directory's channel: the receiver gets `()` for each notification and
/// ends when the connection does (the caller listens again).
pub(super) async fn listen(
    url: &str,
    timeout: Duration,
) -> Result<mpsc::Receiver<()>, DirectoryError> {
    let mut config: tokio_postgres::Config = url.parse().map_err(fail)?;
    config.connect_timeout(timeout);
    let (client, mut connection) = tokio::time::timeout(timeout, config.connect(NoTls))
        .await
        .map_err(|_| DirectoryError::Unavailable("connecting timed out".into()))?
        .map_err(fail)?;
    let (tx, rx) = mpsc::channel(1);
    let driver = tokio::spawn(async move {
        loop {
            let message = std::future::poll_fn(|cx| connection.poll_message(cx)).await;
            match message {
                Some(Ok(AsyncMessage::Notification(_))) => {
                    // A full channel already holds a wake-up: this one adds nothing.
                    let _ = tx.try_send(());
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return,
            }
        }
    });
    let listen = format!("LISTEN {}", schema::CHANNEL);
    match tokio::time::timeout(timeout, client.batch_execute(&listen)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(fail(e)),
        Err(_) => return Err(DirectoryError::Unavailable("LISTEN timed out".into())),
    }
    // The client lives as long as the connection it listens on.
    tokio::spawn(async move {
        let _client = client;
        let _ = driver.await;
    });
    Ok(rx)
}
