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
    /// `[audit]`: the audit log (off when `path` is unset).
    pub audit: AuditConfig,
    /// `[telemetry]`: OpenTelemetry traces (off when `otlp_endpoint` is unset).
    pub telemetry: TelemetryConfig,
    /// `[directory]`: principals in SQLite or PostgreSQL (off when `url` is unset).
    pub directory: DirectoryConfig,
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
    /// Public base URL: the default issuer, and the base of the discovery documents.
    /// Defaults to `http://127.0.0.1:8080`, or `https://<listen>` when TLS is on.
    pub public_url: Option<String>,
    /// PEM certificate chain (leaf first) to serve HTTPS with, relative to this file.
    /// Needs `tls_key`. Re-read when it changes (checked every `reload_interval`, and on
    /// SIGHUP), so an ACME client or cert-manager can rotate it without a restart.
    /// Defaults to none: plain HTTP.
    pub tls_cert: Option<String>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of `tls_cert`, relative to this file.
    /// Defaults to none.
    pub tls_key: Option<String>,
    /// Address to serve `/metrics` on, alone and in plain HTTP (it belongs on a private
    /// address); `/metrics` on `listen` then answers 404. Defaults to none: `/metrics` is
    /// on `listen`.
    pub metrics_listen: Option<String>,
    /// Address to serve the admin API (`/admin/v1/…`) on, alone (HTTPS when the TLS pair
    /// is set); the admin API on `listen` then answers 404. Defaults to none: the admin
    /// API is on `listen`.
    pub admin_listen: Option<String>,
    /// How long a new connection may take to send its request headers (TLS handshake
    /// included) before it is closed: slow clients cannot hold connections. An idle
    /// keep-alive connection is closed after it too. Defaults to `10s`.
    #[serde(with = "humane")]
    pub header_timeout: Duration,
    /// How long a whole request (headers and body) may take to arrive, and a response to
    /// be taken by the client. A request whose body is late is answered 408 and its
    /// connection closed; a connection whose client does not read its response, or with an
    /// HTTP/2 stream in flight longer than this (plus a second), is dropped. Defaults to
    /// `10s`.
    #[serde(with = "humane")]
    pub request_timeout: Duration,
    /// Connections served at once; more wait in the kernel's accept queue until one
    /// closes. Also the requests in flight at once (HTTP/2 multiplexes many on one
    /// connection): one more is refused with 503, `/healthz` and `/readyz` excepted.
    /// Defaults to 10000.
    pub max_connections: usize,
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
            public_url: None,
            tls_cert: None,
            tls_key: None,
            metrics_listen: None,
            admin_listen: None,
            header_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(10),
            max_connections: 10_000,
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
    /// `client_id` of tokens from the password grant sent without client authentication
    /// (RFC 9068 §2.2: the client that requested the token; here, a public client). No
    /// configured client may have this id. Defaults to `keygate`.
    pub public_client_id: String,
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
            public_client_id: "keygate".into(),
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

/// `limits.ipv6_prefix` when not set: IPv6 senders are counted by their /64.
pub const DEFAULT_IPV6_PREFIX: u8 = 64;

/// `[limits]`: failed-attempt limits.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Failures allowed per client address, and per (username, address), within `window`; API
    /// keys count per address only. Defaults to 10.
    pub failed_attempts: u32,
    /// Defaults to `1m`.
    #[serde(with = "humane")]
    pub window: Duration,
    /// Password hashes computed at once. Defaults to the number of CPUs.
    pub hashing_concurrency: usize,
    /// Password checks allowed to wait for a hashing thread before `503`. Defaults to 64.
    pub hashing_queue: usize,
    /// The quota of every client without its own `rate_limit`: `N/DURATION`, like
    /// `1000/1m` (README, Quotas). Defaults to none: such clients are not limited.
    pub default_rate_limit: Option<String>,
    /// IPv6 senders are counted by this many leading bits of their address (1–128);
    /// IPv4 addresses, mapped or not, by the whole address. Defaults to 64.
    pub ipv6_prefix: u8,
    /// Token revocations (`/logout`, `/revoke`) one principal holds on the revocation
    /// list at once, 1 to 1 000 000. One more folds them into a single record refusing
    /// every token of that principal issued until then, so one principal can never fill
    /// the list for others. Restart to change. Defaults to 10 000.
    pub revocations_per_principal: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            failed_attempts: 10,
            window: Duration::from_secs(60),
            hashing_concurrency: std::thread::available_parallelism().map_or(2, |n| n.get()),
            hashing_queue: 64,
            default_rate_limit: None,
            ipv6_prefix: DEFAULT_IPV6_PREFIX,
            revocations_per_principal: keygate::revocation::DEFAULT_PRINCIPAL_SHARE,
        }
    }
}

/// `[store]`: shared state for several replicas: one Redis (`url`), a Sentinel-managed
/// primary (`sentinels` + `sentinel_master`) or a Redis Cluster (`cluster`); at most one
/// of the three. Unset keeps state in this process's memory.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// `redis://…` or `rediss://…` (TLS). Defaults to unset.
    pub url: Option<String>,
    /// Sentinel addresses (`redis://host:26379`, `rediss://…`) asked where the primary
    /// named `sentinel_master` is; a failover is followed without a restart. Their
    /// scheme, user and password are also used for the primary. Defaults to none.
    pub sentinels: Vec<String>,
    /// The name the sentinels monitor the primary under. Required with `sentinels`.
    pub sentinel_master: Option<String>,
    /// Redis Cluster nodes (`redis://host:7000`, …); the rest are discovered. Defaults to none.
    pub cluster: Vec<String>,
    /// A PEM file of the CA that signed the Redis servers' certificates, for `rediss://`
    /// servers not signed by a CA the system trusts. Defaults to the system's roots.
    pub ca_file: Option<PathBuf>,
    /// What a check that needs the store does when it cannot be reached. Defaults to `deny`.
    pub on_unavailable: OnUnavailable,
    /// The longest one store call may take; beyond it the store counts as unavailable
    /// and `on_unavailable` applies. Defaults to `250ms`.
    #[serde(with = "humane")]
    pub timeout: Duration,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            url: None,
            sentinels: Vec::new(),
            sentinel_master: None,
            cluster: Vec::new(),
            ca_file: None,
            on_unavailable: OnUnavailable::Deny,
            timeout: Duration::from_millis(250),
        }
    }
}

