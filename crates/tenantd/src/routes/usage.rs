//! Usage: the quota table, leases and the tenant's events (metered usage events are in
//! [`crate::routes::usage_events`]).
use crate::app::State;
use crate::error::ApiResult;
use crate::extract::{Json, PageQuery, Query};
use axum::extract::{Path, State as S};
use http::StatusCode;
use serde::{Deserialize, Serialize};

use crate::routes::openapi::{PageParams, TenantPath};
use std::collections::BTreeMap;
use tenantd_core::plan::validate_resource;
use tenantd_core::usage::TenantEvent;
use tenantd_core::{now_secs, Enforcement, Window};
use tenantd_edge::{Problem, TenantContext};
use tenantd_limits::{decide_counted, now_ms, Outcome};
use tenantd_store::{Countable, Page};

/// One row of the quota table.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Quota {
    /// The resource.
    resource: String,
    /// The window.
    window: Window,
    /// `null` when unlimited.
    limit: Option<u64>,
    /// Used in the current window (levels: now; leases: held now).
    current: u64,
    /// What is left; `null` when unlimited.
    remaining: Option<u64>,
    /// `current / limit × 100`, one decimal; `null` when unlimited.
    percentage: Option<f64>,
    /// When the window resets (RFC 3339); `null` for levels and leases.
    #[schema(format = DateTime)]
    reset_at: Option<String>,
    /// `hard` or `soft`.
    enforcement: Enforcement,
}

/// `GET …/usage`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Usage {
    /// The tenant.
    tenant_id: String,
    /// Its plan.
    plan: String,
    /// Every limit of the plan with the tenant's overrides, with its use.
    quotas: Vec<Quota>,
    /// The plan's features.
    features: BTreeMap<String, bool>,
}

async fn usage_of(state: &State, ctx: &TenantContext) -> ApiResult<Usage> {
    ctx.require("usage:read")?;
    let t = ctx.tenant();
    let now = now_secs();
    let mut quotas = Vec::with_capacity(t.limits.len());
    for l in t.limits.iter() {
        let current = match catalog_level(&l.resource).filter(|_| l.window == Window::Total) {
            Some(what) => state.catalog.count(&t.id, what).await?,
            None if l.resource == STORAGE && l.window == Window::Total => storage_level(state, ctx).await?,
            None => state
                .limiter
                .current(t.id, &l.resource, l.window)
                .await
                .map_err(Problem::from)?,
        };
        let reset_at = match (l.window.period(now), l.window.rate_ms()) {
            (Some((_, end)), _) => Some(end),
            (None, Some(ms)) => Some(now + ms / 1000),
            _ => None,
        };
        quotas.push(Quota {
            resource: l.resource.clone(),
            window: l.window,
            limit: l.limit,
            current,
            remaining: l.limit.map(|x| x.saturating_sub(current)),
            percentage: l.limit.map(|x| {
                if x == 0 {
                    100.0
                } else {
                    (current as f64 * 1000.0 / x as f64).round() / 10.0
                }
            }),
            reset_at: reset_at.map(tenantd_core::ts::format),
            enforcement: l.enforcement,
        });
    }
    let plan = state.catalog.get_plan(&t.plan).await?;
    Ok(Usage {
        tenant_id: t.id.to_string(),
        plan: t.plan.to_string(),
        quotas,
        features: plan.features.into_iter().map(|f| (f, true)).collect(),
    })
}

/// The calling tenant's quota table (`usage:read`); the tenant comes from the credential,
/// the host or `X-Tenant-ID`.
#[utoipa::path(get, path = "/v1/tenant/usage", tag = "usage", responses((status = 200, description = "The quota table", body = Usage)))]
pub async fn mine(S(state): S<State>, ctx: TenantContext) -> ApiResult<axum::Json<Usage>> {
    Ok(axum::Json(usage_of(&state, &ctx).await?))
}

/// A tenant's quota table (`usage:read`).
#[utoipa::path(get, path = "/v1/tenants/{id}/usage", tag = "usage", params(TenantPath), responses((status = 200, description = "The quota table", body = Usage)))]
pub async fn get(S(state): S<State>, ctx: TenantContext) -> ApiResult<axum::Json<Usage>> {
    Ok(axum::Json(usage_of(&state, &ctx).await?))
}

