//! One connection: the TLS handshake and the protocol choice within `header_timeout`, then
//! hyper's HTTP/1.1 (whose `header_read_timeout` closes a connection slow to send its
//! headers, or idle between requests) or HTTP/2, watched by [`watchdog`]:
//!
//! - a request's body must have arrived `request_timeout` after the request began (its
//!   first byte on HTTP/1.1, its headers on HTTP/2), else it is answered 408 and the
//!   connection is closed (GOAWAY on HTTP/2);
//! - a request in flight longer than `request_timeout` and a second (its response not
//!   taken by the client, or stuck), or a write the client has not taken for
//!   `request_timeout`, gets the connection dropped: a stalled HTTP/2 stream is not
//!   activity;
//! - an HTTP/2 connection with no request in flight for `header_timeout` is told to go
//!   away (HTTP/2 has no header timeout of its own);
//! - every request takes one of the listener's request slots (as many as
//!   `max_connections`), the HTTP/2 multiplexed ones included; when none is free it is
//!   refused at once with 503 `temporarily_unavailable` (`/healthz` and `/readyz` excepted,
//!   so that probes tell a busy server from a dead one).
//!
//! Request headers are capped at [`MAX_HEADER_BYTES`] (431), HTTP/2 streams at
//! [`MAX_STREAMS`] per connection; hyper's own header-only answers to requests it cannot
//! parse are rewritten on their way out into the OAuth error shape with nosniff
//! ([`Watched`]). On shutdown the connection finishes what is in flight and closes.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use crate::routes::App;
use axum::body::{Body, Bytes, HttpBody as _};
use axum::extract::ConnectInfo;
use axum::response::Response;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulConnection;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::{Instant, Sleep};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;

use super::{Limits, stopped};
use crate::hardening::ConnectionRefusal;

/// Request headers (request line included) are refused with 431 over this: HTTP/1.1
/// `max_header_size`, HTTP/2 `SETTINGS_MAX_HEADER_LIST_SIZE`.
pub(super) const MAX_HEADER_BYTES: usize = 16 * 1024;
/// HTTP/1.1 read and write buffers of a connection are capped at this (hyper's default is
/// ~400 KiB each): headers fit with room to spare, bodies are read through it in pieces.
pub(super) const H1_MAX_BUF: usize = 32 * 1024;
/// Streams one HTTP/2 connection may have open at once (`SETTINGS_MAX_CONCURRENT_STREAMS`).
pub(super) const MAX_STREAMS: u32 = 32;
/// HTTP/2 flow-control windows: what a client may send unread, per stream (the body cap)
/// and per connection.
pub(super) const H2_STREAM_WINDOW: u32 = 64 * 1024;
pub(super) const H2_CONNECTION_WINDOW: u32 = 128 * 1024;
/// What hyper buffers of one HTTP/2 response the client has not made room for, and the
/// largest piece of a response body handed to hyper at once.
pub(super) const H2_SEND_BUF: usize = 16 * 1024;
/// What a request in flight may take beyond `request_timeout` before its connection is
/// dropped: time to write the 408 it got when its body was late.
const IN_FLIGHT_GRACE: Duration = Duration::from_secs(1);

/// What every connection of one listener shares.
#[derive(Clone)]
pub(super) struct Site {
    pub(super) app: App,
    pub(super) tls: Option<TlsAcceptor>,
    /// The listener's request slots, `max_connections` of them.
    pub(super) requests: Arc<Semaphore>,
}

