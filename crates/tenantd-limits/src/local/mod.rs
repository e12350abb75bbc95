//! The in-process engine: one small state per tenant behind its own lock, loaded from the
//! store on first use, its deltas flushed back in batches.
//!
//! Here: the engine's API; `slot`: each tenant's state, its loading, the decisions made
//! under its lock and the deltas collected from it.

mod slot;
#[cfg(test)]
mod tests;

use crate::state::{period, take_back, Lease, Persist};
use crate::{now_ms, AdmitError, Ask, CounterStore, Outcome, Reservation};
use dashmap::DashMap;
use slot::{reservation, Slot};
use std::sync::{Arc, Mutex};
use tenantd_core::usage::CounterRow;
use tenantd_core::{KeyId, Limit, TenantId, Window};

type Hasher = foldhash::fast::RandomState;

/// The in-process engine.
pub struct Local {
    slots: DashMap<TenantId, Slot, Hasher>,
    store: Arc<dyn CounterStore>,
    dirty: Mutex<Vec<TenantId>>,
    /// Deltas a failed flush could not write, retried first next time.
    pending: Mutex<Vec<CounterRow>>,
}

impl Local {
    /// An engine persisting to `store`.
    pub fn new(store: Arc<dyn CounterStore>) -> Self {
        Self {
            slots: DashMap::default(),
            store,
            dirty: Mutex::new(Vec::new()),
            pending: Mutex::new(Vec::new()),
        }
    }

    /// Drops a purged tenant's counters and leases (its slot).
    pub(crate) fn forget(&self, tenant: TenantId) {
        self.slots.remove(&tenant);
    }

    /// Decides `ask` at `now_ms`.
    pub async fn admit_at(&self, ask: &Ask<'_>, now_ms: i64) -> Result<Outcome, AdmitError> {
        self.admit_all_at(std::slice::from_ref(ask), now_ms).await
    }

