//! Edits of `keygate.toml` for the CLI, through [`edit`]: under the lock beside the file
//! ([`EditLock`](super::lock::EditLock)) the file is re-read, changed with comments and
//! order kept (`toml_edit`), checked with the server's own rules, and replaced atomically
//! with its owner, group and mode, so that a command that exits 0 has its change in the
//! file, and a crash mid-write never loses the file or an entry.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use toml_edit::{Array, ArrayOfTables, DocumentMut, Item, Table, value};

use super::lock::{EditLock, LOCK_WAIT};
use super::model::{ClientConfig, UserConfig};
use super::{Config, ConfigError};

/// A configuration file open for editing, inside [`edit`].
#[derive(Debug)]
pub struct ConfigFile {
    doc: DocumentMut,
}

/// What to write for a new client.
#[derive(Debug, Clone)]
pub struct NewClient<'a> {
    /// Client id.
    pub id: &'a str,
    /// `sha256:…` of its key.
    pub key_hash: &'a str,
    /// Role claim.
    pub role: &'a str,
    /// Allowed scopes.
    pub scopes: &'a [String],
    /// When the key stops working.
    pub expires_at: Option<OffsetDateTime>,
    /// Its `not_before`: from [`next_second`].
    pub created_at: OffsetDateTime,
}

/// What a rotation did to the old key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rotation {
    /// The old key works until the end of the grace period.
    Grace(OffsetDateTime),
    /// The old key, and every token issued before the rotation, died at once: the client
    /// was revoked, or the grace was zero.
    OldKeyDead,
}

/// The outcome of a successful [`edit`].
#[derive(Debug)]
pub struct Edited<T> {
    /// What the change returned.
    pub value: T,
    /// `${VAR}`s the file uses that this process's environment lacks: only `[[clients]]`
    /// and `[[users]]` could be checked. Empty when the whole file was.
    pub unset_variables: Vec<String>,
}

/// Sleeps until the next whole second begins and returns it, for a `not_before`.
///
/// Tokens carry `iat` in whole seconds. A `not_before` on a second that had not begun when
/// the command started is later than the `iat` of every token issued before the command,
/// and the file is written after it began, so every token issued under the new entry has
/// an `iat` at or after it. Costs at most a second.
pub fn next_second() -> OffsetDateTime {
    let now = OffsetDateTime::now_utc();
    let next = now.replace_nanosecond(0).unwrap_or(now) + time::Duration::SECOND;
    std::thread::sleep((next - now).try_into().unwrap_or(Duration::ZERO));
    // `sleep` never returns early, but the clock may be read coarsely: make sure.
    while OffsetDateTime::now_utc() < next {
        std::thread::sleep(Duration::from_millis(1));
    }
    next
}

/// Changes the configuration at `path` (a symlink is followed: its target is edited) with
/// `change`, under the lock beside the file, waiting up to [`LOCK_WAIT`] for another edit.
///
/// The file is read after the lock is taken, so concurrent edits all land. The new text is
/// checked as the server would check it (`Config::parse` + `validate` with this process's
/// environment); if the server would refuse it, nothing is written and the error names the
/// setting. Then it replaces the file atomically, keeping owner, group and mode.
pub fn edit<T>(
    path: &Path,
    change: impl FnOnce(&mut ConfigFile) -> Result<T, ConfigError>,
) -> Result<Edited<T>, ConfigError> {
    let target = resolve(path)?;
    let _lock = EditLock::acquire(&target, LOCK_WAIT)?;
    remove_stale_temp_files(&target);
    let text =
        fs::read_to_string(&target).map_err(|e| ConfigError::new(path.display().to_string(), e))?;
    let mut file = ConfigFile::parse(path, &text)?;
    let value = change(&mut file)?;
    let new_text = file.doc.to_string();
    let unset_variables = check(path, &new_text).map_err(|e| {
        ConfigError::new(
            format!("{}: {}", path.display(), e.setting),
            format!("{}; nothing was written", e.message),
        )
    })?;
    write_atomically(&target, new_text.as_bytes())?;
    Ok(Edited {
        value,
        unset_variables,
    })
}

/// The server's rules on `text`, as `Config::load(path)` applies them. With `${VAR}`s this
/// environment lacks, only `[[clients]]` and `[[users]]` are checked, and the names returned.
fn check(path: &Path, text: &str) -> Result<Vec<String>, ConfigError> {
    let env: BTreeMap<String, String> = std::env::vars().collect();
    let table: toml::Table =
        toml::from_str(text).map_err(|e| ConfigError::new("file", super::env::toml_error(&e)))?;
    let unset = super::env::unset_variables(&table, &env);
    if unset.is_empty() {
        let mut config = Config::parse(text, &env)?;
        config.base_dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
        config.validate()?;
    } else {
        #[derive(Deserialize)]
        struct Principals {
            #[serde(default)]
            clients: Vec<ClientConfig>,
            #[serde(default)]
            users: Vec<UserConfig>,
        }
        let p: Principals = serde_path_to_error::deserialize(toml::Value::Table(table))
            .map_err(|e| ConfigError::new(e.path().to_string(), e.into_inner()))?;
        Config {
            clients: p.clients,
            users: p.users,
            ..Config::default()
        }
        .directory()?;
    }
    Ok(unset.into_iter().collect())
}

