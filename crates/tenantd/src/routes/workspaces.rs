//! Workspaces: groups within a tenant with their own members and roles. A guest sees
//! only the workspaces it was added to.
use crate::app::State;
use crate::error::ApiResult;
use crate::extract::Json;
use crate::routes::members::{known_role, may_grant};
use axum::extract::{Path, State as S};
use http::StatusCode;
use tenantd_core::{Email, WorkspaceId};
use tenantd_edge::{Principal, Problem, TenantContext};
use tenantd_store::{Workspace, WorkspaceMember};

/// Whether the caller sees this workspace: everyone with `workspaces:read` but guests,
/// who see only those they were added to.
fn visible(ctx: &TenantContext, ws: &Workspace) -> bool {
    if ctx.role().name != "guest" {
        return true;
    }
    match ctx.principal() {
        Principal::User { id, .. } => ws.members.iter().any(|m| m.user_id == *id),
        _ => false,
    }
}

#[derive(serde::Deserialize)]
pub struct WsPath {
    ws: String,
}

/// The tenant's workspaces (`workspaces:read`).
#[utoipa::path(get, path = "/v1/tenants/{id}/workspaces", tag = "workspaces", params(("id" = String, Path)), responses((status = 200, description = "`{\"items\": [workspace]}`")))]
pub async fn list(S(state): S<State>, ctx: TenantContext) -> ApiResult<axum::Json<serde_json::Value>> {
    ctx.require("workspaces:read")?;
    let items: Vec<Workspace> = state
        .catalog
        .list_workspaces(ctx.tenant_id())
        .await?
        .into_iter()
        .filter(|w| visible(&ctx, w))
        .collect();
    Ok(axum::Json(serde_json::json!({ "items": items })))
}

/// `POST /v1/tenants/{id}/workspaces` body.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWorkspace {
    /// 1–64 of a-z, 0-9, '-', '_'.
    id: String,
    /// Display name (default: the id).
    name: Option<String>,
}

/// Creates a workspace (`workspaces:manage`).
#[utoipa::path(post, path = "/v1/tenants/{id}/workspaces", tag = "workspaces", params(("id" = String, Path)), request_body = CreateWorkspace, responses((status = 201, description = "The workspace"), (status = 409, description = "The id is taken")))]
pub async fn create(
    S(state): S<State>,
    ctx: TenantContext,
    Json(b): Json<CreateWorkspace>,
) -> ApiResult<(StatusCode, axum::Json<Workspace>)> {
    ctx.require("workspaces:manage")?;
    let id = WorkspaceId::parse(&b.id)?;
    let name = b.name.unwrap_or_else(|| id.to_string());
    let ws = state
        .catalog
        .create_workspace(ctx.tenant_id(), id.as_str(), &name)
        .await?;
    state
        .record(&ctx, "workspace.created", serde_json::json!({"workspace": ws.id}))
        .await;
    Ok((StatusCode::CREATED, axum::Json(ws)))
}

/// One workspace with its members (`workspaces:read`).
#[utoipa::path(get, path = "/v1/tenants/{id}/workspaces/{ws}", tag = "workspaces", params(("id" = String, Path), ("ws" = String, Path)), responses((status = 200, description = "The workspace"), (status = 404, description = "not_found")))]
pub async fn get(S(state): S<State>, ctx: TenantContext, Path(p): Path<WsPath>) -> ApiResult<axum::Json<Workspace>> {
    ctx.require("workspaces:read")?;
    let ws = state.catalog.get_workspace(ctx.tenant_id(), &p.ws).await?;
    if !visible(&ctx, &ws) {
        return Err(Problem::not_found("workspace").into());
    }
    Ok(axum::Json(ws))
}

/// `PATCH /v1/tenants/{id}/workspaces/{ws}` body.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchWorkspace {
    /// New display name.
    name: String,
}

