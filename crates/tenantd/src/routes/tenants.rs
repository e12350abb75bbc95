//! Tenants and their lifecycle.
use crate::error::ApiResult;
use crate::extract::{page, Json, Query};
use crate::routes::openapi::TenantPath;
use crate::state::{AppState, Note, State};
use axum::extract::State as S;
use http::StatusCode;
use tenantd_core::tenant::Transition;
use tenantd_core::{Code, Email, Limit, PlanId, TenantId, TenantStatus};
use tenantd_edge::{Change, Ctx, Principal, Problem, TenantContext};
use tenantd_store::{Created, NewTenant, Page, Tenant, TenantFilter, TenantPatch};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// `POST /v1/tenants` body.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    /// 1–39 of `a-z 0-9 -`, not starting or ending with `-` (lower-cased); not `admin`,
    /// `api`, `www` or `default`.
    #[schema(pattern = "^[A-Za-z0-9]([A-Za-z0-9-]{0,37}[A-Za-z0-9])?$")]
    id: String,
    /// Display name (default: the id): 1–200 characters, not only spaces.
    #[schema(min_length = 1, max_length = 200, pattern = "^[^\\u0000]*[^\\s\\u0000][^\\u0000]*$")]
    name: Option<String>,
    /// Plan id.
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    plan: String,
    /// The first owner (required of operators; a signed-in user signing up may leave it
    /// out to be the owner).
    #[schema(
        required = true,
        max_length = 254,
        pattern = "^[!-?A-~]+@[!-\\-/-?A-~][!-?A-~]*\\.[!-?A-~]*[!-\\-/-?A-~]$"
    )]
    owner_email: Option<String>,
    /// A JSON object (`upstream`: operators only, see [`Settings`]).
    #[schema(value_type = Option<Settings>)]
    settings: Option<serde_json::Value>,
}

/// A tenant's settings: any JSON object; tenantd itself reads `upstream`.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct Settings {
    /// The tenant's own gateway upstream, `http://host:port` (operators only).
    #[schema(
        pattern = "^http://[A-Za-z0-9.-]{1,253}(:(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3}))?(/[A-Za-z0-9._~-]*)*$"
    )]
    upstream: Option<String>,
}

/// Checks new settings: a JSON object whose `upstream` (the tenant's dedicated gateway
/// upstream), when it differs from `current`, is set by an operator and is an http:// URL.
fn settings(
    v: Option<serde_json::Value>,
    operator: bool,
    current: Option<&serde_json::Value>,
) -> ApiResult<Option<serde_json::Value>> {
    let Some(s) = v else { return Ok(None) };
    if !s.is_object() {
        return Err(Problem::invalid("settings must be a JSON object").into());
    }
    let upstream = s.get("upstream");
    if upstream != current.and_then(|c| c.get("upstream")) {
        if !operator {
            return Err(Problem::new(Code::Forbidden, "only operators may set a tenant's upstream").into());
        }
        match upstream {
            None | Some(serde_json::Value::Null) => {}
            Some(u) => {
                let u = u
                    .as_str()
                    .ok_or_else(|| Problem::invalid("settings.upstream must be a string"))?;
                if !upstream_shape(u) {
                    return Err(Problem::invalid(
                        "settings.upstream must be http://host[:port][/path], the host of letters, digits, '.' and '-'",
                    )
                    .into());
                }
                tenantd_edge::Upstream::parse(u).map_err(|e| Problem::invalid(format!("settings.{e}")))?;
            }
        }
    }
    Ok(Some(s))
}

/// Whether a tenant's upstream is `http://host[:port][/path]` as the OpenAPI document
/// describes it: a host of letters, digits, `.` and `-` (at most 253), a port from 1 to
/// 65535, path segments of unreserved characters.
fn upstream_shape(u: &str) -> bool {
    let Some(rest) = u.strip_prefix("http://") else {
        return false;
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let (host, port) = match authority.split_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (authority, None),
    };
    let host_ok = (1..=253).contains(&host.len())
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
    let port_ok =
        port.is_none_or(|p| !p.starts_with('0') && (1..=5).contains(&p.len()) && p.parse::<u16>().is_ok_and(|n| n > 0));
    let path_ok = path
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'.' | b'_' | b'~' | b'-'));
    host_ok && port_ok && path_ok
}

