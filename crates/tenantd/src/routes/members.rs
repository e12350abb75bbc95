//! Members of a tenant, and its custom roles.
use crate::error::ApiResult;
use crate::extract::{Json, PageQuery, Query};
use crate::grants::{known_role, may_grant};
use crate::routes::openapi::{Items, PageParams, TenantPath};
use crate::state::{AppState, State};
use axum::extract::{Path, State as S};
use http::StatusCode;
use tenantd_core::perms::OWNERS_MANAGE;
use tenantd_core::{BuiltinRole, Code, Email, Permission, Role};
use tenantd_edge::{Change, Ctx, Principal, Problem, TenantContext};
use tenantd_store::{Erased, Member, NewEvent, Page};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The tenant's members (`members:read`).
#[utoipa::path(get, path = "/v1/tenants/{id}/members", tag = "members", params(TenantPath, PageParams), responses((status = 200, description = "A page of members", body = Page<Member>)))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn list(
    S(state): S<State>,
    ctx: TenantContext,
    Query(q): Query<PageQuery>,
) -> ApiResult<axum::Json<Page<Member>>> {
    ctx.require("members:read")?;
    Ok(axum::Json(
        state.catalog.list_members(ctx.tenant_id(), &q.page()?).await?,
    ))
}

/// `POST /v1/tenants/{id}/members` body.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddMember {
    /// The user's email (the user is created if new).
    #[schema(
        max_length = 254,
        pattern = "^[!-?A-~]+@[!-\\-/-?A-~][!-?A-~]*\\.[!-?A-~]*[!-\\-/-?A-~]$"
    )]
    email: String,
    /// A built-in or custom role (`404` when the tenant has no such role).
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    role: String,
}

/// Adds a member (`members:manage`; the owner role also needs `owners:manage`).
#[utoipa::path(post, path = "/v1/tenants/{id}/members", tag = "members", params(TenantPath), request_body = AddMember, responses((status = 201, description = "The member", body = Member)))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn add(
    S(state): S<State>,
    ctx: TenantContext,
    Json(b): Json<AddMember>,
) -> ApiResult<(StatusCode, axum::Json<Member>)> {
    ctx.require("members:manage")?;
    let email = Email::parse(&b.email)?;
    let role = known_role(&state, &ctx, &b.role).await?;
    may_grant(&ctx, &role)?;
    let level = crate::levels::grow_level(&state, &ctx, "members").await?;
    let written = async {
        let mut w = state.catalog.begin().await?;
        let m = state
            .catalog
            .add_member_within(&mut w, ctx.tenant_id(), &email, &role.name, level.max)
            .await?;
        let detail = serde_json::json!({"user_id": m.user_id, "role": m.role});
        w.commit_with(&AppState::event_of(&ctx, "member.added", detail)).await?;
        Ok::<_, tenantd_store::StoreError>(m)
    }
    .await;
    let m = level.settle(&state, &ctx, written).await?;
    Ok((StatusCode::CREATED, axum::Json(m)))
}

/// `PATCH /v1/tenants/{id}/members/{user_id}` body.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchMember {
    /// The new role.
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    role: String,
}

/// `{id}/members/{user_id}`.
#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct MemberPath {
    /// The member's user id.
    #[param(pattern = "^usr_[a-z2-7]{20}$")]
    user_id: String,
}

async fn current_role(state: &State, ctx: &TenantContext, user_id: &str) -> ApiResult<String> {
    state
        .catalog
        .member_role(ctx.tenant_id(), user_id)
        .await?
        .ok_or_else(|| Problem::not_found("member").into())
}

/// Changes a member's role (`members:manage`; to or from owner also `owners:manage`);
/// demoting the last owner is `409 last_owner`.
#[utoipa::path(patch, path = "/v1/tenants/{id}/members/{user_id}", tag = "members", params(TenantPath, MemberPath), request_body = PatchMember, responses((status = 200, description = "The member", body = Member)))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn patch(
    S(state): S<State>,
    ctx: TenantContext,
    Path(p): Path<MemberPath>,
    Json(b): Json<PatchMember>,
) -> ApiResult<axum::Json<Member>> {
    ctx.require("members:manage")?;
    if current_role(&state, &ctx, &p.user_id).await? == "owner" {
        ctx.require(OWNERS_MANAGE)?;
    }
    let role = known_role(&state, &ctx, &b.role).await?;
    may_grant(&ctx, &role)?;
    let mut w = state.catalog.begin().await?;
    let m = state
        .catalog
        .set_member_role(&mut w, ctx.tenant_id(), &p.user_id, &role.name)
        .await?;
    let detail = serde_json::json!({"user_id": m.user_id, "role": m.role});
    w.commit_with(&AppState::event_of(&ctx, "member.role_changed", detail))
        .await?;
    Ok(axum::Json(m))
}

/// Removes a member (`members:manage`; an owner also needs `owners:manage`); removing the
/// last owner is `409 last_owner`.
#[utoipa::path(delete, path = "/v1/tenants/{id}/members/{user_id}", tag = "members", params(TenantPath, MemberPath), responses((status = 204, description = "Removed")))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn remove(S(state): S<State>, ctx: TenantContext, Path(p): Path<MemberPath>) -> ApiResult<StatusCode> {
    ctx.require("members:manage")?;
    if current_role(&state, &ctx, &p.user_id).await? == "owner" {
        ctx.require(OWNERS_MANAGE)?;
    }
    let mut w = state.catalog.begin().await?;
    state.catalog.remove_member(&mut w, ctx.tenant_id(), &p.user_id).await?;
    let detail = serde_json::json!({"user_id": p.user_id});
    w.commit_with(&AppState::event_of(&ctx, "member.removed", detail))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `{user_id}` of `/v1/users/{user_id}`.
