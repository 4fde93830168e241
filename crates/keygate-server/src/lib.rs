//! The keygate HTTP server as a library: [`router`] builds the axum router for an
//! [`AppState`], [`serve`] runs it on bound [`Listeners`] (or one `TcpListener`) until a
//! shutdown future resolves.
//!
//! The modules stand in layers (docs/architecture.md, "Layers"; `tests/layers.rs` holds
//! them): settings → mechanisms → stores → request → HTTP → server, each using only its
//! own layer and those below.
//!
//! | module | holds |
//! |---|---|
//! | [`config`] | settings: `keygate.toml`'s model and the environment; [`config::edit`] for the CLI |
//! | [`runtime`] | [`Runtime`]: every value checked, and what the server runs on built from them; principals found in the file or the directory |
//! | [`state`] | [`AppState`]: the runtime (swapped whole on reload), revocation list, attempt counters, hashing pool |
//! | [`routes`] | one file per endpoint group; `routes/mod.rs` shows the whole API |
//! | [`form`] | [`form::Form`]: a form body into the struct its handler documents |
//! | `extract` | credentials (read by `keygate::axum`, as services read them) and the client address |
//! | `credentials` | API keys and client authentication (Basic, form, API-key header), failed-attempt bookkeeping |
//! | `issue` | a token for an authenticated principal and its RFC 6749 §5.1 response |
//! | `authorize` | the bearer-token check shared by `/verify`, `/userinfo`, `/logout` and `/introspect` |
//! | [`verified`] | the verified-token cache of a runtime: a token verified once is not verified again while it holds |
//! | `frame` | the one layer around every route: request id, hardening, metrics |
//! | `hardening` | nosniff on every response, the OAuth shape for 404/405/413, CSP on `/docs` |
//! | [`rejection`] | [`Rejection`]: status, challenge and body of every refusal (token refusals in `keygate::axum`'s words) |
//! | [`limits`] | [`limits::FailedAttempts`] and [`limits::Subject`]: failures counted, 429 after too many |
//! | [`quota`] | per-client quotas: GCRA with burst N, the counters, what the RateLimit header fields say |
//! | `charge` | a request charged to its client's quota: 429 `rate_limited`, or the header fields |
//! | `watch` | files watched for a change (SIGHUP, or their stamp on a timer): the reload's and TLS's |
//! | [`audit`] | the audit log: security events as JSON lines, written off the request path |
//! | [`store`] | Redis (one server, Sentinel or Cluster) for several replicas: each replica's local copy of the revocation list, credential revocations from the CLI, attempt counters, quotas |
//! | [`directory`] | principals in SQLite or PostgreSQL: the schema and change log, each replica's live copy, the edits the CLI and the admin API make |
//! | [`metrics`] | Prometheus metrics |
//! | `request_id` | `X-Request-Id`: a span per request, so its log lines name it; echoed |
//! | [`reload`] | configuration reload on SIGHUP or file change |
//! | `server` | [`Listeners`] and [`serve`]: the connection loop, its header timeout and connection cap |
//! | [`tls`] | HTTPS: the certificate pair, swapped without a restart when its files change |
//! | [`telemetry`] | OpenTelemetry traces: the request span's parent from `traceparent`, export over OTLP/HTTP through a bounded queue |
//!
//! A handler loads the [`Runtime`] once (`state.runtime()`) and hands `&Runtime` to every
//! helper, so a request never sees two configurations. `/login` flows `routes/login.rs` →
//! `extract` → `credentials` → `keygate::principal::Directory` → `issue`; `/verify` flows
//! `routes/verify.rs` → `authorize` → `keygate::token::Verifier` → the revocation list.

pub mod audit;
mod authorize;
mod charge;
pub mod config;
mod context;
mod credentials;
pub mod directory;
mod extract;
pub mod form;
mod frame;
mod hardening;
mod issue;
pub mod limits;
pub mod metrics;
pub mod quota;
pub mod rejection;
pub mod reload;
mod request_id;
pub mod routes;
pub mod runtime;
mod server;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod verified;
mod watch;

pub use config::{Config, ConfigError};
pub use rejection::Rejection;
pub use routes::router;
pub use runtime::Runtime;
pub use server::{Listeners, serve};
pub use state::AppState;
/// Parsers that are private to the server, reachable from the fuzz targets in `fuzz/`
/// (feature `fuzzing`). Not a stable API.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing {
    /// The readings of an HTTP Basic `client_id:secret` (the part after `Basic `).
    pub fn decode_basic(creds: &str) -> Result<Vec<(String, String)>, crate::Rejection> {
        crate::credentials::decode_basic(creds)
    }
}
