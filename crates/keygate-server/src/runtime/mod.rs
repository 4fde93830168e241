//! What the server runs on: every value of a [`Config`] checked, and the [`Runtime`] built
//! from them (keys, verifier, directory, quota table, TLS files). A bad value becomes one
//! [`ConfigError`] naming its setting. `principals.rs` turns each client and user entry
//! into its principal as soon as it is read; `server.rs` checks `[server]`.

mod deployment_key;
mod lookup;
mod principals;
mod server;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use keygate::principal::Directory;
use keygate::token::{
    Grant, HmacSecret, Issuer, KeySet, SigningAlgorithm, SigningKey, TokenPolicy, Verifier,
};

use crate::config::{Config, ConfigError, LimitsConfig, SameSite, keyring};
use crate::quota::QuotaTable;
use crate::store::{PendingRevocation, PendingRevocationError};
use crate::tls::TlsFiles;
pub(crate) use deployment_key::DeploymentKey;
use principals::{Principals, check_name};

/// The longest failed-attempt window.
const MAX_WINDOW: Duration = Duration::from_secs(24 * 3600);
/// The most password hashes computed at once.
const MAX_HASHING: usize = 1024;
/// The most password checks waiting for a hashing thread.
const MAX_HASHING_QUEUE: usize = 100_000;

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
        let mut principals = Principals::default();
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

impl Config {
    /// Checks every value and builds what the server runs on.
    pub fn validate(&self) -> Result<Runtime, ConfigError> {
        let mut principals = Principals::default();
        for (i, c) in self.clients.iter().enumerate() {
            principals.add_client(i, c);
        }
        for (i, u) in self.users.iter().enumerate() {
            principals.add_user(i, u);
        }
        self.settings().into_runtime(principals)
    }

    /// Everything but the clients and users (which live on in the [`Directory`]).
    fn settings(&self) -> Config {
        Config {
            server: self.server.clone(),
            token: self.token.clone(),
            api_key: self.api_key.clone(),
            cookie: self.cookie.clone(),
            limits: self.limits.clone(),
            store: self.store.clone(),
            audit: self.audit.clone(),
            telemetry: self.telemetry.clone(),
            directory: self.directory.clone(),
            clients: Vec::new(),
            users: Vec::new(),
            base_dir: self.base_dir.clone(),
        }
    }

    /// The runtime of these settings (`self`, whose own clients and users are ignored)
    /// and `principals`. The settings are checked first: their errors come before those
    /// of the clients and users.
    fn into_runtime(self, principals: Principals) -> Result<Runtime, ConfigError> {
        let server = self.check_server()?;
        let (issuer, verifier, keys, keyring_dir) = self.token_keys(&server.public_url)?;
        self.check_api_key()?;
        self.check_cookie()?;
        self.check_limits()?;
        self.check_store()?;
        self.check_telemetry()?;
        crate::directory::Location::of(&self.directory, &self.base_dir)?;
        for (i, role) in self.token.admin_roles.iter().enumerate() {
            check_name(role, "role", || format!("token.admin_roles[{i}]"))?;
        }
        let deployment_key = self.deployment_key(keyring_dir.as_deref())?;
        let (directory, quotas) = principals.finish(&self.limits)?;
        self.check_public_client_id(&directory)?;
        let directory = directory.with_stand_in_key(deployment_key.stand_in_key());
        check_tokens_verify(&issuer, &verifier, &directory)?;
        Ok(Runtime {
            listen: server.listen,
            public_url: server.public_url,
            metrics_listen: server.metrics_listen,
            admin_listen: server.admin_listen,
            tls: server.tls,
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
            // Clients and users live on in `directory` alone: a second copy of a million
            // entries would more than double the memory, for nothing.
            config: self,
            directory,
            keys,
            keyring_dir,
            issuer,
            verifier,
            quotas,
            deployment_key,
            verified: crate::verified::VerifiedTokens::default(),
            live: None,
        })
    }

