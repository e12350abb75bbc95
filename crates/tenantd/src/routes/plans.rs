//! Plans (operator only).
use crate::error::ApiResult;
use crate::extract::Json;
use crate::routes::openapi::Items;
use crate::state::State;
use axum::extract::{Path, State as S};
use http::StatusCode;
use tenantd_core::{Isolation, Limit, Plan, PlanId};
use tenantd_edge::{Ctx, Problem};
use tenantd_store::NewEvent;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

fn plan_id(raw: &str) -> ApiResult<PlanId> {
    Ok(PlanId::parse(raw)?)
}

fn checked(p: Plan) -> ApiResult<Plan> {
    p.validate().map_err(Problem::invalid)?;
    Ok(p)
}

/// All plans.
#[utoipa::path(get, path = "/v1/plans", tag = "plans", responses((status = 200, description = "Every plan", body = Items<Plan>)))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn list(S(state): S<State>, ctx: Ctx) -> ApiResult<axum::Json<serde_json::Value>> {
    ctx.require_operator()?;
    Ok(axum::Json(
        serde_json::json!({"items": state.catalog.list_plans().await?}),
    ))
}

/// Creates a plan: `{"id","name","limits",…}` as docs/limits.md describes.
#[utoipa::path(post, path = "/v1/plans", tag = "plans", request_body = Plan, responses((status = 201, description = "The plan", body = Plan)))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn create(S(state): S<State>, ctx: Ctx, Json(plan): Json<Plan>) -> ApiResult<(StatusCode, axum::Json<Plan>)> {
    ctx.require_operator()?;
    let plan = checked(plan)?;
    let mut w = state.catalog.begin().await?;
    state.catalog.create_plan(&mut w, &plan).await?;
    w.commit_with(&plan_event("plan.created", &plan.id, &ctx)).await?;
    Ok((StatusCode::CREATED, axum::Json(plan)))
}

/// One plan.
#[utoipa::path(get, path = "/v1/plans/{plan}", tag = "plans", params(PlanPath), responses((status = 200, description = "The plan", body = Plan)))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn get(S(state): S<State>, ctx: Ctx, Path(id): Path<String>) -> ApiResult<axum::Json<Plan>> {
    ctx.require_operator()?;
    Ok(axum::Json(state.catalog.get_plan(&plan_id(&id)?).await?))
}

/// Fields a plan patch may change.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanPatch {
    /// 1–200 characters, not only spaces.
    #[schema(min_length = 1, max_length = 200, pattern = "^[^\\u0000]*[^\\s\\u0000][^\\u0000]*$")]
    name: Option<String>,
    /// A decimal string with at most 4 decimals.
    #[schema(pattern = "^[0-9]+(\\.[0-9]{1,4})?$", max_length = 30)]
    price: Option<String>,
    /// ISO 4217 code.
    #[schema(pattern = "^[A-Z]{3}$")]
    currency: Option<String>,
    /// Replaces the plan's limits (one per resource and window).
    limits: Option<Vec<Limit>>,
    /// Replaces the plan's features.
    features: Option<Vec<String>>,
    /// The data isolation tier.
    isolation: Option<Isolation>,
    /// What happens when shared counters (Redis) are unreachable.
    counter_failure: Option<tenantd_core::CounterFailure>,
    /// The share of background job claims of the plan's tenants: 1 to 1000.
    #[schema(minimum = 1, maximum = 1000)]
    #[serde(default, deserialize_with = "tenantd_core::whole::opt_u32")]
    job_weight: Option<u32>,
}

/// `{plan}`: a plan id.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub struct PlanPath {
    /// 1–64 of `a-z 0-9 - _` (lower-cased).
    #[param(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    plan: String,
}

/// Changes a plan's fields; tenants on it see the new limits at once.
#[utoipa::path(patch, path = "/v1/plans/{plan}", tag = "plans", params(PlanPath), request_body = PlanPatch, responses((status = 200, description = "The plan", body = Plan)))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn patch(
    S(state): S<State>,
    ctx: Ctx,
    Path(id): Path<String>,
    Json(p): Json<PlanPatch>,
) -> ApiResult<axum::Json<Plan>> {
    ctx.require_operator()?;
    let mut plan = state.catalog.get_plan(&plan_id(&id)?).await?;
    plan.name = p.name.unwrap_or(plan.name);
    plan.price = p.price.unwrap_or(plan.price);
    plan.currency = p.currency.unwrap_or(plan.currency);
    plan.limits = p.limits.unwrap_or(plan.limits);
    plan.features = p.features.unwrap_or(plan.features);
    plan.isolation = p.isolation.unwrap_or(plan.isolation);
    plan.counter_failure = p.counter_failure.unwrap_or(plan.counter_failure);
    plan.job_weight = p.job_weight.unwrap_or(plan.job_weight);
    let plan = checked(plan)?;
    let mut w = state.catalog.begin().await?;
    state.catalog.update_plan(&mut w, &plan).await?;
    w.commit_with(&plan_event("plan.updated", &plan.id, &ctx)).await?;
    state.changed(tenantd_edge::Change::Plan(plan.id.as_str())).await;
    // Its tenants' jobs are served by its weight and limits from now on.
    for tenant in state.jobs.tenants().await? {
        match state.catalog.get_tenant(&tenant).await {
            Ok(t) if t.plan == plan.id => state.refresh_job_policy(&tenant).await?,
            _ => {}
        }
    }
    Ok(axum::Json(plan))
}

/// Deletes a plan no tenant is on.
#[utoipa::path(delete, path = "/v1/plans/{plan}", tag = "plans", params(PlanPath), responses((status = 204, description = "Deleted")))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn delete(S(state): S<State>, ctx: Ctx, Path(id): Path<String>) -> ApiResult<StatusCode> {
    ctx.require_operator()?;
    let id = plan_id(&id)?;
    let mut w = state.catalog.begin().await?;
    state.catalog.delete_plan(&mut w, &id).await?;
    w.commit_with(&plan_event("plan.deleted", &id, &ctx)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The platform event of what the operator did to a plan.
fn plan_event(action: &str, plan: &PlanId, ctx: &Ctx) -> NewEvent {
    NewEvent::new(
        None,
        "operator",
        action,
        serde_json::json!({"plan": plan}),
        &ctx.request_id,
    )
}

/// This module's routes, with their OpenAPI descriptions.
pub fn router() -> OpenApiRouter<State> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(get, patch, delete))
}
