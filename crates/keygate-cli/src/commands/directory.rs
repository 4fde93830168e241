//! The CLI on the directory (`[directory]`, docs/directory.md): `key …` and `user …` edit
//! it instead of the file, each edit one transaction; `directory import` moves the file's
//! principals in, `directory export` writes them out.

use std::collections::HashSet;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use keygate::api_key::{self, KeyHash};
use keygate_server::Runtime;
use keygate_server::audit::{AuditEvent, AuditKind};
use keygate_server::directory::{DirectoryError, Kind, Location, Record, Store};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::Unavailable;

/// The directory of a configuration that has one, opened, with the file's runtime (for
/// its principals: one namespace) and a runtime to wait on the database with.
pub(crate) struct Dir {
    pub(crate) store: Store,
    pub(crate) file: Runtime,
    tokio: tokio::runtime::Runtime,
}

/// Loads the configuration at `path`; opens its directory when it has `[directory]`.
///
/// A file without `directory.url` is left to the file edits, which check only the
/// principals they write (a secret the server resolves from its own environment need not
/// be set in the shell that adds a key); only a configuration with a directory is loaded
/// whole here, since its principals live in the database.
pub(crate) fn open(path: &Path) -> anyhow::Result<Option<Dir>> {
    if !names_a_directory(path) {
        return Ok(None);
    }
    let file = keygate_server::Config::load(path)?;
    let Some(location) = Location::of(&file.config.directory, &file.config.base_dir)? else {
        return Ok(None);
    };
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let timeout = file.config.directory.timeout;
    let store = tokio
        .block_on(Store::open(&location, timeout))
        .map_err(|e| failed(&location, e))?;
    Ok(Some(Dir { store, file, tokio }))
}

/// `keygate init --directory`: the database at `url` (relative to the folder of the
/// configuration about to be written at `path`) reached and its schema made.
pub(crate) fn prepare(path: &Path, url: &str) -> anyhow::Result<()> {
    let config = keygate_server::config::DirectoryConfig {
        url: Some(url.to_owned()),
        ..Default::default()
    };
    let base = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let location = Location::of(&config, base)?.context("directory.url is set")?;
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    tokio
        .block_on(Store::open(&location, config.timeout))
        .map_err(|e| failed(&location, e))?;
    Ok(())
}

/// True when `KEYGATE_DIRECTORY_URL` is set (it overrides the file, as for the server), or
/// the file at `path` reads and parses as TOML with a `directory.url`; a file that does
/// not is reported by the file edit that follows.
fn names_a_directory(path: &Path) -> bool {
    if std::env::var_os("KEYGATE_DIRECTORY_URL").is_some() {
        return true;
    }
    let Ok(text) = std::fs::read_to_string(path) else {
        return false;
    };
    let Ok(doc) = text.parse::<toml_edit::DocumentMut>() else {
        return false;
    };
    doc.get("directory").and_then(|d| d.get("url")).is_some()
}

/// The error of a directory call: exit 3 when the database could not be reached (worth
/// retrying; nothing was written), 2 otherwise.
fn failed(location: &Location, e: DirectoryError) -> anyhow::Error {
    match e {
        DirectoryError::Unavailable(_) => {
            Unavailable(format!("{}: {e}", location.describe())).into()
        }
        e => anyhow::anyhow!(e),
    }
}

impl Dir {
    fn run<T>(
        &self,
        call: impl std::future::Future<Output = Result<T, DirectoryError>>,
    ) -> anyhow::Result<T> {
        self.tokio
            .block_on(call)
            .map_err(|e| failed(self.store.location(), e))
    }

    /// Refuses an id the file holds: the two share one namespace.
    fn not_in_file(&self, id: &str) -> anyhow::Result<()> {
        if self.file.directory.get(id).is_some() {
            anyhow::bail!(
                "`{id}` is a principal of the configuration file; ids are one namespace across the file and the directory"
            );
        }
        Ok(())
    }

    /// True when `id` is the file's (edited there, as without a directory).
    pub(crate) fn in_file(&self, id: &str) -> bool {
        self.file.directory.get(id).is_some()
    }

