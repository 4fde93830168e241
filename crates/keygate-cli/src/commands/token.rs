//! `keygate token issue|verify|decode`

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use keygate::dangerous::decode_unverified;
use keygate::token::{Grant, now_unix};
use keygate_server::Config;

use super::Refused;

pub(crate) fn issue(
    path: &Path,
    sub: &str,
    scopes: &[String],
    ttl: Option<Duration>,
) -> anyhow::Result<()> {
    let runtime = Config::load(path)?;
    let principal = runtime
        .directory
        .get(sub)
        .with_context(|| format!("no client or user `{sub}` in {}", path.display()))?;
    let granted: Vec<String> = if scopes.is_empty() {
        principal.scopes().to_vec()
    } else {
        for s in scopes {
            if !principal.scopes().contains(s) {
                bail!("`{sub}` may not be granted the scope `{s}`");
            }
        }
        scopes.to_vec()
    };
    let grant = Grant {
        subject: &principal.id,
        client_id: &principal.id,
        role: principal.role(),
        scopes: &granted,
    };
    let ttl = ttl.unwrap_or(runtime.issuer.policy().ttl);
    let issued = runtime.issuer.issue_with_ttl(&grant, now_unix(), ttl)?;
    println!("{}", issued.token);
    Ok(())
}

pub(crate) fn verify(path: &Path, token: Option<String>) -> anyhow::Result<()> {
    let runtime = Config::load(path)?;
    let token = match token {
        Some(t) => t,
        None => super::read_stdin()?,
    };
    let claims = runtime
        .verifier
        .verify(token.trim())
        .map_err(|e| Refused(format!("invalid token: {e}")))?;
    println!("{}", serde_json::to_string_pretty(&claims)?);
    Ok(())
}

pub(crate) fn decode(token: Option<String>) -> anyhow::Result<()> {
    let token = match token {
        Some(t) => t,
        None => super::read_stdin()?,
    };
    let (header, claims) = decode_unverified(&token).map_err(|e| Refused(e.to_string()))?;
    eprintln!("keygate: NOT VERIFIED: this shows what the token says, not whether it is genuine");
    println!(
        "{}",
        serde_json::to_string_pretty(&serde_json::json!({"header": header, "claims": claims}))?
    );
    Ok(())
}
