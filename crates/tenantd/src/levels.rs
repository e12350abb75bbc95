//! Levels: what a tenant has now (members, keys, stored bytes), checked against its
//! plan's `total` limits when it grows. Catalog levels are counted by the catalog's own
//! write; the data plane's `storage_bytes` by the data write's transaction, and noted for
//! the day's snapshot that invoices read.
use crate::error::ApiResult;
use crate::state::{AppState, State};
use tenantd_core::{Enforcement, TenantId, Window};
use tenantd_edge::{Problem, TenantContext};
use tenantd_limits::{decide_counted, now_ms, Outcome};
use tenantd_store::Countable;

/// The catalog count behind a `total` level tenantd keeps itself.
pub fn catalog_level(resource: &str) -> Option<Countable> {
    match resource {
        "members" => Some(Countable::Members),
        "keys" => Some(Countable::ActiveKeys),
        _ => None,
    }
}

/// A catalog level about to grow by one, checked (see [`grow_level`]): hand [`Level::max`]
/// to the catalog's write, then its result to [`Level::settle`].
pub struct Level {
    /// This node's lock on the level, held until the write is settled.
    _guard: Option<tokio::sync::OwnedMutexGuard<()>>,
    /// The tightest hard limit: the catalog counts again as it writes, in the same
    /// transaction, so nodes sharing the catalog together never pass it.
    pub max: Option<u64>,
    resource: &'static str,
    /// Thresholds the growth crosses, recorded once it is written.
    crossings: Vec<tenantd_limits::Crossing>,
}