    /// The deployment's own key (see [`DeploymentKey`]), from the HMAC secret, or, for
    /// public-key algorithms, from the earliest-created key of the folder: the same for
    /// every replica of one configuration and across reloads (it changes only when that
    /// key is removed from the folder, long after it was retired).
    fn deployment_key(
        &self,
        keyring_dir: Option<&std::path::Path>,
    ) -> Result<DeploymentKey, ConfigError> {
        if let Some(dir) = keyring_dir {
            // Only keys of the configured algorithm: their files were just read by
            // `keyring::load`, so they exist.
            let alg = self.token.algorithm.as_str();
            let mut entries = keyring::list(dir)?;
            entries.retain(|e| e.alg == alg);
            entries.sort_by(|a, b| (&a.created_at, &a.kid).cmp(&(&b.created_at, &b.kid)));
            let first = entries.first().ok_or_else(|| {
                ConfigError::new("token.signing_keys", "the key folder lists no key")
            })?;
            let pem = std::fs::read(dir.join(&first.file)).map_err(|e| {
                ConfigError::new("token.signing_keys", format!("{}: {e}", first.file))
            })?;
            return Ok(DeploymentKey::from_secret(&pem));
        }
        let secret: HmacSecret = self
            .token
            .secret
            .as_deref()
            .unwrap_or_default()
            .parse()
            .map_err(|e| ConfigError::new("token.secret", keygate::error::chain(&e)))?;
        Ok(DeploymentKey::from_secret(secret.as_bytes()))
    }

    /// The token policy, the signing keys, and the issuer and verifier sharing them.
    fn token_keys(
        &self,
        public_url: &str,
    ) -> Result<(Issuer, Verifier, Arc<KeySet>, Option<PathBuf>), ConfigError> {
        let issuer = self
            .token
            .issuer
            .clone()
            .unwrap_or_else(|| public_url.to_owned());
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
        let algorithm = self.token.algorithm;
        let (keys, keyring_dir) = self.signing_keys(algorithm)?;
        let issuer = Issuer::new(keys.clone(), policy.clone());
        let verifier = Verifier::new(algorithm, keys.clone(), policy);
        Ok((issuer, verifier, keys, keyring_dir))
    }

    fn check_telemetry(&self) -> Result<(), ConfigError> {
        let t = &self.telemetry;
        if let Some(endpoint) = &t.otlp_endpoint
            && !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
        {
            return Err(ConfigError::new(
                "telemetry.otlp_endpoint",
                "must be an http:// or https:// URL, like http://127.0.0.1:4318",
            ));
        }
        if !(0.0..=1.0).contains(&t.sample_ratio) {
            return Err(ConfigError::new(
                "telemetry.sample_ratio",
                "must be between 0 and 1",
            ));
        }
        if t.service_name.is_empty() {
            return Err(ConfigError::new(
                "telemetry.service_name",
                "must not be empty",
            ));
        }
        Ok(())
    }

    /// `token.public_client_id` names the requester of password-grant tokens sent without
    /// client authentication: a configured principal of that id would own them (revoke them,
    /// be charged for them), so none may have it.
    fn check_public_client_id(
        &self,
        directory: &keygate::principal::Directory,
    ) -> Result<(), ConfigError> {
        let id = &self.token.public_client_id;
        if !keygate::api_key::is_valid_id(id) {
            return Err(ConfigError::new(
                "token.public_client_id",
                "must be 1-64 of A-Z a-z 0-9 . _ - @",
            ));
        }
        if directory.get(id).is_some() {
            return Err(ConfigError::new(
                "token.public_client_id",
                format!(
                    "`{id}` is also the id of a configured client or user: pick another for one of them"
                ),
            ));
        }
        Ok(())
    }

    fn check_api_key(&self) -> Result<(), ConfigError> {
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
        Ok(())
    }

