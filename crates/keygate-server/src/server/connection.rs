//! One connection: the TLS handshake and the protocol choice within `header_timeout`, then
//! hyper's HTTP/1.1 (whose `header_read_timeout` closes a connection slow to send its
//! headers, or idle between requests) or HTTP/2 (which has no such timeout, so a watchdog
//! here closes a connection with no request in flight for `header_timeout`). On shutdown
//! the connection finishes what is in flight and closes.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulConnection;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, watch};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;

use super::{Limits, stopped};

/// Serves one connection, holding its slot until it closes.
pub(super) async fn serve(
    tcp: TcpStream,
    peer: SocketAddr,
    app: Router,
    tls: Option<TlsAcceptor>,
    limits: Limits,
    stop: watch::Receiver<bool>,
    _slot: OwnedSemaphorePermit,
) {
    let _ = tcp.set_nodelay(true);
    let activity = Activity::default();
    let busy = activity.clone();
    let service = app
        .map_request(move |req: hyper::Request<Incoming>| {
            let mut req = req.map(Body::new);
            req.extensions_mut().insert(ConnectInfo(peer));
            req
        })
        .map_future(move |answer| {
            let guard = busy.begin();
            async move {
                let response = answer.await;
                drop(guard);
                response
            }
        });
    let service = TowerToHyperService::new(service);
    let outcome = match tls {
        Some(acceptor) => {
            let handshake = tokio::time::timeout(limits.header_timeout, acceptor.accept(tcp));
            let stream = match handshake.await {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
            http(stream, h2, service, limits, stop, activity).await
        }
        None => {
            let preface = tokio::time::timeout(limits.header_timeout, sends_h2_preface(&tcp));
            let Ok(Ok(h2)) = preface.await else {
                return;
            };
            http(tcp, h2, service, limits, stop, activity).await
        }
    };
    if let Err(e) = outcome {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

async fn http<I, S>(
    io: I,
    h2: bool,
    service: S,
    limits: Limits,
    stop: watch::Receiver<bool>,
    activity: Activity,
) -> Result<(), hyper::Error>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::Service<hyper::Request<Incoming>, Response = axum::response::Response>
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let io = TokioIo::new(io);
    if h2 {
        let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        builder.timer(TokioTimer::new());
        let idle = activity.idle_for(limits.header_timeout);
        drive(builder.serve_connection(io, service), stop, idle).await
    } else {
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout);
        let never = std::future::pending();
        drive(builder.serve_connection(io, service), stop, never).await
    }
}

/// How long an idle HTTP/2 connection told to go away (GOAWAY) may take to close: HTTP/2's
/// graceful close waits for the client to answer a PING, which a hostile client never does.
const GOAWAY_GRACE: Duration = Duration::from_secs(1);

/// Runs `conn` to its end, asking it to finish gracefully (HTTP/2 GOAWAY, HTTP/1.1 close
/// after the request in flight) on shutdown (the drain deadline bounds it) or when `idle`
/// resolves (then it gets [`GOAWAY_GRACE`] before it is dropped).
async fn drive<C: GracefulConnection>(
    conn: C,
    mut stop: watch::Receiver<bool>,
    idle: impl Future<Output = ()>,
) -> Result<(), C::Error> {
    let mut conn = std::pin::pin!(conn);
    let mut idle = std::pin::pin!(idle);
    let idled = tokio::select! {
        outcome = conn.as_mut() => return outcome,
        () = stopped(&mut stop) => false,
        () = idle.as_mut() => true,
    };
    conn.as_mut().graceful_shutdown();
    if !idled {
        return conn.await;
    }
    match tokio::time::timeout(GOAWAY_GRACE, conn).await {
        Ok(outcome) => outcome,
        // Dropping the connection closes it.
        Err(_) => Ok(()),
    }
}

/// Requests in flight on one connection, and since when it has had none.
#[derive(Clone, Debug)]
struct Activity(Arc<ActivityState>);

#[derive(Debug)]
struct ActivityState {
    in_flight: AtomicUsize,
    idle_since: Mutex<Instant>,
}

impl Default for Activity {
    fn default() -> Self {
        Self(Arc::new(ActivityState {
            in_flight: AtomicUsize::new(0),
            idle_since: Mutex::new(Instant::now()),
        }))
    }
}

/// One request in flight, until dropped.
struct Busy(Activity);

impl Drop for Busy {
    fn drop(&mut self) {
        let state = &self.0.0;
        *state.idle_since.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
        state.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Activity {
    fn begin(&self) -> Busy {
        self.0.in_flight.fetch_add(1, Ordering::SeqCst);
        Busy(self.clone())
    }

    /// Resolves once no request has been in flight for `limit`.
    async fn idle_for(&self, limit: Duration) {
        loop {
            let since = *self.0.idle_since.lock().unwrap_or_else(|p| p.into_inner());
            let deadline = if self.0.in_flight.load(Ordering::SeqCst) == 0 {
                since + limit
            } else {
                Instant::now() + limit
            };
            if Instant::now() >= deadline && self.0.in_flight.load(Ordering::SeqCst) == 0 {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

/// The HTTP/2 connection preface (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Whether a plain-HTTP client opens with the HTTP/2 preface, looked at without consuming
/// it. Decided at the first byte that differs; a client sending the preface slowly is
/// bounded by the caller's timeout.
async fn sends_h2_preface(tcp: &TcpStream) -> std::io::Result<bool> {
    let mut buf = [0u8; H2_PREFACE.len()];
    loop {
        let n = tcp.peek(&mut buf).await?;
        if n == 0 || buf[..n] != H2_PREFACE[..n] {
            return Ok(false);
        }
        if n == H2_PREFACE.len() {
            return Ok(true);
        }
        // A prefix of the preface: peek returns at once while no more has arrived.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
