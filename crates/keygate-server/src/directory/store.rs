//! [`Store`]: the directory's database, whichever engine holds it, for the server's copy
//! (load, change log), the admin API and the CLI (edits, each one transaction).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use keygate::api_key::{self, KeyHash};
use time::OffsetDateTime;
use tokio::sync::mpsc;

use super::postgres::Postgres;
use super::record::{Kind, Record};
use super::{DirectoryError, Location, sqlite};

/// The directory's database.
#[derive(Debug, Clone)]
pub struct Store {
    engine: Arc<Engine>,
    location: Location,
    timeout: Duration,
}

#[derive(Debug)]
enum Engine {
    Sqlite(Arc<Mutex<rusqlite::Connection>>),
    Postgres(Box<Postgres>),
}

/// What the change log holds after a sequence number.
#[derive(Debug, Default)]
pub struct Changes {
    /// The last sequence number read.
    pub seq: i64,
    /// Each changed id once, with its principal now (`None`: removed).
    pub principals: Vec<(String, Option<Record>)>,
    /// The log no longer reaches back to the number asked for: load everything again.
    pub reset: bool,
    /// More changes wait beyond this read.
    pub more: bool,
}

impl Changes {
    pub(super) fn reset() -> Self {
        Changes {
            reset: true,
            ..Changes::default()
        }
    }

    /// From the log rows `(seq, id)` after `seq`: each id once.
    pub(super) fn from_log(seq: i64, log: &[(i64, String)]) -> Self {
        let mut seen = std::collections::HashSet::with_capacity(log.len());
        let principals = log
            .iter()
            .filter(|(_, id)| seen.insert(id.as_str()))
            .map(|(_, id)| (id.clone(), None))
            .collect();
        Changes {
            seq: log.last().map_or(seq, |(s, _)| *s),
            principals,
            reset: false,
            more: i64::try_from(log.len()).unwrap_or(i64::MAX) >= super::schema::CHANGES_PER_READ,
        }
    }
}

/// A page of principals in id order.
#[derive(Debug)]
pub struct Page {
    /// The principals.
    pub items: Vec<Record>,
    /// The id to ask `after` for the next page; `None` on the last.
    pub next: Option<String>,
}

/// A change made under the record's row lock, in the edit's transaction.
pub(crate) type Change =
    Box<dyn FnOnce(&mut Record, OffsetDateTime) -> Result<(), DirectoryError> + Send>;

/// One edit, one transaction.
pub(crate) enum Edit {
    Create(Box<Record>),
    Update {
        id: String,
        kind: Kind,
        change: Change,
    },
    Delete {
        id: String,
        kind: Kind,
    },
    Import(Vec<Record>),
    Touch {
        ids: Vec<String>,
        at: OffsetDateTime,
    },
}

/// What an [`Edit`] left.
pub(crate) enum Edited {
    One(Box<Record>),
    Removed,
    Count(usize),
}

impl Store {
    /// Opens the directory at `location`, creating its tables on first use.
    pub async fn open(location: &Location, timeout: Duration) -> Result<Self, DirectoryError> {
        let engine = match location {
            Location::Sqlite(path) => {
                let path = path.clone();
                let conn = blocking(move || sqlite::open(&path, timeout)).await?;
                Engine::Sqlite(Arc::new(Mutex::new(conn)))
            }
            Location::Postgres(url) => {
                Engine::Postgres(Box::new(Postgres::open(url, timeout).await?))
            }
        };
        Ok(Store {
            engine: Arc::new(engine),
            location: location.clone(),
            timeout,
        })
    }

    /// Where it is.
    pub fn location(&self) -> &Location {
        &self.location
    }

