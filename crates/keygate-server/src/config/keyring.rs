//! The signing-key folder (`token.signing_keys`): one PEM file per key (mode 0600) and
//! `keyring.toml`, which lists them with their schedule:
//!
//! ```toml
//! [[keys]]
//! kid = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"   # RFC 7638 thumbprint
//! alg = "ES256"
//! file = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs.pem"
//! created_at = "2026-11-27T12:00:00Z"                  # signs from created_at + token.key_publish_delay
//! retired_at = "2026-12-27T12:00:00Z"                  # optional: stops signing, verifies ttl + leeway longer
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use keygate::token::{KeyEntry, KeySet, SigningAlgorithm, SigningKey};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use toml_edit::{DocumentMut, Item, Table, value};

use super::ConfigError;
use super::edit::write_atomically;

/// The index file inside the signing-key folder.
pub const KEYRING_FILE: &str = "keyring.toml";

/// One line of `keyring.toml`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyringEntry {
    /// Key id (the RFC 7638 thumbprint of the public key).
    pub kid: String,
    /// `ES256`, `EdDSA` or `RS256`.
    pub alg: String,
    /// PEM file, relative to the folder.
    pub file: String,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339, once retired.
    #[serde(default)]
    pub retired_at: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyringFile {
    #[serde(default)]
    keys: Vec<KeyringEntry>,
}

fn setting(dir: &Path) -> String {
    dir.join(KEYRING_FILE).display().to_string()
}

/// The entries of `dir/keyring.toml` (none when the file does not exist yet).
pub fn list(dir: &Path) -> Result<Vec<KeyringEntry>, ConfigError> {
    let path = dir.join(KEYRING_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(ConfigError::new(setting(dir), e)),
    };
    let file: KeyringFile = toml::from_str(&text)
        .map_err(|e| ConfigError::new(setting(dir), super::env::toml_error(&e)))?;
    Ok(file.keys)
}

/// Loads the keys of `algorithm` from `dir` into a [`KeySet`]. Keys of other algorithms
/// are left out: the algorithm is pinned by configuration.
pub fn load(
    dir: &Path,
    algorithm: SigningAlgorithm,
    publish_delay: Duration,
) -> Result<Arc<KeySet>, ConfigError> {
    let mut entries = Vec::new();
    for e in list(dir)?
        .into_iter()
        .filter(|e| e.alg == algorithm.as_str())
    {
        let at = format!("{} [{}]", setting(dir), e.kid);
        let pem = std::fs::read(dir.join(&e.file))
            .map_err(|err| ConfigError::new(&at, format!("{}: {err}", e.file)))?;
        let key = SigningKey::from_pem(algorithm, &pem)
            .map_err(|err| ConfigError::new(&at, keygate::error::chain(&err)))?;
        if key.kid() != e.kid {
            return Err(ConfigError::new(
                &at,
                format!("{} holds the key `{}`, not this one", e.file, key.kid()),
            ));
        }
        let created_at = unix(&e.created_at, &at)?;
        let retired_at = e.retired_at.as_deref().map(|r| unix(r, &at)).transpose()?;
        entries.push(KeyEntry {
            key,
            created_at,
            signs_from: created_at.saturating_add(publish_delay.as_secs()),
            retired_at,
        });
    }
    let now = keygate::token::now_unix();
    if !entries.iter().any(|e| e.retired_at.is_none_or(|r| r > now)) {
        return Err(ConfigError::new(
            setting(dir),
            format!(
                "no unretired {algorithm} key; make one with `keygate keygen --alg {algorithm}`"
            ),
        ));
    }
    KeySet::new(entries)
        .map(Arc::new)
        .map_err(|e| ConfigError::new(setting(dir), keygate::error::chain(&e)))
}

/// Generates a key for `algorithm`, writes `<kid>.pem` (mode 0600) and its line in
/// `keyring.toml`, and returns the kid. The folder is created (mode 0700) if needed.
pub fn generate(dir: &Path, algorithm: SigningAlgorithm) -> Result<String, ConfigError> {
    let (key, pem) = SigningKey::generate(algorithm)
        .map_err(|e| ConfigError::new("keygen", keygate::error::chain(&e)))?;
    create_dir(dir)?;
    let kid = key.kid().to_owned();
    let file = format!("{kid}.pem");
    write_atomically(&dir.join(&file), pem.as_bytes())?;
    let mut doc = keyring_doc(dir)?;
    let mut t = Table::new();
    t["kid"] = value(&kid);
    t["alg"] = value(algorithm.as_str());
    t["file"] = value(file);
    t["created_at"] = value(rfc3339(OffsetDateTime::now_utc())?);
    doc.entry("keys")
        .or_insert_with(|| Item::ArrayOfTables(Default::default()))
        .as_array_of_tables_mut()
        .ok_or_else(|| ConfigError::new(setting(dir), "keys must be [[keys]] tables"))?
        .push(t);
    write_atomically(&dir.join(KEYRING_FILE), doc.to_string().as_bytes())?;
    Ok(kid)
}

