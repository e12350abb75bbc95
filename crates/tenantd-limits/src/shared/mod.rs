//! Counters shared by every node through Redis: one Lua script per decision checks and
//! commits every limit of a request atomically, so N nodes together never admit more
//! than the limit. When Redis cannot be reached, each plan's policy decides:
//! `fail_closed` refuses (503), `fail_open_local` lets each node admit its own share of
//! what was left when Redis was last seen. A heartbeat every second counts the live nodes
//! and notices when Redis is back; what the nodes admitted meanwhile is then added to the
//! shared counters.
//!
//! Here: the engine's API; `scripts`: the Lua scripts; `client`: keys, the connection and
//! the admission scripts' calls; `outage`: the heartbeat, the fallback and reconciliation.

mod client;
mod outage;
mod scripts;

use crate::local::{new_lease_id, Local};
use crate::{AdmitError, Ask, Outcome, Reservation};
use client::call;
use dashmap::DashMap;
use outage::{heartbeat, Fallback};
use redis::aio::ConnectionManager;
use scripts::{ACQUIRE, ADMIT, COUNTS, RECONCILE, RELEASE, TAKE_BACK};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tenantd_core::{CounterFailure, Enforcement, Limit, TenantId, Window};

/// Health and fallback figures, for `/metrics`.
#[derive(Debug, Default)]
pub struct SharedMetrics {
    /// Redis calls that failed or timed out.
    pub errors: AtomicU64,
    /// Decisions made by a fallback policy while Redis was unreachable.
    pub fallbacks: AtomicU64,
    /// True while Redis answers.
    pub up: AtomicBool,
    /// Live nodes seen at the last heartbeat.
    pub nodes: AtomicU64,
}

struct Inner {
    client: redis::Client,
    conn: Mutex<Option<ConnectionManager>>,
    prefix: String,
    node: String,
    admit: redis::Script,
    acquire: redis::Script,
    release: redis::Script,
    reconcile: redis::Script,
    take_back: redis::Script,
    metrics: SharedMetrics,
    /// The last value seen of each shared counter: what a fallback shares out.
    last: DashMap<String, u64>,
    /// The fallback's own counters, fresh for each outage.
    fallback: Mutex<Arc<Fallback>>,
    /// This node's record, for the floors of recreated counters.
    record: Arc<Local>,
}

/// The shared engine.
pub struct Shared {
    inner: Arc<Inner>,
}

impl Shared {
    /// Connects lazily to `url` (a bad URL is an error; an unreachable server is not:
    /// the node starts on its fallback policies and joins when Redis answers). Keys start
    /// with `prefix`; `record` is this node's usage record. Spawns the heartbeat on the
    /// current Tokio runtime.
    pub fn start(url: &str, prefix: &str, record: Arc<Local>) -> Result<Self, String> {
        let client = redis::Client::open(url).map_err(|e| format!("redis_url: {e}"))?;
        let inner = Arc::new(Inner {
            client,
            conn: Mutex::new(None),
            prefix: prefix.to_string(),
            node: format!("{:016x}", rand::random::<u64>()),
            admit: redis::Script::new(&format!("{COUNTS}{ADMIT}")),
            acquire: redis::Script::new(ACQUIRE),
            release: redis::Script::new(RELEASE),
            reconcile: redis::Script::new(&format!("{COUNTS}{RECONCILE}")),
            take_back: redis::Script::new(&format!("{COUNTS}{TAKE_BACK}")),
            metrics: SharedMetrics::default(),
            last: DashMap::new(),
            fallback: Mutex::new(Fallback::new()),
            record,
        });
        inner.metrics.nodes.store(1, Ordering::Relaxed);
        tokio::spawn(heartbeat(Arc::downgrade(&inner)));
        Ok(Self { inner })
    }

    /// Health and fallback figures.
    pub fn metrics(&self) -> &SharedMetrics {
        &self.inner.metrics
    }

    /// Beats once now (connecting if needed); `Ok` when Redis answered.
    pub async fn beat(&self) -> Result<(), String> {
        let r = self.inner.beat().await;
        if let Err(e) = &r {
            self.inner.down(e);
        }
        r
    }

