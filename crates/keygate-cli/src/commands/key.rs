//! `keygate key add|list|revoke|rotate`

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use keygate::api_key::{self, KeyHash};
use keygate_server::Config;
use keygate_server::audit::{AuditEvent, AuditKind};
use keygate_server::config::edit::{NewClient, Rotation, next_second};
use keygate_server::directory::Kind;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::store_revocation;

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
    if let Some(dir) = super::directory::open(path)? {
        let key = dir.add_client(id, role, scopes, expires)?;
        super::audit::record(path, &AuditEvent::new(AuditKind::KeyAdded).client_id(id));
        println!("{key}");
        return Ok(());
    }
    let key = api_key::generate(id)?;
    let hash = KeyHash::sha256_of(&key).to_string();
    let created_at = next_second();
    let expires_at = expires.map(|d| created_at + d);
    super::edit_config(path, |f| {
        f.add_client(&NewClient {
            id,
            key_hash: &hash,
            role,
            scopes,
            expires_at,
            created_at,
        })
    })?;
    super::audit::record(path, &AuditEvent::new(AuditKind::KeyAdded).client_id(id));
    println!("{key}");
    Ok(())
}

/// One client as `key list --json` prints it.
#[derive(Debug, serde::Serialize)]
struct ClientEntry<'a> {
    id: &'a str,
    role: &'a str,
    /// `active`, `rotating` (an old key in its grace) or `revoked`.
    state: &'static str,
    scopes: &'a [String],
    expires_at: Option<&'a str>,
    /// When the old key of a rotation stops working.
    previous_key_expires_at: Option<&'a str>,
    revoked_at: Option<&'a str>,
}

pub(crate) fn list(path: &Path, json: bool) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
    let config: Config = toml::from_str(&text).with_context(|| path.display().to_string())?;
    let from_directory = match config.directory.url {
        Some(_) => super::directory::open(path)?
            .map(|dir| dir.all(Kind::Client))
            .transpose()?
            .unwrap_or_default(),
        None => Vec::new(),
    };
    let now = OffsetDateTime::now_utc();
    let directory_times: Vec<[Option<String>; 3]> = from_directory
        .iter()
        .map(|r| {
            let t = |t: Option<OffsetDateTime>| t.and_then(|t| t.format(&Rfc3339).ok());
            [
                t(r.expires_at),
                t(r.previous.as_ref().map(|(_, until)| *until)),
                t(r.revoked_at),
            ]
        })
        .collect();
    let directory_entries =
        from_directory
            .iter()
            .zip(&directory_times)
            .map(|(r, [expires, previous, revoked])| ClientEntry {
                id: &r.id,
                role: &r.role,
                state: r.state(now),
                scopes: &r.scopes,
                expires_at: expires.as_deref(),
                previous_key_expires_at: previous.as_deref(),
                revoked_at: revoked.as_deref(),
            });
    let entries: Vec<ClientEntry<'_>> = config
        .clients
        .iter()
        .map(|c| ClientEntry {
            id: &c.id,
            role: &c.role,
            state: if c.revoked_at.is_some() {
                "revoked"
            } else if c.previous_key_hash.is_some() {
                "rotating"
            } else {
                "active"
            },
            scopes: &c.scopes,
            expires_at: c.expires_at.as_deref(),
            previous_key_expires_at: c.previous_key_expires_at.as_deref(),
            revoked_at: c.revoked_at.as_deref(),
        })
        .chain(directory_entries)
        .collect();
    if json {
        println!("{}", serde_json::to_string_pretty(&entries)?);
        return Ok(());
    }
    println!(
        "{:<24} {:<12} {:<10} {:<22} SCOPES",
        "ID", "ROLE", "STATE", "EXPIRES"
    );
    for e in entries {
        println!(
            "{:<24} {:<12} {:<10} {:<22} {}",
            e.id,
            e.role,
            e.state,
            e.expires_at.unwrap_or("-"),
            e.scopes.join(" ")
        );
    }
    Ok(())
}

pub(crate) fn revoke(path: &Path, id: &str) -> anyhow::Result<()> {
    if let Some(dir) = super::directory::open(path)?.filter(|d| !d.in_file(id)) {
        dir.revoke(id)?;
        super::audit::record(path, &AuditEvent::new(AuditKind::KeyRevoked).client_id(id));
        eprintln!(
            "revoked the key of `{id}`; every replica refuses it and its tokens within a second"
        );
        return Ok(());
    }
    // Read before the edit: the key hashes the store is told about.
    let pending = store_revocation::prepare(path, id);
    let now = OffsetDateTime::now_utc();
    super::edit_config(path, |f| f.revoke_client(id, now))?;
    super::audit::record(path, &AuditEvent::new(AuditKind::KeyRevoked).client_id(id));
    eprintln!("revoked the key of `{id}`; a running server picks this up within a second");
    store_revocation::publish(pending, now)
}

pub(crate) fn rotate(path: &Path, id: &str, grace: Duration) -> anyhow::Result<()> {
    if let Some(dir) = super::directory::open(path)?.filter(|d| !d.in_file(id)) {
        let key = dir.rotate(id, grace)?;
        let grace_text = humantime::format_duration(grace).to_string();
        super::audit::record(
            path,
            &AuditEvent::new(AuditKind::KeyRotated)
                .client_id(id)
                .reason(&format!("grace {grace_text}")),
        );
        if grace.is_zero() {
            eprintln!("the old key of `{id}` and the tokens issued before now are refused");
        } else {
            eprintln!("the old key of `{id}` stays valid for {grace_text}");
        }
        println!("{key}");
        return Ok(());
    }
    let key = api_key::generate(id)?;
    let hash = KeyHash::sha256_of(&key).to_string();
    // Without a grace the old key is revoked at once: on every replica, through the store.
    let pending = if grace.is_zero() {
        store_revocation::prepare(path, id)
    } else {
        store_revocation::Prepared::Ready(None)
    };
    let now = next_second();
    let rotation = super::edit_config(path, |f| f.rotate_client_key(id, &hash, now, grace))?;
    let grace_text = humantime::format_duration(grace).to_string();
    super::audit::record(
        path,
        &AuditEvent::new(AuditKind::KeyRotated)
            .client_id(id)
            .reason(&format!("grace {grace_text}")),
    );
    match rotation {
        Rotation::Grace(_) => eprintln!(
            "the old key of `{id}` stays valid for {}",
            humantime::format_duration(grace)
        ),
        Rotation::OldKeyDead => eprintln!(
            "the old key of `{id}` and the tokens issued before now are refused (a running server picks this up within a second)"
        ),
    }
    store_revocation::publish(pending, now)?;
    println!("{key}");
    Ok(())
}
