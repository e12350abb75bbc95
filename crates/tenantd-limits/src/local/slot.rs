//! Each tenant's slot in the in-process engine: its counters, loaded from the store once;
//! the decisions made under its lock; and the deltas collected from it for a flush.
use super::Local;
use crate::state::{cell_of, commit, deltas, level_snapshots, period, see, Persist, TenantState};
use crate::{AdmitError, Ask, Held, Outcome, Reservation};
use smallvec::SmallVec;
use std::sync::{Arc, Mutex};
use tenantd_core::usage::{saturating_count, CounterRow};
use tenantd_core::{TenantId, Window};

/// Held inline in the map: the hot path takes the map's read guard and the tenant's lock,
/// and follows no pointer.
pub(super) struct Slot {
    /// Serialises the first load from the store (cold path only).
    pub(super) loading: Arc<tokio::sync::OnceCell<()>>,
    pub(super) st: Mutex<TenantState>,
}

impl Local {
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

    /// Runs `f` on the tenant's state under its lock (the slot must exist: slots are
    /// removed only when the tenant is purged).
    pub(super) fn with<R>(&self, tenant: TenantId, f: impl FnOnce(&mut TenantState) -> R) -> Result<R, AdmitError> {
        let slot = self
            .slots
            .get(&tenant)
            .ok_or_else(|| AdmitError::Store(format!("no counters for tenant {tenant}")))?;
        let mut st = slot.st.lock().unwrap_or_else(|e| e.into_inner());
        Ok(f(&mut st))
    }

    /// [`Local::with`] once the tenant's counters are loaded.
    pub(super) async fn loaded<R>(
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

    /// Checks every limit of `asks` and commits all or none.
    pub(super) fn decide(&self, st: &mut TenantState, asks: &[Ask<'_>], now_ms: i64, persist: Persist) -> Outcome {
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

    /// Counts `asks` in the record; with [`Persist::Caller`], their reservation.
    pub(super) async fn record_as(
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

    /// Collects every unflushed delta (and forgets finished periods' counters).
    pub(super) fn take_deltas(&self, now_s: i64) -> (Vec<CounterRow>, Vec<CounterRow>) {
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
}

/// The reservation of `asks`, just counted in `st` at `now_ms`: the store's deltas and
/// the levels' new values.
pub(super) fn reservation(st: &TenantState, tenant: TenantId, asks: &[Ask<'_>], now_ms: i64) -> Reservation {
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