    /// Runs `f` on the SQLite connection, on a blocking thread.
    async fn on_sqlite<T: Send + 'static>(
        conn: &Arc<Mutex<rusqlite::Connection>>,
        f: impl FnOnce(&mut rusqlite::Connection) -> Result<T, DirectoryError> + Send + 'static,
    ) -> Result<T, DirectoryError> {
        let conn = conn.clone();
        traced(
            "sqlite",
            blocking(move || {
                let mut guard = conn
                    .lock()
                    .map_err(|_| DirectoryError::Unavailable("a directory call panicked".into()))?;
                f(&mut guard)
            }),
        )
        .await
    }

    /// Every principal, each handed to `each` as it is read (never all at once: a million
    /// principals would otherwise be held twice while a copy is built), and the log's
    /// sequence number they are current to.
    pub async fn snapshot_into<T: Send + 'static>(
        &self,
        acc: T,
        each: fn(&mut T, &Record),
    ) -> Result<(i64, T), DirectoryError> {
        match &*self.engine {
            Engine::Sqlite(c) => {
                Self::on_sqlite(c, move |c| sqlite::snapshot_into(c, acc, each)).await
            }
            Engine::Postgres(pg) => pg.snapshot_into(acc, each).await,
        }
    }

    /// The changes after `seq`.
    pub async fn changes_since(&self, seq: i64) -> Result<Changes, DirectoryError> {
        match &*self.engine {
            Engine::Sqlite(c) => Self::on_sqlite(c, move |c| sqlite::changes_since(c, seq)).await,
            Engine::Postgres(pg) => pg.changes_since(seq).await,
        }
    }

    /// The principal `id` of `kind`.
    pub async fn get(&self, kind: Kind, id: &str) -> Result<Record, DirectoryError> {
        let owned = id.to_owned();
        let found = match &*self.engine {
            Engine::Sqlite(c) => Self::on_sqlite(c, move |c| sqlite::get_one(c, &owned)).await?,
            Engine::Postgres(pg) => pg.get(&owned).await?,
        };
        found
            .filter(|r| r.kind == kind)
            .ok_or_else(|| DirectoryError::NotFound {
                kind: kind.as_str(),
                id: id.to_owned(),
            })
    }

    /// Up to `limit` principals of `kind` with ids after `after`, in id order.
    pub async fn list(
        &self,
        kind: Kind,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page, DirectoryError> {
        let after = after.unwrap_or("").to_owned();
        // One more than asked: whether a next page exists, without a second query.
        let ask = limit + 1;
        let mut items = match &*self.engine {
            Engine::Sqlite(c) => {
                Self::on_sqlite(c, move |c| sqlite::list(c, kind, &after, ask)).await?
            }
            Engine::Postgres(pg) => pg.list(kind, &after, ask).await?,
        };
        let next = if items.len() > limit {
            items.truncate(limit);
            items.last().map(|r| r.id.clone())
        } else {
            None
        };
        Ok(Page { items, next })
    }

    async fn edit(&self, edit: Edit) -> Result<Edited, DirectoryError> {
        match &*self.engine {
            Engine::Sqlite(c) => Self::on_sqlite(c, move |c| sqlite::edit(c, edit)).await,
            Engine::Postgres(pg) => pg.edit(edit).await,
        }
    }

    /// Writes a new principal; [`DirectoryError::Exists`] when the id is taken. Returns
    /// once its first token can be issued (after a removal in the same second, that is
    /// the next second: see [`Record::created`]).
    pub async fn create(&self, record: Record) -> Result<Record, DirectoryError> {
        record.check()?;
        let Edited::One(created) = self.edit(Edit::Create(Box::new(record))).await? else {
            return Err(DirectoryError::Corrupt("create wrote no record".into()));
        };
        if let Some(nb) = created.not_before {
            let wait = nb - OffsetDateTime::now_utc();
            if wait.is_positive() {
                tokio::time::sleep(wait.try_into().unwrap_or(Duration::ZERO)).await;
            }
        }
        Ok(*created)
    }

    /// Changes the principal `id` of `kind` with `change`, under its row lock; the result
    /// is checked before it is written.
    pub async fn update(
        &self,
        kind: Kind,
        id: &str,
        change: impl FnOnce(&mut Record, OffsetDateTime) -> Result<(), DirectoryError> + Send + 'static,
    ) -> Result<Record, DirectoryError> {
        let edit = Edit::Update {
            id: id.to_owned(),
            kind,
            change: Box::new(change),
        };
        match self.edit(edit).await? {
            Edited::One(r) => Ok(*r),
            _ => Err(DirectoryError::Corrupt("update wrote no record".into())),
        }
    }

    /// Revokes the principal: it is refused from now on, and so is every token issued
    /// to it. Revoking a revoked principal keeps its first revocation time.
    pub async fn revoke(&self, kind: Kind, id: &str) -> Result<Record, DirectoryError> {
        self.update(kind, id, |r, now| {
            r.revoked_at = Some(r.revoked_at.map_or(now, |at| at.min(now)));
            Ok(())
        })
        .await
    }

    /// Gives client `id` a new key, returned; the old one works for `grace` more (zero:
    /// it dies now, with every token issued before now). A revoked client stays revoked.
    pub async fn rotate(&self, id: &str, grace: Duration) -> Result<String, DirectoryError> {
        let key = api_key::generate(id)
            .map_err(|e| DirectoryError::Invalid(keygate::error::chain(&e)))?;
        let hash = KeyHash::sha256_of(&key).to_string();
        // A rotation without grace refuses the tokens issued before it: `not_before` is
        // the next whole second (tokens carry `iat` in seconds), and the new key is handed
        // out only once that second has begun, so none of its tokens is refused.
        let not_before = grace.is_zero().then(next_second);
        self.update(Kind::Client, id, move |r, now| {
            if r.revoked_at.is_some_and(|at| at <= now) {
                return Err(DirectoryError::Invalid(format!(
                    "`{}` is revoked: a revoked client gets no new key",
                    r.id
                )));
            }
            let old = std::mem::replace(&mut r.hash, hash);
            r.previous = match not_before {
                Some(nb) => {
                    r.not_before = Some(r.not_before.map_or(nb, |n| n.max(nb)));
                    None
                }
                None => Some((old, now + grace)),
            };
            Ok(())
        })
        .await?;
        if let Some(nb) = not_before {
            let wait = nb - OffsetDateTime::now_utc();
            if wait.is_positive() {
                tokio::time::sleep(wait.try_into().unwrap_or(Duration::ZERO)).await;
            }
        }
        Ok(key)
    }

    /// Removes the principal: its tokens are refused as after a revocation, and a new
    /// principal of the same id never accepts them.
    pub async fn delete(&self, kind: Kind, id: &str) -> Result<(), DirectoryError> {
        self.edit(Edit::Delete {
            id: id.to_owned(),
            kind,
        })
        .await
        .map(|_| ())
    }

    /// Writes every record in one transaction: all or none ([`DirectoryError::Exists`]
    /// names the first id already there).
    pub async fn import(&self, records: Vec<Record>) -> Result<usize, DirectoryError> {
        for r in &records {
            r.check()?;
        }
        match self.edit(Edit::Import(records)).await? {
            Edited::Count(n) => Ok(n),
            _ => Err(DirectoryError::Corrupt("import counted nothing".into())),
        }
    }

    /// Sets `last_used_at` of `ids` to `at` (never back), without a change-log entry: it
    /// changes nothing a replica checks.
    pub async fn touch(&self, ids: Vec<String>, at: OffsetDateTime) -> Result<(), DirectoryError> {
        if ids.is_empty() {
            return Ok(());
        }
        self.edit(Edit::Touch { ids, at }).await.map(|_| ())
    }

    /// Wake-ups on every edit anywhere (PostgreSQL's `NOTIFY`); `None` for SQLite, whose
    /// replicas (one machine) poll.
    pub async fn listen(&self) -> Option<Result<mpsc::Receiver<()>, DirectoryError>> {
        match (&*self.engine, &self.location) {
            (Engine::Postgres(_), Location::Postgres(url)) => {
                Some(super::postgres::listen(url, self.timeout).await)
            }
            _ => None,
        }
    }
}