impl ConfigFile {
    fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let doc: DocumentMut = text.parse().map_err(|e: toml_edit::TomlError| {
            ConfigError::new(path.display().to_string(), super::env::toml_error(&e))
        })?;
        Ok(Self { doc })
    }

    /// The current text.
    pub fn text(&self) -> String {
        self.doc.to_string()
    }

    /// Appends a `[[clients]]` entry; refuses an id already used by a client or user.
    pub fn add_client(&mut self, c: &NewClient<'_>) -> Result<(), ConfigError> {
        self.ensure_id_free(c.id)?;
        let mut t = Table::new();
        t["id"] = value(c.id);
        t["key_hash"] = value(c.key_hash);
        t["role"] = value(c.role);
        t["scopes"] = value(c.scopes.iter().collect::<Array>());
        if let Some(at) = c.expires_at {
            t["expires_at"] = value(rfc3339(at)?);
        }
        t["not_before"] = value(rfc3339(c.created_at)?);
        self.array_mut("clients")?.push(t);
        Ok(())
    }

    /// Replaces a client's key at `now` (from [`next_second`]). The old key stays valid
    /// for `grace`, unless the client was revoked or `grace` is zero: then the old key is
    /// dropped and the tokens issued before `now` are refused (`not_before`). A revoked key
    /// never comes back.
    pub fn rotate_client_key(
        &mut self,
        id: &str,
        new_hash: &str,
        now: OffsetDateTime,
        grace: Duration,
    ) -> Result<Rotation, ConfigError> {
        let t = self.entry_mut("clients", "id", id)?;
        let old = t
            .get("key_hash")
            .and_then(Item::as_str)
            .ok_or_else(|| ConfigError::new("clients", format!("client `{id}` has no key_hash")))?
            .to_owned();
        let revoked = t.contains_key("revoked_at");
        t["key_hash"] = value(new_hash);
        if revoked || grace.is_zero() {
            t.remove("previous_key_hash");
            t.remove("previous_key_expires_at");
            t.remove("revoked_at");
            t["not_before"] = value(rfc3339(now)?);
            return Ok(Rotation::OldKeyDead);
        }
        let until = now + grace;
        t["previous_key_hash"] = value(old);
        t["previous_key_expires_at"] = value(rfc3339(until)?);
        Ok(Rotation::Grace(until))
    }

    /// Marks a client's key revoked at `at`: it no longer logs in, and keygate refuses the
    /// tokens already issued to it. A client revoked earlier keeps its first revocation.
    pub fn revoke_client(&mut self, id: &str, at: OffsetDateTime) -> Result<(), ConfigError> {
        let at = rfc3339(at)?;
        let t = self.entry_mut("clients", "id", id)?;
        if !t.contains_key("revoked_at") {
            t["revoked_at"] = value(at);
        }
        t.remove("previous_key_hash");
        t.remove("previous_key_expires_at");
        Ok(())
    }

    /// Appends a `[[users]]` entry created at `created_at` (from [`next_second`]): tokens
    /// of an earlier user of that name are refused.
    pub fn add_user(
        &mut self,
        username: &str,
        password_hash: &str,
        role: &str,
        scopes: &[String],
        created_at: OffsetDateTime,
    ) -> Result<(), ConfigError> {
        self.ensure_id_free(username)?;
        let mut t = Table::new();
        t["username"] = value(username);
        t["password_hash"] = value(password_hash);
        t["role"] = value(role);
        t["scopes"] = value(scopes.iter().collect::<Array>());
        t["not_before"] = value(rfc3339(created_at)?);
        self.array_mut("users")?.push(t);
        Ok(())
    }

    /// Removes a `[[users]]` entry.
    pub fn remove_user(&mut self, username: &str) -> Result<(), ConfigError> {
        let users = self.array_mut("users")?;
        let index = users
            .iter()
            .position(|t| t.get("username").and_then(Item::as_str) == Some(username))
            .ok_or_else(|| ConfigError::new("users", format!("no user `{username}`")))?;
        users.remove(index);
        Ok(())
    }

    /// Removes every `[[clients]]` and `[[users]]` entry whose id is in `ids` (after
    /// `keygate directory import` moved them to the directory).
    pub fn remove_principals(&mut self, ids: &std::collections::HashSet<String>) {
        for (array, field) in [("clients", "id"), ("users", "username")] {
            if let Some(entries) = self
                .doc
                .get_mut(array)
                .and_then(Item::as_array_of_tables_mut)
            {
                entries.retain(|t| {
                    t.get(field)
                        .and_then(Item::as_str)
                        .is_none_or(|id| !ids.contains(id))
                });
            }
        }
    }

    /// Sets `[token] <key> = "<value>"`, creating the table if needed.
    pub fn set_token_setting(&mut self, key: &str, v: &str) -> Result<(), ConfigError> {
        let token = self
            .doc
            .entry("token")
            .or_insert_with(|| Item::Table(Table::new()))
            .as_table_mut()
            .ok_or_else(|| ConfigError::new("token", "must be a table"))?;
        token[key] = value(v);
        Ok(())
    }

    fn ensure_id_free(&self, id: &str) -> Result<(), ConfigError> {
        let taken = |name: &str, field: &str| {
            self.doc
                .get(name)
                .and_then(Item::as_array_of_tables)
                .is_some_and(|a| {
                    a.iter()
                        .any(|t| t.get(field).and_then(Item::as_str) == Some(id))
                })
        };
        if taken("clients", "id") || taken("users", "username") {
            return Err(ConfigError::new(
                "clients/users",
                format!("the id `{id}` is already taken"),
            ));
        }
        Ok(())
    }

    fn array_mut(&mut self, name: &str) -> Result<&mut ArrayOfTables, ConfigError> {
        let item = self
            .doc
            .entry(name)
            .or_insert_with(|| Item::ArrayOfTables(ArrayOfTables::new()));
        item.as_array_of_tables_mut()
            .ok_or_else(|| ConfigError::new(name, "must be written as [[…]] tables"))
    }

    fn entry_mut(&mut self, name: &str, field: &str, id: &str) -> Result<&mut Table, ConfigError> {
        self.array_mut(name)?
            .iter_mut()
            .find(|t| t.get(field).and_then(Item::as_str) == Some(id))
            .ok_or_else(|| ConfigError::new(name, format!("no entry with {field} `{id}`")))
    }
}

