//! `keygate.toml`: one typed [`Config`], read as defaults → file → `KEYGATE_<SECTION>_<KEY>`
//! environment overrides, with `${VAR}` interpolation, then validated into a [`Runtime`]
//! where every bad value becomes one line naming the setting.
//!
//! [`edit`] changes the file for the CLI, keeping comments and order.

pub mod edit;
pub mod keyring;
mod template;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use keygate::api_key::{self, KeyHash};
use keygate::principal::{Credential, Directory, Principal, PrincipalKind};
use keygate::token::{
    HmacSecret, Issuer, KeySet, SigningAlgorithm, SigningKey, TokenPolicy, Verifier,
};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

pub use template::{FIRST_CLIENT, initial_config};

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
    pub algorithm: String,
    /// HMAC secret: at least 32 bytes; `hex:…` or `base64:…` for binary keys.
    pub secret: Option<String>,
    /// Folder of PEM signing keys for public-key algorithms, relative to this file.
    pub signing_keys: Option<String>,
    /// How long a new signing key is published in the JWKS before it signs, so that
    /// verifiers caching the JWKS have it first. Defaults to `10m`.
    #[serde(with = "humane")]
    pub key_publish_delay: Duration,
    /// Roles whose clients may revoke any token (`/revoke`). Defaults to `["admin"]`.
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
            algorithm: "HS256".into(),
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
    pub same_site: String,
}

impl Default for CookieConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            name: "keygate_token".into(),
            secure: true,
            same_site: "Lax".into(),
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
    /// `deny` (the default) or `allow`, when the store cannot be reached.
    pub on_unavailable: String,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            url: None,
            on_unavailable: "deny".into(),
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
    /// The `role` claim.
    #[serde(default)]
    pub role: String,
    /// Scopes this client may be granted.
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
    /// Set by `keygate key revoke` (RFC 3339).
    #[serde(default)]
    pub revoked_at: Option<String>,
}

/// `[[users]]`
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// Username: the token's `sub`.
    pub username: String,
    /// `$argon2id$…` or `$2b$…`.
    pub password_hash: String,
    /// The `role` claim.
    #[serde(default)]
    pub role: String,
    /// Scopes this user may be granted.
    #[serde(default)]
    pub scopes: Vec<String>,
}

/// The sections that `KEYGATE_<SECTION>_<KEY>` can override.
const SECTIONS: &[&str] = &["server", "token", "api_key", "cookie", "limits", "store"];

