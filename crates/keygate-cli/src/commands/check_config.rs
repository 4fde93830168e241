//! `keygate check-config`

use std::path::Path;

use anyhow::Context;
use keygate::principal::PrincipalKind;
use keygate_server::Config;

pub(crate) fn run(path: &Path) -> anyhow::Result<()> {
    let runtime = Config::load(path)?;
    let users = runtime
        .directory
        .iter()
        .filter(|p| p.kind == PrincipalKind::User);
    let users = users.count();
    // The certificate pair and the audit file too, as `serve` would open them at start-up.
    if let Some(files) = &runtime.tls {
        keygate_server::tls::Certificates::load(files.clone())?;
    }
    keygate_server::audit::check_destination(&runtime.config)
        .with_context(|| path.display().to_string())?;
    println!(
        "{}: ok ({}, {} clients, {} users, listening on {}{})",
        path.display(),
        runtime.verifier.algorithm(),
        runtime.directory.len() - users,
        users,
        runtime.listen,
        if runtime.tls.is_some() {
            " with TLS"
        } else {
            ""
        }
    );
    Ok(())
}