impl StoreConfig {
    /// True when a shared store is configured.
    pub fn is_shared(&self) -> bool {
        self.url.is_some() || !self.sentinels.is_empty() || !self.cluster.is_empty()
    }
}

/// A `role` as written: present means 1-128 characters (checked further with the scopes);
/// the empty string would read as no role at all, so it is refused where it is written.
fn role<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let role = String::deserialize(d)?;
    if role.is_empty() {
        return Err(serde::de::Error::custom(
            "an empty role is not a role: 1-128 of A-Z a-z 0-9 _ . : / - (leave `role` out for none)",
        ));
    }
    Ok(role)
}

/// `[[clients]]`
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// Client id: the token's `sub` and `client_id`.
    pub id: String,
    /// `sha256:<hex>`, `$argon2id$…` or `$2b$…`.
    pub key_hash: String,
    /// The `role` claim: 1-128 of `A-Z a-z 0-9 _ . : / -`. Defaults to none (empty);
    /// `role = ""` is refused (leave it out for none).
    #[serde(default, deserialize_with = "role")]
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
    /// This client's quota, `N/DURATION` (like `100/1s`): `/login`, `/token`, and
    /// `/verify` and `/userinfo` for its tokens, counted together. Defaults to
    /// `limits.default_rate_limit`.
    #[serde(default)]
    pub rate_limit: Option<String>,
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
    /// The `role` claim: 1-128 of `A-Z a-z 0-9 _ . : / -`. Defaults to none (empty);
    /// `role = ""` is refused (leave it out for none).
    #[serde(default, deserialize_with = "role")]
    pub role: String,
    /// Scopes this user may be granted, each 1-128 of `A-Z a-z 0-9 _ . : / -`.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// RFC 3339; tokens issued before it are refused by keygate. Written by `keygate user
    /// add`, so that the tokens of a removed user of that name stay dead. Defaults to none.
    #[serde(default)]
    pub not_before: Option<String>,
}

/// `[audit]`: security events as JSON lines (README, Audit log).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// The file events are appended to, relative to this file's folder; `-` is standard
    /// output for the server and standard error for the CLI. Defaults to none: no audit log.
    /// Read at start: a change takes effect on restart.
    pub path: Option<String>,
    /// Events waiting for the writer; when full, new events are dropped and counted in
    /// `keygate_audit_dropped_total` rather than delaying a request. Defaults to 1024.
    pub buffer: usize,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            path: None,
            buffer: 1024,
        }
    }
}

/// `[telemetry]`: OpenTelemetry traces over OTLP/HTTP (docs/operations.md#traces). Read at
/// start: a change takes effect on restart.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// Base URL of an OTLP/HTTP receiver (`http://collector:4318`); spans are sent (protobuf)
    /// to `{otlp_endpoint}/v1/traces`. Defaults to none: no traces.
    pub otlp_endpoint: Option<String>,
    /// The `service.name` of the spans. Defaults to `keygate`.
    pub service_name: String,
    /// Share of root traces (requests without a sampled `traceparent`) recorded, 0 to 1; a
    /// request whose caller sampled its trace is always recorded. Defaults to 1.
    pub sample_ratio: f64,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            otlp_endpoint: None,
            service_name: "keygate".into(),
            sample_ratio: 1.0,
        }
    }
}

/// `[directory]`: clients and users kept in a database as well as in the file
/// (docs/directory.md). Read at start: a change takes effect on restart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DirectoryConfig {
    /// `sqlite://keygate.db` (a file, relative to the configuration's folder, or
    /// `sqlite:///abs/path`) or `postgres://user@host/db`. Defaults to none: principals
    /// live in the file only.
    pub url: Option<String>,
    /// How often each replica reads the change log at least (PostgreSQL also wakes it at
    /// once with `LISTEN`/`NOTIFY`). Defaults to `1s`.
    #[serde(with = "humane")]
    pub poll_interval: Duration,
    /// How long a replica that cannot read the change log keeps authenticating from its
    /// copy; past it `/login` and `/token` answer 503 until it has caught up. Defaults to `1m`.
    #[serde(with = "humane")]
    pub max_staleness: Duration,
    /// The longest one database call may take before it counts as failed. Defaults to `2s`.
    #[serde(with = "humane")]
    pub timeout: Duration,
}

impl Default for DirectoryConfig {
    fn default() -> Self {
        Self {
            url: None,
            poll_interval: Duration::from_secs(1),
            max_staleness: Duration::from_secs(60),
            timeout: Duration::from_secs(2),
        }
    }
}

/// The sections that `KEYGATE_<SECTION>_<KEY>` can override.
pub(super) const SECTIONS: &[&str] = &[
    "server",
    "token",
    "api_key",
    "cookie",
    "limits",
    "store",
    "audit",
    "telemetry",
    "directory",
];

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
