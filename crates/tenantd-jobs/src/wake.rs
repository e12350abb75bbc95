//! Waking waiting workers when jobs are enqueued: at once on the node that enqueued them,
//! and on the other nodes sharing a PostgreSQL catalog through `LISTEN`/`NOTIFY` on
//! [`CHANNEL`]. A burst of enqueues sends one notification per [`COALESCE`] at most, so
//! an enqueue costs no extra round trip.
use crate::Result;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::Notify;

/// The PostgreSQL channel enqueues are announced on.
pub const CHANNEL: &str = "tenantd_jobs";
/// The shortest time between two notifications from one node.
const COALESCE: Duration = Duration::from_millis(5);

/// A node's waiting workers, and what it owes the other nodes.
#[derive(Default)]
pub(crate) struct Wake {
    /// Wakes this node's waiting claims.
    local: Notify,
    /// Jobs were enqueued here since the last notification.
    owed: AtomicBool,
    /// Wakes the publisher.
    kick: Notify,
    /// Whether the publisher runs (only then is anything owed).
    publishing: AtomicBool,
    /// Notifications heard from the channel.
    heard: AtomicU64,
}

impl Wake {
    /// Jobs were enqueued (and committed) on this node.
    pub(crate) fn enqueued(&self) {
        self.local.notify_waiters();
        if self.publishing.load(Ordering::Relaxed) {
            self.owed.store(true, Ordering::Release);
            self.kick.notify_one();
        }
    }

    /// Resolves at the next enqueue this node hears of.
    pub(crate) fn notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.local.notified()
    }
}

impl Wake {
    /// How many enqueue notifications were heard from the channel.
    pub(crate) fn heard(&self) -> u64 {
        self.heard.load(Ordering::Relaxed)
    }

    /// Starts announcing this node's enqueues on [`CHANNEL`] through `pool` and listening
    /// for every node's with a connection to `url`; both tasks end when `this` is
    /// dropped.
    pub(crate) async fn start(this: &Arc<Wake>, url: &str, pool: sqlx::AnyPool) -> Result<()> {
        let mut listener = sqlx::postgres::PgListener::connect(url).await?;
        listener.listen(CHANNEL).await?;
        this.publishing.store(true, Ordering::Relaxed);
        let wake = Arc::downgrade(this);
        tokio::spawn(async move {
            loop {
                // Looks now and then whether the queue is still there.
                let got = tokio::time::timeout(Duration::from_secs(5), listener.try_recv()).await;
                let Some(w) = wake.upgrade() else { return };
                match got {
                    Ok(Ok(Some(_))) => {
                        w.heard.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(Ok(None)) => {}
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "the job queue's listener failed; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    Err(_) => {}
                }
                // Whatever happened (a notification, a reconnection that may have lost some,
                // a quiet spell), waiting claims look again.
                w.local.notify_waiters();
            }
        });
        let wake: Weak<Wake> = Arc::downgrade(this);
        tokio::spawn(async move {
            loop {
                let Some(w) = wake.upgrade() else { return };
                let kicked = tokio::time::timeout(Duration::from_secs(5), w.kick.notified()).await;
                if kicked.is_ok() && w.owed.swap(false, Ordering::AcqRel) {
                    drop(w);
                    if let Err(e) = sqlx::query("SELECT pg_notify($1, '')")
                        .bind(CHANNEL)
                        .execute(&pool)
                        .await
                    {
                        tracing::warn!(error = %e, "could not announce enqueued jobs to the other nodes");
                    }
                    tokio::time::sleep(COALESCE).await;
                }
            }
        });
        Ok(())
    }
}
