//! `keygate key add|list|revoke|rotate`

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use keygate::api_key::{self, KeyHash};
use keygate_server::Config;
use keygate_server::config::edit::{ConfigFile, NewClient};
use time::OffsetDateTime;

pub(crate) fn add(
    path: &Path,
    id: &str,
    role: &str,
    scopes: &[String],
    expires: Option<Duration>,
) -> anyhow::Result<()> {
    if !api_key::is_valid_id(id) {
        anyhow::bail!("`{id}` is not a valid client id (1-64 of A-Z a-z 0-9 . _ - @)");
    }
    let key = api_key::generate(id)?;
    let hash = KeyHash::sha256_of(&key).to_string();
    let expires_at = expires.map(|d| OffsetDateTime::now_utc() + d);
    let mut file = ConfigFile::open(path)?;
    file.add_client(&NewClient {
        id,
        key_hash: &hash,
        role,
        scopes,
        expires_at,
    })?;
    file.save()?;
    println!("{key}");
    Ok(())
}

pub(crate) fn list(path: &Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
    let config: Config = toml::from_str(&text).with_context(|| path.display().to_string())?;
    println!(
        "{:<24} {:<12} {:<10} {:<22} SCOPES",
        "ID", "ROLE", "STATE", "EXPIRES"
    );
    for c in &config.clients {
        let state = if c.revoked_at.is_some() {
            "revoked"
        } else if c.previous_key_hash.is_some() {
            "rotating"
        } else {
            "active"
        };
        println!(
            "{:<24} {:<12} {:<10} {:<22} {}",
            c.id,
            c.role,
            state,
            c.expires_at.as_deref().unwrap_or("-"),
            c.scopes.join(" ")
        );
    }
    Ok(())
}

pub(crate) fn revoke(path: &Path, id: &str) -> anyhow::Result<()> {
    let mut file = ConfigFile::open(path)?;
    file.revoke_client(id, OffsetDateTime::now_utc())?;
    file.save()?;
    eprintln!("revoked the key of `{id}`; a running server picks this up within a second");
    Ok(())
}

pub(crate) fn rotate(path: &Path, id: &str, grace: Duration) -> anyhow::Result<()> {
    let key = api_key::generate(id)?;
    let hash = KeyHash::sha256_of(&key).to_string();
    let mut file = ConfigFile::open(path)?;
    file.rotate_client_key(id, &hash, OffsetDateTime::now_utc() + grace)?;
    file.save()?;
    eprintln!(
        "the old key of `{id}` stays valid for {}",
        humantime::format_duration(grace)
    );
    println!("{key}");
    Ok(())
}
