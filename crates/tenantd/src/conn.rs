//! Connection limits, for every listener (CONTRACT §1, the `[server]` table):
//!
//! - a request head must be complete within `header_read_timeout_ms` of its first byte
//!   (of the connection's opening, for its first request), or the connection closes;
//! - a keep-alive connection idle for `idle_timeout_ms` closes;
//! - past `max_connections`, the connection idle the longest is closed to make room,
//!   and when none is idle new connections wait in the listen backlog.
//!
//! So thousands of idle or slow clients cannot stop `/healthz` or an authenticated
//! request from being answered. The errors hyper answers by itself, before any handler
//! (a malformed head `400`, `414`, `431`, `505`), are written as problem+json here
//! ([`TrackedIo`] replaces hyper's empty answer).
use axum::body::{Body, Bytes};
use http::{Request, Response};
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tenantd_core::Code;
use tenantd_edge::Problem;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The `[server]` limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// A request head not complete by then closes the connection.
    pub header_read_timeout: Duration,
    /// An idle keep-alive connection closes after this long.
    pub idle_timeout: Duration,
    /// Open connections at most, per listener.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_millis(10_000),
            idle_timeout: Duration::from_millis(60_000),
            max_connections: 10_000,
        }
    }
}

/// The largest request head read (hyper's read buffer): past it, `431`.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// The most headers a request may have: past it, `431`.
pub const MAX_HEADERS: usize = 100;
/// The longest request target hyper reads: from it on, `414`.
const MAX_TARGET: usize = u16::MAX as usize - 1;

/// What happened to connections, for `/metrics`.
#[derive(Debug, Default)]
pub struct ConnMetrics {
    /// Connections accepted.
    pub accepted: AtomicU64,
    /// Closed because a request head took longer than `header_read_timeout_ms`.
    pub header_timeouts: AtomicU64,
    /// Closed after `idle_timeout_ms` without a request.
    pub idle_closed: AtomicU64,
    /// Closed to make room past `max_connections`.
    pub evicted: AtomicU64,
    /// Requests the HTTP layer refused (malformed, too large), answered as problem+json.
    pub refused_heads: AtomicU64,
}

/// The open connections of one listener.
pub struct Connections {
    limits: Limits,
    open: Mutex<HashMap<u64, Arc<Conn>>>,
    next_id: AtomicU64,
    room: tokio::sync::Notify,
    /// What happened, for `/metrics`.
    pub metrics: ConnMetrics,
}

impl Connections {
    /// No connections yet, under `limits`.
    pub fn new(limits: Limits) -> Arc<Self> {
        Arc::new(Self {
            limits,
            open: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            room: tokio::sync::Notify::new(),
            metrics: ConnMetrics::default(),
        })
    }

