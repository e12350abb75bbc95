//! The in-process engine: one small state per tenant behind its own lock, loaded from the
//! store on first use, its deltas flushed back in batches.
use crate::state::{cell_of, commit, deltas, level_snapshots, period, see, take_back, Lease, Persist, TenantState};
use crate::{now_ms, AdmitError, Ask, CounterStore, Held, Outcome, Reservation};
use dashmap::DashMap;
use smallvec::SmallVec;
use std::sync::{Arc, Mutex};
use tenantd_core::usage::{saturating_count, CounterRow};
use tenantd_core::{KeyId, Limit, TenantId, Window};

/// Held inline in the map: the hot path takes the map's read guard and the tenant's lock,
/// and follows no pointer.
struct Slot {
    /// Serialises the first load from the store (cold path only).
    loading: Arc<tokio::sync::OnceCell<()>>,
    st: Mutex<TenantState>,
}

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

    /// Loads the tenant's counters from the store once.
    async fn load(&self, tenant: TenantId, now_s: i64) -> Result<(), AdmitError> {
        let loading = {
            let slot = match self.slots.get(&tenant) {
                Some(s) => s,
                None => self
                    .slots
                    .entry(tenant)
                    .or_insert_with(|| Slot {
                        loading: Arc::default(),
                        st: Mutex::default(),
                    })
                    .downgrade(),
            };
            if slot.st.lock().unwrap_or_else(|e| e.into_inner()).loaded {
                return Ok(());
            }
            slot.loading.clone()
        };
        loading
            .get_or_try_init(|| async {
                let since = Window::CALENDAR
                    .iter()
                    .filter_map(|w| w.period(now_s))
                    .map(|(s, _)| s)
                    .min()
                    .unwrap_or(0);
                let rows = self.store.load(&tenant, since).await.map_err(AdmitError::Store)?;
                self.with(tenant, |st| {
                    // Only current periods: past hours and days of the month stay in the
                    // store, and the per-request scans stay short.
                    for r in rows.into_iter().filter(|r| period(r.window, now_s).0 == r.period) {
                        match (r.scope, cell_of(r.window)) {
                            (None, Some(i)) => {
                                let cell = &mut st.calendar(&r.resource, now_s).cells[i];
                                cell.value = saturating_count(cell.value, r.value);
                            }
                            _ => {
                                let c = st.counter(r.scope, &r.resource, r.window, r.period);
                                c.value = saturating_count(c.value, r.value);
                            }
                        }
                    }
                    st.loaded = true;
                })
            })
            .await?;
        Ok(())
    }

    /// Drops a purged tenant's counters and leases (its slot).
    pub(crate) fn forget(&self, tenant: TenantId) {
        self.slots.remove(&tenant);
    }

    /// Runs `f` on the tenant's state under its lock (the slot must exist: slots are
    /// removed only when the tenant is purged).
    fn with<R>(&self, tenant: TenantId, f: impl FnOnce(&mut TenantState) -> R) -> Result<R, AdmitError> {
        let slot = self
            .slots
            .get(&tenant)
            .ok_or_else(|| AdmitError::Store(format!("no counters for tenant {tenant}")))?;
        let mut st = slot.st.lock().unwrap_or_else(|e| e.into_inner());
        Ok(f(&mut st))
    }

    /// [`Local::with`] once the tenant's counters are loaded.
    async fn loaded<R>(
        &self,
        tenant: TenantId,
        now_ms: i64,
        f: impl FnOnce(&mut TenantState) -> R,
    ) -> Result<R, AdmitError> {
        self.load(tenant, now_ms.div_euclid(1000)).await?;
        self.with(tenant, f)
    }

    fn mark_dirty(&self, tenant: TenantId, st: &mut TenantState) {
        if !st.dirty {
            st.dirty = true;
            self.dirty.lock().unwrap_or_else(|e| e.into_inner()).push(tenant);
        }
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

    /// Checks every limit of `asks` and commits all or none.
    fn decide(&self, st: &mut TenantState, asks: &[Ask<'_>], now_ms: i64, persist: Persist) -> Outcome {
        // Every ask's limits in one vector, each ask's ending at its entry of `ends`: no
        // allocation and no copies for the usual one or two asks.
        let mut seen = SmallVec::new();
        let mut ends: SmallVec<[usize; 2]> = SmallVec::new();
        for ask in asks {
            let start = seen.len();
            see(st, ask, now_ms, &mut seen);
            if let Some(refused) = ask.refusal(&seen[start..], now_ms) {
                return refused;
            }
            ends.push(seen.len());
        }
        let parts = || {
            asks.iter().zip(ends.iter().scan(0, |start, &end| {
                let part = &seen[*start..end];
                *start = end;
                Some(part)
            }))
        };
        for (ask, part) in parts() {
            commit(
                st,
                ask.resource,
                ask.cost,
                part.iter().map(|s| s.check),
                now_ms,
                true,
                persist,
            );
        }
        if let (Some(first), Persist::Flush) = (asks.first(), persist) {
            self.mark_dirty(first.tenant, st);
        }
        match asks {
            [ask] => ask.admitted(&seen, now_ms),
            _ => Outcome::all(parts().map(|(a, part)| a.admitted(part, now_ms))),
        }
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

    /// Counts `asks` in the record; with [`Persist::Caller`], their reservation.
    async fn record_as(
        &self,
        asks: &[Ask<'_>],
        now_ms: i64,
        persist: Persist,
    ) -> Result<Option<Reservation>, AdmitError> {
        let Some(first) = asks.first() else {
            return Ok(None);
        };
        self.loaded(first.tenant, now_ms, |st| {
            for ask in asks {
                commit(st, ask.resource, ask.cost, ask.checks(), now_ms, false, persist);
            }
            match persist {
                Persist::Flush => {
                    self.mark_dirty(first.tenant, st);
                    None
                }
                Persist::Caller => Some(reservation(st, first.tenant, asks, now_ms)),
            }
        })
        .await
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

    /// Collects every unflushed delta (and forgets finished periods' counters).
    fn take_deltas(&self, now_s: i64) -> (Vec<CounterRow>, Vec<CounterRow>) {
        let mut out = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()));
        let mut levels = Vec::new();
        let day = now_s - now_s.rem_euclid(86_400);
        let tenants = std::mem::take(&mut *self.dirty.lock().unwrap_or_else(|e| e.into_inner()));
        for t in tenants {
            let Some(slot) = self.slots.get(&t) else {
                continue;
            };
            let mut st = slot.st.lock().unwrap_or_else(|e| e.into_inner());
            st.dirty = false;
            for cal in st.calendars.iter_mut() {
                for (cell, w) in cal.cells.iter_mut().zip(Window::CALENDAR) {
                    if cell.unflushed > 0 {
                        out.push(CounterRow {
                            tenant: t,
                            scope: None,
                            resource: cal.resource.to_string(),
                            window: w,
                            period: cell.period,
                            value: cell.unflushed,
                        });
                        cell.unflushed = 0;
                    }
                }
            }
            for c in st.counters.iter_mut().filter(|c| c.unflushed > 0) {
                if c.window == Window::Total {
                    levels.push(CounterRow {
                        tenant: t,
                        scope: c.scope,
                        resource: c.resource.to_string(),
                        window: c.window,
                        period: day,
                        value: c.value,
                    });
                }
                out.push(CounterRow {
                    tenant: t,
                    scope: c.scope,
                    resource: c.resource.to_string(),
                    window: c.window,
                    period: c.period,
                    value: c.unflushed,
                });
                c.unflushed = 0;
            }
            st.counters
                .retain(|c| c.window == Window::Total || c.window.period(now_s).is_some_and(|(s, _)| s == c.period));
        }
        (out, levels)
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

/// The reservation of `asks`, just counted in `st` at `now_ms`: the store's deltas and
/// the levels' new values.
fn reservation(st: &TenantState, tenant: TenantId, asks: &[Ask<'_>], now_ms: i64) -> Reservation {
    let held: Vec<Held> = asks.iter().map(Held::of).collect();
    Reservation {
        tenant,
        at_ms: now_ms,
        deltas: held.iter().flat_map(|h| deltas(tenant, h, now_ms)).collect(),
        levels: held
            .iter()
            .flat_map(|h| level_snapshots(st, tenant, h, now_ms))
            .collect(),
        held,
        in_redis: false,
    }
}

pub(crate) fn new_lease_id() -> String {
    format!("lse_{:024x}", rand::random::<u128>() >> 32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tenantd_core::usage::CounterRow;
    use tenantd_core::Enforcement;

    /// Deltas, and level snapshots.
    #[derive(Default)]
    struct Mem(Mutex<Vec<CounterRow>>, Mutex<Vec<CounterRow>>);

    #[async_trait::async_trait]
    impl CounterStore for Mem {
        async fn load(&self, t: &TenantId, since: i64) -> Result<Vec<CounterRow>, String> {
            Ok(self
                .0
                .lock()
                .unwrap()
                .iter()
                .filter(|r| r.tenant == *t && (r.period >= since || r.window == Window::Total))
                .cloned()
                .collect())
        }
        async fn add(&self, d: &[CounterRow]) -> Result<(), String> {
            self.0.lock().unwrap().extend_from_slice(d);
            Ok(())
        }
        async fn set_levels(&self, l: &[CounterRow]) -> Result<(), String> {
            self.1.lock().unwrap().extend_from_slice(l);
            Ok(())
        }
    }

    fn lim(resource: &str, window: Window, limit: u64, enforcement: Enforcement) -> Limit {
        Limit {
            resource: resource.into(),
            window,
            limit: Some(limit),
            enforcement,
        }
    }

    fn ask<'a>(t: &str, tl: &'a [Limit], kl: &'a [Limit], key: Option<KeyId>) -> Ask<'a> {
        Ask {
            tenant: TenantId::parse(t).unwrap(),
            key,
            tenant_limits: tl,
            key_limits: kl,
            resource: "api_calls",
            cost: 1,
            failure: Default::default(),
        }
    }

    fn admitted(o: &Outcome) -> bool {
        matches!(o, Outcome::Admitted { .. })
    }

    #[tokio::test]
    async fn sliding_minute_never_admits_more_than_the_limit_in_any_minute() {
        let l = Local::new(Arc::new(Mem::default()));
        let limits = [lim("api_calls", Window::Minute, 10, Enforcement::Hard)];
        let a = ask("acme", &limits, &[], None);
        let t0 = 1_700_000_000_000i64;
        // 10 admitted at t0 + 59 s; at the fixed-window edge (t0 + 60 s) a fixed window
        // would admit 10 more; the sliding log refuses until those leave the window.
        for i in 0..10 {
            assert!(admitted(&l.admit_at(&a, t0 + 59_000 + i).await.unwrap()));
        }
        let o = l.admit_at(&a, t0 + 60_500).await.unwrap();
        let Outcome::Refused { state, retry_after } = o else {
            panic!("admitted past the limit")
        };
        assert_eq!(
            (state.current, state.limit, state.window),
            (10, Some(10), Window::Minute)
        );
        assert!((58..=60).contains(&retry_after), "{retry_after}");
        // Once the whole first bucket is older than a minute, there is room again.
        assert!(admitted(&l.admit_at(&a, t0 + 59_000 + 60_600).await.unwrap()));
    }

    #[tokio::test]
    async fn refused_requests_count_nothing_and_soft_limits_admit_with_crossings() {
        let l = Local::new(Arc::new(Mem::default()));
        let limits = [
            lim("api_calls", Window::Hour, 5, Enforcement::Hard),
            lim("api_calls", Window::Month, 3, Enforcement::Soft),
        ];
        let a = ask("acme", &limits, &[], None);
        let t = 1_700_000_000_000i64;
        let mut kinds = Vec::new();
        for i in 0..5 {
            match l.admit_at(&a, t + i).await.unwrap() {
                Outcome::Admitted { crossings, .. } => kinds.extend(crossings.iter().map(|c| (c.kind, c.state.window))),
                o => panic!("{o:?}"),
            }
        }
        // Month (soft, 3): warning at 3 (80% of 3 rounds up to 3) and exceeded at 3, once each;
        // hour (hard, 5): warning at 4, exceeded at 5.
        assert_eq!(
            kinds,
            vec![
                ("quota.warning", Window::Month),
                ("quota.exceeded", Window::Month),
                ("quota.warning", Window::Hour),
                ("quota.exceeded", Window::Hour)
            ]
        );
        for i in 0..3 {
            assert!(!admitted(&l.admit_at(&a, t + 10 + i).await.unwrap()));
        }
        let month = l.current(a.tenant, "api_calls", Window::Month, t).await.unwrap();
        assert_eq!(month, 5, "refused calls were counted");
    }

    #[tokio::test]
    async fn a_key_limit_narrower_than_the_tenant_applies_to_that_key_only() {
        let l = Local::new(Arc::new(Mem::default()));
        let tl = [lim("api_calls", Window::Hour, 100, Enforcement::Hard)];
        let kl = [lim("api_calls", Window::Hour, 2, Enforcement::Hard)];
        let k1 = KeyId::from_part("aaaaaaaaaaaaaaaaaaaa");
        let t = 1_700_000_000_000i64;
        for _ in 0..2 {
            assert!(admitted(&l.admit_at(&ask("acme", &tl, &kl, k1), t).await.unwrap()));
        }
        let Outcome::Refused { state, .. } = l.admit_at(&ask("acme", &tl, &kl, k1), t).await.unwrap() else {
            panic!("key limit ignored")
        };
        assert_eq!((state.limit, state.key), (Some(2), k1));
        let k2 = KeyId::from_part("bbbbbbbbbbbbbbbbbbbb");
        assert!(admitted(&l.admit_at(&ask("acme", &tl, &[], k2), t).await.unwrap()));
        // Another tenant's counters are its own.
        assert!(admitted(&l.admit_at(&ask("beta", &tl, &kl, k1), t).await.unwrap()));
    }

    #[tokio::test]
    async fn counters_survive_a_new_engine_through_the_store() {
        let store = Arc::new(Mem::default());
        let limits = [lim("api_calls", Window::Month, 3, Enforcement::Hard)];
        let t = now_ms();
        let l = Local::new(store.clone());
        for _ in 0..2 {
            l.admit_at(&ask("acme", &limits, &[], None), t).await.unwrap();
        }
        assert!(l.flush().await.unwrap() > 0);
        let again = Local::new(store);
        assert!(admitted(
            &again.admit_at(&ask("acme", &limits, &[], None), t).await.unwrap()
        ));
        assert!(!admitted(
            &again.admit_at(&ask("acme", &limits, &[], None), t).await.unwrap()
        ));
    }

    /// The current value of `resource` in `window`, as the engine reports it.
    async fn current(l: &Local, resource: &str, window: Window, t: i64) -> u64 {
        current_of(l, "acme", resource, window, t).await
    }

    async fn current_of(l: &Local, tenant: &str, resource: &str, window: Window, t: i64) -> u64 {
        l.current(TenantId::parse(tenant).unwrap(), resource, window, t)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn counts_saturate_instead_of_wrapping() {
        use tenantd_core::usage::MAX_COUNT;
        let store = Arc::new(Mem::default());
        let hourly = lim("api_calls", Window::Hour, 400, Enforcement::Hard);
        let limits = [
            lim("api_calls", Window::Minute, MAX_COUNT, Enforcement::Soft),
            lim("api_calls", Window::Month, 1000, Enforcement::Soft),
            lim("storage_bytes", Window::Total, 10, Enforcement::Soft),
        ];
        let t = now_ms();
        let l = Local::new(store.clone());
        let big = |resource: &'static str, cost: u64| Ask {
            resource,
            cost,
            ..ask("acme", &limits, &[], None)
        };
        for cost in [MAX_COUNT - 100, 200, u64::MAX - 10] {
            for resource in ["api_calls", "storage_bytes"] {
                assert!(admitted(&l.admit_at(&big(resource, cost), t).await.unwrap()));
            }
        }
        for (resource, window) in [
            ("api_calls", Window::Month),
            ("api_calls", Window::Minute),
            ("storage_bytes", Window::Total),
        ] {
            assert_eq!(
                current(&l, resource, window, t).await,
                MAX_COUNT,
                "{resource} {window:?}"
            );
        }
        l.flush().await.unwrap();
        let stored: u64 = store
            .0
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.resource == "api_calls" && r.window == Window::Month)
            .map(|r| r.value)
            .sum();
        assert_eq!(stored, MAX_COUNT, "the flushed delta saturates too");
        // A hard limit stays shut: a sum that wrapped would have let these in.
        let hard = [hourly];
        let of = |cost: u64| Ask {
            cost,
            ..ask("globex", &hard, &[], None)
        };
        assert!(admitted(&l.admit_at(&of(400), t).await.unwrap()));
        assert!(!admitted(&l.admit_at(&of(u64::MAX - 100), t).await.unwrap()));
        assert!(!admitted(&l.admit_at(&of(1), t).await.unwrap()));
        assert_eq!(current_of(&l, "globex", "api_calls", Window::Hour, t).await, 400);
    }

    #[tokio::test]
    async fn a_reservation_counts_for_admission_is_left_to_the_caller_and_can_be_taken_back() {
        let store = Arc::new(Mem::default());
        let limits = [
            lim("orchestrations", Window::Minute, 5, Enforcement::Hard),
            lim("orchestrations", Window::Month, 5, Enforcement::Hard),
            lim("storage_bytes", Window::Total, 100, Enforcement::Soft),
        ];
        let t = now_ms();
        let l = Local::new(store.clone());
        let of = |resource: &'static str, cost: u64| Ask {
            resource,
            cost,
            ..ask("acme", &limits, &[], None)
        };
        let (out, kept) = l
            .reserve_at(&[of("orchestrations", 3), of("storage_bytes", 40)], t)
            .await
            .unwrap();
        assert!(admitted(&out));
        let r = kept.expect("admitted, so reserved");
        // What the caller stores: the four calendar periods of each resource, and the level.
        let month = r
            .deltas
            .iter()
            .find(|d| d.resource == "orchestrations" && d.window == Window::Month)
            .unwrap();
        assert_eq!(month.value, 3);
        assert_eq!(r.deltas.iter().filter(|d| d.resource == "orchestrations").count(), 4);
        assert!(r
            .deltas
            .iter()
            .any(|d| d.resource == "storage_bytes" && d.window == Window::Total && d.value == 40));
        assert_eq!(r.levels.len(), 1);
        assert_eq!(r.levels[0].value, 40);
        // Counted for admission, but nothing for the flusher.
        assert!(!admitted(&l.admit_at(&of("orchestrations", 3), t).await.unwrap()));
        assert_eq!(l.flush().await.unwrap(), 0);
        assert!(store.0.lock().unwrap().is_empty());
        // Taken back, the place is free again: in the calendar and in the sliding minute.
        l.take_back(&r, true);
        assert_eq!(current(&l, "orchestrations", Window::Month, t).await, 0);
        assert_eq!(current(&l, "orchestrations", Window::Minute, t).await, 0);
        assert_eq!(current(&l, "storage_bytes", Window::Total, t).await, 0);
        assert!(admitted(&l.admit_at(&of("orchestrations", 5), t).await.unwrap()));
        // A refused reservation holds nothing.
        let (out, kept) = l.reserve_at(&[of("orchestrations", 1)], t).await.unwrap();
        assert!(!admitted(&out) && kept.is_none());
    }

    #[tokio::test]
    async fn calendar_periods_roll_and_every_periods_use_is_flushed() {
        let store = Arc::new(Mem::default());
        let l = Local::new(store.clone());
        let limits = [lim("api_calls", Window::Hour, 100, Enforcement::Hard)];
        let a = ask("acme", &limits, &[], None);
        // 2023-11-14T22:00:00Z; the next hour is the same day.
        let h = 1_700_000_000i64 - 1_700_000_000i64.rem_euclid(3600);
        for _ in 0..3 {
            assert!(admitted(&l.admit_at(&a, (h + 3598) * 1000).await.unwrap()));
        }
        for _ in 0..2 {
            assert!(admitted(&l.admit_at(&a, (h + 3601) * 1000).await.unwrap()));
        }
        let at = (h + 3602) * 1000;
        assert_eq!(l.current(a.tenant, "api_calls", Window::Hour, at).await.unwrap(), 2);
        assert_eq!(l.current(a.tenant, "api_calls", Window::Day, at).await.unwrap(), 5);
        l.flush().await.unwrap();
        let sum = |w: Window, p: i64| -> u64 {
            store
                .0
                .lock()
                .unwrap()
                .iter()
                .filter(|r| r.window == w && r.period == p && r.scope.is_none())
                .map(|r| r.value)
                .sum()
        };
        assert_eq!((sum(Window::Hour, h), sum(Window::Hour, h + 3600)), (3, 2));
        assert_eq!(sum(Window::Day, h - h.rem_euclid(86_400)), 5);
        // Nothing is written twice.
        assert_eq!(l.flush().await.unwrap(), 0);
    }

    #[tokio::test]
    async fn a_changed_level_is_snapshotted_for_the_day_at_flush() {
        let store = Arc::new(Mem::default());
        let l = Local::new(store.clone());
        let limits = [lim("storage_bytes", Window::Total, 100, Enforcement::Hard)];
        let mut a = ask("acme", &limits, &[], None);
        a.resource = "storage_bytes";
        let now = now_ms();
        for cost in [30, 20] {
            a.cost = cost;
            assert!(admitted(&l.admit_at(&a, now).await.unwrap()));
        }
        let day = || {
            let s = now_ms().div_euclid(1000);
            s - s.rem_euclid(86_400)
        };
        let before = day();
        l.flush().await.unwrap();
        // The flush's own clock names the day (a flush at midnight may see the next one).
        let day = if day() == before {
            before
        } else {
            store.1.lock().unwrap()[0].period
        };
        let levels: Vec<(String, Window, i64, u64)> = store
            .1
            .lock()
            .unwrap()
            .iter()
            .map(|r| (r.resource.clone(), r.window, r.period, r.value))
            .collect();
        assert_eq!(levels, vec![("storage_bytes".to_string(), Window::Total, day, 50)]);
        // No change, no new snapshot.
        l.flush().await.unwrap();
        assert_eq!(store.1.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn leases_are_limited_and_free_themselves() {
        let l = Local::new(Arc::new(Mem::default()));
        let limits = [lim("jobs", Window::Concurrent, 2, Enforcement::Hard)];
        let t = TenantId::parse("acme").unwrap();
        let a = l.acquire(t, &limits, "jobs", 1_000, 0).await.unwrap().unwrap();
        l.acquire(t, &limits, "jobs", 5_000, 0).await.unwrap().unwrap();
        assert!(l.acquire(t, &limits, "jobs", 1_000, 10).await.unwrap().is_err());
        assert!(l.release(t, &a, 20).await.unwrap());
        assert!(!l.release(t, &a, 20).await.unwrap(), "released twice");
        l.acquire(t, &limits, "jobs", 1_000, 30).await.unwrap().unwrap();
        assert!(l.acquire(t, &limits, "jobs", 1_000, 40).await.unwrap().is_err());
        // The 1 s lease taken at 30 ms has expired by 1.1 s.
        assert!(l.acquire(t, &limits, "jobs", 1_000, 1_100).await.unwrap().is_ok());
        assert_eq!(l.leases_held(t, "jobs", 1_100).await.unwrap(), 2);
    }
}