    pub(crate) fn add_client(
        &self,
        id: &str,
        role: &str,
        scopes: &[String],
        expires: Option<Duration>,
    ) -> anyhow::Result<String> {
        self.not_in_file(id)?;
        let key = api_key::generate(id)?;
        let now = OffsetDateTime::now_utc();
        let record = Record {
            id: id.to_owned(),
            kind: Kind::Client,
            role: role.to_owned(),
            scopes: scopes.to_vec(),
            hash: KeyHash::sha256_of(&key).to_string(),
            previous: None,
            expires_at: expires.map(|d| now + d),
            revoked_at: None,
            not_before: None,
            rate_limit: None,
            metadata: None,
            created_at: now,
            last_used_at: None,
        };
        self.run(self.store.create(record))?;
        Ok(key)
    }

    pub(crate) fn add_user(
        &self,
        name: &str,
        password_hash: &str,
        role: &str,
        scopes: &[String],
    ) -> anyhow::Result<()> {
        self.not_in_file(name)?;
        let record = Record {
            id: name.to_owned(),
            kind: Kind::User,
            role: role.to_owned(),
            scopes: scopes.to_vec(),
            hash: password_hash.to_owned(),
            previous: None,
            expires_at: None,
            revoked_at: None,
            not_before: None,
            rate_limit: None,
            metadata: None,
            created_at: OffsetDateTime::now_utc(),
            last_used_at: None,
        };
        self.run(self.store.create(record)).map(|_| ())
    }

    pub(crate) fn revoke(&self, id: &str) -> anyhow::Result<()> {
        self.run(self.store.revoke(Kind::Client, id)).map(|_| ())
    }

    pub(crate) fn rotate(&self, id: &str, grace: Duration) -> anyhow::Result<String> {
        self.run(self.store.rotate(id, grace))
    }

    pub(crate) fn remove_user(&self, name: &str) -> anyhow::Result<()> {
        self.run(self.store.delete(Kind::User, name))
    }

    /// Every principal of `kind`, page by page.
    pub(crate) fn all(&self, kind: Kind) -> anyhow::Result<Vec<Record>> {
        let mut all = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = self.run(self.store.list(kind, after.as_deref(), 1000))?;
            all.extend(page.items);
            match page.next {
                Some(next) => after = Some(next),
                None => return Ok(all),
            }
        }
    }
}

/// `keygate directory import`: the file's clients and users written to the directory in
/// one transaction (hashes, expiries, revocations and `not_before` kept), then removed
/// from the file. A principal already imported with the same credential is skipped, so
/// an import cut short between the two steps is finished by running it again.
pub(crate) fn import(path: &Path) -> anyhow::Result<()> {
    let Some(dir) = open(path)? else {
        anyhow::bail!(
            "{} has no [directory]: set directory.url first",
            path.display()
        );
    };
    let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
    let config: keygate_server::Config =
        toml::from_str(&text).with_context(|| path.display().to_string())?;
    let rate_limits: std::collections::HashMap<&str, &str> = config
        .clients
        .iter()
        .filter_map(|c| Some((c.id.as_str(), c.rate_limit.as_deref()?)))
        .collect();
    let now = OffsetDateTime::now_utc();
    let records: Vec<Record> = dir
        .file
        .directory
        .iter()
        .map(|p| {
            let limit = rate_limits.get(p.id.as_str()).map(|l| (*l).to_owned());
            keygate_server::directory::record_of(p, limit, now)
        })
        .collect();
    let ids: HashSet<String> = records.iter().map(|r| r.id.clone()).collect();
    let count = dir.run(dir.store.import(records))?;
    super::edit_config(path, |f| {
        f.remove_principals(&ids);
        Ok(())
    })?;
    super::audit::record(
        path,
        &AuditEvent::new(AuditKind::DirectoryImported).reason(&format!("{count} principals")),
    );
    eprintln!(
        "imported {count} principals into {}; removed them from {}",
        dir.store.location().describe(),
        path.display()
    );
    Ok(())
}

