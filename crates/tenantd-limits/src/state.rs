//! One tenant's counters as the in-process engine holds them: calendar cells, key and
//! level counters, sliding logs and leases, and how a decision reads and counts them.
//! Every count saturates at [`MAX_COUNT`]; none wraps.
use crate::{Ask, Check, Held, Seen};
use smallvec::SmallVec;
use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};
use tenantd_core::usage::{saturating_count, CounterRow, MAX_COUNT};
use tenantd_core::{KeyId, TenantId, Window};

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

/// How the use a decision counts reaches the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Persist {
    /// Queued for the flusher (the edge's `api_calls`).
    Flush,
    /// Written by the caller in the transaction that makes it durable (usage events):
    /// counted here only.
    Caller,
}

#[derive(Debug)]
pub(crate) struct Counter {
    pub scope: Option<KeyId>,
    pub resource: Arc<str>,
    pub window: Window,
    pub period: i64,
    pub value: u64,
    /// Added since the last flush.
    pub unflushed: u64,
}

impl Counter {
    fn add(&mut self, n: u64, persist: Persist) {
        self.value = saturating_count(self.value, n);
        if persist == Persist::Flush {
            self.unflushed = saturating_count(self.unflushed, n);
        }
    }
}

/// A sliding log of `(bucket, count)`: a bucket leaves the window only once all of it is
/// older than the window, so the count never under-states use.
///
/// Each bucket saturates at [`MAX_COUNT`]; the sum of a log's few buckets (at most 101)
/// is exact in a `u64`.
#[derive(Debug)]
pub(crate) struct RateLog {
    scope: Option<KeyId>,
    resource: Arc<str>,
    window: Window,
    buckets: VecDeque<(i64, u64)>,
    pub sum: u64,
}

impl RateLog {
    fn granule(len_ms: i64) -> i64 {
        (len_ms / BUCKETS).max(1)
    }
    pub fn prune(&mut self, now_ms: i64, len_ms: i64) {
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
        let n = n.min(MAX_COUNT);
        match self.buckets.back_mut() {
            Some((last, c)) if *last == b => {
                let grown = saturating_count(*c, n);
                self.sum += grown - *c;
                *c = grown;
            }
            _ => {
                self.buckets.push_back((b, n));
                self.sum += n;
            }
        }
    }
    /// Takes back `n` counted at `at_ms` (a reservation that was not kept), if its
    /// bucket is still in the log.
    fn take_back(&mut self, at_ms: i64, len_ms: i64, n: u64) {
        let b = at_ms.div_euclid(Self::granule(len_ms));
        if let Some((_, c)) = self.buckets.iter_mut().find(|(bb, _)| *bb == b) {
            let n = n.min(*c);
            *c -= n;
            self.sum -= n;
        }
    }
    /// The use in the window, as reported (at most [`MAX_COUNT`]).
    pub fn current(&self) -> u64 {
        self.sum.min(MAX_COUNT)
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
            if sum.saturating_add(cost) <= limit {
                return ((b + 1) * g + len_ms - now_ms).max(1);
            }
        }
        len_ms
    }
}

#[derive(Debug)]
pub(crate) struct Lease {
    pub id: String,
    pub resource: Box<str>,
    pub expires_ms: i64,
}

/// One calendar period of the tenant's own counter.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Cell {
    pub period: i64,
    pub end: i64,
    pub value: u64,
    pub unflushed: u64,
}

/// The tenant's own hour, day, week and month counters of one resource: its usage
/// record, written by every admitted request. Kept apart from the other counters so a
/// request finds all four with one name comparison, and computes a period only when
/// the last one ends.
#[derive(Debug)]
pub(crate) struct Calendar {
    pub resource: Arc<str>,
    /// In [`Window::CALENDAR`] order.
    pub cells: [Cell; 4],
}

/// The position of a calendar window in [`Calendar::cells`].
pub(crate) fn cell_of(window: Window) -> Option<usize> {
    Window::CALENDAR.iter().position(|w| *w == window)
}

/// A tenant's counters. The usual tenant has one resource with a calendar and perhaps a
/// rate limit: those are held inline, so a decision reads few cache lines.
#[derive(Debug, Default)]
pub(crate) struct TenantState {
    pub calendars: SmallVec<[Calendar; 1]>,
    /// Key-scoped counters, levels, and finished periods not yet flushed.
    pub counters: Vec<Counter>,
    rates: SmallVec<[RateLog; 1]>,
    pub leases: Vec<Lease>,
    /// The store's counters have been added.
    pub loaded: bool,
    /// Queued for the flusher.
    pub dirty: bool,
}