/// The catalog count behind a `total` level tenantd keeps itself.
fn catalog_level(resource: &str) -> Option<Countable> {
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
    let stored = crate::routes::data::scope(state, ctx)
        .await?
        .used()
        .await
        .map_err(crate::routes::data::data_err)?;
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
            Err(e) => Err(crate::routes::data::data_err(e)),
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
    let w = written.map_err(crate::routes::data::data_err)?;
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

/// `POST /v1/tenants/{id}/leases` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TakeLease {
    /// The resource with a `concurrent` limit.
    #[schema(pattern = "^[a-z0-9_.-]{1,64}$")]
    resource: String,
    /// 1 to 86,400; the lease frees itself after this long.
    #[schema(minimum = 1, maximum = 86400)]
    #[serde(deserialize_with = "tenantd_core::whole::u32")]
    ttl_seconds: u32,
}

/// A lease taken.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Lease {
    /// Release it with this.
    lease_id: String,
    /// Its resource.
    resource: String,
    /// When it frees itself (RFC 3339).
    #[schema(format = DateTime)]
    expires_at: String,
}

/// `{id}/leases/{lease_id}`.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct LeasePath {
    /// The lease.
    lease_id: String,
}

/// Takes a lease on a concurrent limit (`usage:write`): 201 with `lease_id`, or 429 while
/// the tenant holds as many as its limit allows.
#[utoipa::path(post, path = "/v1/tenants/{id}/leases", tag = "usage", params(TenantPath), request_body = TakeLease, responses((status = 201, description = "The lease", body = Lease)))]
pub async fn take_lease(
    S(state): S<State>,
    ctx: TenantContext,
    Json(b): Json<TakeLease>,
) -> ApiResult<(StatusCode, axum::Json<Lease>)> {
    ctx.require("usage:write")?;
    validate_resource(&b.resource).map_err(Problem::invalid)?;
    if !(1..=86_400).contains(&b.ttl_seconds) {
        return Err(Problem::invalid("ttl_seconds must be between 1 and 86400").into());
    }
    let ttl_ms = i64::from(b.ttl_seconds) * 1000;
    let got = state
        .limiter
        .acquire(
            *ctx.tenant_id(),
            &ctx.tenant().limits,
            ctx.tenant().counter_failure,
            &b.resource,
            ttl_ms,
        )
        .await
        .map_err(Problem::from)?;
    match got {
        Ok(id) => Ok((
            StatusCode::CREATED,
            axum::Json(Lease {
                lease_id: id,
                resource: b.resource,
                expires_at: tenantd_core::ts::format(now_secs() + i64::from(b.ttl_seconds)),
            }),
        )),
        Err(Outcome::Refused { state: s, retry_after }) => Err(Problem::limited(&s, retry_after).into()),
        Err(_) => Err(Problem::internal().into()),
    }
}

/// Releases a lease (`usage:write`): 204, or 404 when the tenant holds no such lease
/// (released, expired or never taken).
#[utoipa::path(delete, path = "/v1/tenants/{id}/leases/{lease_id}", tag = "usage", params(TenantPath, LeasePath), responses((status = 204, description = "Released")))]
pub async fn release_lease(S(state): S<State>, ctx: TenantContext, Path(p): Path<LeasePath>) -> ApiResult<StatusCode> {
    ctx.require("usage:write")?;
    let released = state
        .limiter
        .release(*ctx.tenant_id(), &p.lease_id)
        .await
        .map_err(Problem::from)?;
    if released {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(Problem::not_found("lease").into())
    }
}

/// The tenant's events (`quota.warning`, `quota.exceeded`), oldest first (`events:read`).
#[utoipa::path(get, path = "/v1/tenants/{id}/events", tag = "usage", params(TenantPath, PageParams), responses((status = 200, description = "A page of the tenant's events, oldest first", body = Page<TenantEvent>)))]
pub async fn events(
    S(state): S<State>,
    ctx: TenantContext,
    Query(q): Query<PageQuery>,
) -> ApiResult<axum::Json<Page<TenantEvent>>> {
    ctx.require("events:read")?;
    Ok(axum::Json(
        state.catalog.list_events(ctx.tenant_id(), &q.page()?).await?,
    ))
}