fn rfc3339(at: OffsetDateTime) -> Result<String, ConfigError> {
    at.replace_nanosecond(0)
        .unwrap_or(at)
        .format(&Rfc3339)
        .map_err(|e| ConfigError::new("time", e))
}

/// `path` with symlinks followed, so that the link stays a link and its target is what
/// changes; `path` itself when nothing is there yet.
fn resolve(path: &Path) -> Result<PathBuf, ConfigError> {
    match fs::canonicalize(path) {
        Ok(p) => Ok(p),
        Err(e) if e.kind() == ErrorKind::NotFound && fs::symlink_metadata(path).is_err() => {
            Ok(path.to_owned())
        }
        Err(e) => Err(ConfigError::new(path.display().to_string(), e)),
    }
}

/// The temporary file [`write_atomically`] writes beside `path`.
fn temp_name(name: &str, suffix: &[u8; 6]) -> String {
    format!(".{name}.{}.tmp", hex::encode(suffix))
}

/// Removes temporary files a killed edit of `target` left behind. Called under the lock:
/// no other edit of this file is writing one.
fn remove_stale_temp_files(target: &Path) {
    let (Some(dir), Some(name)) = (target.parent(), target.file_name()) else {
        return;
    };
    let prefix = format!(".{}.", name.to_string_lossy());
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let n = entry.file_name().to_string_lossy().into_owned();
        let stale = n.strip_prefix(&prefix).and_then(|r| r.strip_suffix(".tmp"));
        if stale.is_some_and(|hex| hex.len() == 12 && hex.bytes().all(|b| b.is_ascii_hexdigit())) {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// Creates or replaces `path` so that a reader sees the old file or the new one, whole: a
/// temporary file in the same folder, fsync, rename over the original, fsync the folder.
/// A symlink's target is replaced, not the link. A replaced file keeps its owner, group and
/// mode (set on the temporary file before the rename); a new one gets mode 0600.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), ConfigError> {
    let path = &resolve(path)?;
    let err = |e: std::io::Error| ConfigError::new(path.display().to_string(), e);
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "keygate.toml".into());
    let original = match fs::metadata(path) {
        Ok(m) => Some(m),
        Err(e) if e.kind() == ErrorKind::NotFound => None,
        Err(e) => return Err(err(e)),
    };
    let mut suffix = [0u8; 6];
    getrandom::fill(&mut suffix).map_err(|e| ConfigError::new("rng", e))?;
    let tmp = dir.join(temp_name(&name, &suffix));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        if let Some(m) = &original {
            keep_owner_and_mode(&f, m)?;
        }
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(&dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(err)
}

/// Gives the new file the original's owner, group and mode. Owner first: `chown` clears
/// set-id bits. Fails (and the edit with it) when the owner cannot be kept, rather than
/// silently handing the file to whoever ran the command.
fn keep_owner_and_mode(f: &File, original: &fs::Metadata) -> std::io::Result<()> {
    let mine = f.metadata()?;
    if (mine.uid(), mine.gid()) != (original.uid(), original.gid()) {
        std::os::unix::fs::fchown(f, Some(original.uid()), Some(original.gid())).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!(
                    "cannot keep the file's owner {}:{} ({e}); run as that user or root",
                    original.uid(),
                    original.gid()
                ),
            )
        })?;
    }
    f.set_permissions(fs::Permissions::from_mode(original.mode() & 0o7777))
}

#[cfg(test)]
mod tests;
