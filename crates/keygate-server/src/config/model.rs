//! The configuration model: one struct per section of `keygate.toml`, each field with its
//! default, read by serde. Settings with a fixed set of values are enums, parsed once here.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use keygate::token::SigningAlgorithm;
use serde::{Deserialize, Serialize};

use super::env::humane;

/// The whole configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `[server]`
    pub server: ServerConfig,
    /// `[token]`
    pub token: TokenConfig,
    /// `[api_key]`
    pub api_key: ApiKeyConfig,
    /// `[cookie]`
    pub cookie: CookieConfig,
    /// `[limits]`
    pub limits: LimitsConfig,
    /// `[store]`
    pub store: StoreConfig,
    /// `[[clients]]`: machines with API keys.
    pub clients: Vec<ClientConfig>,
    /// `[[users]]`: people with passwords.
    pub users: Vec<UserConfig>,
    /// The folder relative paths (`token.signing_keys`) are resolved against: the
    /// configuration file's folder.
    #[serde(skip)]
    pub base_dir: PathBuf,
}

/// `[server]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on. Defaults to `127.0.0.1:8080`.
    pub listen: String,
    /// Public base URL: the default issuer. Defaults to `http://127.0.0.1:8080`.
    pub public_url: String,
    /// Peers whose `X-Forwarded-For` is believed for the client address (rate limits).
    /// Defaults to none: the socket address is used.
    pub trusted_proxies: Vec<IpAddr>,
    /// How long in-flight requests may take to finish on shutdown. Defaults to `30s`.
    #[serde(with = "humane")]
    pub shutdown_timeout: Duration,
    /// How often the configuration file and signing keyring are checked for changes;
    /// `0s` turns polling off, leaving SIGHUP. Defaults to `1s`.
    #[serde(with = "humane")]
    pub reload_interval: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            public_url: "http://127.0.0.1:8080".into(),
            trusted_proxies: Vec::new(),
            shutdown_timeout: Duration::from_secs(30),
            reload_interval: Duration::from_secs(1),
        }
    }
}

/// `[token]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TokenConfig {
    /// `HS256`, `HS384`, `HS512`, `ES256`, `EdDSA` or `RS256`. Defaults to `HS256`.
    #[serde(with = "algorithm")]
    pub algorithm: SigningAlgorithm,
    /// HMAC secret: at least 32 bytes; `hex:…` or `base64:…` for binary keys.
    pub secret: Option<String>,
    /// Folder of PEM signing keys for public-key algorithms, relative to this file.
    pub signing_keys: Option<String>,
    /// How long a new signing key is published in the JWKS before it signs, so that
    /// verifiers caching the JWKS have it first. Defaults to `10m`.
    #[serde(with = "humane")]
    pub key_publish_delay: Duration,
    /// Roles whose clients may revoke any token (`/revoke`), each 1-128 of
    /// `A-Z a-z 0-9 _ . : / -`. Defaults to `["admin"]`.
    pub admin_roles: Vec<String>,
    /// `iss` of issued tokens. Defaults to `server.public_url`.
    pub issuer: Option<String>,
    /// `aud` of issued tokens, and what verification demands. Defaults to none.
    pub audience: Vec<String>,
    /// Token lifetime. Defaults to `30m`.
    #[serde(with = "humane")]
    pub ttl: Duration,
    /// Clock skew tolerated on `exp`, `nbf`, `iat`. Defaults to `30s`.
    #[serde(with = "humane")]
    pub leeway: Duration,
}

impl Default for TokenConfig {
    fn default() -> Self {
        Self {
            algorithm: SigningAlgorithm::HS256,
            secret: None,
            signing_keys: None,
            key_publish_delay: Duration::from_secs(600),
            admin_roles: vec!["admin".into()],
            issuer: None,
            audience: Vec::new(),
            ttl: Duration::from_secs(30 * 60),
            leeway: Duration::from_secs(30),
        }
    }
}

/// `[api_key]`: where `/login` looks for the key.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiKeyConfig {
    /// Header name. Defaults to `X-API-Key` (the seed used `access_token`).
    pub header: String,
    /// Query parameter name; empty (the default) turns it off: URLs end up in logs.
    pub query: String,
    /// Cookie name; empty (the default) turns it off.
    pub cookie: String,
}

impl Default for ApiKeyConfig {
    fn default() -> Self {
        Self {
            header: "X-API-Key".into(),
            query: String::new(),
            cookie: String::new(),
        }
    }
}