/// A display name as tenants take it (`name`: 1–200 characters, not only spaces).
fn name(v: Option<String>) -> ApiResult<Option<String>> {
    v.map(|n| tenantd_core::text::display_name("name", &n).map_err(|m| Problem::invalid(m).into()))
        .transpose()
}

/// A tenant to create, its name and plan checked (the name defaults to the id, the
/// settings to `{}`).
pub fn new_tenant(
    id: TenantId,
    name_given: Option<String>,
    plan: &str,
    owner: Email,
    settings: Option<serde_json::Value>,
) -> ApiResult<NewTenant> {
    Ok(NewTenant {
        name: name(name_given)?.unwrap_or_else(|| id.to_string()),
        id,
        plan: PlanId::parse(plan)?,
        owner_email: owner,
        settings: settings.unwrap_or_else(|| serde_json::json!({})),
    })
}

/// Creates a tenant and its owner membership (operators; anyone on a signup plan when
/// self-signup is on). The same request again answers 200 with the same tenant.
#[utoipa::path(post, path = "/v1/tenants", tag = "tenants", request_body = CreateTenant, responses((status = 201, description = "Created", body = Tenant), (status = 200, description = "The same request was made before; this is its tenant", body = Tenant)))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn create(
    S(state): S<State>,
    ctx: Ctx,
    Json(b): Json<CreateTenant>,
) -> ApiResult<(StatusCode, axum::Json<Tenant>)> {
    let own_email = match &ctx.principal {
        Some(Principal::Operator) => None,
        Some(Principal::User { email, .. }) if state.cfg.self_signup => Some(email.clone()),
        None if state.cfg.self_signup => None,
        None => return Err(Problem::unauthenticated("creating a tenant needs the operator key").into()),
        Some(_) => return Err(Problem::new(Code::Forbidden, "only operators may create tenants").into()),
    };
    if !ctx.is_operator() && !state.cfg.signup_plans.contains(&b.plan) {
        return Err(Problem::new(
            Code::Forbidden,
            format!(
                "self-signup may choose only these plans: {}",
                state.cfg.signup_plans.join(", ")
            ),
        )
        .into());
    }
    let id = TenantId::parse(&b.id)?;
    let owner = match (b.owner_email, own_email) {
        (Some(e), None) => Email::parse(&e)?,
        (Some(e), Some(mine)) if Email::parse(&e)?.as_str() == mine => Email::parse(&e)?,
        (Some(_), Some(_)) => {
            return Err(Problem::new(Code::Forbidden, "with self-signup the owner is the signed-in user").into())
        }
        (None, Some(mine)) => Email::parse(&mine)?,
        (None, None) => return Err(Problem::invalid("missing field `owner_email`").into()),
    };
    let settings = settings(b.settings, ctx.is_operator(), None)?;
    let new = new_tenant(id, b.name, &b.plan, owner, settings)?;
    let actor = ctx
        .principal
        .as_ref()
        .map_or_else(|| "anonymous".to_string(), Principal::actor);
    match state
        .create_tenant(&new, &actor, &ctx.request_id, Note::default())
        .await?
    {
        Created::New(t) => Ok((StatusCode::CREATED, axum::Json(t))),
        Created::Existing(t) => Ok((StatusCode::OK, axum::Json(t))),
    }
}

/// `GET /v1/tenants` query.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only tenants with this status (default: all but deleted).
    status: Option<TenantStatus>,
    /// Only tenants on this plan.
    plan: Option<String>,
    /// Items per page: 1 to 1000 (default 50).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// The previous page's `next_cursor`, as it was given (any other value is `400`).
    cursor: Option<String>,
}

