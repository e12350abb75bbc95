//! Connection limits, for every listener (the `[server]` table of docs/configuration.md):
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
//! ([`watched::TrackedIo`] replaces hyper's empty answer).

mod state;
mod watched;

use axum::body::Body;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use state::{Closed, Conn};
use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use watched::{Side, Tracked, TrackedIo};

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
        open.values().filter(|c| c.is_active()).count()
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
