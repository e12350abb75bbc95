//! The in-process engine: one small state per tenant behind its own lock, loaded from the
//! store on first use, its deltas flushed back in batches.
use crate::{now_ms, AdmitError, Ask, Check, CounterStore, Outcome, Seen};
use dashmap::DashMap;
use smallvec::SmallVec;
use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};
use tenantd_core::usage::CounterRow;
use tenantd_core::{KeyId, Limit, TenantId, Window};

/// Buckets per sliding window.
const BUCKETS: i64 = 100;

/// Distinct resource names shared before new ones get their own copy.
const INTERNED: usize = 4096;

/// A resource name shared by every tenant's counters of it, so that finding a counter
/// compares bytes that stay in cache rather than one copy per tenant.
fn intern(name: &str) -> Arc<str> {
    static NAMES: OnceLock<Mutex<HashSet<Arc<str>>>> = OnceLock::new();
    let mut names = NAMES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(n) = names.get(name) {
        return n.clone();
    }
    let n: Arc<str> = name.into();
    if names.len() < INTERNED {
        names.insert(n.clone());
    }
    n
}

#[derive(Debug)]
struct Counter {
    scope: Option<KeyId>,
    resource: Arc<str>,
    window: Window,
    period: i64,
    value: u64,
    /// Added since the last flush.
    unflushed: u64,
}

impl Counter {
    fn add(&mut self, n: u64) {
        self.value += n;
        self.unflushed += n;
    }
}

/// A sliding log of `(bucket, count)`: a bucket leaves the window only once all of it is
/// older than the window, so the count never under-states use.
#[derive(Debug)]
struct RateLog {
    scope: Option<KeyId>,
    resource: Arc<str>,
    window: Window,
    buckets: VecDeque<(i64, u64)>,
    sum: u64,
}

impl RateLog {
    fn granule(len_ms: i64) -> i64 {
        (len_ms / BUCKETS).max(1)
    }
    fn prune(&mut self, now_ms: i64, len_ms: i64) {
        let g = Self::granule(len_ms);
        while let Some(&(b, n)) = self.buckets.front() {
            if (b + 1) * g <= now_ms - len_ms {
                self.buckets.pop_front();
                self.sum -= n;
            } else {
                break;
            }
        }
    }
    fn add(&mut self, now_ms: i64, len_ms: i64, n: u64) {
        let b = now_ms.div_euclid(Self::granule(len_ms));
        match self.buckets.back_mut() {
            Some((last, c)) if *last == b => *c += n,
            _ => self.buckets.push_back((b, n)),
        }
        self.sum += n;
    }
    /// Milliseconds until the oldest bucket leaves the window.
    fn reset_ms(&self, now_ms: i64, len_ms: i64) -> i64 {
        let g = Self::granule(len_ms);
        self.buckets
            .front()
            .map_or(len_ms, |&(b, _)| ((b + 1) * g + len_ms - now_ms).max(1))
    }
    /// Milliseconds until `cost` more fits under `limit`.
    fn retry_ms(&self, now_ms: i64, len_ms: i64, limit: u64, cost: u64) -> i64 {
        if cost > limit {
            return len_ms;
        }
        let g = Self::granule(len_ms);
        let mut sum = self.sum;
        for &(b, n) in &self.buckets {
            sum -= n;
            if sum + cost <= limit {
                return ((b + 1) * g + len_ms - now_ms).max(1);
            }
        }
        len_ms
    }
}

#[derive(Debug)]
struct Lease {
    id: String,
    resource: Box<str>,
    expires_ms: i64,
}

/// One calendar period of the tenant's own counter.
#[derive(Debug, Clone, Copy, Default)]
struct Cell {
    period: i64,
    end: i64,
    value: u64,
    unflushed: u64,
}

/// The tenant's own hour, day, week and month counters of one resource: its usage
/// record, written by every admitted request. Kept apart from the other counters so a
/// request finds all four with one name comparison, and computes a period only when
/// the last one ends.
#[derive(Debug)]
struct Calendar {
    resource: Arc<str>,
    /// In [`Window::CALENDAR`] order.
    cells: [Cell; 4],
}

