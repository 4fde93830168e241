//! `keygate.toml`: one typed [`Config`], read as defaults → file → `KEYGATE_<SECTION>_<KEY>`
//! environment overrides, with `${VAR}` interpolation, then validated into a [`Runtime`]
//! where every bad value becomes one line naming the setting.
//!
//! Rooms: `model.rs` (the sections, their defaults, serde), `env.rs` (`${VAR}`,
//! `KEYGATE_*` overrides, humane durations; a large file read a batch of `[[clients]]`
//! blocks at a time, found by `blocks.rs`), `principals.rs` (each client and user entry
//! checked and turned into its principal as soon as it is read) and `validate.rs` (every
//! other check, and the [`Runtime`] built from them; the `[server]` checks are in
//! `server.rs`). [`edit`] changes the file for the CLI, keeping comments and order, under
//! [`lock`]; [`keyring`] is the folder of signing keys.

mod blocks;
pub mod edit;
mod env;
pub mod keyring;
pub mod lock;
mod model;
mod principals;
mod server;
mod template;
mod validate;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub(crate) use env::toml_error;
pub use model::{
    ApiKeyConfig, AuditConfig, ClientConfig, Config, CookieConfig, DirectoryConfig, LimitsConfig,
    OnUnavailable, SameSite, ServerConfig, StoreConfig, TokenConfig, UserConfig,
};
pub use template::{FIRST_CLIENT, initial_config, with_directory};
pub use validate::Runtime;

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

impl Config {
    /// Reads and validates `path`, with the process environment for `${VAR}` and overrides.
    /// The clients and users end up in the runtime's directory only: each entry of the file
    /// is dropped as soon as its principal is built.
    pub fn load(path: &Path) -> Result<Runtime, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new(path.display().to_string(), e))?;
        let env: BTreeMap<String, String> = std::env::vars().collect();
        let in_file = |e: ConfigError| {
            ConfigError::new(format!("{}: {}", path.display(), e.setting), e.message)
        };
        let mut principals = principals::Principals::default();
        let mut config =
            Config::parse_with(&text, &env, &mut |entry| principals.add(entry)).map_err(in_file)?;
        drop(text);
        config.base_dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
        config.into_runtime(principals).map_err(in_file)
    }
}

/// Where the CLI and the server look for the configuration when not told.
pub fn default_path() -> PathBuf {
    std::env::var_os("KEYGATE_CONFIG").map_or_else(|| PathBuf::from("keygate.toml"), PathBuf::from)
}