/// Lists tenants (operator), by id, with cursor pages.
#[utoipa::path(get, path = "/v1/tenants", tag = "tenants", params(ListQuery), responses((status = 200, description = "A page of tenants", body = Page<Tenant>)))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn list(S(state): S<State>, ctx: Ctx, Query(q): Query<ListQuery>) -> ApiResult<axum::Json<Page<Tenant>>> {
    ctx.require_operator()?;
    let filter = TenantFilter {
        status: q.status,
        plan: q.plan,
        search: None,
    };
    Ok(axum::Json(
        state.catalog.list_tenants(&filter, &page(q.limit, q.cursor)?).await?,
    ))
}

/// One tenant (`tenant:read`; owners keep it on a suspended tenant).
#[utoipa::path(get, path = "/v1/tenants/{id}", tag = "tenants", params(TenantPath), responses((status = 200, description = "The tenant", body = Tenant)))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn get(S(state): S<State>, ctx: TenantContext) -> ApiResult<axum::Json<Tenant>> {
    ctx.require("tenant:read")?;
    Ok(axum::Json(state.catalog.get_tenant(ctx.tenant_id()).await?))
}

/// Where the tenant's data lives, and the progress of its last tier move
/// (`tenant:read`). A tenant whose data was never used shows its plan's tier with
/// `"state": "unplaced"`.
#[utoipa::path(get, path = "/v1/tenants/{id}/placement", tag = "tenants", params(TenantPath), responses((status = 200, description = "Where the tenant's data lives", body = tenantd_data::Placement)))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn placement(S(state): S<State>, ctx: TenantContext) -> ApiResult<axum::Json<serde_json::Value>> {
    ctx.require("tenant:read")?;
    let id = ctx.tenant_id();
    let p = state.data.placement(id).await.map_err(crate::error::ApiError::from)?;
    Ok(axum::Json(match p {
        Some(p) => serde_json::json!(p),
        None => {
            let tier = ctx.tenant().isolation;
            serde_json::json!({"tenant_id": id, "tier": tier, "location": null, "state": "unplaced", "move": null})
        }
    }))
}

/// `PATCH /v1/tenants/{id}` body.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchTenant {
    /// `tenant:write`: 1–200 characters, not only spaces.
    #[schema(min_length = 1, max_length = 200, pattern = "^[^\\u0000]*[^\\s\\u0000][^\\u0000]*$")]
    name: Option<String>,
    /// `billing:manage`: a plan id.
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    plan: Option<String>,
    /// `tenant:write`; replaces the object.
    #[schema(value_type = Option<Settings>)]
    settings: Option<serde_json::Value>,
    /// Operators only: each replaces the plan's limit with the same resource and window.
    limits: Option<Vec<Limit>>,
}

/// Changes name and settings (`tenant:write`), plan (`billing:manage`) or limit
/// overrides (operators).
#[utoipa::path(patch, path = "/v1/tenants/{id}", tag = "tenants", params(TenantPath), request_body = PatchTenant, responses((status = 200, description = "The tenant", body = Tenant)))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn patch(
    S(state): S<State>,
    ctx: TenantContext,
    Json(b): Json<PatchTenant>,
) -> ApiResult<axum::Json<Tenant>> {
    if b.name.is_none() && b.settings.is_none() && b.plan.is_none() && b.limits.is_none() {
        // A patch that changes nothing (RFC 7386's `{}`) answers the tenant as it is.
        ctx.require("tenant:read")?;
        return Ok(axum::Json(state.catalog.get_tenant(ctx.tenant_id()).await?));
    }
    // Checked before the values are read (the current settings among them).
    may_patch(
        &ctx,
        b.name.is_some() || b.settings.is_some(),
        b.plan.is_some(),
        b.limits.is_some(),
    )?;
    if let Some(l) = &b.limits {
        for x in l {
            x.validate().map_err(Problem::invalid)?;
        }
    }
    let patch = TenantPatch {
        name: name(b.name)?,
        plan: b.plan.as_deref().map(PlanId::parse).transpose()?,
        settings: match b.settings {
            None => None,
            new => {
                let current = state.catalog.get_tenant(ctx.tenant_id()).await?;
                settings(new, ctx.principal().is_operator(), Some(&current.settings))?
            }
        },
        limits: b.limits,
    };
    Ok(axum::Json(update(&state, &ctx, &patch, Note::default()).await?))
}

