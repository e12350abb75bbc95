//! Usage: the quota table, leases and the tenant's events (metered usage events are in
//! [`crate::routes::usage_events`]).
use crate::error::ApiResult;
use crate::extract::{Json, PageQuery, Query};
use crate::state::State;
use axum::extract::{Path, State as S};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::levels::{catalog_level, storage_level, STORAGE};
use crate::routes::openapi::{PageParams, TenantPath};
use std::collections::BTreeMap;
use tenantd_core::plan::validate_resource;
use tenantd_core::usage::TenantEvent;
use tenantd_core::{now_secs, Enforcement, Limit, Window};
use tenantd_edge::{Problem, TenantContext};
use tenantd_jobs::JOB_SECONDS;
use tenantd_limits::Outcome;
use tenantd_store::Page;

/// One row of the quota table.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Quota {
    /// The resource.
    pub resource: String,
    /// The window.
    pub window: Window,
    /// `null` when unlimited.
    pub limit: Option<u64>,
    /// Used in the current window (levels: now; leases: held now).
    pub current: u64,
    /// What is left; `null` when unlimited.
    pub remaining: Option<u64>,
    /// `current / limit × 100`, one decimal; `null` when unlimited.
    pub percentage: Option<f64>,
    /// When the window resets (RFC 3339); `null` for levels and leases.
    #[schema(format = DateTime)]
    pub reset_at: Option<String>,
    /// `hard` or `soft`.
    pub enforcement: Enforcement,
}

/// `GET …/usage`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Usage {
    /// The tenant.
    pub tenant_id: String,
    /// Its plan.
    pub plan: String,
    /// Every limit of the plan with the tenant's overrides, with its use.
    pub quotas: Vec<Quota>,
    /// The plan's features.
    pub features: BTreeMap<String, bool>,
}

/// The tenant's quota table (`usage:read`): every limit with its use now.
pub async fn usage_of(state: &State, ctx: &TenantContext) -> ApiResult<Usage> {
    ctx.require("usage:read")?;
    let t = ctx.tenant();
    let now = now_secs();
    let mut quotas = Vec::with_capacity(t.limits.len() + 1);
    // Job run time is metered by the queue's upkeep into the catalog: it always shows, for
    // the month, whether or not the plan limits it.
    let job_seconds = (!t
        .limits
        .iter()
        .any(|l| l.resource == JOB_SECONDS && l.window == Window::Month))
    .then(|| Limit::new(JOB_SECONDS, Window::Month, None, Enforcement::Soft));
    for l in t.limits.iter().chain(job_seconds.as_ref()) {
        let current = match catalog_level(&l.resource).filter(|_| l.window == Window::Total) {
            Some(what) => state.catalog.count(&t.id, what).await?,
            None if l.resource == STORAGE && l.window == Window::Total => storage_level(state, ctx).await?,
            None if l.resource == JOB_SECONDS => metered(state, &t.id, l.window, now).await?,
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

/// A resource tenantd meters into the catalog itself (job run time): the tenant's counter
/// of `window`'s current period.
async fn metered(state: &State, tenant: &tenantd_core::TenantId, window: Window, now: i64) -> ApiResult<u64> {
    let Some((start, end)) = window.period(now) else {
        return Ok(0);
    };
    Ok(state
        .catalog
        .counters_in(tenant, window, start, end)
        .await?
        .iter()
        .filter(|c| c.resource == JOB_SECONDS)
        .map(|c| c.value)
        .sum())
}

/// The calling tenant's quota table (`usage:read`); the tenant comes from the credential,
/// the host or `X-Tenant-ID`.
#[utoipa::path(get, path = "/v1/tenant/usage", tag = "usage", responses((status = 200, description = "The quota table", body = Usage)))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn mine(S(state): S<State>, ctx: TenantContext) -> ApiResult<axum::Json<Usage>> {
    Ok(axum::Json(usage_of(&state, &ctx).await?))
}

/// A tenant's quota table (`usage:read`).
#[utoipa::path(get, path = "/v1/tenants/{id}/usage", tag = "usage", params(TenantPath), responses((status = 200, description = "The quota table", body = Usage)))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn get(S(state): S<State>, ctx: TenantContext) -> ApiResult<axum::Json<Usage>> {
    Ok(axum::Json(usage_of(&state, &ctx).await?))
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
#[tracing::instrument(level = "debug", skip_all)]
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
#[tracing::instrument(level = "debug", skip_all)]
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
#[tracing::instrument(level = "debug", skip_all)]
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

/// This module's routes, with their OpenAPI descriptions.
pub fn router() -> OpenApiRouter<State> {
    OpenApiRouter::new()
        .routes(routes!(mine))
        .routes(routes!(get))
        .routes(routes!(take_lease))
        .routes(routes!(release_lease))
        .routes(routes!(events))
}