/// The position of a calendar window in [`Calendar::cells`].
fn cell_of(window: Window) -> Option<usize> {
    Window::CALENDAR.iter().position(|w| *w == window)
}

/// A tenant's counters. The usual tenant has one resource with a calendar and perhaps a
/// rate limit: those are held inline, so a decision reads few cache lines.
#[derive(Debug, Default)]
struct TenantState {
    calendars: SmallVec<[Calendar; 1]>,
    /// Key-scoped counters, levels, and finished periods not yet flushed.
    counters: Vec<Counter>,
    rates: SmallVec<[RateLog; 1]>,
    leases: Vec<Lease>,
    /// The store's counters have been added.
    loaded: bool,
    /// Queued for the flusher.
    dirty: bool,
}

impl TenantState {
    /// The tenant's calendar of `resource`, its periods moved on to the ones containing
    /// `now_s` (a finished period's unflushed use waits in `counters` for the flusher).
    fn calendar(&mut self, resource: &str, now_s: i64) -> &mut Calendar {
        let i = match self.calendars.iter().position(|c| &*c.resource == resource) {
            Some(i) => i,
            None => {
                self.calendars.push(Calendar {
                    resource: intern(resource),
                    cells: [Cell::default(); 4],
                });
                self.calendars.len() - 1
            }
        };
        let cal = &mut self.calendars[i];
        for (cell, w) in cal.cells.iter_mut().zip(Window::CALENDAR) {
            if now_s >= cell.end {
                if cell.unflushed > 0 {
                    self.counters.push(Counter {
                        scope: None,
                        resource: cal.resource.clone(),
                        window: w,
                        period: cell.period,
                        value: cell.value,
                        unflushed: cell.unflushed,
                    });
                }
                let (start, end) = period(w, now_s);
                *cell = Cell {
                    period: start,
                    end: end.unwrap_or(i64::MAX),
                    value: 0,
                    unflushed: 0,
                };
            }
        }
        &mut self.calendars[i]
    }
    fn counter(&mut self, scope: Option<KeyId>, resource: &str, window: Window, period: i64) -> &mut Counter {
        let i = match self
            .counters
            .iter()
            .position(|c| c.window == window && c.period == period && c.scope == scope && &*c.resource == resource)
        {
            Some(i) => i,
            None => {
                self.counters.push(Counter {
                    scope,
                    resource: intern(resource),
                    window,
                    period,
                    value: 0,
                    unflushed: 0,
                });
                self.counters.len() - 1
            }
        };
        &mut self.counters[i]
    }
    fn value(&self, scope: Option<KeyId>, resource: &str, window: Window, period: i64) -> u64 {
        if let (None, Some(i)) = (scope, cell_of(window)) {
            return self
                .calendars
                .iter()
                .find(|c| &*c.resource == resource)
                .map(|c| c.cells[i])
                .filter(|c| c.period == period)
                .map_or(0, |c| c.value);
        }
        self.counters
            .iter()
            .find(|c| c.window == window && c.period == period && c.scope == scope && &*c.resource == resource)
            .map_or(0, |c| c.value)
    }
    fn rate(&mut self, scope: Option<KeyId>, resource: &str, window: Window) -> &mut RateLog {
        let i = match self
            .rates
            .iter()
            .position(|r| r.window == window && r.scope == scope && &*r.resource == resource)
        {
            Some(i) => i,
            None => {
                self.rates.push(RateLog {
                    scope,
                    resource: intern(resource),
                    window,
                    buckets: VecDeque::new(),
                    sum: 0,
                });
                self.rates.len() - 1
            }
        };
        &mut self.rates[i]
    }
}

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

/// The `(start, end)` of `window`'s current period; levels have one period, 0.
pub(crate) fn period(window: Window, now_s: i64) -> (i64, Option<i64>) {
    match window.period(now_s) {
        Some((s, e)) => (s, Some(e)),
        None => (0, None),
    }
}

