//! `keygate check-config`

use std::path::Path;

use keygate_server::Config;

pub(crate) fn run(path: &Path) -> anyhow::Result<()> {
    let (config, runtime) = Config::load(path)?;
    // The certificate pair too, as `serve` would load it at start-up.
    if let Some(files) = &runtime.tls {
        keygate_server::tls::Certificates::load(files.clone())?;
    }
    println!(
        "{}: ok ({}, {} clients, {} users, listening on {}{})",
        path.display(),
        runtime.verifier.algorithm(),
        config.clients.len(),
        config.users.len(),
        runtime.listen,
        if runtime.tls.is_some() {
            " with TLS"
        } else {
            ""
        }
    );
    Ok(())
}
