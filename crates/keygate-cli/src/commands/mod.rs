//! One file per command; each calls library code and reports.

mod audit;
mod call;
mod check_config;
mod completions;
mod directory;
mod hash;
mod healthcheck;
mod init;
mod key;
mod secret;
mod serve;
mod signing;
mod store_revocation;
mod token;
mod user;

use std::io::Read;
use std::path::Path;

use anyhow::Context;
use keygate_server::config::ConfigError;
use keygate_server::config::edit::{ConfigFile, edit};

use crate::cli::{
    AuditCommand, Command, DirectoryCommand, KeyCommand, SigningCommand, TokenCommand, UserCommand,
};

/// A refused credential or invalid token (or an untrusted certificate): exit code 1.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Refused(pub String);

/// keygate or the called API failed or could not be reached: exit code 3. No verdict on
/// the credential; worth retrying later.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Unavailable(pub String);

pub(crate) fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Init { directory, config } => init::run(&config.path(), directory.as_deref()),
        Command::Serve(c) => serve::run(c.path()),
        Command::Key(KeyCommand::Add {
            id,
            role,
            scopes,
            expires,
            config,
        }) => key::add(&config.path(), &id, &role, &scopes, expires),
        Command::Key(KeyCommand::List(l)) => key::list(&l.config.path(), l.json),
        Command::Key(KeyCommand::Revoke { id, config }) => key::revoke(&config.path(), &id),
        Command::Key(KeyCommand::Rotate { id, grace, config }) => {
            key::rotate(&config.path(), &id, grace)
        }
        Command::User(UserCommand::Add {
            name,
            role,
            scopes,
            config,
        }) => user::add(&config.path(), &name, &role, &scopes),
        Command::User(UserCommand::Remove { name, config }) => user::remove(&config.path(), &name),
        Command::Directory(DirectoryCommand::Import(c)) => directory::import(&c.path()),
        Command::Directory(DirectoryCommand::Export {
            format,
            output,
            config,
        }) => directory::export(&config.path(), &format, output.as_deref()),
        Command::Secret => secret::run(),
        Command::Hash => hash::run(),
        Command::Token(TokenCommand::Issue {
            sub,
            scopes,
            ttl,
            config,
        }) => token::issue(&config.path(), &sub, &scopes, ttl),
        Command::Token(TokenCommand::Verify { token, config }) => {
            token::verify(&config.path(), token)
        }
        Command::Token(TokenCommand::Decode { token }) => token::decode(token),
        Command::Keygen { alg, config } => signing::keygen(&config.path(), &alg),
        Command::Signing(SigningCommand::List(l)) => signing::list(&l.config.path(), l.json),
        Command::Signing(SigningCommand::Retire { kid, config }) => {
            signing::retire(&config.path(), &kid)
        }
        Command::Login {
            url,
            api_key,
            key_header,
            cacert,
        } => call::login(&url, api_key, key_header, cacert.as_deref()),
        Command::Call(args) => call::call(&args),
        Command::CheckConfig(c) => check_config::run(&c.path()),
        Command::Audit(AuditCommand::Tail {
            follow,
            event,
            principal,
            lines,
            config,
        }) => audit::tail(
            &config.path(),
            &audit::Filter { event, principal },
            lines,
            follow,
        ),
        Command::Healthcheck { url, timeout } => healthcheck::run(&url, timeout),
        Command::Completions { shell } => {
            completions::run(shell);
            Ok(())
        }
    }
}

/// Edits the configuration under its lock, checked with the server's rules (see
/// [`edit`]); says on stderr when `${VAR}`s missing here left part of the file unchecked.
fn edit_config<T>(
    path: &Path,
    change: impl FnOnce(&mut ConfigFile) -> Result<T, ConfigError>,
) -> anyhow::Result<T> {
    let done = edit(path, change)?;
    if !done.unset_variables.is_empty() {
        eprintln!(
            "keygate: {} not set here: checked [[clients]] and [[users]] only",
            done.unset_variables.join(", ")
        );
    }
    Ok(done.value)
}

/// All of stdin, without one trailing newline.
fn read_stdin() -> anyhow::Result<String> {
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .context("reading stdin")?;
    let trimmed = text
        .strip_suffix("\r\n")
        .or_else(|| text.strip_suffix('\n'))
        .unwrap_or(&text);
    Ok(trimmed.to_owned())
}