    /// Decides `asks` (one tenant, distinct resources) in one script call, or by the
    /// plan's failure policy when Redis is unreachable. Admitted use is also recorded in
    /// this node's record (flushed to the catalog).
    pub async fn admit_all(&self, asks: &[Ask<'_>], now_ms: i64) -> Result<Outcome, AdmitError> {
        let (out, _) = self.decide(asks, now_ms).await?;
        if matches!(out, Outcome::Admitted { .. }) {
            self.inner.record.record_at(asks, now_ms).await?;
        }
        Ok(out)
    }

    /// [`Shared::admit_all`] for use the caller stores itself (see [`Reservation`]).
    pub(crate) async fn reserve(
        &self,
        asks: &[Ask<'_>],
        now_ms: i64,
    ) -> Result<(Outcome, Option<Reservation>), AdmitError> {
        let (out, in_redis) = self.decide(asks, now_ms).await?;
        let kept = match out {
            Outcome::Admitted { .. } => self.inner.record.record_reserved(asks, now_ms, in_redis).await?,
            _ => None,
        };
        Ok((out, kept))
    }

    /// Uncounts a reservation: in this node's record, and in Redis when Redis counted it
    /// (an outage's fallback share keeps what it admitted).
    pub(crate) async fn take_back(&self, r: &Reservation) {
        self.inner.record.take_back(r, false);
        if !r.in_redis {
            return;
        }
        if let Err(e) = self.eval_take_back(r).await {
            tracing::warn!(error = %e, tenant_id = %r.tenant, "could not take back usage counted in Redis");
            self.inner.down(&e);
        }
    }

    /// The decision, and whether Redis made it (rather than an outage's fallback).
    async fn decide(&self, asks: &[Ask<'_>], now_ms: i64) -> Result<(Outcome, bool), AdmitError> {
        let Some(first) = asks.first() else {
            return Ok((Outcome::nothing(), false));
        };
        if self.up() {
            match self.eval_admit(asks, now_ms).await {
                Ok(out) => return Ok((out, true)),
                Err(e) => self.inner.down(&e),
            }
        }
        self.inner.metrics.fallbacks.fetch_add(1, Ordering::Relaxed);
        match first.failure {
            CounterFailure::FailClosed => Err(AdmitError::Unavailable),
            CounterFailure::FailOpenLocal => Ok((self.fallback_admit(asks, now_ms).await?, false)),
        }
    }

    fn up(&self) -> bool {
        self.inner.metrics.up.load(Ordering::Relaxed)
    }

    /// The tenant's current use of `resource` in `window` as Redis has it (`None` when
    /// Redis is unreachable or holds no such counter: the caller answers from this
    /// node's record).
    pub async fn current(&self, tenant: TenantId, resource: &str, window: Window, now_ms: i64) -> Option<u64> {
        if !self.up() {
            return None;
        }
        let now_s = now_ms.div_euclid(1000);
        let conn = self.inner.conn().await.ok()?;
        let counter = || self.inner.counter_key(tenant, None, resource, window, now_s);
        let res: Result<Option<u64>, String> = match (window, window.rate_ms()) {
            (Window::Concurrent, _) => {
                let key = format!("{}l:{resource}", self.inner.tenant_key(tenant));
                let cmd = redis::cmd("ZCOUNT")
                    .arg(&key)
                    .arg(format!("({now_ms}"))
                    .arg("+inf")
                    .to_owned();
                call(cmd.query_async(&mut conn.clone())).await.map(Some)
            }
            (_, Some(len)) => {
                let g = (len / 100).max(1);
                let cmd = redis::cmd("HGETALL").arg(counter()).to_owned();
                let h: Result<Vec<(i64, u64)>, String> = call(cmd.query_async(&mut conn.clone())).await;
                h.map(|h| {
                    Some(
                        h.iter()
                            .filter(|(b, _)| (b + 1) * g > now_ms - len)
                            .map(|(_, c)| c)
                            .sum(),
                    )
                })
            }
            _ => call(redis::cmd("GET").arg(counter()).query_async(&mut conn.clone())).await,
        };
        match res {
            Ok(v) => v,
            Err(e) => {
                self.inner.down(&e);
                None
            }
        }
    }

    /// Takes a lease in Redis, or by the plan's failure policy.
    pub async fn acquire(
        &self,
        tenant: TenantId,
        limits: &[Limit],
        failure: CounterFailure,
        resource: &str,
        ttl_ms: i64,
        now_ms: i64,
    ) -> Result<Result<String, Outcome>, AdmitError> {
        let lim = limits
            .iter()
            .find(|l| l.resource == resource && l.window == Window::Concurrent);
        if self.up() {
            let id = new_lease_id();
            let base = self.inner.tenant_key(tenant);
            let res: Result<Vec<i64>, String> = match self.inner.conn().await {
                Ok(conn) => {
                    let mut inv = self.inner.acquire.prepare_invoke();
                    inv.key(format!("{base}l:{resource}"))
                        .key(format!("{base}lr"))
                        .arg(now_ms)
                        .arg(ttl_ms)
                        .arg(lim.and_then(|l| l.limit).map_or(-1, |l| l as i64))
                        .arg(u8::from(lim.is_some_and(|l| l.enforcement == Enforcement::Hard)))
                        .arg(&id)
                        .arg(resource);
                    call(inv.invoke_async(&mut conn.clone())).await
                }
                Err(e) => Err(e),
            };
            match res {
                Ok(r) if r.first() == Some(&1) => return Ok(Ok(id)),
                Ok(r) if r.len() == 3 => {
                    let (held, first_free) = (r[1].max(0) as u64, r[2].max(1));
                    let decided = crate::decide_counted(
                        tenant,
                        limits,
                        resource,
                        Window::Concurrent,
                        held,
                        1,
                        first_free,
                        now_ms,
                    );
                    if let refused @ Outcome::Refused { .. } = decided {
                        return Ok(Err(refused));
                    }
                    self.inner.down("a lease refused under no limit");
                }
                Ok(r) => self.inner.down(&format!("unexpected lease answer {r:?}")),
                Err(e) => self.inner.down(&e),
            }
        }
        self.inner.metrics.fallbacks.fetch_add(1, Ordering::Relaxed);
        match failure {
            CounterFailure::FailClosed => Err(AdmitError::Unavailable),
            CounterFailure::FailOpenLocal => {
                let nodes = self.inner.metrics.nodes.load(Ordering::Relaxed).max(1);
                let shared: Vec<Limit> = limits
                    .iter()
                    .map(|l| Limit {
                        limit: l.limit.map(|x| x / nodes),
                        ..l.clone()
                    })
                    .collect();
                self.inner
                    .fallback_engine()
                    .engine
                    .acquire(tenant, &shared, resource, ttl_ms, now_ms)
                    .await
            }
        }
    }

    /// Releases a lease; `false` if the tenant holds no such lease.
    pub async fn release(&self, tenant: TenantId, lease_id: &str, now_ms: i64) -> Result<bool, AdmitError> {
        if self.up() {
            let base = self.inner.tenant_key(tenant);
            if let Ok(conn) = self.inner.conn().await {
                let mut inv = self.inner.release.prepare_invoke();
                inv.key(format!("{base}lr"))
                    .arg(now_ms)
                    .arg(lease_id)
                    .arg(format!("{base}l:"));
                match call::<i64>(inv.invoke_async(&mut conn.clone())).await {
                    Ok(1) => return Ok(true),
                    Ok(_) => {}
                    Err(e) => self.inner.down(&e),
                }
            }
        }
        // A lease taken during an outage lives in the fallback.
        self.inner
            .fallback_engine()
            .engine
            .release(tenant, lease_id, now_ms)
            .await
    }
}

impl Shared {
    /// Deletes a purged tenant's keys (`{prefix}{tenant}:…`) from Redis, and its state in
    /// the outage fallback.
    pub async fn forget(&self, tenant: TenantId) -> Result<(), String> {
        self.inner.fallback_engine().engine.forget(tenant);
        let conn = self.inner.conn().await?;
        // MATCH is a glob: the prefix's own glob characters are escaped.
        let mut pattern = String::new();
        for c in self.inner.tenant_key(tenant).chars() {
            if matches!(c, '*' | '?' | '[' | ']' | '\\') {
                pattern.push('\\');
            }
            pattern.push(c);
        }
        pattern.push('*');
        let mut cursor = 0u64;
        loop {
            let cmd = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .to_owned();
            let (next, keys): (u64, Vec<String>) = call(cmd.query_async(&mut conn.clone())).await?;
            if !keys.is_empty() {
                let del = redis::cmd("DEL").arg(&keys).to_owned();
                call::<i64>(del.query_async(&mut conn.clone())).await?;
            }
            if next == 0 {
                return Ok(());
            }
            cursor = next;
        }
    }
}