/// Serves one connection, holding its slot until it closes.
pub(super) async fn serve(
    tcp: TcpStream,
    peer: SocketAddr,
    site: Site,
    limits: Limits,
    stop: watch::Receiver<bool>,
    _slot: OwnedSemaphorePermit,
) {
    let Site { app, tls, requests } = site;
    let _ = tcp.set_nodelay(true);
    let conn = Conn::default();
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
            let service = Serve::new(app, peer, &conn, requests, limits, h2);
            http(stream, h2, service, limits, stop, conn).await
        }
        None => {
            let preface = tokio::time::timeout(limits.header_timeout, sends_h2_preface(&tcp));
            let Ok(Ok(h2)) = preface.await else {
                return;
            };
            let service = Serve::new(app, peer, &conn, requests, limits, h2);
            http(tcp, h2, service, limits, stop, conn).await
        }
    };
    if let Err(e) = outcome {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

async fn http<I>(
    io: I,
    h2: bool,
    service: Serve,
    limits: Limits,
    stop: watch::Receiver<bool>,
    conn: Conn,
) -> Result<(), hyper::Error>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = TokioIo::new(Watched::new(io, conn.clone(), !h2));
    let watch = watchdog(conn, limits, h2);
    if h2 {
        let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .max_concurrent_streams(MAX_STREAMS)
            .max_header_list_size(MAX_HEADER_BYTES as u32)
            .initial_stream_window_size(H2_STREAM_WINDOW)
            .initial_connection_window_size(H2_CONNECTION_WINDOW)
            .max_send_buf_size(H2_SEND_BUF);
        drive(builder.serve_connection(io, service), stop, watch).await
    } else {
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout)
            .max_header_size(MAX_HEADER_BYTES)
            .max_buf_size(H1_MAX_BUF);
        drive(builder.serve_connection(io, service), stop, watch).await
    }
}

/// How long an HTTP/2 connection told to go away (GOAWAY) may take to close: HTTP/2's
/// graceful close waits for the client to answer a PING, which a hostile client never does.
const GOAWAY_GRACE: Duration = Duration::from_secs(1);

/// What [`watchdog`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// Finish what is in flight (GOAWAY on HTTP/2), then close; dropped after
    /// [`GOAWAY_GRACE`].
    GoAway,
    /// Drop the connection now.
    Drop,
}

/// Runs `conn` to its end, asking it to finish gracefully (HTTP/2 GOAWAY, HTTP/1.1 close
/// after the request in flight) on shutdown (the drain deadline bounds it) or when `watch`
/// says so (then it gets [`GOAWAY_GRACE`] before it is dropped), and dropping it when
/// `watch` says drop.
async fn drive<C: GracefulConnection>(
    conn: C,
    mut stop: watch::Receiver<bool>,
    watch: impl Future<Output = Verdict>,
) -> Result<(), C::Error> {
    let mut conn = std::pin::pin!(conn);
    let mut watch = std::pin::pin!(watch);
    let verdict = tokio::select! {
        outcome = conn.as_mut() => return outcome,
        () = stopped(&mut stop) => None,
        v = watch.as_mut() => Some(v),
    };
    match verdict {
        // Dropping the connection closes it.
        Some(Verdict::Drop) => return Ok(()),
        Some(Verdict::GoAway) | None => conn.as_mut().graceful_shutdown(),
    }
    if verdict.is_none() {
        // Shutting down: in-flight requests finish (the caller bounds it), but a stalled
        // one still gets the connection dropped.
        tokio::select! {
            outcome = conn.as_mut() => return outcome,
            v = watch.as_mut() => if v == Verdict::Drop {
                return Ok(());
            },
        }
        return conn.await;
    }
    match tokio::time::timeout(GOAWAY_GRACE, conn).await {
        Ok(outcome) => outcome,
        Err(_) => Ok(()),
    }
}

/// Resolves when the connection has to go (see the module documentation), waking only at
/// the next deadline or when [`Conn`] changes.
async fn watchdog(conn: Conn, limits: Limits, h2: bool) -> Verdict {
    loop {
        let changed = conn.0.changed.notified();
        let mut changed = std::pin::pin!(changed);
        changed.as_mut().enable();
        let (verdict, next) = conn.check(Instant::now(), limits, h2);
        if let Some(v) = verdict {
            return v;
        }
        match next {
            Some(at) => tokio::select! {
                () = tokio::time::sleep_until(at) => {}
                () = changed => {}
            },
            None => changed.await,
        }
    }
}

/// What one connection is doing, shared by its service, its I/O and its watchdog.
#[derive(Clone, Debug, Default)]
struct Conn(Arc<ConnShared>);

#[derive(Debug, Default)]
struct ConnShared {
    state: Mutex<ConnState>,
    changed: Notify,
}

