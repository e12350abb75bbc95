//! Request pools: when a pooled connection is pinged before it is handed out, and telling
//! a connection the server closed from a statement that failed.
use sqlx::any::AnyPoolOptions;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// How long a pooled connection may sit idle and still be handed out without a ping.
const TRUSTED_IDLE: Duration = Duration::from_secs(10);
/// How often a transaction is begun again after meeting a connection the server had
/// closed (each time, the connections idle since then are pinged first).
pub(super) const LOST_RETRIES: u32 = 2;

/// When a pool last found one of its connections closed by the server (a restart,
/// `pg_terminate_backend`, a proxy's idle timeout): its other connections idle since
/// then may be closed too, and are pinged before use.
#[derive(Debug, Default)]
pub(crate) struct Lost(AtomicU64);

impl Lost {
    /// Nanoseconds since the first call (never 0, which means "never lost").
    fn now() -> u64 {
        static EPOCH: OnceLock<Instant> = OnceLock::new();
        u64::try_from(EPOCH.get_or_init(Instant::now).elapsed().as_nanos())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    pub(super) fn mark(&self) {
        self.0.store(Self::now(), Ordering::Relaxed);
    }

    /// Whether a connection idle for `idle` was idle when the last loss was found.
    fn suspects(&self, idle: Duration) -> bool {
        let at = self.0.load(Ordering::Relaxed);
        at != 0 && Duration::from_nanos(Self::now().saturating_sub(at)) < idle
    }
}

/// Options of a pool that tenant requests use, with at most `max` connections. sqlx
/// pings a connection when it goes back to the pool (always) and, by default, again when
/// it is taken out: two extra round trips around every transaction. Here the second
/// ping is made only for a connection idle longer than [`TRUSTED_IDLE`], or idle since
/// the pool last `lost` a connection. A transaction that still meets a closed one fails
/// at its `BEGIN`, where nothing has run, and [`Location::begin`](super::Location::begin) begins it again.
pub(crate) fn request_pool(max: u32, lost: Arc<Lost>) -> AnyPoolOptions {
    AnyPoolOptions::new()
        .max_connections(max.max(1))
        .test_before_acquire(false)
        .before_acquire(move |conn, meta| {
            let check = meta.idle_for > TRUSTED_IDLE || lost.suspects(meta.idle_for);
            Box::pin(async move {
                if check {
                    sqlx::Connection::ping(conn).await?;
                }
                Ok(true)
            })
        })
}

/// Whether `e` says the connection itself is gone (closed, reset, or the server shut
/// the session down), as opposed to a statement failing.
pub(super) fn connection_lost(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(d) => d.code().is_some_and(|c| c.starts_with("57P") || c.starts_with("08")),
        _ => false,
    }
}
