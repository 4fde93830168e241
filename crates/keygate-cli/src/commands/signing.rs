//! `keygate keygen`, `keygate signing list|retire`

use std::path::{Path, PathBuf};

use anyhow::Context;
use keygate::token::{SigningAlgorithm, now_unix};
use keygate_server::Config;
use keygate_server::config::keyring;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Folder used when `token.signing_keys` is not set yet.
const DEFAULT_DIR: &str = "keys";

fn read_config(path: &Path) -> anyhow::Result<Config> {
    let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
    toml::from_str(&text).with_context(|| path.display().to_string())
}

fn base_dir(path: &Path) -> PathBuf {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

fn key_dir(path: &Path, config: &Config) -> Option<PathBuf> {
    config
        .token
        .signing_keys
        .as_deref()
        .map(|d| keyring::resolve(&base_dir(path), d))
}

pub(crate) fn keygen(path: &Path, alg: &str) -> anyhow::Result<()> {
    let algorithm: SigningAlgorithm = alg.parse()?;
    let config = read_config(path)?;
    let (dir, set_dir) = match key_dir(path, &config) {
        Some(d) => (d, false),
        None => (keyring::resolve(&base_dir(path), DEFAULT_DIR), true),
    };
    // The key first: the edit is checked with the server's rules, which read the folder.
    let kid = keyring::generate(&dir, algorithm)?;
    if set_dir {
        super::edit_config(path, |f| f.set_token_setting("signing_keys", DEFAULT_DIR))?;
        eprintln!(
            "set token.signing_keys = \"{DEFAULT_DIR}\" in {}",
            path.display()
        );
    }
    if config.token.algorithm != algorithm {
        eprintln!(
            "keygate signs with {} now; set token.algorithm = \"{algorithm}\" to sign with this key",
            config.token.algorithm
        );
    } else {
        eprintln!(
            "published now; signs after token.key_publish_delay ({})",
            humantime::format_duration(config.token.key_publish_delay)
        );
    }
    println!("{kid}");
    Ok(())
}

/// One signing key as `signing list --json` prints it.
#[derive(Debug, serde::Serialize)]
struct SigningEntry {
    kid: String,
    alg: String,
    /// `signing`, `pending` (in its publish delay), `published`, `retired` or `expired`.
    state: &'static str,
    created_at: String,
    retired_at: Option<String>,
}

pub(crate) fn list(path: &Path, json: bool) -> anyhow::Result<()> {
    let config = read_config(path)?;
    let Some(dir) = key_dir(path, &config) else {
        if json {
            // HS* signs with token.secret: no key pairs to list.
            println!("[]");
        } else {
            println!(
                "no signing keys: token.signing_keys is not set (HS* algorithms use token.secret)"
            );
        }
        return Ok(());
    };
    let now = now_unix();
    let delay = config.token.key_publish_delay.as_secs();
    let keep = config.token.ttl.as_secs() + config.token.leeway.as_secs();
    let entries = keyring::list(&dir)?;
    // The key that signs now, per algorithm, by the server's own rule.
    let signers: Vec<String> = entries
        .iter()
        .filter_map(|e| e.alg.parse::<SigningAlgorithm>().ok())
        .filter_map(|alg| keyring::load(&dir, alg, config.token.key_publish_delay).ok())
        .filter_map(|set| set.signer(now).map(|k| k.kid().to_owned()))
        .collect();
    let unix = |t: &str| {
        OffsetDateTime::parse(t, &Rfc3339)
            .ok()
            .and_then(|t| u64::try_from(t.unix_timestamp()).ok())
            .unwrap_or(0)
    };
    let listed: Vec<SigningEntry> = entries
        .into_iter()
        .map(|e| SigningEntry {
            state: match e.retired_at.as_deref().map(unix) {
                Some(r) if r + keep <= now => "expired",
                Some(_) => "retired",
                None if signers.contains(&e.kid) => "signing",
                None if unix(&e.created_at) + delay > now => "pending",
                None => "published",
            },
            kid: e.kid,
            alg: e.alg,
            created_at: e.created_at,
            retired_at: e.retired_at,
        })
        .collect();
    if json {
        println!("{}", serde_json::to_string_pretty(&listed)?);
        return Ok(());
    }
    println!(
        "{:<44} {:<6} {:<10} {:<21} RETIRED",
        "KID", "ALG", "STATE", "CREATED"
    );
    for e in listed {
        println!(
            "{:<44} {:<6} {:<10} {:<21} {}",
            e.kid,
            e.alg,
            e.state,
            e.created_at,
            e.retired_at.as_deref().unwrap_or("-")
        );
    }
    Ok(())
}

pub(crate) fn retire(path: &Path, kid: &str) -> anyhow::Result<()> {
    let config = read_config(path)?;
    let dir = key_dir(path, &config).context("token.signing_keys is not set")?;
    keyring::retire(&dir, kid)?;
    eprintln!(
        "retired `{kid}`: it no longer signs, and stays published for {} so its tokens keep verifying",
        humantime::format_duration(config.token.ttl + config.token.leeway)
    );
    Ok(())
}
