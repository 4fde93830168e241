//! `keygate user add|remove`

use std::io::IsTerminal;
use std::path::Path;

use keygate::api_key;
use keygate::password::{MAX_PASSWORD, hash_password};
use keygate_server::audit::{AuditEvent, AuditKind};
use keygate_server::config::edit::next_second;

/// ASVS 6.2.1: at least 8 characters.
const MIN_PASSWORD: usize = 8;

pub(crate) fn add(path: &Path, name: &str, role: &str, scopes: &[String]) -> anyhow::Result<()> {
    if !api_key::is_valid_id(name) {
        anyhow::bail!("`{name}` is not a valid username (1-64 of A-Z a-z 0-9 . _ - @)");
    }
    let password = if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password(format!("Password for {name}: "))?;
        let again = rpassword::prompt_password("Again: ")?;
        if first != again {
            anyhow::bail!("the passwords differ");
        }
        first
    } else {
        super::read_stdin()?
    };
    let chars = password.chars().count();
    if chars < MIN_PASSWORD || password.len() > MAX_PASSWORD {
        anyhow::bail!(
            "the password must be {MIN_PASSWORD} characters to {MAX_PASSWORD} bytes long"
        );
    }
    let hash = hash_password(password.as_bytes())?;
    if let Some(dir) = super::directory::open(path)? {
        dir.add_user(name, hash.as_str(), role, scopes)?;
        super::audit::record(path, &AuditEvent::new(AuditKind::UserAdded).username(name));
        eprintln!("added user `{name}`");
        return Ok(());
    }
    let created_at = next_second();
    super::edit_config(path, |f| {
        f.add_user(name, hash.as_str(), role, scopes, created_at)
    })?;
    super::audit::record(path, &AuditEvent::new(AuditKind::UserAdded).username(name));
    eprintln!("added user `{name}`");
    Ok(())
}

pub(crate) fn remove(path: &Path, name: &str) -> anyhow::Result<()> {
    if let Some(dir) = super::directory::open(path)?.filter(|d| !d.in_file(name)) {
        dir.remove_user(name)?;
        super::audit::record(
            path,
            &AuditEvent::new(AuditKind::UserRemoved).username(name),
        );
        eprintln!("removed user `{name}`");
        return Ok(());
    }
    // Read before the edit: the password hash the store is told about.
    let pending = super::store_revocation::prepare(path, name);
    let now = time::OffsetDateTime::now_utc();
    super::edit_config(path, |f| f.remove_user(name))?;
    super::audit::record(
        path,
        &AuditEvent::new(AuditKind::UserRemoved).username(name),
    );
    eprintln!("removed user `{name}`");
    super::store_revocation::publish(pending, now)
}