#[derive(Debug)]
struct ConnState {
    /// When each request in flight began, by id; a request is in flight from its headers
    /// until its response body has been handed to hyper in full.
    in_flight: Vec<(u64, Instant)>,
    next_id: u64,
    /// When the last request finished (or the connection opened).
    idle_since: Instant,
    /// HTTP/1.1: when the first byte after the last request arrived, which begins the next
    /// request.
    read_mark: Option<Instant>,
    /// Since when a write has been waiting for the client to take what was sent.
    write_blocked_since: Option<Instant>,
    /// A request's body did not arrive in time: the connection goes.
    timed_out: bool,
}

impl Default for ConnState {
    fn default() -> Self {
        Self {
            in_flight: Vec::new(),
            next_id: 0,
            idle_since: Instant::now(),
            read_mark: None,
            write_blocked_since: None,
            timed_out: false,
        }
    }
}

impl Conn {
    fn state(&self) -> MutexGuard<'_, ConnState> {
        self.0.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A request begins (its headers have arrived): when it began, and its guard.
    fn begin(&self, h1: bool) -> (Instant, Busy) {
        let now = Instant::now();
        let mut state = self.state();
        let began = if h1 {
            state.read_mark.take().unwrap_or(now)
        } else {
            now
        };
        let id = state.next_id;
        state.next_id += 1;
        state.in_flight.push((id, began));
        drop(state);
        self.0.changed.notify_one();
        (began, Busy(self.clone(), id))
    }

    fn read_some(&self) {
        let mut state = self.state();
        if state.in_flight.is_empty() && state.read_mark.is_none() {
            state.read_mark = Some(Instant::now());
        }
    }

    fn write_blocked(&self, blocked: bool) {
        let mut state = self.state();
        match (blocked, state.write_blocked_since) {
            (true, None) => {
                state.write_blocked_since = Some(Instant::now());
                drop(state);
                self.0.changed.notify_one();
            }
            (false, Some(_)) => state.write_blocked_since = None,
            _ => {}
        }
    }

    fn timed_out(&self) {
        self.state().timed_out = true;
        self.0.changed.notify_one();
    }

    /// The verdict at `now`, if any; else when to look again (`None`: when something
    /// changes).
    fn check(&self, now: Instant, limits: Limits, h2: bool) -> (Option<Verdict>, Option<Instant>) {
        let state = self.state();
        if state.timed_out {
            return (Some(Verdict::GoAway), None);
        }
        let mut next: Option<Instant> = None;
        let mut due = |at: Instant, verdict: Verdict| -> Option<Verdict> {
            if now >= at {
                return Some(verdict);
            }
            next = Some(next.map_or(at, |n| n.min(at)));
            None
        };
        if let Some(oldest) = state.in_flight.iter().map(|(_, began)| *began).min()
            && let Some(v) = due(
                oldest + limits.request_timeout + IN_FLIGHT_GRACE,
                Verdict::Drop,
            )
        {
            return (Some(v), None);
        }
        if let Some(since) = state.write_blocked_since
            && let Some(v) = due(since + limits.request_timeout, Verdict::Drop)
        {
            return (Some(v), None);
        }
        if h2
            && state.in_flight.is_empty()
            && let Some(v) = due(state.idle_since + limits.header_timeout, Verdict::GoAway)
        {
            return (Some(v), None);
        }
        (None, next)
    }
}

/// One request in flight, until dropped.
#[derive(Debug)]
struct Busy(Conn, u64);

impl Drop for Busy {
    fn drop(&mut self) {
        let mut state = self.0.state();
        state.in_flight.retain(|(id, _)| *id != self.1);
        if state.in_flight.is_empty() {
            state.idle_since = Instant::now();
        }
        drop(state);
        self.0.0.changed.notify_one();
    }
}

/// The service hyper calls per request: the router, with the peer address, a deadline on
/// the request body, a request slot and the in-flight guard around it.
#[derive(Clone)]
struct Serve {
    app: App,
    peer: SocketAddr,
    conn: Conn,
    requests: Arc<Semaphore>,
    request_timeout: Duration,
    h2: bool,
}