/// The next whole second, for a `not_before` no token issued so far can reach.
/// A database call, as a child span of the request's trace when the request is traced
/// (README, Traces): named after the engine (`sqlite`, `postgresql`), a client span with
/// `db.system.name`, its status `ERROR` when the call failed. Outside a traced request (the
/// replicas' polling, the CLI) no span is made.
pub(super) async fn traced<T>(
    system: &'static str,
    call: impl Future<Output = Result<T, DirectoryError>>,
) -> Result<T, DirectoryError> {
    if !crate::telemetry::in_traced_request() {
        return call.await;
    }
    let span = tracing::info_span!(
        "directory",
        otel.name = system,
        otel.kind = "client",
        db.system.name = system,
        otel.status_code = tracing::field::Empty,
    );
    let out = tracing::Instrument::instrument(call, span.clone()).await;
    if out.is_err() {
        span.record("otel.status_code", "ERROR");
    }
    out
}

fn next_second() -> OffsetDateTime {
    let now = OffsetDateTime::now_utc();
    now.replace_nanosecond(0).unwrap_or(now) + time::Duration::SECOND
}

/// Runs `f` on tokio's blocking threads (rusqlite is synchronous).
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, DirectoryError> + Send + 'static,
) -> Result<T, DirectoryError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| DirectoryError::Unavailable(format!("a directory call failed: {e}")))?
}