impl Config {
    /// Reads and validates `path`, with the process environment for `${VAR}` and overrides.
    pub fn load(path: &Path) -> Result<(Config, Runtime), ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new(path.display().to_string(), e))?;
        let env: BTreeMap<String, String> = std::env::vars().collect();
        let mut config = Config::parse(&text, &env).map_err(|e| {
            ConfigError::new(format!("{}: {}", path.display(), e.setting), e.message)
        })?;
        config.base_dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
        let runtime = config.validate().map_err(|e| {
            ConfigError::new(format!("{}: {}", path.display(), e.setting), e.message)
        })?;
        Ok((config, runtime))
    }

    /// Parses TOML text with `env` as the environment. Does not validate values.
    pub fn parse(text: &str, env: &BTreeMap<String, String>) -> Result<Config, ConfigError> {
        let mut table: toml::Table =
            toml::from_str(text).map_err(|e| ConfigError::new("file", toml_error(&e)))?;
        interpolate_table(&mut table, "", env)?;
        apply_env_overrides(&mut table, env)?;
        let value = toml::Value::Table(table);
        serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            ConfigError::new(
                if path == "." { "file".into() } else { path },
                one_line(&e.into_inner().to_string()),
            )
        })
    }

    /// Checks every value and builds what the server runs on.
    pub fn validate(&self) -> Result<Runtime, ConfigError> {
        let listen: SocketAddr = self.server.listen.parse().map_err(|_| {
            ConfigError::new("server.listen", "expected an address like 127.0.0.1:8080")
        })?;
        if !(self.server.public_url.starts_with("http://")
            || self.server.public_url.starts_with("https://"))
        {
            return Err(ConfigError::new(
                "server.public_url",
                "expected an http:// or https:// URL",
            ));
        }
        let algorithm: SigningAlgorithm = self
            .token
            .algorithm
            .parse()
            .map_err(|e| ConfigError::new("token.algorithm", e))?;
        let issuer = self
            .token
            .issuer
            .clone()
            .unwrap_or_else(|| self.server.public_url.clone());
        if issuer.is_empty() {
            return Err(ConfigError::new("token.issuer", "must not be empty"));
        }
        if self.token.ttl.as_secs() == 0 {
            return Err(ConfigError::new("token.ttl", "must be at least 1s"));
        }
        if self.token.ttl > keygate::token::MAX_LIFETIME {
            return Err(ConfigError::new(
                "token.ttl",
                "must be at most 24h: access tokens are meant to be short-lived",
            ));
        }
        if self.token.leeway > Duration::from_secs(300) {
            return Err(ConfigError::new("token.leeway", "must be at most 5m"));
        }
        let policy = TokenPolicy {
            issuer,
            audience: self.token.audience.clone(),
            ttl: self.token.ttl,
            leeway: self.token.leeway,
        };
        let (keys, keyring_dir) = self.signing_keys(algorithm)?;
        let issuer = Issuer::new(keys.clone(), policy.clone());
        let verifier = Verifier::new(algorithm, keys.clone(), policy);

        if self.api_key.header.is_empty()
            && self.api_key.query.is_empty()
            && self.api_key.cookie.is_empty()
        {
            return Err(ConfigError::new(
                "api_key",
                "header, query and cookie are all empty: no way to present a key",
            ));
        }
        if !self.api_key.header.is_empty()
            && axum::http::HeaderName::from_bytes(self.api_key.header.as_bytes()).is_err()
        {
            return Err(ConfigError::new(
                "api_key.header",
                "is not a valid header name",
            ));
        }
        if !["Strict", "Lax", "None"].contains(&self.cookie.same_site.as_str()) {
            return Err(ConfigError::new(
                "cookie.same_site",
                "expected Strict, Lax or None",
            ));
        }
        if self.cookie.same_site == "None" && !self.cookie.secure {
            return Err(ConfigError::new(
                "cookie.same_site",
                "None requires cookie.secure = true (browsers refuse it otherwise)",
            ));
        }
        if self.cookie.enabled && !is_cookie_name(&self.cookie.name) {
            return Err(ConfigError::new(
                "cookie.name",
                "is not a valid cookie name",
            ));
        }
        if self.limits.failed_attempts == 0 {
            return Err(ConfigError::new(
                "limits.failed_attempts",
                "must be at least 1",
            ));
        }
        if self.limits.window.as_secs() == 0 {
            return Err(ConfigError::new("limits.window", "must be at least 1s"));
        }
        if self.limits.hashing_concurrency == 0 {
            return Err(ConfigError::new(
                "limits.hashing_concurrency",
                "must be at least 1",
            ));
        }
        if !["deny", "allow"].contains(&self.store.on_unavailable.as_str()) {
            return Err(ConfigError::new(
                "store.on_unavailable",
                "expected deny or allow",
            ));
        }
        if let Some(url) = &self.store.url {
            if !url.starts_with("redis://") && !url.starts_with("unix://") {
                return Err(ConfigError::new(
                    "store.url",
                    format!("`{}` is not a redis:// URL", redact_url(url)),
                ));
            }
            crate::store::RedisStore::open(url).map_err(|e| {
                ConfigError::new("store.url", format!("`{}`: {e}", redact_url(url)))
            })?;
        }

        let mut principals = Vec::with_capacity(self.clients.len() + self.users.len());
        for (i, c) in self.clients.iter().enumerate() {
            principals.push(client_principal(i, c)?);
        }
        for (i, u) in self.users.iter().enumerate() {
            principals.push(user_principal(i, u)?);
        }
        let directory = Directory::new(principals).map_err(|e| {
            ConfigError::new(
                "clients/users",
                format!("{e}; ids must be unique across clients and users"),
            )
        })?;

        Ok(Runtime {
            config: self.clone(),
            listen,
            api_key_sources: keygate::axum::ApiKeySources {
                header: self.api_key.header.clone(),
                query: self.api_key.query.clone(),
                cookie: self.api_key.cookie.clone(),
            },
            client_key_header: keygate::axum::ApiKeySources {
                header: self.api_key.header.clone(),
                query: String::new(),
                cookie: String::new(),
            },
            directory,
            keys,
            keyring_dir,
            issuer,
            verifier,
        })
    }

    /// The key set for `algorithm`: the secret for HS*, the key folder otherwise.
    fn signing_keys(
        &self,
        algorithm: SigningAlgorithm,
    ) -> Result<(Arc<KeySet>, Option<PathBuf>), ConfigError> {
        if algorithm.is_hmac() {
            let secret_text = self.token.secret.as_deref().ok_or_else(|| {
                ConfigError::new(
                    "token.secret",
                    "is required for HS* algorithms (generate one with `keygate secret`)",
                )
            })?;
            let secret: HmacSecret = secret_text
                .parse()
                .map_err(|e| ConfigError::new("token.secret", e))?;
            let key = SigningKey::hmac(algorithm, &secret)
                .map_err(|e| ConfigError::new("token.secret", e))?;
            return Ok((Arc::new(KeySet::single(key)), None));
        }
        let dir = self.token.signing_keys.as_deref().ok_or_else(|| {
            ConfigError::new(
                "token.signing_keys",
                format!("{algorithm} needs a key folder; create a key with `keygate keygen --alg {algorithm}`"),
            )
        })?;
        let dir = keyring::resolve(&self.base_dir, dir);
        let keys = keyring::load(&dir, algorithm, self.token.key_publish_delay)?;
        Ok((keys, Some(dir)))
    }
}

