//! Edits of `keygate.toml` for the CLI: comments and order are kept (`toml_edit`), and
//! the file is replaced atomically, so a crash mid-write never loses it or an entry.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use toml_edit::{Array, ArrayOfTables, DocumentMut, Item, Table, value};

use super::ConfigError;

/// A configuration file open for editing.
#[derive(Debug)]
pub struct ConfigFile {
    path: PathBuf,
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
}

impl ConfigFile {
    /// Reads `path` for editing.
    pub fn open(path: &Path) -> Result<Self, ConfigError> {
        let text = fs::read_to_string(path)
            .map_err(|e| ConfigError::new(path.display().to_string(), e))?;
        let doc: DocumentMut = text.parse().map_err(|e: toml_edit::TomlError| {
            ConfigError::new(path.display().to_string(), super::env::toml_error(&e))
        })?;
        Ok(Self {
            path: path.to_owned(),
            doc,
        })
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
        self.array_mut("clients")?.push(t);
        Ok(())
    }

    /// Replaces a client's key; the old one stays valid until `grace_until`.
    pub fn rotate_client_key(
        &mut self,
        id: &str,
        new_hash: &str,
        grace_until: OffsetDateTime,
    ) -> Result<(), ConfigError> {
        let until = rfc3339(grace_until)?;
        let t = self.entry_mut("clients", "id", id)?;
        let old = t
            .get("key_hash")
            .and_then(Item::as_str)
            .ok_or_else(|| ConfigError::new("clients", format!("client `{id}` has no key_hash")))?
            .to_owned();
        t["key_hash"] = value(new_hash);
        t["previous_key_hash"] = value(old);
        t["previous_key_expires_at"] = value(until);
        t.remove("revoked_at");
        Ok(())
    }

    /// Marks a client's key revoked now: it no longer logs in, and keygate refuses the
    /// tokens already issued to it.
    pub fn revoke_client(&mut self, id: &str, at: OffsetDateTime) -> Result<(), ConfigError> {
        let at = rfc3339(at)?;
        let t = self.entry_mut("clients", "id", id)?;
        t["revoked_at"] = value(at);
        t.remove("previous_key_hash");
        t.remove("previous_key_expires_at");
        Ok(())
    }

    /// Appends a `[[users]]` entry.
    pub fn add_user(
        &mut self,
        username: &str,
        password_hash: &str,
        role: &str,
        scopes: &[String],
    ) -> Result<(), ConfigError> {
        self.ensure_id_free(username)?;
        let mut t = Table::new();
        t["username"] = value(username);
        t["password_hash"] = value(password_hash);
        t["role"] = value(role);
        t["scopes"] = value(scopes.iter().collect::<Array>());
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

    /// Writes the file atomically: a temporary file in the same folder (mode 0600),
    /// fsync, rename over the original, fsync the folder.
    pub fn save(&self) -> Result<(), ConfigError> {
        write_atomically(&self.path, self.doc.to_string().as_bytes())
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

/// Creates or replaces `path` so that a reader sees the old file or the new one, whole.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), ConfigError> {
    let err = |e: std::io::Error| ConfigError::new(path.display().to_string(), e);
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "keygate.toml".into());
    let mut suffix = [0u8; 6];
    getrandom::fill(&mut suffix).map_err(|e| ConfigError::new("rng", e))?;
    let tmp = dir.join(format!(".{name}.{}.tmp", hex::encode(suffix)));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const START: &str = "# my notes\n[token]\nsecret = \"x\" # keep me\n\n[[clients]]\nid = \"a\"\nkey_hash = \"sha256:00\"\n";

    fn file(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keygate.toml");
        fs::write(&path, text).unwrap();
        (dir, path)
    }

    #[test]
    fn adding_a_client_keeps_comments_and_entries() {
        let (_dir, path) = file(START);
        let mut f = ConfigFile::open(&path).unwrap();
        f.add_client(&NewClient {
            id: "b",
            key_hash: "sha256:11",
            role: "service",
            scopes: &["orders:read".to_owned()],
            expires_at: None,
        })
        .unwrap();
        f.save().unwrap();
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("# my notes\n[token]\nsecret = \"x\" # keep me\n"));
        assert!(text.contains("id = \"a\""));
        assert!(text.contains(
            "id = \"b\"\nkey_hash = \"sha256:11\"\nrole = \"service\"\nscopes = [\"orders:read\"]"
        ));
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let leftovers: Vec<_> = fs::read_dir(path.parent().unwrap()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary file left behind");
    }

    #[test]
    fn ids_stay_unique() {
        let (_dir, path) = file(START);
        let mut f = ConfigFile::open(&path).unwrap();
        assert!(f.add_user("a", "$2b$…", "r", &[]).is_err());
    }

    #[test]
    fn rotation_keeps_the_old_hash_with_its_deadline() {
        let (_dir, path) = file(START);
        let mut f = ConfigFile::open(&path).unwrap();
        let until = OffsetDateTime::from_unix_timestamp(1_900_000_000).unwrap();
        f.rotate_client_key("a", "sha256:22", until).unwrap();
        let text = f.text();
        assert!(text.contains("key_hash = \"sha256:22\""));
        assert!(text.contains("previous_key_hash = \"sha256:00\""));
        assert!(text.contains("previous_key_expires_at = \"2030-03-17T17:46:40Z\""));
        assert!(f.rotate_client_key("zz", "sha256:22", until).is_err());
    }

    #[test]
    fn removing_an_unknown_user_is_an_error() {
        let (_dir, path) = file(START);
        let mut f = ConfigFile::open(&path).unwrap();
        assert_eq!(
            f.remove_user("nobody").unwrap_err().to_string(),
            "users: no user `nobody`"
        );
    }
}