    fn check_cookie(&self) -> Result<(), ConfigError> {
        if self.cookie.same_site == SameSite::None && !self.cookie.secure {
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
        Ok(())
    }

    fn check_limits(&self) -> Result<(), ConfigError> {
        if self.limits.failed_attempts == 0 {
            return Err(ConfigError::new(
                "limits.failed_attempts",
                "must be at least 1",
            ));
        }
        // Upper bounds too: a window of 2^64 seconds would overflow the clock arithmetic of
        // the counters, and a pool of a million hashing
        // threads is no bound at all.
        if self.limits.window.as_secs() == 0 || self.limits.window > MAX_WINDOW {
            return Err(ConfigError::new(
                "limits.window",
                "must be between 1s and 1d",
            ));
        }
        if !(1..=MAX_HASHING).contains(&self.limits.hashing_concurrency) {
            return Err(ConfigError::new(
                "limits.hashing_concurrency",
                format!("must be between 1 and {MAX_HASHING}"),
            ));
        }
        if !(1..=128).contains(&self.limits.ipv6_prefix) {
            return Err(ConfigError::new(
                "limits.ipv6_prefix",
                "must be between 1 and 128 (bits of an IPv6 address that name one sender)",
            ));
        }
        if self.limits.hashing_queue > MAX_HASHING_QUEUE {
            return Err(ConfigError::new(
                "limits.hashing_queue",
                format!("must be at most {MAX_HASHING_QUEUE}"),
            ));
        }
        if !(1..=keygate::revocation::MAX_REVOKED).contains(&self.limits.revocations_per_principal)
        {
            return Err(ConfigError::new(
                "limits.revocations_per_principal",
                format!("must be between 1 and {}", keygate::revocation::MAX_REVOKED),
            ));
        }
        Ok(())
    }

    fn check_store(&self) -> Result<(), ConfigError> {
        let store = &self.store;
        let kinds = [
            store.url.is_some(),
            !store.sentinels.is_empty(),
            !store.cluster.is_empty(),
        ];
        if kinds.iter().filter(|k| **k).count() > 1 {
            return Err(ConfigError::new(
                "store",
                "set one of store.url, store.sentinels or store.cluster, not several",
            ));
        }
        let named = store
            .url
            .iter()
            .map(|u| ("store.url", u))
            .chain(store.sentinels.iter().map(|u| ("store.sentinels", u)))
            .chain(store.cluster.iter().map(|u| ("store.cluster", u)));
        for (setting, url) in named {
            let scheme_ok = url.starts_with("redis://")
                || url.starts_with("rediss://")
                || (setting == "store.url" && url.starts_with("unix://"));
            if !scheme_ok {
                return Err(ConfigError::new(
                    setting,
                    format!("`{}` is not a redis:// or rediss:// URL", redact_url(url)),
                ));
            }
            redis::Client::open(url.as_str())
                .map_err(|e| ConfigError::new(setting, format!("`{}`: {e}", redact_url(url))))?;
        }
        if !store.sentinels.is_empty() && store.sentinel_master.as_deref().is_none_or(str::is_empty)
        {
            return Err(ConfigError::new(
                "store.sentinel_master",
                "is required with store.sentinels: the name the sentinels monitor",
            ));
        }
        if store.timeout.is_zero() || store.timeout > Duration::from_secs(10) {
            return Err(ConfigError::new(
                "store.timeout",
                "must be between 1ms and 10s",
            ));
        }
        if let Some(ca) = &store.ca_file
            && let Err(e) = std::fs::read(ca)
        {
            return Err(ConfigError::new(
                "store.ca_file",
                format!("`{}`: {e}", ca.display()),
            ));
        }
        Ok(())
    }

    /// Clients and users, looked up by id; ids are unique across both. Reads nothing but
    /// `clients` and `users`, so the CLI can check those alone (see [`super::edit`]).
    pub(super) fn directory(&self) -> Result<Directory, ConfigError> {
        let mut principals = Principals::default();
        for (i, c) in self.clients.iter().enumerate() {
            principals.add_client(i, c);
        }
        for (i, u) in self.users.iter().enumerate() {
            principals.add_user(i, u);
        }
        principals.finish(&LimitsConfig::default()).map(|(d, _)| d)
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
                .map_err(|e| ConfigError::new("token.secret", keygate::error::chain(&e)))?;
            let key = SigningKey::hmac(algorithm, &secret)
                .map_err(|e| ConfigError::new("token.secret", keygate::error::chain(&e)))?;
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
    /// The configuration as read, without its clients and users (see `directory`).
    pub config: Config,
    /// `server.listen`, parsed.
    pub listen: SocketAddr,
    /// `server.public_url`, or its default (`https://<listen>` with TLS).
    pub public_url: String,
    /// `server.metrics_listen`, parsed.
    pub metrics_listen: Option<SocketAddr>,
    /// `server.admin_listen`, parsed.
    pub admin_listen: Option<SocketAddr>,
    /// `server.tls_cert` and `server.tls_key`, resolved against the file's folder; read
    /// when the server starts (see [`crate::tls::Certificates`]).
    pub tls: Option<TlsFiles>,
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
    /// The quota of each client that has one (`rate_limit`, or `limits.default_rate_limit`).
    pub quotas: QuotaTable,
    /// Keys what must be the same on every replica yet unknown outside: the stand-in
    /// hash of unknown usernames, the fingerprints of unknown claimed ids.
    pub(crate) deployment_key: DeploymentKey,
    /// Tokens verified under this runtime (empty in a new one: a reload starts afresh).
    pub verified: crate::verified::VerifiedTokens,
    /// This replica's copy of the database directory (`[directory]`), shared by every
    /// runtime of the process: set by [`crate::AppState`].
    pub live: Option<std::sync::Arc<crate::directory::LiveCopy>>,
}

impl PendingRevocation {
    /// Reads what the revocation of principal `id` needs from the configuration at `path`
    /// (the store, the issuer, the principal's credentials) before the CLI edits it; `None`
    /// when it configures no store or names no principal `id`.
    pub fn prepare(path: &Path, id: &str) -> Result<Option<Self>, PendingRevocationError> {
        let runtime = Config::load(path)?;
        let Some(principal) = runtime.directory.get(id) else {
            return Ok(None);
        };
        let hashes = principal
            .credentials
            .iter()
            .map(|c| c.hash.clone())
            .collect();
        let issuer = runtime.issuer.policy().issuer.as_str();
        PendingRevocation::new(&runtime.config.store, issuer, id, hashes)
    }
}

/// The longest token this configuration can issue must pass its own verifier: the issuer,
/// the audience and a principal's id, role and scopes go into every token, and verifiers
/// refuse tokens over [`keygate::token::MAX_TOKEN_LEN`] (a 6 KB `server.public_url` alone
/// would make every token too long).
fn check_tokens_verify(
    issuer: &Issuer,
    verifier: &Verifier,
    directory: &Directory,
) -> Result<(), ConfigError> {
    // Ids, roles and scopes are checked to be of characters JSON writes as they are, so
    // their lengths order the principals as their tokens' lengths do, with no need to
    // write a million of them out.
    let heaviest = directory.iter().max_by_key(|p| {
        let scopes: usize = p.scopes().iter().map(|s| s.len() + 1).sum();
        2 * p.id.len() + p.role().len() + scopes
    });
    let (id, role, scopes) =
        heaviest.map_or(("probe", "", &[][..]), |p| (&*p.id, p.role(), p.scopes()));
    let grant = Grant {
        subject: id,
        client_id: id,
        role,
        scopes,
    };
    let issued = issuer.issue(&grant).map_err(|e| {
        ConfigError::new(
            "token",
            format!("cannot issue a token: {}", keygate::error::chain(&e)),
        )
    })?;
    verifier.verify(&issued.token).map(drop).map_err(|e| {
        ConfigError::new(
            "token",
            format!(
                "a token for `{id}` ({} bytes) would be refused by keygate's own verifier ({}): shorten token.issuer (or server.public_url), token.audience, or that principal's role or scopes",
                issued.token.len(),
                keygate::error::chain(&e)
            ),
        )
    })
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

#[cfg(test)]
mod tests;