/// Retires `kid` now. Refuses to retire the last unretired key of its algorithm, which
/// would leave nothing to sign with.
pub fn retire(dir: &Path, kid: &str) -> Result<(), ConfigError> {
    let entries = list(dir)?;
    let target = entries
        .iter()
        .find(|e| e.kid == kid)
        .ok_or_else(|| ConfigError::new(setting(dir), format!("no key `{kid}`")))?;
    if target.retired_at.is_some() {
        return Err(ConfigError::new(
            setting(dir),
            format!("key `{kid}` is already retired"),
        ));
    }
    let others = entries
        .iter()
        .filter(|e| e.kid != kid && e.alg == target.alg && e.retired_at.is_none())
        .count();
    if others == 0 {
        return Err(ConfigError::new(
            setting(dir),
            format!(
                "`{kid}` is the last {} key; make its successor first with `keygate keygen --alg {}`",
                target.alg, target.alg
            ),
        ));
    }
    let mut doc = keyring_doc(dir)?;
    let now = rfc3339(OffsetDateTime::now_utc())?;
    let tables = doc
        .get_mut("keys")
        .and_then(Item::as_array_of_tables_mut)
        .ok_or_else(|| ConfigError::new(setting(dir), "keys must be [[keys]] tables"))?;
    for t in tables.iter_mut() {
        if t.get("kid").and_then(Item::as_str) == Some(kid) {
            t["retired_at"] = value(now.clone());
        }
    }
    write_atomically(&dir.join(KEYRING_FILE), doc.to_string().as_bytes())
}

fn keyring_doc(dir: &Path) -> Result<DocumentMut, ConfigError> {
    let text = match std::fs::read_to_string(dir.join(KEYRING_FILE)) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            "# Signing keys: written by `keygate keygen` and `keygate signing retire`.\n".into()
        }
        Err(e) => return Err(ConfigError::new(setting(dir), e)),
    };
    text.parse::<DocumentMut>()
        .map_err(|e| ConfigError::new(setting(dir), super::env::toml_error(&e)))
}

fn create_dir(dir: &Path) -> Result<(), ConfigError> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| ConfigError::new(dir.display().to_string(), e))
}

fn unix(text: &str, at: &str) -> Result<u64, ConfigError> {
    let t = OffsetDateTime::parse(text, &Rfc3339)
        .map_err(|_| ConfigError::new(at, format!("`{text}` is not an RFC 3339 time")))?;
    u64::try_from(t.unix_timestamp()).map_err(|_| ConfigError::new(at, "time before 1970"))
}

fn rfc3339(t: OffsetDateTime) -> Result<String, ConfigError> {
    t.replace_nanosecond(0)
        .unwrap_or(t)
        .format(&Rfc3339)
        .map_err(|e| ConfigError::new("time", e))
}

/// `dir` resolved against the configuration file's folder.
pub fn resolve(base: &Path, dir: &str) -> PathBuf {
    base.join(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generate_load_and_retire() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("keys");
        assert!(
            load(&dir, SigningAlgorithm::ES256, Duration::ZERO).is_err(),
            "no keys yet"
        );
        let first = generate(&dir, SigningAlgorithm::ES256).unwrap();
        let mode = |p: &Path| {
            std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(p).unwrap().permissions())
                & 0o777
        };
        assert_eq!(mode(&dir.join(format!("{first}.pem"))), 0o600);
        assert_eq!(mode(&dir), 0o700);
        let set = load(&dir, SigningAlgorithm::ES256, Duration::ZERO).unwrap();
        assert_eq!(set.entries().len(), 1);
        assert!(
            retire(&dir, &first).is_err(),
            "the last key cannot be retired"
        );
        let second = generate(&dir, SigningAlgorithm::ES256).unwrap();
        retire(&dir, &first).unwrap();
        let entries = list(&dir).unwrap();
        assert!(entries[0].retired_at.is_some());
        assert!(entries[1].retired_at.is_none());
        assert_eq!(entries[1].kid, second);
        let set = load(&dir, SigningAlgorithm::ES256, Duration::ZERO).unwrap();
        assert_eq!(
            set.signer(keygate::token::now_unix()).unwrap().kid(),
            second
        );
        // Keys of another algorithm are not loaded.
        assert!(load(&dir, SigningAlgorithm::EdDSA, Duration::ZERO).is_err());
    }

    #[test]
    fn a_swapped_pem_file_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let a = generate(dir, SigningAlgorithm::EdDSA).unwrap();
        let b = generate(dir, SigningAlgorithm::EdDSA).unwrap();
        std::fs::copy(dir.join(format!("{b}.pem")), dir.join(format!("{a}.pem"))).unwrap();
        let err = load(dir, SigningAlgorithm::EdDSA, Duration::ZERO).unwrap_err();
        assert!(err.to_string().contains("holds the key"), "{err}");
    }
}