/// Whether the caller may change name or settings (`tenant:write`), the plan
/// (`billing:manage`) and limit overrides (operators only).
fn may_patch(ctx: &TenantContext, profile: bool, plan: bool, limits: bool) -> ApiResult<()> {
    if profile {
        ctx.require("tenant:write")?;
    }
    if plan {
        ctx.require("billing:manage")?;
    }
    if limits && !ctx.principal().is_operator() {
        return Err(Problem::new(Code::Forbidden, "only operators may override limits").into());
    }
    Ok(())
}

/// Writes a patch whose values are checked, if the caller may make it ([`may_patch`]),
/// with its `tenant.updated` event; a new plan refreshes the job policy and moves the
/// tenant's data to the plan's tier, online.
pub async fn update(state: &State, ctx: &TenantContext, patch: &TenantPatch, note: Note<'_>) -> ApiResult<Tenant> {
    may_patch(
        ctx,
        patch.name.is_some() || patch.settings.is_some(),
        patch.plan.is_some(),
        patch.limits.is_some(),
    )?;
    let mut w = state.catalog.begin().await?;
    let t = state.catalog.update_tenant(&mut w, ctx.tenant_id(), patch).await?;
    let detail = note.added_to(serde_json::json!({"plan": patch.plan, "limits": patch.limits.is_some()}));
    w.commit_with(&AppState::event_of(ctx, "tenant.updated", detail))
        .await?;
    state.changed(Change::Tenant(t.id.as_str())).await;
    if patch.plan.is_some() || patch.limits.is_some() {
        state.refresh_job_policy(&t.id).await?;
    }
    // A plan at another tier moves the tenant's data there, online.
    if patch.plan.is_some() {
        state.request_move(t.id).await?;
    }
    Ok(t)
}

async fn transition(
    state: &State,
    ctx: &TenantContext,
    t: Transition,
    note: Note<'_>,
    action: &str,
) -> ApiResult<Tenant> {
    // The tenant keeps the reason of its suspension (`status_reason`); any other
    // transition's reason is the event's only.
    let status_reason = note.reason.filter(|_| matches!(t, Transition::Suspend));
    let mut w = state.catalog.begin().await?;
    let tenant = state
        .catalog
        .transition_tenant(&mut w, ctx.tenant_id(), t, status_reason)
        .await?;
    match t {
        // A deleted tenant's jobs are cancelled with its deletion (a restore does not
        // bring them back).
        Transition::Delete => {
            state
                .jobs
                .cancel_all_in(&mut w, ctx.tenant_id(), tenantd_limits::now_ms())
                .await?;
        }
        // Its jobs were held: they take their turn with the others' from now on.
        Transition::Resume => state.jobs.rejoin_in(&mut w, ctx.tenant_id()).await?,
        _ => {}
    }
    let detail = note.added_to(serde_json::json!({"reason": note.reason}));
    w.commit_with(&AppState::event_of(ctx, action, detail)).await?;
    state.changed(Change::Tenant(tenant.id.as_str())).await;
    Ok(tenant)
}

/// `POST /v1/tenants/{id}/suspend` body.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SuspendBody {
    /// Why; shown to operators and owners: 1–200 characters, not only spaces.
    #[schema(min_length = 1, max_length = 200, pattern = "^[^\\u0000]*[^\\s\\u0000][^\\u0000]*$")]
    reason: String,
}

/// Suspends an active tenant (operator): data plane and gateway answer 403 tenant_suspended.
#[utoipa::path(post, path = "/v1/tenants/{id}/suspend", tag = "tenants", params(TenantPath), request_body = SuspendBody, responses((status = 200, description = "The tenant", body = Tenant)))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn suspend(
    S(state): S<State>,
    ctx: TenantContext,
    Json(b): Json<SuspendBody>,
) -> ApiResult<axum::Json<Tenant>> {
    let note = Note {
        reason: Some(&b.reason),
        via: None,
    };
    Ok(axum::Json(suspend_with(&state, &ctx, note).await?))
}