/// What the server runs on: the validated configuration and what was built from it.
#[derive(Debug)]
pub struct Runtime {
    /// The configuration as read.
    pub config: Config,
    /// `server.listen`, parsed.
    pub listen: SocketAddr,
    /// Where `/login` reads API keys (`[api_key]`).
    pub api_key_sources: keygate::axum::ApiKeySources,
    /// Where client authentication reads an API key: the header only (query and cookie
    /// keys are for `/login`).
    pub client_key_header: keygate::axum::ApiKeySources,
    /// Clients and users.
    pub directory: Directory,
    /// Signing and verifying keys, shared by the issuer and the verifier.
    pub keys: Arc<KeySet>,
    /// The signing-key folder, for public-key algorithms (watched for changes).
    pub keyring_dir: Option<PathBuf>,
    /// Signs tokens.
    pub issuer: Issuer,
    /// Verifies tokens.
    pub verifier: Verifier,
}

fn client_principal(i: usize, c: &ClientConfig) -> Result<Principal, ConfigError> {
    let at = |field: &str| format!("clients[{i}].{field}");
    if !api_key::is_valid_id(&c.id) {
        return Err(ConfigError::new(
            at("id"),
            format!("`{}` is not 1-64 of A-Z a-z 0-9 . _ - @", c.id),
        ));
    }
    let hash: KeyHash = c
        .key_hash
        .parse()
        .map_err(|e| ConfigError::new(at("key_hash"), e))?;
    let expires_at = parse_time(c.expires_at.as_deref(), &at("expires_at"))?;
    let mut credentials = vec![Credential {
        hash,
        valid_until: expires_at,
    }];
    match (&c.previous_key_hash, &c.previous_key_expires_at) {
        (Some(prev), Some(until)) => {
            let hash: KeyHash = prev
                .parse()
                .map_err(|e| ConfigError::new(at("previous_key_hash"), e))?;
            let until = parse_time(Some(until), &at("previous_key_expires_at"))?;
            let valid_until = match (until, expires_at) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            credentials.push(Credential { hash, valid_until });
        }
        (None, None) => {}
        _ => {
            return Err(ConfigError::new(
                at("previous_key_hash"),
                "previous_key_hash and previous_key_expires_at go together",
            ));
        }
    }
    Ok(Principal {
        id: c.id.clone(),
        kind: PrincipalKind::Client,
        role: c.role.clone(),
        scopes: check_scopes(&c.scopes, &at("scopes"))?,
        credentials,
        revoked_at: parse_time(c.revoked_at.as_deref(), &at("revoked_at"))?,
    })
}

fn user_principal(i: usize, u: &UserConfig) -> Result<Principal, ConfigError> {
    let at = |field: &str| format!("users[{i}].{field}");
    if !api_key::is_valid_id(&u.username) {
        return Err(ConfigError::new(
            at("username"),
            format!("`{}` is not 1-64 of A-Z a-z 0-9 . _ - @", u.username),
        ));
    }
    let hash: KeyHash = u
        .password_hash
        .parse()
        .map_err(|e| ConfigError::new(at("password_hash"), e))?;
    if matches!(hash, KeyHash::Sha256(_)) {
        return Err(ConfigError::new(
            at("password_hash"),
            "passwords need a slow hash ($argon2id$… or $2b$…); create one with `keygate hash`",
        ));
    }
    Ok(Principal {
        id: u.username.clone(),
        kind: PrincipalKind::User,
        role: u.role.clone(),
        scopes: check_scopes(&u.scopes, &at("scopes"))?,
        credentials: vec![Credential {
            hash,
            valid_until: None,
        }],
        revoked_at: None,
    })
}