impl Serve {
    fn new(
        app: App,
        peer: SocketAddr,
        conn: &Conn,
        requests: Arc<Semaphore>,
        limits: Limits,
        h2: bool,
    ) -> Self {
        Self {
            app,
            peer,
            conn: conn.clone(),
            requests,
            request_timeout: limits.request_timeout,
            h2,
        }
    }
}

/// Probes answer even when every request slot is taken.
fn is_probe(req: &hyper::Request<Incoming>) -> bool {
    req.method() == hyper::Method::GET && matches!(req.uri().path(), "/healthz" | "/readyz")
}

impl hyper::service::Service<hyper::Request<Incoming>> for Serve {
    type Response = Response;
    type Error = std::convert::Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Self::Error>> + Send>>;

    fn call(&self, req: hyper::Request<Incoming>) -> Self::Future {
        let (began, busy) = self.conn.begin(!self.h2);
        let slot = Arc::clone(&self.requests).try_acquire_owned().ok();
        if slot.is_none() && !is_probe(&req) {
            let refused = ConnectionRefusal::Busy.response();
            return Box::pin(std::future::ready(Ok(guarded(refused, busy, None))));
        }
        let expired = Arc::new(AtomicBool::new(false));
        let mut req = if req.body().is_end_stream() {
            req.map(Body::new)
        } else {
            let deadline = began + self.request_timeout;
            let flag = Arc::clone(&expired);
            req.map(|inner| Body::new(Deadline::new(inner, deadline, flag)))
        };
        req.extensions_mut().insert(ConnectInfo(self.peer));
        let app = self.app.clone();
        let conn = self.conn.clone();
        let h1 = !self.h2;
        Box::pin(async move {
            let response = match app.oneshot(req).await {
                Ok(response) => response,
                Err(never) => match never {},
            };
            let response = if expired.load(Ordering::SeqCst) {
                conn.timed_out();
                let mut late = ConnectionRefusal::Timeout.response();
                if h1 {
                    late.headers_mut().insert(
                        hyper::header::CONNECTION,
                        hyper::header::HeaderValue::from_static("close"),
                    );
                }
                late
            } else {
                response
            };
            Ok(guarded(response, busy, slot))
        })
    }
}

/// `response` with the request's guard and slot released when hyper is done with its body.
fn guarded(response: Response, busy: Busy, slot: Option<OwnedSemaphorePermit>) -> Response {
    response.map(|inner| {
        Body::new(Guarded {
            inner,
            rest: Bytes::new(),
            _busy: busy,
            _slot: slot,
        })
    })
}

/// A response body handed to hyper in pieces of at most [`H2_SEND_BUF`]: hyper asks for the
/// next piece only once the previous one is on its way (HTTP/1.1: its write buffer has
/// room; HTTP/2: the client's window does), so a response the client does not take keeps
/// its request in flight (and [`watchdog`] sees it) instead of sitting whole in hyper's
/// buffers.
struct Guarded {
    inner: Body,
    /// What is left of the last data frame.
    rest: Bytes,
    _busy: Busy,
    _slot: Option<OwnedSemaphorePermit>,
}

impl hyper::body::Body for Guarded {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        if this.rest.is_empty() {
            match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => this.rest = data,
                    Err(frame) => return Poll::Ready(Some(Ok(frame))),
                },
                other => return Poll::Ready(other),
            }
        }
        let n = this.rest.len().min(H2_SEND_BUF);
        Poll::Ready(Some(Ok(Frame::data(this.rest.split_to(n)))))
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_empty() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let inner = self.inner.size_hint();
        let rest = self.rest.len() as u64;
        let mut hint = SizeHint::new();
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper + rest);
        }
        hint.set_lower(inner.lower() + rest);
        hint
    }
}

/// A request body that fails once its deadline has passed, and says so in `expired`.
struct Deadline {
    inner: Incoming,
    sleep: Pin<Box<Sleep>>,
    expired: Arc<AtomicBool>,
}

impl Deadline {
    fn new(inner: Incoming, deadline: Instant, expired: Arc<AtomicBool>) -> Self {
        Self {
            inner,
            sleep: Box::pin(tokio::time::sleep_until(deadline)),
            expired,
        }
    }
}