/// `[cookie]`: the token cookie set by `/login`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CookieConfig {
    /// Defaults to `false`.
    pub enabled: bool,
    /// Defaults to `keygate_token`.
    pub name: String,
    /// Defaults to `true`; turn off only for plain-HTTP development.
    pub secure: bool,
    /// `Strict`, `Lax` or `None`. Defaults to `Lax`.
    pub same_site: SameSite,
}

impl Default for CookieConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            name: "keygate_token".into(),
            secure: true,
            same_site: SameSite::Lax,
        }
    }
}

/// `[limits]`: failed-attempt limits.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Failures allowed per client address and per key id within `window`. Defaults to 10.
    pub failed_attempts: u32,
    /// Defaults to `1m`.
    #[serde(with = "humane")]
    pub window: Duration,
    /// Password hashes computed at once. Defaults to the number of CPUs.
    pub hashing_concurrency: usize,
    /// Password checks allowed to wait for a hashing thread before `503`. Defaults to 64.
    pub hashing_queue: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            failed_attempts: 10,
            window: Duration::from_secs(60),
            hashing_concurrency: std::thread::available_parallelism().map_or(2, |n| n.get()),
            hashing_queue: 64,
        }
    }
}

/// `[store]`: shared state for several replicas.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// `redis://…`; unset keeps state in memory.
    pub url: Option<String>,
    /// What a check that needs the store does when it cannot be reached. Defaults to `deny`.
    pub on_unavailable: OnUnavailable,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            url: None,
            on_unavailable: OnUnavailable::Deny,
        }
    }
}

/// `[[clients]]`
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// Client id: the token's `sub` and `client_id`.
    pub id: String,
    /// `sha256:<hex>`, `$argon2id$…` or `$2b$…`.
    pub key_hash: String,
    /// The `role` claim: 1-128 of `A-Z a-z 0-9 _ . : / -`. Defaults to none (empty).
    #[serde(default)]
    pub role: String,
    /// Scopes this client may be granted, each 1-128 of `A-Z a-z 0-9 _ . : / -`.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// RFC 3339; the key stops working then.
    #[serde(default)]
    pub expires_at: Option<String>,
    /// The key replaced by `keygate key rotate`, valid until `previous_key_expires_at`.
    #[serde(default)]
    pub previous_key_hash: Option<String>,
    /// End of the rotation's grace period (RFC 3339).
    #[serde(default)]
    pub previous_key_expires_at: Option<String>,
    /// Set by `keygate key revoke` (RFC 3339): from then on the key is refused, and so is
    /// every token issued to this client.
    #[serde(default)]
    pub revoked_at: Option<String>,
    /// RFC 3339; tokens issued before it are refused by keygate. Written by `keygate key
    /// add` (the creation), and by `keygate key rotate` when the old key dies at once (a
    /// revoked client, or `--grace 0s`). Defaults to none.
    #[serde(default)]
    pub not_before: Option<String>,
}

/// `[[users]]`
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// Username: the token's `sub`.
    pub username: String,
    /// `$argon2id$…` or `$2b$…`.
    pub password_hash: String,
    /// The `role` claim: 1-128 of `A-Z a-z 0-9 _ . : / -`. Defaults to none (empty).
    #[serde(default)]
    pub role: String,
    /// Scopes this user may be granted, each 1-128 of `A-Z a-z 0-9 _ . : / -`.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// RFC 3339; tokens issued before it are refused by keygate. Written by `keygate user
    /// add`, so that the tokens of a removed user of that name stay dead. Defaults to none.
    #[serde(default)]
    pub not_before: Option<String>,
}

/// The sections that `KEYGATE_<SECTION>_<KEY>` can override.
pub(super) const SECTIONS: &[&str] = &["server", "token", "api_key", "cookie", "limits", "store"];

/// `cookie.same_site`: the token cookie's `SameSite` attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SameSite {
    /// Sent on same-site requests only.
    Strict,
    /// Also sent on top-level cross-site navigations.
    Lax,
    /// Sent everywhere; needs `cookie.secure`.
    None,
}

impl SameSite {
    /// The attribute's value.
    pub fn as_str(self) -> &'static str {
        match self {
            SameSite::Strict => "Strict",
            SameSite::Lax => "Lax",
            SameSite::None => "None",
        }
    }
}

/// `store.on_unavailable`: the answer when the store cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnUnavailable {
    /// Refuse (503): fail closed.
    Deny,
    /// Answer from what this replica knows: fail open.
    Allow,
}

/// `token.algorithm` as its name (`HS256`), parsed once with [`SigningAlgorithm`]'s rules.
mod algorithm {
    use keygate::token::SigningAlgorithm;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(a: &SigningAlgorithm, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(a.as_str())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<SigningAlgorithm, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}