/// RFC 6749 §3.3 scope tokens: printable ASCII without space, `"` or `\`.
fn check_scopes(scopes: &[String], setting: &str) -> Result<Vec<String>, ConfigError> {
    for s in scopes {
        let ok = !s.is_empty()
            && s.bytes()
                .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b));
        if !ok {
            return Err(ConfigError::new(
                setting,
                format!("`{s}` is not a valid scope"),
            ));
        }
    }
    Ok(scopes.to_vec())
}

fn parse_time(value: Option<&str>, setting: &str) -> Result<Option<OffsetDateTime>, ConfigError> {
    value
        .map(|v| {
            OffsetDateTime::parse(v, &Rfc3339).map_err(|_| {
                ConfigError::new(
                    setting,
                    format!("`{v}` is not an RFC 3339 time like 2027-06-30T00:00:00Z"),
                )
            })
        })
        .transpose()
}

fn is_cookie_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// A URL without its password, for messages.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://[redacted]@{}", &url[..s], &url[at + 1..]),
        _ => url.to_owned(),
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `18 | secret = "…"`: a line of the file quoted in a parse error.
fn is_source_line(line: &str) -> bool {
    let digits = line.bytes().take_while(u8::is_ascii_digit).count();
    digits > 0 && line[digits..].trim_start().starts_with('|')
}

/// A TOML parse error in one line, **without** the quoted source line the parser's message
/// carries: that line may hold the secret (`secret = "…"`), and errors are logged.
pub(crate) fn toml_error(e: &impl std::fmt::Display) -> String {
    let text = e.to_string();
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('|') && !is_source_line(l))
        .collect();
    one_line(&lines.join(": "))
}

/// Replaces `${VAR}` in every string value; an unset variable is an error naming the
/// setting. `$${` writes a literal `${`.
fn interpolate_table(
    table: &mut toml::Table,
    prefix: &str,
    env: &BTreeMap<String, String>,
) -> Result<(), ConfigError> {
    for (key, value) in table.iter_mut() {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        interpolate_value(value, &path, env)?;
    }
    Ok(())
}

fn interpolate_value(
    value: &mut toml::Value,
    path: &str,
    env: &BTreeMap<String, String>,
) -> Result<(), ConfigError> {
    match value {
        toml::Value::String(s) => *s = interpolate(s, path, env)?,
        toml::Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                interpolate_value(item, &format!("{path}[{i}]"), env)?;
            }
        }
        toml::Value::Table(t) => interpolate_table(t, path, env)?,
        _ => {}
    }
    Ok(())
}

fn interpolate(s: &str, path: &str, env: &BTreeMap<String, String>) -> Result<String, ConfigError> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos..];
        if let Some(lit) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = lit;
        } else if let Some(var) = after.strip_prefix("${") {
            let end = var
                .find('}')
                .ok_or_else(|| ConfigError::new(path, "`${` without a closing `}`"))?;
            let name = &var[..end];
            let value = env.get(name).ok_or_else(|| {
                ConfigError::new(path, format!("environment variable {name} is not set"))
            })?;
            out.push_str(value);
            rest = &var[end + 1..];
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// `KEYGATE_TOKEN_TTL=15m` sets `[token] ttl`. Values of string settings are taken as
/// they are; others (numbers, booleans, lists) are read as TOML literals.
fn apply_env_overrides(
    table: &mut toml::Table,
    env: &BTreeMap<String, String>,
) -> Result<(), ConfigError> {
    let defaults =
        toml::Table::try_from(Config::default()).map_err(|e| ConfigError::new("defaults", e))?;
    // Longest section names first, so `KEYGATE_API_KEY_HEADER` is not read as `[api]`.
    let mut sections: Vec<&str> = SECTIONS.to_vec();
    sections.sort_by_key(|s| std::cmp::Reverse(s.len()));
    for (name, raw) in env {
        let Some(rest) = name.strip_prefix("KEYGATE_") else {
            continue;
        };
        let Some((section, key)) = sections.iter().find_map(|s| {
            rest.strip_prefix(&s.to_ascii_uppercase())
                .and_then(|k| k.strip_prefix('_'))
                .map(|k| (*s, k.to_ascii_lowercase()))
        }) else {
            continue;
        };
        let setting = format!("{section}.{key} (from {name})");
        let default = defaults.get(section).and_then(|s| s.get(&key));
        let value = match default {
            Some(toml::Value::String(_)) | None => toml::Value::String(raw.clone()),
            Some(_) => toml::from_str::<toml::Table>(&format!("v = {raw}"))
                .ok()
                .and_then(|mut t| t.remove("v"))
                .ok_or_else(|| {
                    ConfigError::new(&setting, format!("`{raw}` is not a valid value"))
                })?,
        };
        let section_table = table
            .entry(section)
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        match section_table {
            toml::Value::Table(t) => {
                t.insert(key, value);
            }
            _ => return Err(ConfigError::new(section, "must be a table")),
        }
    }
    Ok(())
}

/// Durations as humane strings: `30m`, `90d`, `1h 30m`.
mod humane {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(|_| {
            serde::de::Error::custom(format!(
                "`{text}` is not a duration like 30s, 15m, 1h or 90d"
            ))
        })
    }
}