/// Renames a workspace (`workspaces:manage`).
#[utoipa::path(patch, path = "/v1/tenants/{id}/workspaces/{ws}", tag = "workspaces", params(("id" = String, Path), ("ws" = String, Path)), request_body = PatchWorkspace, responses((status = 200, description = "The workspace")))]
pub async fn patch(
    S(state): S<State>,
    ctx: TenantContext,
    Path(p): Path<WsPath>,
    Json(b): Json<PatchWorkspace>,
) -> ApiResult<axum::Json<Workspace>> {
    ctx.require("workspaces:manage")?;
    if b.name.trim().is_empty() {
        return Err(Problem::invalid("name must not be empty").into());
    }
    let ws = state
        .catalog
        .rename_workspace(ctx.tenant_id(), &p.ws, b.name.trim())
        .await?;
    state
        .record(&ctx, "workspace.updated", serde_json::json!({"workspace": ws.id}))
        .await;
    Ok(axum::Json(ws))
}

/// Deletes a workspace and its memberships (`workspaces:manage`).
#[utoipa::path(delete, path = "/v1/tenants/{id}/workspaces/{ws}", tag = "workspaces", params(("id" = String, Path), ("ws" = String, Path)), responses((status = 204, description = "Deleted")))]
pub async fn delete(S(state): S<State>, ctx: TenantContext, Path(p): Path<WsPath>) -> ApiResult<StatusCode> {
    ctx.require("workspaces:manage")?;
    state.catalog.delete_workspace(ctx.tenant_id(), &p.ws).await?;
    state
        .record(&ctx, "workspace.deleted", serde_json::json!({"workspace": p.ws}))
        .await;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/tenants/{id}/workspaces/{ws}/members` body.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddWorkspaceMember {
    /// A member of the tenant.
    email: String,
    /// The role within this workspace.
    role: String,
}

/// Adds a tenant member to a workspace, or changes their role there (`workspaces:manage`).
#[utoipa::path(post, path = "/v1/tenants/{id}/workspaces/{ws}/members", tag = "workspaces", params(("id" = String, Path), ("ws" = String, Path)), request_body = AddWorkspaceMember, responses((status = 201, description = "The workspace member")))]
pub async fn add_member(
    S(state): S<State>,
    ctx: TenantContext,
    Path(p): Path<WsPath>,
    Json(b): Json<AddWorkspaceMember>,
) -> ApiResult<(StatusCode, axum::Json<WorkspaceMember>)> {
    ctx.require("workspaces:manage")?;
    let email = Email::parse(&b.email)?;
    let role = known_role(&state, &ctx, &b.role).await?;
    may_grant(&ctx, &role)?;
    if tenant_role_of(&state, &ctx, &email).await?.as_deref() == Some("guest") && !role.is_within(&guest_ceiling()) {
        return Err(Problem::invalid(format!(
            "role: a guest is read-only, and '{}' can change things; give a guest viewer (or guest) in a workspace",
            role.name
        ))
        .into());
    }
    let m = state
        .catalog
        .add_workspace_member(ctx.tenant_id(), &p.ws, &email, &role.name)
        .await?;
    state
        .record(
            &ctx,
            "workspace.member_added",
            serde_json::json!({"workspace": p.ws, "user_id": m.user_id, "role": m.role}),
        )
        .await;
    Ok((StatusCode::CREATED, axum::Json(m)))
}

/// The most a guest may do, in any workspace: read (the `viewer` role).
pub fn guest_ceiling() -> tenantd_core::Role {
    tenantd_core::BuiltinRole::Viewer.role()
}

/// The tenant role of the user with `email`, if a member.
async fn tenant_role_of(state: &State, ctx: &TenantContext, email: &Email) -> ApiResult<Option<String>> {
    match state.catalog.find_user_by_email(email).await? {
        Some(u) => Ok(state.catalog.member_role(ctx.tenant_id(), &u.id).await?),
        None => Ok(None),
    }
}
