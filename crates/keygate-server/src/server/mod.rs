//! Serving: [`Listeners`] (`server.listen`, `server.metrics_listen` and the TLS pair) and
//! the connection loop behind [`serve`], which keeps slow and idle clients from starving
//! the server (docs/security.md):
//!
//! - at most `server.max_connections` connections are served at once per listener; more
//!   wait in the kernel's accept queue until one closes;
//! - a connection has `server.header_timeout` to complete its TLS handshake, and again to
//!   send its request headers (idle keep-alive connections are closed after it too); one
//!   that has not is closed;
//! - a whole request (headers and body) has `server.request_timeout` to arrive (else 408
//!   and the connection is closed), and a client as long to take its response (else the
//!   connection is dropped); HTTP/2 streams stalled that long count as no activity;
//! - requests in flight, HTTP/2 streams included, are capped at `server.max_connections`
//!   per listener: one over it is refused with 503 at once; request headers are capped at
//!   16 KiB (431), HTTP/2 streams at 32 per connection (see `connection.rs`).
//!
//! HTTP/2 is chosen by ALPN under TLS and by the client's preface in plain HTTP (h2c with
//! prior knowledge); everything else is HTTP/1.1.

mod connection;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::routes::App;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::config::ConfigError;
use crate::runtime::Runtime;
use crate::state::AppState;
use crate::tls::Certificates;

/// What [`serve`] serves on: the public listener (HTTPS when `tls` is set), and the
/// metrics listener when there is one.
#[derive(Debug)]
pub struct Listeners {
    /// `server.listen`: the API.
    pub public: TcpListener,
    /// `server.metrics_listen`: `/metrics` alone, plain HTTP.
    pub metrics: Option<TcpListener>,
    /// `server.admin_listen`: the admin API alone, with the public listener's TLS.
    pub admin: Option<TcpListener>,
    /// The certificate pair of the public listener; `None` serves plain HTTP.
    pub tls: Option<Arc<Certificates>>,
}

impl Listeners {
    /// Loads the TLS pair (a missing, unreadable or mismatched file is an error naming its
    /// setting) and binds `server.listen` and `server.metrics_listen`.
    pub async fn bind(rt: &Runtime) -> Result<Self, ConfigError> {
        let tls = rt.tls.clone().map(Certificates::load).transpose()?;
        let public = bind(rt.listen, "server.listen").await?;
        let metrics = match rt.metrics_listen {
            Some(addr) => Some(bind(addr, "server.metrics_listen").await?),
            None => None,
        };
        let admin = match rt.admin_listen {
            Some(addr) => Some(bind(addr, "server.admin_listen").await?),
            None => None,
        };
        Ok(Self {
            public,
            metrics,
            admin,
            tls,
        })
    }

    /// `https://<address>` (or `http://`) of the public listener, as bound.
    pub fn url(&self) -> std::io::Result<String> {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        Ok(format!("{scheme}://{}", self.public.local_addr()?))
    }

    /// `https://<address>` (or `http://`) of the admin listener, as bound.
    pub fn admin_url(&self) -> Option<String> {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let addr = self.admin.as_ref()?.local_addr().ok()?;
        Some(format!("{scheme}://{addr}"))
    }

    /// `http://<address>/metrics` of the metrics listener, as bound.
    pub fn metrics_url(&self) -> Option<String> {
        let addr = self.metrics.as_ref()?.local_addr().ok()?;
        Some(format!("http://{addr}/metrics"))
    }
}

/// A bound listener alone: plain HTTP, with `/metrics` wherever the router puts it.
impl From<TcpListener> for Listeners {
    fn from(public: TcpListener) -> Self {
        Self {
            public,
            metrics: None,
            admin: None,
            tls: None,
        }
    }
}

async fn bind(addr: SocketAddr, setting: &str) -> Result<TcpListener, ConfigError> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| ConfigError::new(setting, format!("cannot bind {addr}: {e}")))
}

