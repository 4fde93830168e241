//! The keygate HTTP server as a library: [`router`] builds the axum router for an
//! [`AppState`], [`serve`] runs it on a bound listener until a shutdown future resolves.
//!
//! | module | holds |
//! |---|---|
//! | [`config`] | `keygate.toml`: the model, the environment, validation into a [`Runtime`]; [`config::edit`] for the CLI |
//! | [`state`] | [`AppState`]: the runtime (swapped whole on reload), revocation list, attempt counters, hashing pool |
//! | [`routes`] | one file per endpoint group; `routes/mod.rs` shows the whole API |
//! | [`form`] | [`form::Form`]: a form body into the struct its handler documents |
//! | `extract` | credentials (read by `keygate::axum`, as services read them) and the client address |
//! | `credentials` | API keys and client authentication (Basic, form, API-key header), failed-attempt bookkeeping |
//! | `issue` | a token for an authenticated principal and its RFC 6749 §5.1 response |
//! | `authorize` | the bearer-token check shared by `/verify`, `/userinfo`, `/logout` and `/introspect` |
//! | `hardening` | nosniff on every response, the OAuth shape for 404/405/413, CSP on `/docs` |
//! | [`rejection`] | [`Rejection`]: status, challenge and body of every refusal (token refusals in `keygate::axum`'s words) |
//! | [`limits`] | [`limits::FailedAttempts`] and [`limits::Subject`]: 429 after too many failures |
//! | [`store`] | Redis for the revocation list and attempt counters of several replicas |
//! | [`metrics`] | Prometheus metrics |
//! | `request_id` | `X-Request-Id`: a span per request, so its log lines name it; echoed |
//! | [`reload`] | configuration reload on SIGHUP or file change |
//!
//! A handler loads the [`Runtime`] once (`state.runtime()`) and hands `&Runtime` to every
//! helper, so a request never sees two configurations. `/login` flows `routes/login.rs` →
//! `extract` → `credentials` → `keygate::principal::Directory` → `issue`; `/verify` flows
//! `routes/verify.rs` → `authorize` → `keygate::token::Verifier` → the revocation list.

mod authorize;
pub mod config;
mod credentials;
mod extract;
pub mod form;
mod hardening;
mod issue;
pub mod limits;
pub mod metrics;
pub mod rejection;
pub mod reload;
mod request_id;
pub mod routes;
pub mod state;
pub mod store;

use std::future::Future;
use std::net::SocketAddr;

pub use config::{Config, ConfigError, Runtime};
pub use rejection::Rejection;
pub use routes::router;
pub use state::AppState;
use tokio::net::TcpListener;

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

/// Serves `state` on `listener` until `shutdown` resolves, then stops accepting, lets
/// in-flight requests finish for up to `server.shutdown_timeout`, and returns.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let drain_for = state.runtime().config.server.shutdown_timeout;
    let app = router(state.clone()).into_make_service_with_connect_info::<SocketAddr>();
    let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
    let draining_state = state.clone();
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        shutdown.await;
        draining_state.start_draining();
        tracing::info!("shutting down: draining in-flight requests");
        let _ = stopping_tx.send(());
    });
    let mut server = tokio::spawn(async move { server.await });
    let deadline = async {
        if stopping_rx.await.is_ok() {
            tokio::time::sleep(drain_for).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        joined = &mut server => joined.map_err(std::io::Error::other)?,
        () = deadline => {
            tracing::warn!(timeout = ?drain_for, "in-flight requests did not finish in time");
            server.abort();
            Ok(())
        }
    }
}