/// Suspends the tenant (operator) with `note`'s reason, required: 1–200 characters, not
/// only spaces.
pub async fn suspend_with(state: &State, ctx: &TenantContext, note: Note<'_>) -> ApiResult<Tenant> {
    ctx.request().require_operator()?;
    let reason =
        tenantd_core::text::display_name("reason", note.reason.unwrap_or_default()).map_err(Problem::invalid)?;
    let note = Note {
        reason: Some(&reason),
        ..note
    };
    transition(state, ctx, Transition::Suspend, note, "tenant.suspended").await
}

/// Resumes a suspended tenant (operator).
#[utoipa::path(post, path = "/v1/tenants/{id}/resume", tag = "tenants", params(TenantPath), responses((status = 200, description = "The tenant", body = Tenant)))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn resume(S(state): S<State>, ctx: TenantContext) -> ApiResult<axum::Json<Tenant>> {
    Ok(axum::Json(resume_with(&state, &ctx, Note::default()).await?))
}

/// Resumes the tenant (operator); `note`'s reason, when given, is held to the same
/// rule as a suspension's.
pub async fn resume_with(state: &State, ctx: &TenantContext, note: Note<'_>) -> ApiResult<Tenant> {
    ctx.request().require_operator()?;
    let reason = note
        .reason
        .map(|r| tenantd_core::text::display_name("reason", r).map_err(Problem::invalid))
        .transpose()?;
    let note = Note {
        reason: reason.as_deref(),
        ..note
    };
    transition(state, ctx, Transition::Resume, note, "tenant.resumed").await
}

/// Soft-deletes a tenant (`tenant:delete`: owners and operators); kept 30 days.
#[utoipa::path(delete, path = "/v1/tenants/{id}", tag = "tenants", params(TenantPath), responses((status = 200, description = "The tenant, status deleted, with purge_after", body = Tenant)))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn delete(S(state): S<State>, ctx: TenantContext) -> ApiResult<axum::Json<Tenant>> {
    ctx.require(tenantd_core::perms::TENANT_DELETE)?;
    Ok(axum::Json(
        transition(&state, &ctx, Transition::Delete, Note::default(), "tenant.deleted").await?,
    ))
}

/// Without a body (or without `backup_id`): restores a deleted tenant in retention, to
/// the status it had. With `{"backup_id"}`: replaces the tenant's data with that
/// backup's (docs/protection.md). Operators only.
#[utoipa::path(post, path = "/v1/tenants/{id}/restore", tag = "tenants", params(TenantPath), request_body(content = Option<crate::routes::archives::RestoreBody>, description = "Optional: a backup to restore the tenant's data from"), responses((status = 200, description = "The tenant (undeleted), or the backup's restore, verified", body = Tenant), (status = 202, description = "The backup's restore is still running", body = Object)))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn restore(
    S(state): S<State>,
    ctx: TenantContext,
    body: axum::body::Bytes,
) -> ApiResult<axum::response::Response> {
    use axum::response::IntoResponse;
    ctx.request().require_operator()?;
    let b: crate::routes::archives::RestoreBody = crate::extract::optional_json(&body)?;
    match b.backup_id {
        Some(id) => Ok(crate::routes::archives::restore_backup(&state, &ctx, &id)
            .await?
            .into_response()),
        None => Ok(axum::Json(
            transition(&state, &ctx, Transition::Restore, Note::default(), "tenant.restored").await?,
        )
        .into_response()),
    }
}

/// This module's routes, with their OpenAPI descriptions.
pub fn router() -> OpenApiRouter<State> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(get, patch, delete))
        .routes(routes!(suspend))
        .routes(routes!(resume))
        .routes(routes!(restore))
        .routes(routes!(placement))
}