/// Where the CLI and the server look for the configuration when not told.
pub fn default_path() -> PathBuf {
    std::env::var_os("KEYGATE_CONFIG").map_or_else(|| PathBuf::from("keygate.toml"), PathBuf::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "4f1c0f9a7d6e8b2c3a5d7e9f1b3c5d7e9a1b3c5d7e9f1a2b3c4d5e6f7a8b9c0d";

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn minimal() -> String {
        format!("[token]\nsecret = \"{SECRET}\"\n")
    }

    fn check(text: &str) -> Result<Runtime, ConfigError> {
        Config::parse(text, &BTreeMap::new())?.validate()
    }

    #[test]
    fn minimal_config_takes_the_documented_defaults() {
        let rt = check(&minimal()).unwrap();
        let c = &rt.config;
        assert_eq!(c.server.listen, "127.0.0.1:8080");
        assert_eq!(c.token.ttl, Duration::from_secs(1800));
        assert_eq!(c.token.leeway, Duration::from_secs(30));
        assert_eq!(c.api_key.header, "X-API-Key");
        assert!(c.api_key.query.is_empty());
        assert!(!c.cookie.enabled);
        assert_eq!(c.limits.failed_attempts, 10);
        assert_eq!(c.store.on_unavailable, "deny");
        assert_eq!(rt.verifier.policy().issuer, "http://127.0.0.1:8080");
    }

    #[test]
    fn the_initial_config_is_valid() {
        let (text, key) = initial_config().unwrap();
        let rt = check(&text).unwrap();
        assert_eq!(rt.directory.len(), 1);
        assert!(key.starts_with("kg_"));
    }

    #[test]
    fn variables_are_interpolated() {
        let text = "[token]\nsecret = \"${MY_SECRET}\"\nissuer = \"https://${HOST}/x$${y}\"\n";
        let c = Config::parse(text, &env(&[("MY_SECRET", SECRET), ("HOST", "a.test")])).unwrap();
        assert_eq!(c.token.secret.as_deref(), Some(SECRET));
        assert_eq!(c.token.issuer.as_deref(), Some("https://a.test/x${y}"));
        let err = Config::parse(text, &env(&[("HOST", "a.test")])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "token.secret: environment variable MY_SECRET is not set"
        );
    }

    #[test]
    fn environment_overrides_every_section() {
        let c = Config::parse(
            &minimal(),
            &env(&[
                ("KEYGATE_TOKEN_TTL", "15m"),
                ("KEYGATE_API_KEY_HEADER", "access_token"),
                ("KEYGATE_LIMITS_FAILED_ATTEMPTS", "3"),
                ("KEYGATE_COOKIE_ENABLED", "true"),
                ("KEYGATE_TOKEN_AUDIENCE", "[\"orders-api\"]"),
                ("KEYGATE_SERVER_LISTEN", "127.0.0.1:0"),
                ("KEYGATE_CONFIG", "ignored.toml"),
            ]),
        )
        .unwrap();
        assert_eq!(c.token.ttl, Duration::from_secs(900));
        assert_eq!(c.api_key.header, "access_token");
        assert_eq!(c.limits.failed_attempts, 3);
        assert!(c.cookie.enabled);
        assert_eq!(c.token.audience, vec!["orders-api".to_owned()]);
        assert_eq!(c.server.listen, "127.0.0.1:0");
        let err =
            Config::parse(&minimal(), &env(&[("KEYGATE_LIMITS_WINDOW", "soon")])).unwrap_err();
        assert!(err.to_string().starts_with("limits.window"), "{err}");
        let err = Config::parse(&minimal(), &env(&[("KEYGATE_TOKEN_NOPE", "1")])).unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
    }

    #[test]
    fn bad_values_name_their_setting() {
        let cases: &[(&str, &str)] = &[
            ("[token]\nsecret = \"short\"\n", "token.secret"),
            (
                "[token]\nsecret = \"09d25e094faa6ca2556c818166b7a9563b93f7099f6f0f4caa6cf63b88e8d3e7\"\n",
                "token.secret",
            ),
            (
                "[token]\nsecret = \"hex:09d25e094faa6ca2556c818166b7a9563b93f7099f6f0f4caa6cf63b88e8d3e7\"\n",
                "token.secret",
            ),
            ("[token]\n", "token.secret"),
            (
                "[token]\nalgorithm = \"none\"\nsecret = \"x\"\n",
                "token.algorithm",
            ),
            (
                "[token]\nalgorithm = \"hs256\"\nsecret = \"x\"\n",
                "token.algorithm",
            ),
            (&format!("{}ttl = \"forever\"\n", minimal()), "token.ttl"),
            (&format!("{}ttl = \"0s\"\n", minimal()), "token.ttl"),
            (&format!("{}colour = \"blue\"\n", minimal()), "token"),
            (
                &format!("{}[server]\nlisten = \"nowhere\"\n", minimal()),
                "server.listen",
            ),
            (
                &format!("{}[cookie]\nsame_site = \"lax\"\n", minimal()),
                "cookie.same_site",
            ),
            (
                &format!("{}[store]\non_unavailable = \"maybe\"\n", minimal()),
                "store.on_unavailable",
            ),
            (
                &format!("{}[limits]\nfailed_attempts = 0\n", minimal()),
                "limits.failed_attempts",
            ),
            (
                &format!(
                    "{}[[clients]]\nid = \"a\"\nkey_hash = \"sha256:00\"\n",
                    minimal()
                ),
                "clients[0].key_hash",
            ),
            (
                &format!(
                    "{}[[clients]]\nid = \"a b\"\nkey_hash = \"sha256:{}\"\n",
                    minimal(),
                    "0".repeat(64)
                ),
                "clients[0].id",
            ),
            (
                &format!(
                    "{}[[users]]\nusername = \"bob\"\npassword_hash = \"$argon2id$v=19$m=1,t=1,p=1$c2FsdHNhbHQ$aGFzaA\"\n",
                    minimal()
                ),
                "users[0].password_hash",
            ),
            (
                &format!(
                    "{}[[clients]]\nid = \"a\"\nkey_hash = \"sha256:{z}\"\n[[users]]\nusername = \"a\"\npassword_hash = \"$2b$12$EixZaYVK1fsbw1ZfbX3OXePaWxn96p36WQoeG6Lruj3vjPGga31lW\"\n",
                    minimal(),
                    z = "0".repeat(64)
                ),
                "clients/users",
            ),
            ("not toml at all [", "file"),
        ];
        for (text, setting) in cases {
            let err = check(text).unwrap_err();
            assert!(
                err.to_string().starts_with(setting),
                "expected {setting}, got: {err}"
            );
            assert!(!err.to_string().contains('\n'), "one line: {err}");
        }
    }

    #[test]
    fn parse_errors_never_quote_the_secret() {
        let text = format!("[token]\nsecret = \"{SECRET}\u{0}\"\n");
        let err = check(&text).unwrap_err().to_string();
        assert!(err.starts_with("file: TOML parse error at line 2"), "{err}");
        assert!(!err.contains(&SECRET[..16]), "{err}");
    }

    #[test]
    fn duplicate_client_ids_are_refused() {
        let z = "0".repeat(64);
        let text = format!(
            "{}[[clients]]\nid = \"a\"\nkey_hash = \"sha256:{z}\"\n[[clients]]\nid = \"a\"\nkey_hash = \"sha256:{z}\"\n",
            minimal()
        );
        let err = check(&text).unwrap_err();
        assert_eq!(
            err.to_string(),
            "clients/users: two principals have the id `a`; ids must be unique across clients and users"
        );
    }

    #[test]
    fn store_url_is_checked_without_echoing_its_password() {
        let ok = format!(
            "{}[store]\nurl = \"redis://:hunter2@127.0.0.1:6379/0\"\n",
            minimal()
        );
        check(&ok).unwrap();
        let bad = format!(
            "{}[store]\nurl = \"http://:hunter2@127.0.0.1:6379\"\n",
            minimal()
        );
        let err = check(&bad).unwrap_err().to_string();
        assert!(err.starts_with("store.url"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }
}