impl hyper::body::Body for Deadline {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        ready!(self.sleep.as_mut().poll(cx));
        self.expired.store(true, Ordering::SeqCst);
        Poll::Ready(Some(Err("the request body did not arrive in time".into())))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The connection's I/O, watched: reads mark when an HTTP/1.1 request begins, writes the
/// client does not take are timed, and (HTTP/1.1) hyper's own header-only answers to
/// requests it cannot parse (400, 414, 431: hyper writes them itself, before and without
/// the service, and has no hook to give them a body) are replaced by the same status in
/// the OAuth error shape with nosniff. Every answer of the router carries nosniff, so a
/// 4xx head without it, whose whole write is the head and `content-length: 0`, is hyper's.
struct Watched<I> {
    io: I,
    conn: Conn,
    h1: bool,
    /// A replacement answer still to be written, and how much of it has been.
    pending: Option<(Vec<u8>, usize)>,
}

impl<I> Watched<I> {
    fn new(io: I, conn: Conn, h1: bool) -> Self {
        Self {
            io,
            conn,
            h1,
            pending: None,
        }
    }
}

/// The refusal to write instead of `buf`, if `buf` is hyper's own answer to a request it
/// could not parse.
fn hyper_refusal(buf: &[u8]) -> Option<ConnectionRefusal> {
    let head = buf.strip_prefix(b"HTTP/1.1 4")?;
    if !buf.ends_with(b"\r\n\r\n") || buf.len() > 1024 {
        return None;
    }
    let lower = buf.to_ascii_lowercase();
    let has = |needle: &[u8]| lower.windows(needle.len()).any(|w| w == needle);
    if !has(b"\r\ncontent-length: 0\r\n") || has(b"x-content-type-options") {
        return None;
    }
    let status = std::str::from_utf8(head.get(..2)?)
        .ok()?
        .parse::<u16>()
        .ok()?;
    ConnectionRefusal::of_status(400 + status)
}

impl<I: AsyncWrite + Unpin> Watched<I> {
    /// Writes what is left of a replacement answer.
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        while let Some((bytes, written)) = &mut self.pending {
            if *written == bytes.len() {
                self.pending = None;
                break;
            }
            let polled = Pin::new(&mut self.io).poll_write(cx, &bytes[*written..]);
            let n = ready!(timed(&self.conn, polled))?;
            if n == 0 {
                return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
            }
            *written += n;
        }
        Poll::Ready(Ok(()))
    }
}

/// Notes a write the client has not taken (`Pending`) and one it has (bytes written);
/// wake-ups that write nothing leave the mark where it is.
fn timed(conn: &Conn, poll: Poll<std::io::Result<usize>>) -> Poll<std::io::Result<usize>> {
    match &poll {
        Poll::Pending => conn.write_blocked(true),
        Poll::Ready(Ok(n)) if *n > 0 => conn.write_blocked(false),
        Poll::Ready(_) => {}
    }
    poll
}

impl<I: AsyncRead + Unpin> AsyncRead for Watched<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if self.h1 && matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.conn.read_some();
        }
        polled
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Watched<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        ready!(this.poll_pending(cx))?;
        if this.h1
            && let Some(refusal) = hyper_refusal(buf)
        {
            this.pending = Some((refusal.http1_bytes(), 0));
            // The replacement is hyper's to flush; it is taken whole.
            if let Poll::Ready(Err(e)) = this.poll_pending(cx) {
                return Poll::Ready(Err(e));
            }
            return Poll::Ready(Ok(buf.len()));
        }
        let polled = Pin::new(&mut this.io).poll_write(cx, buf);
        timed(&this.conn, polled)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        ready!(this.poll_pending(cx))?;
        let polled = Pin::new(&mut this.io).poll_flush(cx);
        if polled.is_pending() {
            this.conn.write_blocked(true);
        }
        polled
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        ready!(this.poll_pending(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }

    // Vectored writes are not offered, so that hyper writes an answer's head in one
    // `poll_write` (its flattening strategy), where [`hyper_refusal`] can see it whole.
    fn is_write_vectored(&self) -> bool {
        false
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
