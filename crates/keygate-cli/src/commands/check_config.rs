//! `keygate check-config`

use std::path::Path;

use keygate_server::Config;

pub(crate) fn run(path: &Path) -> anyhow::Result<()> {
    let (config, runtime) = Config::load(path)?;
    println!(
        "{}: ok ({}, {} clients, {} users, listening on {})",
        path.display(),
        runtime.verifier.algorithm(),
        config.clients.len(),
        config.users.len(),
        runtime.listen
    );
    Ok(())
}