impl TenantState {
    /// The tenant's calendar of `resource`, its periods moved on to the ones containing
    /// `now_s` (a finished period's unflushed use waits in `counters` for the flusher).
    pub fn calendar(&mut self, resource: &str, now_s: i64) -> &mut Calendar {
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
    pub fn counter(&mut self, scope: Option<KeyId>, resource: &str, window: Window, period: i64) -> &mut Counter {
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
    pub fn value(&self, scope: Option<KeyId>, resource: &str, window: Window, period: i64) -> u64 {
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
    pub fn rate(&mut self, scope: Option<KeyId>, resource: &str, window: Window) -> &mut RateLog {
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

/// The `(start, end)` of `window`'s current period; levels have one period, 0.
pub(crate) fn period(window: Window, now_s: i64) -> (i64, Option<i64>) {
    match window.period(now_s) {
        Some((s, e)) => (s, Some(e)),
        None => (0, None),
    }
}

/// What the tenant's state holds for each limit of `ask`, before it, appended to `out`.
pub(crate) fn see(st: &mut TenantState, ask: &Ask<'_>, now_ms: i64, out: &mut SmallVec<[Seen; 4]>) {
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
                    current: log.current(),
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

/// Whether a check is kept as a counter of its own (a key's calendar windows, and
/// levels); the tenant's calendar windows are its cells, rate windows its logs.
fn counted_apart(c: &Check) -> bool {
    c.window.rate_ms().is_none() && (c.scope.is_some() || c.window == Window::Total)
}

/// Counts `cost` of `resource`: the tenant's calendar counters always (they are the usage
/// record), the key's and the levels where a limit asks for them, and (with `rates`) the
/// sliding logs.
pub(crate) fn commit(
    st: &mut TenantState,
    resource: &str,
    cost: u64,
    checks: impl Iterator<Item = Check>,
    now_ms: i64,
    rates: bool,
    persist: Persist,
) {
    let now_s = now_ms.div_euclid(1000);
    for cell in st.calendar(resource, now_s).cells.iter_mut() {
        cell.value = saturating_count(cell.value, cost);
        if persist == Persist::Flush {
            cell.unflushed = saturating_count(cell.unflushed, cost);
        }
    }
    for c in checks {
        match c.window.rate_ms() {
            Some(len) if rates => st.rate(c.scope, resource, c.window).add(now_ms, len, cost),
            _ if counted_apart(&c) => {
                st.counter(c.scope, resource, c.window, period(c.window, now_s).0)
                    .add(cost, persist);
            }
            _ => {}
        }
    }
}

/// Takes back what [`commit`] counted for `held` at `at_ms`, where its periods and
/// buckets are still current (a reservation whose write failed).
pub(crate) fn take_back(st: &mut TenantState, held: &Held, at_ms: i64, rates: bool) {
    let at_s = at_ms.div_euclid(1000);
    if let Some(cal) = st.calendars.iter_mut().find(|c| *c.resource == *held.resource) {
        for (cell, w) in cal.cells.iter_mut().zip(Window::CALENDAR) {
            if cell.period == period(w, at_s).0 {
                cell.value = cell.value.saturating_sub(held.cost);
            }
        }
    }
    for c in &held.checks {
        match c.window.rate_ms() {
            Some(len) if rates => st
                .rate(c.scope, &held.resource, c.window)
                .take_back(at_ms, len, held.cost),
            _ if counted_apart(c) => {
                let counter = st.counter(c.scope, &held.resource, c.window, period(c.window, at_s).0);
                counter.value = counter.value.saturating_sub(held.cost);
            }
            _ => {}
        }
    }
}

/// The deltas [`commit`] counted for `held` at `now_ms`, as the store adds them: the
/// tenant's four calendar periods and every counter kept apart.
pub(crate) fn deltas(tenant: TenantId, held: &Held, now_ms: i64) -> impl Iterator<Item = CounterRow> + '_ {
    let now_s = now_ms.div_euclid(1000);
    let row = move |scope, window| CounterRow {
        tenant,
        scope,
        resource: held.resource.clone(),
        window,
        period: period(window, now_s).0,
        value: held.cost,
    };
    Window::CALENDAR.into_iter().map(move |w| row(None, w)).chain(
        held.checks
            .iter()
            .filter(|c| counted_apart(c))
            .map(move |c| row(c.scope, c.window)),
    )
}

/// The day's value of every level in `held`, after it was counted: the snapshots
/// invoices read (as the flusher writes them for flushed levels).
pub(crate) fn level_snapshots(st: &TenantState, tenant: TenantId, held: &Held, now_ms: i64) -> Vec<CounterRow> {
    let now_s = now_ms.div_euclid(1000);
    held.checks
        .iter()
        .filter(|c| c.window == Window::Total)
        .map(|c| CounterRow {
            tenant,
            scope: c.scope,
            resource: held.resource.clone(),
            window: Window::Total,
            period: now_s - now_s.rem_euclid(86_400),
            value: st.value(c.scope, &held.resource, Window::Total, 0),
        })
        .collect()
}
