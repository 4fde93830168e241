//! `keygate init`

use std::path::Path;

use anyhow::bail;
use keygate_server::config::{edit::write_atomically, initial_config};

pub(crate) fn run(path: &Path) -> anyhow::Result<()> {
    let key = create(path)?;
    println!(
        "Wrote {} (mode 0600) with a fresh secret and the client `my-service`.",
        path.display()
    );
    println!("Its API key, shown only this once:");
    println!("{key}");
    Ok(())
}

/// Writes a new configuration at `path` and returns the first client's API key.
pub(crate) fn create(path: &Path) -> anyhow::Result<String> {
    if path.exists() {
        bail!("{} already exists; not overwriting it", path.display());
    }
    let (text, key) = initial_config()?;
    write_atomically(path, text.as_bytes())?;
    Ok(key)
}
