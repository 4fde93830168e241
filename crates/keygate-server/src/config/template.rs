//! The configuration `keygate init` writes.

use keygate::api_key::{self, KeyHash};
use keygate::token::HmacSecret;

use super::ConfigError;

/// Id of the client `keygate init` creates.
pub const FIRST_CLIENT: &str = "my-service";

/// A complete, commented configuration with a fresh secret and one client. Its
/// `token.audience` is the default public URL, so that its tokens are RFC 9068 access
/// tokens (which require `aud`). Returns the text and the client's API key, which is
/// stored only as a hash.
pub fn initial_config() -> Result<(String, String), ConfigError> {
    let secret = HmacSecret::generate_hex()
        .map_err(|e| ConfigError::new("token.secret", keygate::error::chain(&e)))?;
    let key = api_key::generate(FIRST_CLIENT)
        .map_err(|e| ConfigError::new("clients", keygate::error::chain(&e)))?;
    let hash = KeyHash::sha256_of(&key);
    let text = format!(
        r#"# keygate configuration. Every setting can be overridden by an environment variable
# KEYGATE_<SECTION>_<KEY> (KEYGATE_TOKEN_TTL=15m); "${{VAR}}" in a value reads the environment.
# `keygate key …` and `keygate user …` edit this file and keep its comments.

[server]
listen = "127.0.0.1:8080"
# public_url = "https://auth.example.com"  # the default issuer; defaults to
#                                          # http://127.0.0.1:8080, https://<listen> with TLS
# tls_cert = "tls/cert.pem"              # serve HTTPS (HTTP/1.1 + HTTP/2); PEM files relative
# tls_key = "tls/key.pem"                #   to this file, re-read when they change
# metrics_listen = "127.0.0.1:9464"      # /metrics there only, plain HTTP (404 on listen)
# trusted_proxies = ["127.0.0.1"]        # believe X-Forwarded-For from these peers only
header_timeout = "10s"                   # request headers (and TLS handshake) must arrive within
request_timeout = "10s"                  # a whole request must arrive, and its response be read, within
max_connections = 10000                  # served at once; more wait in the accept queue
#                                        #   (~308 KiB each at most: README, "Memory per connection")
shutdown_timeout = "30s"
reload_interval = "1s"                   # how often this file (and the TLS pair) is checked; "0s": SIGHUP only

[token]
algorithm = "HS256"                      # HS256 HS384 HS512
# The HMAC secret (>= 32 bytes). Anyone holding it can mint tokens: keep this file private
# (it is written with mode 0600), or use secret = "${{KEYGATE_SECRET}}".
secret = "{secret}"
# issuer = "http://127.0.0.1:8080"       # defaults to server.public_url
# `aud` of every token (RFC 9068 makes it required), and what keygate demands of the tokens
# it checks. Services verifying a token check it too. Name your APIs instead
# (["orders-api"]) if you like; with no audience at all, tokens carry none and are not
# RFC 9068 access tokens (strict libraries such as oauth4webapi refuse them).
audience = ["http://127.0.0.1:8080"]
ttl = "30m"
leeway = "30s"
# public_client_id = "keygate"           # client_id of password-grant tokens sent without client authentication

[api_key]
header = "X-API-Key"                     # the seed used "access_token"
query = ""                               # e.g. "api_key"; off: URLs end up in logs
cookie = ""                              # e.g. "api_key"; off

[cookie]                                 # the token cookie set by /login
enabled = false
name = "keygate_token"
secure = true
same_site = "Lax"

[limits]
failed_attempts = 10                     # per address, and per (username, address), per window
window = "1m"                            # then 429 until the window passes

[store]                                  # shared state for several replicas (docs/scale-out.md)
# url = "redis://127.0.0.1:6379"         # revocations and attempt counters; in memory when unset
# sentinels = ["redis://10.0.0.1:26379"] # or a Sentinel-managed primary (rediss:// for TLS)
# sentinel_master = "keygate"
# cluster = ["redis://10.0.0.1:7000"]    # or a Redis Cluster
on_unavailable = "deny"                  # deny | allow, when Redis cannot be reached
timeout = "250ms"                        # one store call; then on_unavailable applies

# [directory]                            # clients and users in a database too (docs/directory.md)
# url = "sqlite://keygate.db"            # beside this file; or "postgres://keygate@db/keygate"

[[clients]]
id = "{FIRST_CLIENT}"
key_hash = "{hash}"
role = "service"
scopes = []
"#
    );
    Ok((text, key))
}

/// `text` (an [`initial_config`]) with its `[directory]` section switched on at `url`
/// (`keygate init --directory`, docs/directory.md).
pub fn with_directory(text: &str, url: &str) -> String {
    let url = toml_edit::Value::from(url).to_string();
    text.replacen(
        "# [directory]                            # clients",
        "[directory]                              # clients",
        1,
    )
    .replacen(
        "# url = \"sqlite://keygate.db\"            # beside",
        &format!("url = {:<36} # beside", url.trim()),
        1,
    )
}