/// `keygate directory export`: every principal of the directory, as `[[clients]]` and
/// `[[users]]` TOML (what a file would hold) or as JSON lines (every field).
pub(crate) fn export(path: &Path, format: &str, output: Option<&Path>) -> anyhow::Result<()> {
    let Some(dir) = open(path)? else {
        anyhow::bail!(
            "{} has no [directory]: set directory.url first",
            path.display()
        );
    };
    let mut records = dir.all(Kind::Client)?;
    records.extend(dir.all(Kind::User)?);
    let text = match format {
        "toml" => to_toml(&records),
        "jsonl" => records
            .iter()
            .map(|r| format!("{}\n", to_json(r)))
            .collect(),
        other => anyhow::bail!("unknown format `{other}`: toml or jsonl"),
    };
    match output {
        Some(out) => {
            keygate_server::config::edit::write_atomically(out, text.as_bytes())?;
            eprintln!("exported {} principals to {}", records.len(), out.display());
        }
        None => std::io::stdout().lock().write_all(text.as_bytes())?,
    }
    Ok(())
}

fn time(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

/// One principal as the admin API shows it, with its hashes (for a backup).
pub(crate) fn to_json(r: &Record) -> serde_json::Value {
    let metadata = r
        .metadata
        .as_deref()
        .and_then(|m| serde_json::from_str::<serde_json::Value>(m).ok());
    serde_json::json!({
        "id": r.id,
        "kind": r.kind.as_str(),
        "role": r.role,
        "scopes": r.scopes,
        "hash": r.hash,
        "previous_hash": r.previous.as_ref().map(|(h, _)| h),
        "previous_expires_at": r.previous.as_ref().map(|(_, t)| time(*t)),
        "expires_at": r.expires_at.map(time),
        "revoked_at": r.revoked_at.map(time),
        "not_before": r.not_before.map(time),
        "rate_limit": r.rate_limit,
        "metadata": metadata,
        "created_at": time(r.created_at),
        "last_used_at": r.last_used_at.map(time),
    })
}

/// The principals as a configuration file's `[[clients]]` and `[[users]]`.
fn to_toml(records: &[Record]) -> String {
    let mut doc = toml_edit::DocumentMut::new();
    let mut clients = toml_edit::ArrayOfTables::new();
    let mut users = toml_edit::ArrayOfTables::new();
    for r in records {
        let mut t = toml_edit::Table::new();
        let id_field = if r.kind == Kind::Client {
            "id"
        } else {
            "username"
        };
        t.insert(id_field, toml_edit::value(&r.id));
        let hash_field = if r.kind == Kind::Client {
            "key_hash"
        } else {
            "password_hash"
        };
        t.insert(hash_field, toml_edit::value(&r.hash));
        if !r.role.is_empty() {
            t.insert("role", toml_edit::value(&r.role));
        }
        let scopes: toml_edit::Array = r.scopes.iter().map(String::as_str).collect();
        t.insert("scopes", toml_edit::value(scopes));
        if r.kind == Kind::Client {
            if let Some(e) = r.expires_at {
                t.insert("expires_at", toml_edit::value(time(e)));
            }
            if let Some((h, until)) = &r.previous {
                t.insert("previous_key_hash", toml_edit::value(h));
                t.insert("previous_key_expires_at", toml_edit::value(time(*until)));
            }
            if let Some(at) = r.revoked_at {
                t.insert("revoked_at", toml_edit::value(time(at)));
            }
            if let Some(l) = &r.rate_limit {
                t.insert("rate_limit", toml_edit::value(l));
            }
        }
        if let Some(nb) = r.not_before {
            t.insert("not_before", toml_edit::value(time(nb)));
        }
        match r.kind {
            Kind::Client => clients.push(t),
            Kind::User => users.push(t),
        }
    }
    if !clients.is_empty() {
        doc.insert("clients", toml_edit::Item::ArrayOfTables(clients));
    }
    if !users.is_empty() {
        doc.insert("users", toml_edit::Item::ArrayOfTables(users));
    }
    doc.to_string()
}