    /// Connections open now.
    pub fn len(&self) -> usize {
        self.open.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Connections with a request in flight (its head read, its exchange not over).
    pub fn busy(&self) -> usize {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.values().filter(|c| c.lock().active).count()
    }

    /// Whether no connection is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Waits until one more connection may be opened: at `max_connections`, the
    /// connection idle the longest is closed; with none idle, this waits for one to end.
    pub async fn room(&self) {
        loop {
            let waited = self.room.notified();
            {
                let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
                if open.len() < self.limits.max_connections {
                    return;
                }
                let oldest = open
                    .values()
                    .filter_map(|c| c.idle_since().map(|since| (since, c)))
                    .min_by_key(|(since, _)| *since);
                if let Some((_, c)) = oldest {
                    if c.evict() {
                        self.metrics.evicted.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            // The evicted one (or any other) ends soon; look again then, or in 100 ms.
            let _ = tokio::time::timeout(Duration::from_millis(100), waited).await;
        }
    }

    /// Registers an accepted connection; it is forgotten when the guard drops.
    pub fn open(self: &Arc<Self>) -> ConnGuard {
        self.metrics.accepted.fetch_add(1, Ordering::Relaxed);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(Conn::new());
        self.open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, conn.clone());
        ConnGuard {
            id,
            conn,
            all: self.clone(),
        }
    }

    /// The limits connections are served under.
    pub fn limits(&self) -> Limits {
        self.limits
    }
}

/// An open connection's registration: dropping it frees its place.
pub struct ConnGuard {
    id: u64,
    conn: Arc<Conn>,
    all: Arc<Connections>,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.all.open.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.id);
        self.all.room.notify_one();
    }
}

/// One connection's state, shared by its reader, its service and its timer.
pub struct Conn {
    state: Mutex<ConnState>,
    /// Wakes the connection's timer: the state changed, or it is evicted.
    wake: tokio::sync::Notify,
}

#[derive(Debug)]
struct ConnState {
    opened: Instant,
    /// A request is being served (its service called, its exchange not over).
    active: bool,
    /// The request's body was read to its end (`false` if the handler dropped it unread).
    request_done: bool,
    /// The response's body was sent to its end (or dropped).
    response_done: bool,
    /// Requests served to their end.
    served: u64,
    /// When the last exchange ended (or the connection opened).
    since: Instant,
    /// When the head being read began, if one is.
    head_started: Option<Instant>,
    /// The head read so far, between requests whose bodies were read whole (so what is
    /// read next can only be a head), to tell whether hyper is about to refuse it.
    head: Vec<u8>,
    head_watch: bool,
    /// The head read is one hyper will refuse: its next answer is its own error.
    refusing: bool,
    evicted: bool,
}

impl Conn {
    fn new() -> Self {
        let now = Instant::now();
        Self {
            state: Mutex::new(ConnState {
                opened: now,
                active: false,
                request_done: false,
                response_done: false,
                served: 0,
                since: now,
                head_started: None,
                head: Vec::new(),
                head_watch: true,
                refusing: false,
                evicted: false,
            }),
            wake: tokio::sync::Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, ConnState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Since when it is idle (no request in flight), if it is and is not evicted yet.
    fn idle_since(&self) -> Option<Instant> {
        let s = self.lock();
        (!s.active && !s.evicted).then_some(s.since)
    }

    /// Marks it for closing; `false` if it already was.
    fn evict(&self) -> bool {
        let first = !std::mem::replace(&mut self.lock().evicted, true);
        self.wake.notify_one();
        first
    }

    /// A request head was read whole: its service is called.
    fn request_started(&self) {
        let mut s = self.lock();
        s.active = true;
        s.request_done = false;
        s.response_done = false;
        s.head_started = None;
        s.head.clear();
        s.head_watch = false;
        s.refusing = false;
    }

    /// The request body ended (`whole`: read to its end; else dropped unread).
    fn request_ended(&self, whole: bool) {
        let mut s = self.lock();
        s.request_done = whole;
        if s.response_done {
            self.exchange_over(s);
        }
    }

    fn response_ended(&self) {
        let mut s = self.lock();
        if !s.active {
            return;
        }
        s.response_done = true;
        // A request whose body was dropped unread counts as over for the timers; only
        // the head watch needs it read whole.
        self.exchange_over(s);
    }

    fn exchange_over(&self, mut s: MutexGuard<'_, ConnState>) {
        if !s.active {
            return;
        }
        s.active = false;
        s.served += 1;
        s.since = Instant::now();
        s.head_watch = s.request_done;
        drop(s);
        self.wake.notify_one();
    }

    /// `bytes` arrived from the client.
    fn read(&self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let mut s = self.lock();
        if s.active {
            return;
        }
        if s.head_started.is_none() {
            s.head_started = Some(Instant::now());
            self.wake.notify_one();
        }
        if !s.head_watch || s.refusing {
            return;
        }
        let room = (MAX_HEAD_BYTES + 1).saturating_sub(s.head.len());
        s.head.extend_from_slice(&bytes[..bytes.len().min(room)]);
        if bytes.contains(&b'\n') || s.head.len() > MAX_HEAD_BYTES {
            s.refusing = hyper_refuses(&s.head);
            if !s.refusing && head_complete(&s.head) {
                s.head_watch = false;
            }
        }
    }

    /// When the connection is to close unless something happens first, and why.
    fn deadline(&self, limits: &Limits) -> Option<(Instant, Closed)> {
        let s = self.lock();
        if s.evicted {
            return Some((Instant::now(), Closed::Evicted));
        }
        if s.active {
            return None;
        }
        Some(match (s.head_started, s.served) {
            (Some(at), _) => (at + limits.header_read_timeout, Closed::HeaderTimeout),
            (None, 0) => (s.opened + limits.header_read_timeout, Closed::HeaderTimeout),
            (None, _) => (s.since + limits.idle_timeout, Closed::Idle),
        })
    }

    /// Whether hyper's next write is its own error answer.
    fn refusing(&self) -> bool {
        let s = self.lock();
        !s.active && s.refusing
    }
}

/// Why a connection was closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Closed {
    HeaderTimeout,
    Idle,
    Evicted,
}

/// Whether hyper refuses this (partial) request head: it does not parse, has too many
/// headers, is larger than hyper reads, or its target is too long. When this guesses
/// wrong nothing happens: a refusal is only acted on if hyper then writes one.
fn hyper_refuses(head: &[u8]) -> bool {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(head) {
        Ok(httparse::Status::Complete(_)) => req.path.is_some_and(|p| p.len() >= MAX_TARGET),
        Ok(httparse::Status::Partial) => head.len() > MAX_HEAD_BYTES,
        Err(_) => true,
    }
}

fn head_complete(head: &[u8]) -> bool {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    matches!(
        httparse::Request::new(&mut headers).parse(head),
        Ok(httparse::Status::Complete(_))
    )
}

/// The problem+json answer to a head hyper refused with `status`.
fn refusal(status: u16) -> Option<Vec<u8>> {
    let (code, reason, detail) = match status {
        400 => (
            Code::InvalidRequest,
            "Bad Request",
            "the request is not valid HTTP/1.1: its request line or a header is malformed",
        ),
        414 => (
            Code::UriTooLong,
            "URI Too Long",
            "the request target is too long (at most 65,533 bytes)",
        ),
        431 => (
            Code::HeadersTooLarge,
            "Request Header Fields Too Large",
            "the request head is too large (about 64 KiB at most) or has more than 100 headers",
        ),
        505 => (
            Code::HttpVersionNotSupported,
            "HTTP Version Not Supported",
            "this listener speaks HTTP/1.0 and HTTP/1.1",
        ),
        _ => return None,
    };
    let request_id = tenantd_edge::layer::new_request_id();
    tracing::info!(request_id = %request_id, status, "request refused by the HTTP layer");
    let body = serde_json::to_vec(&Problem::new(code, detail).body(&request_id)).ok()?;
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/problem+json\r\ncontent-length: {}\r\nx-request-id: {request_id}\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(&body);
    Some(out)
}

/// The status of an HTTP/1 response head at the start of `buf`, if it is one.
fn status_of(buf: &[u8]) -> Option<u16> {
    let rest = buf.strip_prefix(b"HTTP/1.")?;
    std::str::from_utf8(rest.get(2..5)?).ok()?.parse().ok()
}

/// The client's socket as hyper sees it: reads tell the connection's state what
/// arrived; a write of hyper's own error answer is replaced with problem+json.
pub struct TrackedIo<T> {
    inner: T,
    conn: Arc<Conn>,
    all: Arc<Connections>,
    /// The problem+json answer being written in place of hyper's, and how far.
    replacing: Option<(Vec<u8>, usize)>,
    /// Hyper's answer was replaced: the rest of what it writes is dropped.
    replaced: bool,
}

impl<T> TrackedIo<T> {
    fn new(inner: T, conn: Arc<Conn>, all: Arc<Connections>) -> Self {
        Self {
            inner,
            conn,
            all,
            replacing: None,
            replaced: false,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for TrackedIo<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = r {
            self.conn.read(&buf.filled()[before..]);
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> TrackedIo<T> {
    /// Writes what replaces hyper's answer; `Ready(Ok)` once all of it is written.
    fn poll_replacement(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((bytes, at)) = self.replacing.as_mut() {
            if *at == bytes.len() {
                self.replacing = None;
                self.replaced = true;
                break;
            }
            match Pin::new(&mut self.inner).poll_write(cx, &bytes[*at..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => *at += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Whether `first` (the start of a write) is hyper's own error answer, which is then
    /// replaced: `Some(())` once the replacement is written.
    fn poll_intercept(&mut self, cx: &mut Context<'_>, first: &[u8]) -> Poll<io::Result<bool>> {
        if self.replaced {
            return Poll::Ready(Ok(true));
        }
        if self.replacing.is_none() {
            let ours = status_of(first).filter(|_| self.conn.refusing()).and_then(refusal);
            match ours {
                Some(bytes) => {
                    self.all.metrics.refused_heads.fetch_add(1, Ordering::Relaxed);
                    self.replacing = Some((bytes, 0));
                }
                None => return Poll::Ready(Ok(false)),
            }
        }
        self.poll_replacement(cx).map_ok(|()| true)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for TrackedIo<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.poll_intercept(cx, buf) {
            Poll::Ready(Ok(true)) => Poll::Ready(Ok(buf.len())),
            Poll::Ready(Ok(false)) => Pin::new(&mut self.inner).poll_write(cx, buf),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let first = bufs.iter().find(|b| !b.is_empty()).map_or(&[][..], |b| &b[..]);
        match self.poll_intercept(cx, first) {
            Poll::Ready(Ok(true)) => Poll::Ready(Ok(bufs.iter().map(|b| b.len()).sum())),
            Poll::Ready(Ok(false)) => Pin::new(&mut self.inner).poll_write_vectored(cx, bufs),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.poll_replacement(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut self.inner).poll_flush(cx),
            other => other,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.poll_replacement(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut self.inner).poll_shutdown(cx),
            other => other,
        }
    }
}

/// Which end of an exchange a [`Tracked`] body is.
#[derive(Clone, Copy)]
enum Side {
    Request,
    Response,
}

/// A body that tells its connection when it ends (or is dropped).
struct Tracked<B> {
    inner: B,
    conn: Arc<Conn>,
    side: Side,
    ended: bool,
}

impl<B> Tracked<B> {
    fn new(inner: B, conn: Arc<Conn>, side: Side) -> Self
    where
        B: HttpBody,
    {
        let mut t = Self {
            inner,
            conn,
            side,
            ended: false,
        };
        // A request without a body (most GETs) is read whole from the start.
        if matches!(side, Side::Request) && t.inner.is_end_stream() {
            t.end(true);
        }
        t
    }

    fn end(&mut self, whole: bool) {
        if !std::mem::replace(&mut self.ended, true) {
            match self.side {
                Side::Request => self.conn.request_ended(whole),
                Side::Response => self.conn.response_ended(),
            }
        }
    }
}

impl<B> Drop for Tracked<B> {
    fn drop(&mut self) {
        self.end(false);
    }
}

impl<B: HttpBody<Data = Bytes> + Unpin> HttpBody for Tracked<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let r = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(None) = r {
            self.end(true);
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Serves one accepted connection with HTTP/1.1 (keep-alive, upgrades) under the
/// listener's limits: `handler` answers each request. Returns when the connection ends:
/// closed by the client, by a limit, or gracefully once `stop` turns true.
pub async fn serve<H, F>(
    stream: tokio::net::TcpStream,
    guard: ConnGuard,
    handler: H,
    mut stop: tokio::sync::watch::Receiver<bool>,
) where
    H: Fn(Request<Body>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let conn = guard.conn.clone();
    let all = guard.all.clone();
    let limits = all.limits;
    let svc_conn = conn.clone();
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let conn = svc_conn.clone();
        conn.request_started();
        let fut = handler(req.map(|b| Body::new(Tracked::new(b, conn.clone(), Side::Request))));
        async move {
            let resp = fut.await;
            Ok::<_, Infallible>(resp.map(|b| Body::new(Tracked::new(b, conn, Side::Response))))
        }
    });
    let mut http1 = hyper::server::conn::http1::Builder::new();
    // The limits are this module's; hyper's own head timer would also close idle
    // keep-alive connections at the head timeout.
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        .max_buf_size(MAX_HEAD_BYTES)
        .max_headers(MAX_HEADERS);
    let io = TokioIo::new(TrackedIo::new(stream, conn.clone(), all.clone()));
    let served = http1.serve_connection(io, service).with_upgrades();
    let mut served = std::pin::pin!(served);
    let mut stopping = false;
    loop {
        let deadline = conn.deadline(&limits);
        let sleep = async {
            match deadline {
                Some((at, _)) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            ended = served.as_mut() => {
                if let Err(e) = ended {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                break;
            }
            _ = sleep => {
                // Look again: the state may have moved the deadline since.
                if let Some((at, why)) = conn.deadline(&limits) {
                    if at <= Instant::now() {
                        let m = &all.metrics;
                        match why {
                            Closed::HeaderTimeout => m.header_timeouts.fetch_add(1, Ordering::Relaxed),
                            Closed::Idle => m.idle_closed.fetch_add(1, Ordering::Relaxed),
                            Closed::Evicted => 0,
                        };
                        break;
                    }
                }
            }
            _ = conn.wake.notified() => {}
            _ = stop.wait_for(|s| *s), if !stopping => {
                // Finish the request in flight, then close.
                served.as_mut().graceful_shutdown();
                stopping = true;
            }
        }
    }
    drop(guard);
}

/// Accepts connections on `listener` until `stop` turns true, handing each (with its
/// registration) to `dispatch`. At `max_connections` it makes room for each one
/// ([`Connections::room`]); a failed accept (out of file descriptors) waits a moment.
pub async fn accept_each(
    listener: tokio::net::TcpListener,
    all: Arc<Connections>,
    mut stop: tokio::sync::watch::Receiver<bool>,
    mut dispatch: impl FnMut(tokio::net::TcpStream, ConnGuard),
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.wait_for(|s| *s) => return,
        };
        let s = match accepted {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // At the limit, an idle connection is closed for this one; with none idle, this
        // one waits (and the next ones in the backlog) until a connection ends.
        tokio::select! {
            _ = all.room() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        // Responses are written whole; do not let Nagle hold their last segment.
        let _ = s.set_nodelay(true);
        dispatch(s, all.open());
    }
}

/// Serves `listener` with `handler` on this runtime until `stop`, then lets every
/// connection finish its request in flight; returns when all have ended.
pub async fn serve_listener<H, F>(
    listener: tokio::net::TcpListener,
    all: Arc<Connections>,
    handler: H,
    stop: tokio::sync::watch::Receiver<bool>,
) where
    H: Fn(Request<Body>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let mut conns = tokio::task::JoinSet::new();
    let stop2 = stop.clone();
    accept_each(listener, all, stop, |s, guard| {
        while conns.try_join_next().is_some() {}
        conns.spawn(serve(s, guard, handler.clone(), stop2.clone()));
    })
    .await;
    while conns.join_next().await.is_some() {}
}

/// File descriptors kept back from connections, for the catalog's and the data plane's
/// pools, files and logs.
const FDS_KEPT: u64 = 256;

/// Raises this process's open-file limit to its hard limit (as nginx's
/// `worker_rlimit_nofile` and Go's runtime do) and lowers `max_connections` if the
/// `listeners` would otherwise need more descriptors than that allows: a node out of
/// descriptors could no longer accept `/healthz`, while one at `max_connections` makes
/// room by closing an idle connection. Logs what it did.
pub fn fit_to_fd_limit(limits: Limits, listeners: u64) -> Limits {
    let soft = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(error = %e, "could not read or raise the open-file limit");
            return limits;
        }
    };
    let room = (soft.saturating_sub(FDS_KEPT) / listeners.max(1)) as usize;
    if room >= limits.max_connections {
        return limits;
    }
    tracing::warn!(
        open_files = soft,
        configured = limits.max_connections,
        max_connections = room.max(1),
        "the open-file limit is below what max_connections needs; max_connections lowered to fit (raise `ulimit -n` to serve more)"
    );
    Limits {
        max_connections: room.max(1),
        ..limits
    }
}