impl Level {
    /// The write's answer: on success the crossings are recorded; a catalog that found
    /// the level full (another node took the last place) is the level's `429`; other
    /// errors are the store's.
    pub async fn settle<T>(
        self,
        state: &State,
        ctx: &TenantContext,
        written: Result<T, tenantd_store::StoreError>,
    ) -> ApiResult<T> {
        match written {
            Ok(v) => {
                for c in &self.crossings {
                    crate::directory::record_crossing(&*state.catalog, c).await;
                }
                Ok(v)
            }
            Err(tenantd_store::StoreError::LevelReached(current)) => {
                Err(refusal(ctx, self.resource, current, 1).into())
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// The limits engine's decision on a level that has `current` growing by `cost`: the
/// thresholds it crosses, or the `429` of a hard limit.
fn decide_level(
    ctx: &TenantContext,
    resource: &str,
    current: u64,
    cost: u64,
) -> Result<Vec<tenantd_limits::Crossing>, Problem> {
    let t = ctx.tenant();
    match decide_counted(t.id, &t.limits, resource, Window::Total, current, cost, 0, now_ms()) {
        Outcome::Refused { state: s, retry_after } => Err(Problem::limited(&s, retry_after)),
        Outcome::Admitted { crossings, .. } => Ok(crossings),
    }
}

/// The answer to a write a level's store refused: the level's `429` (a `500` if the
/// limits engine, asked again, would admit it).
fn refusal(ctx: &TenantContext, resource: &str, current: u64, cost: u64) -> Problem {
    decide_level(ctx, resource, current, cost)
        .err()
        .unwrap_or_else(Problem::internal)
}

/// A level's tightest hard `total` limit, and whether any limit applies to it at all.
fn level_limits(ctx: &TenantContext, resource: &str) -> (Option<u64>, bool) {
    let on_level = |l: &&tenantd_core::Limit| l.resource == resource && l.window == Window::Total;
    let limits = &ctx.tenant().limits;
    let max = limits
        .iter()
        .filter(on_level)
        .filter(|l| l.enforcement == Enforcement::Hard)
        .filter_map(|l| l.limit)
        .min();
    (max, limits.iter().filter(on_level).any(|l| l.limit.is_some()))
}

/// Checks a catalog level that is about to grow by one (`members`, `keys`) with the
/// limits engine's own decision: over a hard `total` limit is `429 quota_exceeded`, over
/// a soft one is admitted, and crossing 80% or 100% records the tenant's event once the
/// growth is written. The count is read from the catalog, and counted again by the
/// catalog's write (with [`Level::max`]). This node's lock on the level is held until
/// [`Level::settle`], so that two additions at once here report crossings once.
pub async fn grow_level(state: &State, ctx: &TenantContext, resource: &'static str) -> ApiResult<Level> {
    let t = ctx.tenant();
    let (max, limited) = level_limits(ctx, resource);
    let mut level = Level {
        _guard: None,
        max,
        resource,
        crossings: Vec::new(),
    };
    let Some(what) = catalog_level(resource).filter(|_| limited) else {
        return Ok(level);
    };
    let lock = state.level_locks.entry((t.id, resource)).or_default().clone();
    level._guard = Some(lock.lock_owned().await);
    let current = state.catalog.count(&t.id, what).await?;
    level.crossings = decide_level(ctx, resource, current, 1)?;
    Ok(level)
}

/// The level the data plane keeps: bytes of a tenant's records, blobs and cache.
pub const STORAGE: &str = "storage_bytes";

/// `storage_bytes` the tenant's app metered itself (usage events), which counts toward
/// the same limits as the data plane's bytes.
async fn metered_storage(state: &State, tenant: tenantd_core::TenantId) -> ApiResult<u64> {
    Ok(state
        .limiter
        .current(tenant, STORAGE, Window::Total)
        .await
        .map_err(Problem::from)?)
}

/// The tenant's `storage_bytes`: the data plane's bytes and what its app metered.
pub async fn storage_level(state: &State, ctx: &TenantContext) -> ApiResult<u64> {
    let stored = state
        .scope(ctx)
        .await?
        .used()
        .await
        .map_err(crate::error::ApiError::from)?;
    Ok(stored.saturating_add(metered_storage(state, ctx.tenant().id).await?))
}

/// A data-plane write's storage check: [`StorageLevel::max`] is the level the data
/// plane may not grow past (checked in the write's own transaction, so that nodes
/// together never pass it), and [`StorageLevel::settle`] turns its result into the
/// answer.
pub struct StorageLevel {
    metered: u64,
    /// The tightest hard `storage_bytes` limit, less what the app metered.
    pub max: Option<u64>,
}

impl StorageLevel {
    /// The limits on the calling tenant's storage.
    pub async fn of(state: &State, ctx: &TenantContext) -> ApiResult<Self> {
        let (hard, limited) = level_limits(ctx, STORAGE);
        let metered = if limited {
            metered_storage(state, ctx.tenant().id).await?
        } else {
            0
        };
        Ok(Self {
            metered,
            max: hard.map(|h| h.saturating_sub(metered)),
        })
    }

    /// The `429` for a write of `wanted` more bytes when the data plane holds `used`.
    pub fn refuse(&self, ctx: &TenantContext, used: u64, wanted: u64) -> crate::error::ApiError {
        refusal(ctx, STORAGE, used.saturating_add(self.metered), wanted).into()
    }

    /// A write's result: on success the 80% / 100% crossings it made are recorded; a
    /// write the hard limit refused is `429 quota_exceeded` (nothing was written); a
    /// tier move that kept the write waiting too long is `503`.
    pub async fn settle<T>(
        &self,
        state: &State,
        ctx: &TenantContext,
        written: Result<tenantd_data::Written<T>, tenantd_data::DataError>,
    ) -> ApiResult<T> {
        match written {
            Ok(w) => {
                note_storage(state, ctx, &w).await;
                if w.after > w.before {
                    let before = w.before.saturating_add(self.metered);
                    // The store wrote it under the hard limit, so the engine admits it too:
                    // this only finds the 80% / 100% crossings.
                    for c in decide_level(ctx, STORAGE, before, w.after - w.before).unwrap_or_default() {
                        crate::directory::record_crossing(&*state.catalog, &c).await;
                    }
                }
                Ok(w.value)
            }
            Err(tenantd_data::DataError::LevelReached { used, wanted }) => Err(self.refuse(ctx, used, wanted)),
            Err(e) => Err(crate::error::ApiError::from(e)),
        }
    }
}

/// Notes a data-plane write's new storage level for the day's snapshot (invoices), if
/// it changed.
async fn note_storage<T>(state: &State, ctx: &TenantContext, w: &tenantd_data::Written<T>) {
    if w.after != w.before {
        state.note_storage(ctx.tenant().id, w.after).await;
    }
}

/// A data-plane delete's result (it only frees storage, so no limit applies), with the
/// tenant's new storage level noted for the day's snapshot.
pub async fn freed<T>(
    state: &State,
    ctx: &TenantContext,
    written: Result<tenantd_data::Written<T>, tenantd_data::DataError>,
) -> ApiResult<T> {
    let w = written.map_err(crate::error::ApiError::from)?;
    note_storage(state, ctx, &w).await;
    Ok(w.value)
}

/// A delete of one thing: `204`, or `404` naming `what` when there was none; the freed
/// storage is noted ([`freed`]).
pub async fn deleted(
    state: &State,
    ctx: &TenantContext,
    written: Result<tenantd_data::Written<bool>, tenantd_data::DataError>,
    what: &str,
) -> ApiResult<http::StatusCode> {
    if freed(state, ctx, written).await? {
        Ok(http::StatusCode::NO_CONTENT)
    } else {
        Err(Problem::not_found(what).into())
    }
}

impl AppState {
    /// Notes a tenant's data-plane storage level after a write, for the day's snapshot
    /// (written at the next usage flush, or now when `usage_flush_ms` is 0).
    pub async fn note_storage(&self, tenant: TenantId, bytes: u64) {
        self.storage_levels.insert(tenant, bytes);
        if self.cfg.usage_flush_ms == 0 {
            self.flush_storage_levels().await;
        }
    }

    /// Writes the noted storage levels as today's snapshots (`storage_bytes:data`); on
    /// failure they are kept for the next flush, unless a newer level came meanwhile.
    pub(crate) async fn flush_storage_levels(&self) {
        let levels: Vec<(TenantId, u64)> = self.storage_levels.iter().map(|e| (*e.key(), *e.value())).collect();
        if levels.is_empty() {
            return;
        }
        let day = tenantd_core::Window::Day
            .period(tenantd_core::now_secs())
            .map_or(0, |(start, _)| start);
        let rows: Vec<tenantd_core::usage::CounterRow> = levels
            .iter()
            .map(|(tenant, bytes)| tenantd_core::usage::CounterRow {
                tenant: *tenant,
                scope: None,
                resource: crate::billing::DATA_STORAGE.into(),
                window: tenantd_core::Window::Total,
                period: day,
                value: *bytes,
            })
            .collect();
        match self.catalog.set_levels(&rows).await {
            Ok(()) => {
                for (tenant, bytes) in levels {
                    self.storage_levels.remove_if(&tenant, |_, v| *v == bytes);
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not write storage snapshots; will retry"),
        }
    }
}
