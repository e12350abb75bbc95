//! A tenant's secrets (docs/protection.md): tokens and passwords its integrations need,
//! sealed under the tenant's data key. A value leaves tenantd only through `GET` of that
//! one secret, with `secrets:read`, and every such read is a `secret.read` event.
use crate::error::ApiResult;
use crate::extract::{created_or_ok, Json};
use crate::routes::openapi::{Items, TenantPath};
use crate::state::{AppState, State};
use axum::extract::{Path, State as S};
use http::StatusCode;
use serde_json::json;
use tenantd_core::flags::check_key;
use tenantd_edge::{Problem, TenantContext};
use tenantd_store::StoredSecret;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// What a secret's value is sealed as: the associated data binds it to `secret/<name>`
/// of its tenant.
pub(crate) const KIND: &str = "secret";

/// The longest secret value, in characters (as JSON Schema counts them).
pub const MAX_SECRET_CHARS: usize = 64 * 1024;

/// `PUT …/secrets/{name}` body.
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretBody {
    /// The value: any text up to 65,536 characters.
    #[schema(max_length = 65536)]
    value: String,
}

/// A secret without its value.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct SecretMeta {
    /// Its name.
    name: String,
    /// Raised by every write, from 1.
    version: i64,
    /// RFC 3339.
    updated_at: String,
}

impl From<&StoredSecret> for SecretMeta {
    fn from(s: &StoredSecret) -> Self {
        Self {
            name: s.name.clone(),
            version: s.version,
            updated_at: tenantd_core::ts::format(s.updated_at),
        }
    }
}

/// A secret with its value (`GET` of one secret only).
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct SecretValue {
    /// Its name.
    name: String,
    /// The value.
    value: String,
    /// Its version.
    version: i64,
}

/// `{id}/{name}` of a secret's path.
#[derive(serde::Deserialize)]
pub struct SecretPath {
    #[allow(dead_code)]
    id: String,
    name: String,
}

fn name_of(raw: &str) -> Result<String, Problem> {
    check_key("secret name", raw).map_err(Problem::invalid)?;
    Ok(raw.to_string())
}

/// Creates or replaces a secret (`secrets:write`): `201` the first time, `200` after.
/// The answer never holds the value.
#[utoipa::path(put, path = "/v1/tenants/{id}/secrets/{name}", tag = "secrets", params(TenantPath, ("name" = String, Path, description = "1–128 of A-Z a-z 0-9 _ - .", pattern = "^[A-Za-z0-9_.-]{1,128}$")), request_body = SecretBody, responses((status = 200, description = "Replaced", body = SecretMeta), (status = 201, description = "Created", body = SecretMeta)))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn put(
    S(state): S<State>,
    ctx: TenantContext,
    Path(p): Path<SecretPath>,
    Json(b): Json<SecretBody>,
) -> ApiResult<(StatusCode, axum::Json<SecretMeta>)> {
    ctx.require("secrets:write")?;
    let name = name_of(&p.name)?;
    if b.value.chars().count() > MAX_SECRET_CHARS {
        return Err(Problem::invalid(format!("value: at most {MAX_SECRET_CHARS} characters")).into());
    }
    let tenant = ctx.tenant_id();
    let (key_version, sealed) = state.keyring.seal(tenant, KIND, &name, b.value.as_bytes()).await?;
    let mut w = state.catalog.begin().await?;
    let s = state
        .catalog
        .put_secret(&mut w, tenant, &name, key_version, &sealed)
        .await?;
    let ev = AppState::event_of(&ctx, "secret.written", json!({"name": name, "version": s.version}));
    w.commit_with(&ev).await?;
    Ok((created_or_ok(s.version), axum::Json((&s).into())))
}

/// One secret with its value (`secrets:read`). The read is recorded first, as a
/// `secret.read` event: if it cannot be, the value is not given.
#[utoipa::path(get, path = "/v1/tenants/{id}/secrets/{name}", tag = "secrets", params(TenantPath, ("name" = String, Path, description = "The secret's name", pattern = "^[A-Za-z0-9_.-]{1,128}$")), responses((status = 200, description = "The secret and its value", body = SecretValue)))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn get(
    S(state): S<State>,
    ctx: TenantContext,
    Path(p): Path<SecretPath>,
) -> ApiResult<axum::Json<SecretValue>> {
    ctx.require("secrets:read")?;
    let name = name_of(&p.name)?;
    let tenant = ctx.tenant_id();
    let s = state
        .catalog
        .get_secret(tenant, &name)
        .await?
        .ok_or_else(|| Problem::not_found("secret"))?;
    let plain = state
        .keyring
        .open_value(tenant, KIND, &name, s.key_version, &s.sealed)
        .await?;
    let value = String::from_utf8(plain).map_err(|_| Problem::internal())?;
    let ev = AppState::event_of(&ctx, "secret.read", json!({"name": name, "version": s.version}));
    state.catalog.record_event(&ev).await?;
    Ok(axum::Json(SecretValue {
        name,
        value,
        version: s.version,
    }))
}

/// The tenant's secrets, names and versions only (`secrets:read`).
#[utoipa::path(get, path = "/v1/tenants/{id}/secrets", tag = "secrets", params(TenantPath), responses((status = 200, description = "Every secret, without values", body = Items<SecretMeta>)))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn list(S(state): S<State>, ctx: TenantContext) -> ApiResult<axum::Json<serde_json::Value>> {
    ctx.require("secrets:read")?;
    let items: Vec<SecretMeta> = state
        .catalog
        .list_secrets(ctx.tenant_id())
        .await?
        .iter()
        .map(Into::into)
        .collect();
    Ok(axum::Json(json!({ "items": items })))
}

/// Deletes a secret (`secrets:write`).
#[utoipa::path(delete, path = "/v1/tenants/{id}/secrets/{name}", tag = "secrets", params(TenantPath, ("name" = String, Path, description = "The secret's name", pattern = "^[A-Za-z0-9_.-]{1,128}$")), responses((status = 204, description = "Deleted")))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn delete(S(state): S<State>, ctx: TenantContext, Path(p): Path<SecretPath>) -> ApiResult<StatusCode> {
    ctx.require("secrets:write")?;
    let name = name_of(&p.name)?;
    let mut w = state.catalog.begin().await?;
    let s = state.catalog.delete_secret(&mut w, ctx.tenant_id(), &name).await?;
    let ev = AppState::event_of(&ctx, "secret.deleted", json!({"name": name, "version": s.version}));
    w.commit_with(&ev).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// This module's routes, with their OpenAPI descriptions.
pub fn router() -> OpenApiRouter<State> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(put, get, delete))
}