#[derive(serde::Deserialize)]
pub struct UserPath {
    user_id: String,
}

/// Erases a person from every tenant (operators): their memberships and user go, and
/// their email in every event becomes a pseudonym (`erased-…@users.invalid`); those
/// events are marked redacted, keeping their digests, so every chain still verifies.
#[utoipa::path(delete, path = "/v1/users/{user_id}", tag = "members", params(("user_id" = String, Path, description = "usr_…")), responses((status = 200, description = "What was erased", body = Erased)))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn erase_user(S(state): S<State>, ctx: Ctx, Path(p): Path<UserPath>) -> ApiResult<axum::Json<Erased>> {
    match &ctx.principal {
        Some(Principal::Operator) => {}
        None => return Err(Problem::unauthenticated("erasing a person needs the operator key").into()),
        Some(_) => return Err(Problem::new(Code::Forbidden, "only operators may erase a person").into()),
    }
    let pseudonym = format!(
        "erased-{}@users.invalid",
        tenantd_core::ids::new_id("x").trim_start_matches("x_")
    );
    let mut w = state.catalog.begin().await?;
    let erased = state.catalog.erase_user(&mut w, &p.user_id, &pseudonym).await?;
    let detail = serde_json::json!({"user_id": p.user_id, "tenants": erased.tenants.len(), "events": erased.events});
    w.commit_with(&NewEvent::new(None, "operator", "user.erased", detail, &ctx.request_id))
        .await?;
    tracing::info!(user_id = %p.user_id, tenants = erased.tenants.len(), events = erased.events, "erased a person");
    Ok(axum::Json(erased))
}

/// Built-in and custom roles (`roles:read`).
#[utoipa::path(get, path = "/v1/tenants/{id}/roles", tag = "members", params(TenantPath), responses((status = 200, description = "Built-in and custom roles", body = Items<Role>)))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn list_roles(S(state): S<State>, ctx: TenantContext) -> ApiResult<axum::Json<serde_json::Value>> {
    ctx.require("roles:read")?;
    let mut items: Vec<Role> = state
        .edge
        .cache()
        .builtin_roles()
        .iter()
        .map(|r| (**r).clone())
        .collect();
    items.extend(state.catalog.list_roles(ctx.tenant_id()).await?);
    Ok(axum::Json(serde_json::json!({ "items": items })))
}

/// `POST /v1/tenants/{id}/roles` body.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRole {
    /// 1–64 of `a-z 0-9 - _` (lower-cased); not a built-in name.
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    name: String,
    /// `resource:action` patterns, at least one.
    #[schema(min_items = 1)]
    permissions: Vec<Permission>,
}

/// Creates a custom role (`roles:manage`), no stronger than the caller's own.
#[utoipa::path(post, path = "/v1/tenants/{id}/roles", tag = "members", params(TenantPath), request_body = CreateRole, responses((status = 201, description = "The role", body = Role)))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn create_role(
    S(state): S<State>,
    ctx: TenantContext,
    Json(b): Json<CreateRole>,
) -> ApiResult<(StatusCode, axum::Json<Role>)> {
    ctx.require("roles:manage")?;
    let name = tenantd_core::ids::parse_name(&b.name, "role name")?;
    if BuiltinRole::from_name(&name).is_some() {
        return Err(Problem::new(Code::Conflict, format!("'{name}' is a built-in role")).into());
    }
    if b.permissions.is_empty() {
        return Err(Problem::invalid("permissions must list at least one permission").into());
    }
    let role = Role::custom(name, b.permissions);
    may_grant(&ctx, &role)?;
    let mut w = state.catalog.begin().await?;
    state.catalog.create_role(&mut w, ctx.tenant_id(), &role).await?;
    let detail = serde_json::json!({"role": role.name});
    w.commit_with(&AppState::event_of(&ctx, "role.created", detail)).await?;
    state.changed(Change::Role(ctx.tenant_id().as_str(), &role.name)).await;
    Ok((StatusCode::CREATED, axum::Json(role)))
}

/// `{id}/roles/{name}`.
#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct RolePath {
    /// A custom role's name.
    #[param(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    name: String,
}

/// Deletes a custom role no member or live key holds (`roles:manage`).
#[utoipa::path(delete, path = "/v1/tenants/{id}/roles/{name}", tag = "members", params(TenantPath, RolePath), responses((status = 204, description = "Deleted")))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn delete_role(S(state): S<State>, ctx: TenantContext, Path(p): Path<RolePath>) -> ApiResult<StatusCode> {
    ctx.require("roles:manage")?;
    if BuiltinRole::from_name(&p.name).is_some() {
        return Err(Problem::new(Code::Conflict, "built-in roles cannot be deleted").into());
    }
    let mut w = state.catalog.begin().await?;
    state.catalog.delete_role(&mut w, ctx.tenant_id(), &p.name).await?;
    let detail = serde_json::json!({"role": p.name});
    w.commit_with(&AppState::event_of(&ctx, "role.deleted", detail)).await?;
    state.changed(Change::Role(ctx.tenant_id().as_str(), &p.name)).await;
    Ok(StatusCode::NO_CONTENT)
}

/// This module's routes, with their OpenAPI descriptions.
pub fn router() -> OpenApiRouter<State> {
    OpenApiRouter::new()
        .routes(routes!(list, add))
        .routes(routes!(patch, remove))
        .routes(routes!(list_roles, create_role))
        .routes(routes!(delete_role))
        .routes(routes!(erase_user))
}