/// What the tenant's state holds for each limit of `ask`, before it, appended to `out`.
fn see(st: &mut TenantState, ask: &Ask<'_>, now_ms: i64, out: &mut SmallVec<[Seen; 4]>) {
    let now_s = now_ms.div_euclid(1000);
    // The tenant's calendar, moved on to the current periods (the commit writes it anyway).
    let cells = st.calendar(ask.resource, now_s).cells;
    out.extend(ask.checks().map(
        |check| match (check.window.rate_ms(), check.scope, cell_of(check.window)) {
            (Some(len), ..) => {
                let log = st.rate(check.scope, ask.resource, check.window);
                log.prune(now_ms, len);
                let retry_ms = check.limit.map_or(0, |l| log.retry_ms(now_ms, len, l, ask.cost));
                Seen {
                    check,
                    current: log.sum,
                    reset_ms: log.reset_ms(now_ms, len),
                    retry_ms,
                }
            }
            (None, None, Some(i)) => {
                let reset_ms = cells[i].end * 1000 - now_ms;
                Seen {
                    check,
                    current: cells[i].value,
                    reset_ms,
                    retry_ms: reset_ms,
                }
            }
            (None, ..) => {
                let (p, end) = period(check.window, now_s);
                // Levels never reset; a refused growth may fit after others shrink it.
                let reset_ms = end.map_or(0, |e| e * 1000 - now_ms);
                Seen::counted(check, st.value(check.scope, ask.resource, check.window, p), reset_ms)
            }
        },
    ));
}

/// Counts `ask`: the tenant's calendar counters always (they are the usage record), the
/// key's and the levels where a limit asks for them, and (with `rates`) the sliding logs.
fn commit(st: &mut TenantState, ask: &Ask<'_>, checks: impl Iterator<Item = Check>, now_ms: i64, rates: bool) {
    let now_s = now_ms.div_euclid(1000);
    for cell in st.calendar(ask.resource, now_s).cells.iter_mut() {
        cell.value += ask.cost;
        cell.unflushed += ask.cost;
    }
    for c in checks {
        match c.window.rate_ms() {
            Some(len) if rates => st.rate(c.scope, ask.resource, c.window).add(now_ms, len, ask.cost),
            Some(_) => {}
            None if c.scope.is_some() || c.window == Window::Total => {
                st.counter(c.scope, ask.resource, c.window, period(c.window, now_s).0)
                    .add(ask.cost);
            }
            None => {}
        }
    }
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
                            (None, Some(i)) => st.calendar(&r.resource, now_s).cells[i].value += r.value,
                            _ => st.counter(r.scope, &r.resource, r.window, r.period).value += r.value,
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
        self.loaded(first.tenant, now_ms, |st| self.decide(st, asks, now_ms))
            .await
    }

    /// Decides `asks` without awaiting when their tenant's counters are loaded (the hot
    /// path: under the map's read guard, not touching the slot's reference count);
    /// `None` when they must be loaded first.
    pub fn admit_loaded(&self, asks: &[Ask<'_>], now_ms: i64) -> Option<Outcome> {
        let slot = self.slots.get(&asks.first()?.tenant)?;
        let mut st = slot.st.lock().unwrap_or_else(|e| e.into_inner());
        st.loaded.then(|| self.decide(&mut st, asks, now_ms))
    }

    /// Checks every limit of `asks` and commits all or none.
    fn decide(&self, st: &mut TenantState, asks: &[Ask<'_>], now_ms: i64) -> Outcome {
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
            commit(st, ask, part.iter().map(|s| s.check), now_ms, true);
        }
        if let Some(first) = asks.first() {
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
        let Some(first) = asks.first() else {
            return Ok(());
        };
        self.loaded(first.tenant, now_ms, |st| {
            for ask in asks {
                commit(st, ask, ask.checks(), now_ms, false);
            }
            self.mark_dirty(first.tenant, st);
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