/// Serves `state` on `listeners` until `shutdown` resolves; then `/readyz` turns 503, the
/// listeners stop accepting, in-flight requests get `server.shutdown_timeout` to finish
/// (idle connections are closed at once), and it returns. Certificate files are watched
/// for as long as it runs.
pub async fn serve(
    listeners: impl Into<Listeners>,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listeners = listeners.into();
    state.start_store_sync();
    // Connections wait in the listen queue meanwhile; a store that is down costs a
    // second of start-up, then store.on_unavailable answers.
    if !state
        .wait_store_sync(std::time::Duration::from_secs(1))
        .await
    {
        tracing::warn!(
            "the revocation list is not in sync with the store yet; store.on_unavailable applies until it is"
        );
    }
    let rt = state.runtime();
    let limits = Limits {
        header_timeout: rt.config.server.header_timeout,
        request_timeout: rt.config.server.request_timeout,
        max_connections: rt.config.server.max_connections,
    };
    let drain_for = rt.config.server.shutdown_timeout;
    let tls = listeners
        .tls
        .as_ref()
        .map(|c| TlsAcceptor::from(c.server_config()));
    let tls_watch = listeners
        .tls
        .as_ref()
        .map(|c| c.watch(rt.config.server.reload_interval));
    drop(rt);

    let (stop_tx, stop_rx) = watch::channel(false);
    let (admin_tls, admin_stop) = (tls.clone(), stop_rx.clone());
    let admin = async {
        match listeners.admin {
            Some(l) => {
                let app = crate::routes::admin_app(state.clone());
                Some(accept_loop(l, app, admin_tls, limits, admin_stop).await)
            }
            None => None,
        }
    };
    let public = accept_loop(
        listeners.public,
        crate::routes::app(state.clone()),
        tls,
        limits,
        stop_rx.clone(),
    );
    let metrics = async {
        match listeners.metrics {
            Some(l) => {
                let app = crate::routes::metrics_app(state.clone());
                Some(accept_loop(l, app, None, limits, stop_rx).await)
            }
            None => None,
        }
    };
    let stopping = async {
        shutdown.await;
        state.start_draining();
        tracing::info!("shutting down: draining in-flight requests");
        let _ = stop_tx.send(true);
    };
    let ((), mut public_conns, metrics_conns, admin_conns) =
        tokio::join!(stopping, public, metrics, admin);
    // Every connection has been told to finish (idle ones close at once): wait for them.
    let mut metrics_conns = metrics_conns.unwrap_or_default();
    let mut admin_conns = admin_conns.unwrap_or_default();
    let drained = async {
        while public_conns.join_next().await.is_some() {}
        while metrics_conns.join_next().await.is_some() {}
        while admin_conns.join_next().await.is_some() {}
    };
    if tokio::time::timeout(drain_for, drained).await.is_err() {
        tracing::warn!(timeout = ?drain_for, "in-flight requests did not finish in time");
    }
    // Dropping the sets aborts whatever is left.
    drop((public_conns, metrics_conns, admin_conns));
    if let Some(w) = tls_watch {
        w.abort();
    }
    Ok(())
}

#[derive(Debug, Clone, Copy)]
struct Limits {
    header_timeout: Duration,
    request_timeout: Duration,
    max_connections: usize,
}

/// Resolves once `stop` says so (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns must not live across an await: it is dropped here.
    let _ = stop.wait_for(|s| *s).await.is_ok();
}

/// Accepts until `stop`, one task per connection, never more than `max_connections`
/// alive: the semaphore is taken before `accept`, so the excess waits in the kernel's
/// queue. The connections share `max_connections` request slots, which bound the requests
/// in flight (HTTP/2 multiplexes many on one connection). Returns the connections still
/// running.
async fn accept_loop(
    listener: TcpListener,
    app: App,
    tls: Option<TlsAcceptor>,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
) -> JoinSet<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let site = connection::Site {
        app,
        tls,
        requests: Arc::new(Semaphore::new(limits.max_connections)),
    };
    let mut conns = JoinSet::new();
    loop {
        while conns.try_join_next().is_some() {}
        let permit = tokio::select! {
            p = Arc::clone(&slots).acquire_owned() => p.expect("the semaphore is never closed"),
            () = stopped(&mut stop) => break,
        };
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                Err(e) => {
                    // Out of descriptors, or a connection reset before it was accepted:
                    // back off briefly instead of spinning.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stopped(&mut stop) => break,
        };
        conns.spawn(connection::serve(
            tcp,
            peer,
            site.clone(),
            limits,
            stop.clone(),
            permit,
        ));
    }
    conns
}
