//! `keygate.toml`: one typed [`Config`], read as defaults → file → `KEYGATE_<SECTION>_<KEY>`
//! environment overrides, with `${VAR}` interpolation. This is the settings layer of
//! `docs/architecture.md`: values and their parsing only; checking them and building what
//! the server runs on from them is [`crate::runtime`]'s.
//!
//! Rooms: `model.rs` (the sections, their defaults, serde), `env.rs` (`${VAR}`,
//! `KEYGATE_*` overrides, humane durations; a large file read a batch of `[[clients]]`
//! blocks at a time, found by `blocks.rs`). [`edit`] changes the file for the CLI, keeping
//! comments and order, under [`lock`]; [`keyring`] is the folder of signing keys.

mod blocks;
pub mod edit;
mod env;
pub mod keyring;
pub mod lock;
mod model;
mod template;

use std::path::PathBuf;

pub(crate) use env::Entry;
pub(crate) use env::toml_error;
pub use model::{
    ApiKeyConfig, AuditConfig, ClientConfig, Config, CookieConfig, DEFAULT_IPV6_PREFIX,
    DirectoryConfig, LimitsConfig, OnUnavailable, SameSite, ServerConfig, StoreConfig, TokenConfig,
    UserConfig,
};
pub use template::{FIRST_CLIENT, initial_config, with_directory};

/// One line naming the setting and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{setting}: {message}")]
pub struct ConfigError {
    /// Dotted path of the setting (`token.secret`, `clients[2].key_hash`), or the file.
    pub setting: String,
    /// What is wrong, in one line.
    pub message: String,
}

impl ConfigError {
    pub(crate) fn new(setting: impl Into<String>, message: impl std::fmt::Display) -> Self {
        Self {
            setting: setting.into(),
            message: message.to_string(),
        }
    }
}

/// Where the CLI and the server look for the configuration when not told.
pub fn default_path() -> PathBuf {
    std::env::var_os("KEYGATE_CONFIG").map_or_else(|| PathBuf::from("keygate.toml"), PathBuf::from)
}