    /// Decides several asks of one tenant, for distinct resources, together: all are
    /// admitted and counted, or none is.
    pub async fn admit_all_at(&self, asks: &[Ask<'_>], now_ms: i64) -> Result<Outcome, AdmitError> {
        let Some(first) = asks.first() else {
            return Ok(Outcome::nothing());
        };
        debug_assert!(asks.iter().all(|a| a.tenant == first.tenant));
        self.loaded(first.tenant, now_ms, |st| self.decide(st, asks, now_ms, Persist::Flush))
            .await
    }

    /// Decides `asks` together like [`Local::admit_all_at`], leaving the admitted use to
    /// the caller to store (see [`Reservation`]).
    pub(crate) async fn reserve_at(
        &self,
        asks: &[Ask<'_>],
        now_ms: i64,
    ) -> Result<(Outcome, Option<Reservation>), AdmitError> {
        let Some(first) = asks.first() else {
            return Ok((Outcome::nothing(), None));
        };
        self.loaded(first.tenant, now_ms, |st| {
            let out = self.decide(st, asks, now_ms, Persist::Caller);
            let kept = matches!(out, Outcome::Admitted { .. }).then(|| reservation(st, first.tenant, asks, now_ms));
            (out, kept)
        })
        .await
    }

    /// Uncounts a reservation (with `rates`: its sliding logs too, when this engine
    /// decided it rather than only recording it).
    pub(crate) fn take_back(&self, r: &Reservation, rates: bool) {
        // A tenant purged meanwhile has no counters left to take back.
        let _ = self.with(r.tenant, |st| {
            for h in &r.held {
                take_back(st, h, r.at_ms, rates);
            }
        });
    }

    /// Decides `asks` without awaiting when their tenant's counters are loaded (the hot
    /// path: under the map's read guard, not touching the slot's reference count);
    /// `None` when they must be loaded first.
    pub fn admit_loaded(&self, asks: &[Ask<'_>], now_ms: i64) -> Option<Outcome> {
        let slot = self.slots.get(&asks.first()?.tenant)?;
        let mut st = slot.st.lock().unwrap_or_else(|e| e.into_inner());
        st.loaded.then(|| self.decide(&mut st, asks, now_ms, Persist::Flush))
    }

    /// Records use another engine admitted (Redis mode): the counters that are the
    /// tenant's usage record, flushed to the store like in-process ones.
    pub async fn record_at(&self, asks: &[Ask<'_>], now_ms: i64) -> Result<(), AdmitError> {
        self.record_as(asks, now_ms, Persist::Flush).await.map(drop)
    }

    /// [`Local::record_at`] for use the caller stores itself: its [`Reservation`]
    /// (`in_redis`: Redis counted it too), `None` for no asks.
    pub(crate) async fn record_reserved(
        &self,
        asks: &[Ask<'_>],
        now_ms: i64,
        in_redis: bool,
    ) -> Result<Option<Reservation>, AdmitError> {
        let r = self.record_as(asks, now_ms, Persist::Caller).await?;
        Ok(r.map(|r| Reservation { in_redis, ..r }))
    }

    /// A calendar counter's or level's value as this node knows it (the store's at load
    /// plus this node's use since): the floor of a shared counter that has to be
    /// recreated.
    pub async fn value_at(
        &self,
        tenant: TenantId,
        scope: Option<KeyId>,
        resource: &str,
        window: Window,
        now_ms: i64,
    ) -> Result<u64, AdmitError> {
        Ok(self.values_at(tenant, &[(scope, resource, window)], now_ms).await?[0])
    }

    /// [`Local::value_at`] for several counters of one tenant, under one lock.
    pub async fn values_at(
        &self,
        tenant: TenantId,
        wanted: &[(Option<KeyId>, &str, Window)],
        now_ms: i64,
    ) -> Result<Vec<u64>, AdmitError> {
        let now_s = now_ms.div_euclid(1000);
        self.loaded(tenant, now_ms, |st| {
            wanted
                .iter()
                .map(|(scope, resource, window)| st.value(*scope, resource, *window, period(*window, now_s).0))
                .collect()
        })
        .await
    }

    /// The tenant's current value of `resource` in `window` (tenant scope).
    pub async fn current(
        &self,
        tenant: TenantId,
        resource: &str,
        window: Window,
        now_ms: i64,
    ) -> Result<u64, AdmitError> {
        let now_s = now_ms.div_euclid(1000);
        self.loaded(tenant, now_ms, |st| match window.rate_ms() {
            Some(len) => {
                let log = st.rate(None, resource, window);
                log.prune(now_ms, len);
                log.sum
            }
            None => st.value(None, resource, window, period(window, now_s).0),
        })
        .await
    }

    /// Takes a lease on `resource` for `ttl_ms` if the tenant's concurrent limit allows.
    pub async fn acquire(
        &self,
        tenant: TenantId,
        limits: &[Limit],
        resource: &str,
        ttl_ms: i64,
        now_ms: i64,
    ) -> Result<Result<String, Outcome>, AdmitError> {
        let taken = self
            .loaded(tenant, now_ms, |st| {
                st.leases.retain(|l| l.expires_ms > now_ms);
                let held = st.leases.iter().filter(|l| &*l.resource == resource);
                let first_free = held.clone().map(|l| l.expires_ms).min().unwrap_or(now_ms + ttl_ms) - now_ms;
                let n = held.clone().count() as u64;
                let decided = crate::decide_counted(
                    tenant,
                    limits,
                    resource,
                    Window::Concurrent,
                    n,
                    1,
                    first_free.max(1),
                    now_ms,
                );
                if let refused @ Outcome::Refused { .. } = decided {
                    return Err(Box::new(refused));
                }
                let id = new_lease_id();
                st.leases.push(Lease {
                    id: id.clone(),
                    resource: resource.into(),
                    expires_ms: now_ms + ttl_ms,
                });
                Ok(id)
            })
            .await?;
        Ok(match taken {
            Ok(id) => Ok(id),
            Err(refused) => Err(*refused),
        })
    }

    /// Releases a lease; `false` if it was not held (released, expired, or another
    /// tenant's).
    pub async fn release(&self, tenant: TenantId, lease_id: &str, now_ms: i64) -> Result<bool, AdmitError> {
        self.loaded(tenant, now_ms, |st| {
            st.leases.retain(|l| l.expires_ms > now_ms);
            let before = st.leases.len();
            st.leases.retain(|l| l.id != lease_id);
            st.leases.len() != before
        })
        .await
    }

    /// Leases held now for `resource`.
    pub async fn leases_held(&self, tenant: TenantId, resource: &str, now_ms: i64) -> Result<u64, AdmitError> {
        self.loaded(tenant, now_ms, |st| {
            st.leases
                .iter()
                .filter(|l| &*l.resource == resource && l.expires_ms > now_ms)
                .count() as u64
        })
        .await
    }

    /// Writes every unflushed delta to the store. On failure the deltas are kept and
    /// retried by the next flush; nothing is lost while the process lives.
    pub async fn flush(&self) -> Result<usize, String> {
        let (deltas, levels) = self.take_deltas(now_ms().div_euclid(1000));
        if deltas.is_empty() {
            return Ok(0);
        }
        match self.store.add(&deltas).await {
            Ok(()) => {
                // A missed snapshot is taken again at the level's next change.
                if let Err(e) = self.store.set_levels(&levels).await {
                    tracing::warn!(error = %e, "level snapshots not written");
                }
                Ok(deltas.len())
            }
            Err(e) => {
                let n = deltas.len();
                self.pending.lock().unwrap_or_else(|e| e.into_inner()).extend(deltas);
                Err(format!("{n} usage deltas not written: {e}"))
            }
        }
    }
}

pub(crate) fn new_lease_id() -> String {
    format!("lse_{:024x}", rand::random::<u128>() >> 32)
}
