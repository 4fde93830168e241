//! `keygate init`

use std::path::Path;

use anyhow::bail;
use keygate_server::config::{edit::write_atomically, initial_config, with_directory};

pub(crate) fn run(path: &Path, directory: Option<&str>) -> anyhow::Result<()> {
    let url = directory.map(directory_url).transpose()?;
    if path.exists() {
        bail!("{} already exists; not overwriting it", path.display());
    }
    if let Some(url) = &url {
        // The database is reached (and its schema made) before the file is written, so a
        // directory out of reach leaves nothing behind (exit 3).
        super::directory::prepare(path, url)?;
    }
    let key = create_with(path, url.as_deref())?;
    println!(
        "Wrote {} (mode 0600) with a fresh secret and the client `my-service`.",
        path.display()
    );
    if let Some(url) = &url {
        println!(
            "Its [directory] is {url}: `keygate key add` and the admin API create principals there (docs/directory.md)."
        );
    }
    println!("Its API key, shown only this once:");
    println!("{key}");
    Ok(())
}

/// `--directory`: `sqlite` (a `keygate.db` beside the configuration) or a full
/// `sqlite://…` / `postgres://…` URL.
fn directory_url(arg: &str) -> anyhow::Result<String> {
    if arg == "sqlite" {
        return Ok("sqlite://keygate.db".to_owned());
    }
    if ["sqlite://", "postgres://", "postgresql://"]
        .iter()
        .any(|scheme| arg.starts_with(scheme))
    {
        return Ok(arg.to_owned());
    }
    bail!("--directory: `sqlite`, or a sqlite:// or postgres:// URL, not `{arg}`")
}

/// Writes a new configuration at `path` and returns the first client's API key.
pub(crate) fn create(path: &Path) -> anyhow::Result<String> {
    create_with(path, None)
}

fn create_with(path: &Path, directory: Option<&str>) -> anyhow::Result<String> {
    if path.exists() {
        bail!("{} already exists; not overwriting it", path.display());
    }
    let (mut text, key) = initial_config()?;
    if let Some(url) = directory {
        text = with_directory(&text, url);
    }
    write_atomically(path, text.as_bytes())?;
    Ok(key)
}
