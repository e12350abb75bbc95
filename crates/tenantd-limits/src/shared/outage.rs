//! While Redis is away, and when it is back: the heartbeat (which also counts the live
//! nodes), the fallback that decides meanwhile by each plan's policy, and the
//! reconciliation that adds what the fallback counted to the shared counters.
use super::client::call;
use super::{Inner, Shared};
use crate::local::Local;
use crate::state::period;
use crate::{AdmitError, Ask, CounterStore, Outcome};
use redis::aio::ConnectionManager;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tenantd_core::usage::CounterRow;
use tenantd_core::{KeyId, Limit, TenantId};

/// A node that has not beaten for this long is not counted as live.
const NODE_TTL_MS: i64 = 5_000;

/// Where the fallback's counters go when it is flushed: kept, to be added to Redis when
/// it answers again.
#[derive(Default)]
struct Outage(Mutex<Vec<CounterRow>>);

#[async_trait::async_trait]
impl CounterStore for Outage {
    async fn load(&self, _: &TenantId, _: i64) -> Result<Vec<CounterRow>, String> {
        Ok(Vec::new())
    }
    async fn add(&self, deltas: &[CounterRow]) -> Result<(), String> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(deltas);
        Ok(())
    }
}

/// The in-process engine an outage is decided by, and what it counted.
pub(super) struct Fallback {
    pub(super) engine: Local,
    counted: Arc<Outage>,
}

impl Fallback {
    pub(super) fn new() -> Arc<Self> {
        let counted = Arc::new(Outage::default());
        Arc::new(Self {
            engine: Local::new(counted.clone()),
            counted,
        })
    }
}

impl Shared {
    /// `fail_open_local`: this node's share of what was left when Redis was last seen,
    /// `(limit − last seen) ÷ live nodes`, counted in process from the outage's start.
    pub(super) async fn fallback_admit(&self, asks: &[Ask<'_>], now_ms: i64) -> Result<Outcome, AdmitError> {
        let now_s = now_ms.div_euclid(1000);
        let nodes = self.inner.metrics.nodes.load(Ordering::Relaxed).max(1);
        let share = |ask: &Ask<'_>, scope: Option<KeyId>, ls: &[Limit]| -> Vec<Limit> {
            ls.iter()
                .map(|l| {
                    let mut l = l.clone();
                    if let (Some(limit), true) = (l.limit, l.resource == ask.resource) {
                        let key = self.inner.counter_key(ask.tenant, scope, ask.resource, l.window, now_s);
                        let seen = self.inner.last.get(&key).map_or(0, |v| *v);
                        l.limit = Some(limit.saturating_sub(seen) / nodes);
                    }
                    l
                })
                .collect()
        };
        let limits: Vec<(Vec<Limit>, Vec<Limit>)> = asks
            .iter()
            .map(|a| (share(a, None, a.tenant_limits), share(a, a.key, a.key_limits)))
            .collect();
        let scaled: Vec<Ask<'_>> = asks
            .iter()
            .zip(&limits)
            .map(|(a, (t, k))| Ask {
                tenant_limits: t,
                key_limits: k,
                ..*a
            })
            .collect();
        self.inner.fallback_engine().engine.admit_all_at(&scaled, now_ms).await
    }
}

impl Inner {
    pub(super) fn down(&self, why: &str) {
        self.metrics.errors.fetch_add(1, Ordering::Relaxed);
        if self.metrics.up.swap(false, Ordering::Relaxed) {
            tracing::error!(
                error = why,
                "shared counters (Redis) unreachable: deciding by each plan's counter_failure policy until Redis answers"
            );
        }
    }

    pub(super) fn fallback_engine(&self) -> Arc<Fallback> {
        self.fallback.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Adds what an outage's fallback counted to Redis, so the shared counters hold
    /// every node's use again.
    async fn reconcile(&self, conn: &ConnectionManager, rows: &[CounterRow]) -> Result<usize, String> {
        let now_ms = crate::now_ms();
        let now_s = now_ms.div_euclid(1000);
        let mut inv = self.reconcile.prepare_invoke();
        let mut n = 0;
        for r in rows {
            let (current, end) = period(r.window, now_s);
            if current != r.period {
                continue;
            }
            let floor = self
                .record
                .value_at(r.tenant, r.scope, &r.resource, r.window, now_ms)
                .await
                .map_err(|e| e.to_string())?;
            inv.key(self.counter_key_of(r.tenant, r.scope, &r.resource, r.window, r.period));
            inv.arg(floor).arg(r.value).arg(end.map_or(0, |e| e + 86_400));
            n += 1;
        }
        if n > 0 {
            call::<i64>(inv.invoke_async(&mut conn.clone())).await?;
        }
        Ok(n)
    }

    pub(super) async fn beat(&self) -> Result<(), String> {
        let conn = self.conn().await?;
        let now = crate::now_ms();
        let key = format!("{}nodes", self.prefix);
        let (_, _, n): ((), (), u64) = call(
            redis::pipe()
                .atomic()
                .zadd(&key, &self.node, now)
                .zrembyscore(&key, "-inf", now - NODE_TTL_MS)
                .zcard(&key)
                .query_async(&mut conn.clone()),
        )
        .await?;
        self.metrics.nodes.store(n.max(1), Ordering::Relaxed);
        if !self.metrics.up.load(Ordering::Relaxed) {
            // What the outage counted goes to Redis first; the next outage starts fresh,
            // but keeps what could not be added yet.
            let old = std::mem::replace(
                &mut *self.fallback.lock().unwrap_or_else(|e| e.into_inner()),
                Fallback::new(),
            );
            old.engine.flush().await?;
            let rows = std::mem::take(&mut *old.counted.0.lock().unwrap_or_else(|e| e.into_inner()));
            let added = match self.reconcile(&conn, &rows).await {
                Ok(n) => n,
                Err(e) => {
                    let kept = self.fallback_engine();
                    kept.counted.0.lock().unwrap_or_else(|e| e.into_inner()).extend(rows);
                    return Err(e);
                }
            };
            self.metrics.up.store(true, Ordering::Relaxed);
            tracing::info!(
                nodes = n,
                counters_reconciled = added,
                "shared counters (Redis) reachable"
            );
        }
        if self.last.len() > 1_000_000 {
            self.last.clear();
        }
        Ok(())
    }
}

pub(super) async fn heartbeat(inner: Weak<Inner>) {
    loop {
        let Some(i) = inner.upgrade() else { return };
        if let Err(e) = i.beat().await {
            i.down(&e);
        }
        drop(i);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
