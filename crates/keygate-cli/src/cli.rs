//! The command line, as clap reads it: this file is the `--help` text.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// `keygate --version`: the release and the commit it was built from (see `build.rs`).
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("KEYGATE_GIT_REV"),
    ")"
);

/// Exchange API keys for short-lived JWTs, and verify them.
#[derive(Debug, Parser)]
#[command(name = "keygate", version = VERSION, about, long_about = None)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// Where the configuration is.
#[derive(Debug, Args, Clone)]
pub(crate) struct ConfigArg {
    /// Configuration file [default: ./keygate.toml, or $KEYGATE_CONFIG]
    #[arg(long, short = 'c', value_name = "PATH", env = "KEYGATE_CONFIG")]
    pub(crate) config: Option<PathBuf>,
}

impl ConfigArg {
    pub(crate) fn path(&self) -> PathBuf {
        self.config
            .clone()
            .unwrap_or_else(|| PathBuf::from("keygate.toml"))
    }
}

/// A listing's output format.
#[derive(Debug, Args, Clone)]
pub(crate) struct ListArgs {
    /// Print a JSON array of objects instead of a table
    #[arg(long)]
    pub(crate) json: bool,
    #[command(flatten)]
    pub(crate) config: ConfigArg,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Write a new configuration with a fresh secret (mode 0600) and print the first API key once
    Init {
        /// Keep clients and users in a database too: `sqlite` (keygate.db beside the
        /// configuration) or a sqlite:// or postgres:// URL (docs/directory.md)
        #[arg(long, value_name = "sqlite|URL")]
        directory: Option<String>,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Run the server: HTTP, or HTTPS with `server.tls_cert`/`tls_key` (runs `init` first
    /// when there is no configuration)
    Serve(ConfigArg),
    /// Manage API keys of clients
    #[command(subcommand)]
    Key(KeyCommand),
    /// Manage users of the password grant
    #[command(subcommand)]
    User(UserCommand),
    /// Move principals between the file and the directory (`[directory]`)
    #[command(subcommand)]
    Directory(DirectoryCommand),
    /// Print a new HMAC secret: 32 random bytes, hex
    Secret,
    /// Read a password on stdin and print its argon2id hash
    Hash,
    /// Issue, verify or decode tokens offline, with the configured key
    #[command(subcommand)]
    Token(TokenCommand),
    /// Make a new signing key (ES256, EdDSA or RS256) in token.signing_keys; prints its kid
    Keygen {
        /// Algorithm of the key
        #[arg(long, value_parser = ["ES256", "EdDSA", "RS256"])]
        alg: String,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// List or retire signing keys
    #[command(subcommand)]
    Signing(SigningCommand),
    /// Get a token from a keygate server with an API key; prints the access token
    Login {
        /// keygate's base URL
        #[arg(long)]
        url: String,
        /// The API key [or $KEYGATE_API_KEY, which keeps it out of shell history]
        #[arg(long, env = "KEYGATE_API_KEY", hide_env_values = true)]
        api_key: String,
        /// Header keygate reads the key from
        #[arg(long, default_value = "X-API-Key")]
        key_header: String,
        /// Also trust the CA certificate(s) in this PEM file (besides the system's roots
        /// and $SSL_CERT_FILE)
        #[arg(long, value_name = "PEM")]
        cacert: Option<PathBuf>,
    },
    /// Call an API with a keygate token (renewed once on 401); prints the response body
    Call(CallArgs),
    /// Validate the configuration and exit (0 valid, 2 invalid)
    CheckConfig(ConfigArg),
    /// Read the audit log ([audit] path)
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Exit 0 when a keygate answers 200 on its liveness URL, else 1 (container health checks)
    Healthcheck {
        /// The URL to probe
        #[arg(long, default_value = "http://127.0.0.1:8080/healthz")]
        url: String,
        /// How long to wait for the answer
        #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
    /// Print a shell completion script: `source <(keygate completions bash)`
    Completions {
        /// The shell
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum AuditCommand {
    /// Print the last lines of the audit log (JSON, one event a line), then with --follow
    /// every new one
    Tail {
        /// Keep printing events as they are appended (follows logrotate)
        #[arg(long, short = 'f')]
        follow: bool,
        /// Only this event, like token.issued or key.revoked
        #[arg(long, value_name = "EVENT")]
        event: Option<String>,
        /// Only events of this client id or username
        #[arg(long, value_name = "ID")]
        principal: Option<String>,
        /// How many past lines to print first
        #[arg(long, short = 'n', default_value_t = 10)]
        lines: usize,
        #[command(flatten)]
        config: ConfigArg,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum SigningCommand {
    /// List signing keys with their state (signing, pending, published, retired, expired)
    List(ListArgs),
    /// Stop signing with a key; it stays published until its last token has expired
    Retire {
        /// Key id (base64url: it may begin with `-`)
        #[arg(allow_hyphen_values = true)]
        kid: String,
        #[command(flatten)]
        config: ConfigArg,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum KeyCommand {
    /// Add a client with a new API key; prints only the key
    Add {
        /// Client id: 1-64 of A-Z a-z 0-9 . _ - @
        id: String,
        /// The role claim of its tokens
        #[arg(long)]
        role: String,
        /// A scope it may be granted (repeatable)
        #[arg(long = "scope", value_name = "SCOPE")]
        scopes: Vec<String>,
        /// Key lifetime, like 90d
        #[arg(long, value_parser = lifetime)]
        expires: Option<Duration>,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// List clients and the state of their keys
    List(ListArgs),
    /// Revoke a client's key: logins stop and keygate refuses its issued tokens
    Revoke {
        /// Client id
        id: String,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Give a client a new key; the old one keeps working for the grace period
    Rotate {
        /// Client id
        id: String,
        /// How long the old key stays valid
        #[arg(long, default_value = "24h", value_parser = lifetime)]
        grace: Duration,
        #[command(flatten)]
        config: ConfigArg,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum DirectoryCommand {
    /// Move the file's clients and users into the directory (one transaction; removed
    /// from the file once committed)
    Import(ConfigArg),
    /// Write the directory's principals out: TOML (`[[clients]]`, `[[users]]`) or JSON lines
    Export {
        /// toml or jsonl
        #[arg(long, default_value = "toml", value_parser = ["toml", "jsonl"])]
        format: String,
        /// Write here (atomically) instead of standard output
        #[arg(long, short)]
        output: Option<std::path::PathBuf>,
        #[command(flatten)]
        config: ConfigArg,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum UserCommand {
    /// Add a user; the password is read from stdin, or prompted for on a terminal
    Add {
        /// Username: 1-64 of A-Z a-z 0-9 . _ - @
        name: String,
        /// The role claim of their tokens
        #[arg(long)]
        role: String,
        /// A scope they may be granted (repeatable)
        #[arg(long = "scope", value_name = "SCOPE")]
        scopes: Vec<String>,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Remove a user
    Remove {
        /// Username
        name: String,
        #[command(flatten)]
        config: ConfigArg,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum TokenCommand {
    /// Sign a token for a configured client or user
    Issue {
        /// Client id or username
        #[arg(long)]
        sub: String,
        /// Narrow to these scopes (repeatable); default: all the principal has
        #[arg(long = "scope", value_name = "SCOPE")]
        scopes: Vec<String>,
        /// Lifetime [default: token.ttl]
        #[arg(long, value_parser = humantime::parse_duration)]
        ttl: Option<Duration>,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Verify a token (argument or stdin) and print its claims; exit 1 when invalid
    Verify {
        /// The token; read from stdin when absent
        token: Option<String>,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Print a token's header and claims WITHOUT verifying anything
    Decode {
        /// The token; read from stdin when absent
        token: Option<String>,
    },
}

#[derive(Debug, Args)]
pub(crate) struct CallArgs {
    /// The API's URL
    pub(crate) url: String,
    /// keygate's base URL
    #[arg(long)]
    pub(crate) auth_url: String,
    /// The API key [or $KEYGATE_API_KEY]
    #[arg(long, env = "KEYGATE_API_KEY", hide_env_values = true)]
    pub(crate) api_key: String,
    /// Header keygate reads the key from
    #[arg(long, default_value = "X-API-Key")]
    pub(crate) key_header: String,
    /// HTTP method
    #[arg(short = 'X', long, default_value = "GET")]
    pub(crate) method: String,
    /// Request body
    #[arg(short = 'd', long)]
    pub(crate) data: Option<String>,
    /// Extra header, `Name: value` (repeatable)
    #[arg(short = 'H', long = "header", value_name = "HEADER")]
    pub(crate) headers: Vec<String>,
    /// Also trust the CA certificate(s) in this PEM file, for keygate and the API
    /// (besides the system's roots and $SSL_CERT_FILE)
    #[arg(long, value_name = "PEM")]
    pub(crate) cacert: Option<PathBuf>,
}

/// Why a lifetime (`--expires`, `--ttl`) was refused; clap prints it after the value.
#[derive(Debug, thiserror::Error)]
enum LifetimeError {
    /// Not a duration (`90d`, `1h 30m`): humantime's own words.
    #[error(transparent)]
    NotADuration(#[from] humantime::DurationError),
    /// Ends past what a configuration can write.
    #[error("ends after the year 9999, the last a configuration can hold")]
    PastYear9999,
}

/// A duration counted from now that ends at a time keygate can write (RFC 3339 holds years
/// up to 9999): `--expires 8000y` is a usage error, not an overflow.
fn lifetime(text: &str) -> Result<Duration, LifetimeError> {
    let d = humantime::parse_duration(text)?;
    time::Duration::try_from(d)
        .ok()
        .and_then(|d| time::OffsetDateTime::now_utc().checked_add(d))
        .filter(|end| end.year() <= 9999)
        .map(|_| d)
        .ok_or(LifetimeError::PastYear9999)
}
