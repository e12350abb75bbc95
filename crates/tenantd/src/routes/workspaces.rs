//! Workspaces: groups within a tenant with their own members and roles. A guest sees
//! only the workspaces it was added to.
use crate::error::ApiResult;
use crate::extract::Json;
use crate::grants::{known_role, may_grant};
use crate::routes::openapi::{Items, TenantPath};
use crate::state::{AppState, State};
use axum::extract::{Path, State as S};
use http::StatusCode;
use tenantd_core::{Email, WorkspaceId};
use tenantd_edge::{Principal, Problem, TenantContext};
use tenantd_store::{Workspace, WorkspaceMember};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

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

/// `{id}/workspaces/{ws}`.
#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct WsPath {
    /// The workspace id.
    #[param(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    ws: String,
}

/// The tenant's workspaces (`workspaces:read`).
#[utoipa::path(get, path = "/v1/tenants/{id}/workspaces", tag = "workspaces", params(TenantPath), responses((status = 200, description = "The workspaces the caller sees", body = Items<Workspace>)))]
#[tracing::instrument(level = "debug", skip_all)]
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
    /// 1–64 of `a-z 0-9 - _` (lower-cased).
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    id: String,
    /// Display name (default: the id): 1–200 characters, not only spaces.
    #[schema(min_length = 1, max_length = 200, pattern = "^[^\\u0000]*[^\\s\\u0000][^\\u0000]*$")]
    name: Option<String>,
}

/// Creates a workspace (`workspaces:manage`).
#[utoipa::path(post, path = "/v1/tenants/{id}/workspaces", tag = "workspaces", params(TenantPath), request_body = CreateWorkspace, responses((status = 201, description = "The workspace", body = Workspace)))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn create(
    S(state): S<State>,
    ctx: TenantContext,
    Json(b): Json<CreateWorkspace>,
) -> ApiResult<(StatusCode, axum::Json<Workspace>)> {
    ctx.require("workspaces:manage")?;
    let id = WorkspaceId::parse(&b.id)?;
    let name = match b.name {
        Some(n) => tenantd_core::text::display_name("name", &n).map_err(Problem::invalid)?,
        None => id.to_string(),
    };
    let mut w = state.catalog.begin().await?;
    let ws = state
        .catalog
        .create_workspace(&mut w, ctx.tenant_id(), id.as_str(), &name)
        .await?;
    let detail = serde_json::json!({"workspace": ws.id});
    w.commit_with(&AppState::event_of(&ctx, "workspace.created", detail))
        .await?;
    Ok((StatusCode::CREATED, axum::Json(ws)))
}

/// One workspace with its members (`workspaces:read`).
#[utoipa::path(get, path = "/v1/tenants/{id}/workspaces/{ws}", tag = "workspaces", params(TenantPath, WsPath), responses((status = 200, description = "The workspace", body = Workspace)))]
#[tracing::instrument(level = "debug", skip_all)]
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
    /// New display name: 1–200 characters, not only spaces.
    #[schema(min_length = 1, max_length = 200, pattern = "^[^\\u0000]*[^\\s\\u0000][^\\u0000]*$")]
    name: String,
}

/// Renames a workspace (`workspaces:manage`).
#[utoipa::path(patch, path = "/v1/tenants/{id}/workspaces/{ws}", tag = "workspaces", params(TenantPath, WsPath), request_body = PatchWorkspace, responses((status = 200, description = "The workspace", body = Workspace)))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn patch(
    S(state): S<State>,
    ctx: TenantContext,
    Path(p): Path<WsPath>,
    Json(b): Json<PatchWorkspace>,
) -> ApiResult<axum::Json<Workspace>> {
    ctx.require("workspaces:manage")?;
    let name = tenantd_core::text::display_name("name", &b.name).map_err(Problem::invalid)?;
    let mut w = state.catalog.begin().await?;
    let ws = state
        .catalog
        .rename_workspace(&mut w, ctx.tenant_id(), &p.ws, &name)
        .await?;
    let detail = serde_json::json!({"workspace": ws.id});
    w.commit_with(&AppState::event_of(&ctx, "workspace.updated", detail))
        .await?;
    Ok(axum::Json(ws))
}

/// Deletes a workspace and its memberships (`workspaces:manage`).
#[utoipa::path(delete, path = "/v1/tenants/{id}/workspaces/{ws}", tag = "workspaces", params(TenantPath, WsPath), responses((status = 204, description = "Deleted")))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn delete(S(state): S<State>, ctx: TenantContext, Path(p): Path<WsPath>) -> ApiResult<StatusCode> {
    ctx.require("workspaces:manage")?;
    let mut w = state.catalog.begin().await?;
    state.catalog.delete_workspace(&mut w, ctx.tenant_id(), &p.ws).await?;
    let detail = serde_json::json!({"workspace": p.ws});
    w.commit_with(&AppState::event_of(&ctx, "workspace.deleted", detail))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/tenants/{id}/workspaces/{ws}/members` body.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddWorkspaceMember {
    /// A member of the tenant (`404` when not).
    #[schema(
        max_length = 254,
        pattern = "^[!-?A-~]+@[!-\\-/-?A-~][!-?A-~]*\\.[!-?A-~]*[!-\\-/-?A-~]$"
    )]
    email: String,
    /// The role within this workspace.
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    role: String,
}

/// Adds a tenant member to a workspace, or changes their role there (`workspaces:manage`).
#[utoipa::path(post, path = "/v1/tenants/{id}/workspaces/{ws}/members", tag = "workspaces", params(TenantPath, WsPath), request_body = AddWorkspaceMember, responses((status = 201, description = "The workspace member", body = WorkspaceMember)))]
#[tracing::instrument(level = "debug", skip_all)]
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
    if tenant_role_of(&state, &ctx, &email).await?.as_deref() == Some("guest")
        && !role.is_within(&crate::grants::guest_ceiling())
    {
        return Err(Problem::invalid(format!(
            "role: a guest is read-only, and '{}' can change things; give a guest viewer (or guest) in a workspace",
            role.name
        ))
        .into());
    }
    let mut w = state.catalog.begin().await?;
    let m = state
        .catalog
        .add_workspace_member(&mut w, ctx.tenant_id(), &p.ws, &email, &role.name)
        .await?;
    let detail = serde_json::json!({"workspace": p.ws, "user_id": m.user_id, "role": m.role});
    w.commit_with(&AppState::event_of(&ctx, "workspace.member_added", detail))
        .await?;
    Ok((StatusCode::CREATED, axum::Json(m)))
}

/// The tenant role of the user with `email`, if a member.
async fn tenant_role_of(state: &State, ctx: &TenantContext, email: &Email) -> ApiResult<Option<String>> {
    match state.catalog.find_user_by_email(email).await? {
        Some(u) => Ok(state.catalog.member_role(ctx.tenant_id(), &u.id).await?),
        None => Ok(None),
    }
}

/// This module's routes, with their OpenAPI descriptions.
pub fn router() -> OpenApiRouter<State> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(get, patch, delete))
        .routes(routes!(add_member))
}
