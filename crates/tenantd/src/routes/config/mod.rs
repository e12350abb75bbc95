//! Tenant configuration (docs/config.md): keys with a JSON Schema and a default
//! (operator), values in a plan's layer (operator) and a tenant's (`config:write`), every
//! write a version guarded by `If-Match`, rollback, and effective values with their source.
use crate::error::ApiResult;
use crate::extract::{created_or_ok, etag, if_match, Json, PageQuery, Query};
use crate::routes::openapi::{Items, PageParams, TenantPath};
use crate::schemas::{check, compile};
use crate::state::State;
use axum::extract::{Path, State as S};
use http::{HeaderMap, StatusCode};
use serde_json::{json, Value};
use tenantd_core::flags::check_key;
use tenantd_core::layers::Source;
use tenantd_core::Code;
use tenantd_edge::{Change, Ctx, Problem, TenantContext};
use tenantd_store::{ConfigEntry, ConfigOwner, ConfigSchema, NewEvent, Page};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// A key's schema, as `PUT /v1/config-schemas/{key}` takes it.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SchemaBody {
    /// A JSON Schema (2020-12) every value of the key must meet.
    schema: Value,
    /// The value tenants get when neither their plan nor they set one (checked against
    /// the schema); absent or `null`: none.
    #[serde(default)]
    default: Option<Value>,
}

/// A key's schema as stored.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct SchemaView {
    /// The key.
    key: String,
    /// Its JSON Schema.
    schema: Value,
    /// Its default, if any.
    default: Option<Value>,
    /// Raised by every change (also the `ETag`).
    version: i64,
    /// RFC 3339.
    updated_at: String,
}

impl From<ConfigSchema> for SchemaView {
    fn from(s: ConfigSchema) -> Self {
        Self {
            key: s.key,
            schema: s.schema,
            default: s.default,
            version: s.version,
            updated_at: tenantd_core::ts::format(s.updated_at),
        }
    }
}

/// A value written to a layer.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ValueBody {
    /// The value, checked against the key's schema.
    value: Value,
}

/// `POST …/rollback` body.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RollbackBody {
    /// The version to write again.
    #[schema(minimum = 1)]
    version: i64,
}

/// A key's value for a tenant, or in a plan's layer.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ConfigValue {
    /// The key.
    key: String,
    /// Its value.
    value: Value,
    /// The layer it came from.
    source: Source,
    /// That layer's version of the key.
    version: i64,
}

/// One version of a key in a layer.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct VersionView {
    /// From 1.
    version: i64,
    /// The value it wrote (`null` when it removed the layer's value).
    value: Option<Value>,
    /// Whether this version removed the layer's value.
    deleted: bool,
    /// Who wrote it.
    actor: String,
    /// RFC 3339.
    at: String,
}

impl From<ConfigEntry> for VersionView {
    fn from(e: ConfigEntry) -> Self {
        Self {
            version: e.version,
            deleted: e.value.is_none(),
            value: e.value,
            actor: e.actor,
            at: tenantd_core::ts::format(e.at),
        }
    }
}

fn key_of(raw: &str) -> Result<String, Problem> {
    check_key("config key", raw).map_err(Problem::invalid)?;
    Ok(raw.to_string())
}

async fn schema_of(state: &State, key: &str) -> ApiResult<ConfigSchema> {
    Ok(state.catalog.get_schema(key).await?.ok_or_else(|| {
        Problem::new(
            Code::NotFound,
            format!("config key '{key}' has no schema: PUT /v1/config-schemas/{key} first"),
        )
    })?)
}

/// The platform event of what the operator did to the configuration's shared layers.
fn platform_event(ctx: &Ctx, data: Value) -> NewEvent {
    NewEvent::new(None, "operator", "config.changed", data, &ctx.request_id)
}

// --- schemas ---

/// Creates or replaces a key's schema and default (operator). The default and every
/// value a plan or tenant holds must meet the new schema.
#[utoipa::path(put, path = "/v1/config-schemas/{key}", tag = "config", params(("key" = String, Path, description = "The config key: 1–128 of A-Z a-z 0-9 _ - .", pattern = "^[A-Za-z0-9_.-]{1,128}$")), request_body = SchemaBody, responses((status = 200, description = "Replaced", body = SchemaView), (status = 201, description = "Created", body = SchemaView)))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn put_schema(
    S(state): S<State>,
    ctx: Ctx,
    Path(key): Path<String>,
    headers: HeaderMap,
    Json(b): Json<SchemaBody>,
) -> ApiResult<(StatusCode, HeaderMap, axum::Json<SchemaView>)> {
    ctx.require_operator()?;
    let key = key_of(&key)?;
    let expected = if_match(&headers)?;
    let validator = compile(&key, &b.schema)?;
    let default = b.default.filter(|d| !d.is_null());
    if let Some(d) = &default {
        check(&validator, "default", d)?;
    }
    let mut w = state.catalog.begin().await?;
    for (owner, e) in state.catalog.current_values_in(&mut w, &key).await? {
        if let Some(v) = &e.value {
            check(&validator, &format!("{owner}'s value (version {})", e.version), v)?;
        }
    }
    let s = state
        .catalog
        .put_schema(&mut w, &key, &b.schema, default.as_ref(), expected)
        .await?;
    w.commit_with(&platform_event(
        &ctx,
        json!({"key": key, "layer": "default", "version": s.version}),
    ))
    .await?;
    state.changed(Change::Settings).await;
    Ok((
        created_or_ok(s.version),
        HeaderMap::from_iter(etag(s.version)),
        axum::Json(s.into()),
    ))
}

/// Every key's schema (operator).
#[utoipa::path(get, path = "/v1/config-schemas", tag = "config", responses((status = 200, description = "Every schema", body = Items<SchemaView>)))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn list_schemas(S(state): S<State>, ctx: Ctx) -> ApiResult<axum::Json<Value>> {
    ctx.require_operator()?;
    let items: Vec<SchemaView> = state
        .catalog
        .list_schemas()
        .await?
        .into_iter()
        .map(Into::into)
        .collect();
    Ok(axum::Json(json!({ "items": items })))
}

/// One key's schema (operator).
#[utoipa::path(get, path = "/v1/config-schemas/{key}", tag = "config", params(("key" = String, Path, description = "The config key: 1–128 of A-Z a-z 0-9 _ - .", pattern = "^[A-Za-z0-9_.-]{1,128}$")), responses((status = 200, description = "The schema", body = SchemaView)))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn get_schema(
    S(state): S<State>,
    ctx: Ctx,
    Path(key): Path<String>,
) -> ApiResult<(HeaderMap, axum::Json<SchemaView>)> {
    ctx.require_operator()?;
    let s = schema_of(&state, &key_of(&key)?).await?;
    Ok((HeaderMap::from_iter(etag(s.version)), axum::Json(s.into())))
}

/// Deletes a key's schema and default (operator); `409` while a plan or tenant holds a
/// value of it.
#[utoipa::path(delete, path = "/v1/config-schemas/{key}", tag = "config", params(("key" = String, Path, description = "The config key: 1–128 of A-Z a-z 0-9 _ - .", pattern = "^[A-Za-z0-9_.-]{1,128}$")), responses((status = 204, description = "Deleted")))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn delete_schema(S(state): S<State>, ctx: Ctx, Path(key): Path<String>) -> ApiResult<StatusCode> {
    ctx.require_operator()?;
    let key = key_of(&key)?;
    let mut w = state.catalog.begin().await?;
    state.catalog.delete_schema(&mut w, &key).await?;
    w.commit_with(&platform_event(
        &ctx,
        json!({"key": key, "layer": "default", "deleted": true}),
    ))
    .await?;
    state.changed(Change::Settings).await;
    Ok(StatusCode::NO_CONTENT)
}

mod target;
use target::{Target, Written};

/// `{plan}/{key}` of plan layer paths.
#[derive(Debug, serde::Deserialize)]
pub struct PlanKey {
    plan: String,
    key: String,
}

/// `{id}/{key}` of tenant layer paths.
#[derive(Debug, serde::Deserialize)]
pub struct TenantKey {
    #[allow(dead_code)]
    id: String,
    key: String,
}

/// Sets a key in a plan's layer (operator): every tenant on the plan without its own
/// value gets it.
#[utoipa::path(put, path = "/v1/plans/{plan}/config/{key}", tag = "config", params(("plan" = String, Path, description = "A plan id", pattern = "^[A-Za-z0-9_-]{1,64}$"), ("key" = String, Path, description = "The config key: 1–128 of A-Z a-z 0-9 _ - .", pattern = "^[A-Za-z0-9_.-]{1,128}$")), request_body = ValueBody, responses((status = 200, description = "The new version", body = ConfigValue)))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn put_plan(
    S(state): S<State>,
    ctx: Ctx,
    Path(p): Path<PlanKey>,
    h: HeaderMap,
    Json(b): Json<ValueBody>,
) -> ApiResult<Written> {
    Target::plan(&state, &ctx, &p.plan)
        .await?
        .put(&state, &p.key, &h, &b.value)
        .await
}

/// A key's value in a plan's layer (operator).
#[utoipa::path(get, path = "/v1/plans/{plan}/config/{key}", tag = "config", params(("plan" = String, Path, description = "A plan id", pattern = "^[A-Za-z0-9_-]{1,64}$"), ("key" = String, Path, description = "The config key: 1–128 of A-Z a-z 0-9 _ - .", pattern = "^[A-Za-z0-9_.-]{1,128}$")), responses((status = 200, description = "The plan's value", body = ConfigValue)))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn get_plan(S(state): S<State>, ctx: Ctx, Path(p): Path<PlanKey>) -> ApiResult<Written> {
    let t = Target::plan(&state, &ctx, &p.plan).await?;
    let e = t.held(&state, &key_of(&p.key)?).await?;
    Ok(t.written(e))
}

/// Removes a key from a plan's layer (operator).
#[utoipa::path(delete, path = "/v1/plans/{plan}/config/{key}", tag = "config", params(("plan" = String, Path, description = "A plan id", pattern = "^[A-Za-z0-9_-]{1,64}$"), ("key" = String, Path, description = "The config key: 1–128 of A-Z a-z 0-9 _ - .", pattern = "^[A-Za-z0-9_.-]{1,128}$")), responses((status = 204, description = "Removed")))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn delete_plan(S(state): S<State>, ctx: Ctx, Path(p): Path<PlanKey>, h: HeaderMap) -> ApiResult<StatusCode> {
    Target::plan(&state, &ctx, &p.plan)
        .await?
        .delete(&state, &p.key, &h)
        .await
}

/// Every version of a key in a plan's layer, newest first (operator).
#[utoipa::path(get, path = "/v1/plans/{plan}/config/{key}/versions", tag = "config", params(("plan" = String, Path, description = "A plan id", pattern = "^[A-Za-z0-9_-]{1,64}$"), ("key" = String, Path, description = "The config key: 1–128 of A-Z a-z 0-9 _ - .", pattern = "^[A-Za-z0-9_.-]{1,128}$"), PageParams), responses((status = 200, description = "A page of versions", body = Page<VersionView>)))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn plan_versions(
    S(state): S<State>,
    ctx: Ctx,
    Path(p): Path<PlanKey>,
    Query(q): Query<PageQuery>,
) -> ApiResult<axum::Json<Page<VersionView>>> {
    Target::plan(&state, &ctx, &p.plan)
        .await?
        .versions(&state, &p.key, &q)
        .await
}

/// Writes a new version of a plan's key equal to an earlier one (operator).
#[utoipa::path(post, path = "/v1/plans/{plan}/config/{key}/rollback", tag = "config", params(("plan" = String, Path, description = "A plan id", pattern = "^[A-Za-z0-9_-]{1,64}$"), ("key" = String, Path, description = "The config key: 1–128 of A-Z a-z 0-9 _ - .", pattern = "^[A-Za-z0-9_.-]{1,128}$")), request_body = RollbackBody, responses((status = 200, description = "The new version", body = ConfigValue)))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn plan_rollback(
    S(state): S<State>,
    ctx: Ctx,
    Path(p): Path<PlanKey>,
    h: HeaderMap,
    Json(b): Json<RollbackBody>,
) -> ApiResult<Written> {
    Target::plan(&state, &ctx, &p.plan)
        .await?
        .rollback(&state, &p.key, &h, b.version)
        .await
}

/// Sets a key in the tenant's own layer (`config:write`).
#[utoipa::path(put, path = "/v1/tenants/{id}/config/{key}", tag = "config", params(TenantPath, ("key" = String, Path, description = "The config key: 1–128 of A-Z a-z 0-9 _ - .", pattern = "^[A-Za-z0-9_.-]{1,128}$")), request_body = ValueBody, responses((status = 200, description = "The new version", body = ConfigValue)))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn put_tenant(
    S(state): S<State>,
    ctx: TenantContext,
    Path(p): Path<TenantKey>,
    h: HeaderMap,
    Json(b): Json<ValueBody>,
) -> ApiResult<Written> {
    ctx.require("config:write")?;
    Target::tenant(&ctx).put(&state, &p.key, &h, &b.value).await
}

/// A key's effective value for the tenant: its own, its plan's or the default, with
/// the source (`config:read`). The `ETag` is the tenant layer's version (`"0"`: none).
#[utoipa::path(get, path = "/v1/tenants/{id}/config/{key}", tag = "config", params(TenantPath, ("key" = String, Path, description = "The config key: 1–128 of A-Z a-z 0-9 _ - .", pattern = "^[A-Za-z0-9_.-]{1,128}$")), responses((status = 200, description = "The effective value", body = ConfigValue)))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn get_tenant(S(state): S<State>, ctx: TenantContext, Path(p): Path<TenantKey>) -> ApiResult<Written> {
    ctx.require("config:read")?;
    let key = key_of(&p.key)?;
    schema_of(&state, &key).await?;
    let own = state
        .catalog
        .config_entry(&ConfigOwner::Tenant(*ctx.tenant_id()), &key, None)
        .await?
        .map_or(0, |e| e.version);
    let e = ctx.config(&key).ok_or_else(|| {
        Problem::new(
            Code::NotFound,
            format!("config key '{key}' has no value for this tenant"),
        )
    })?;
    let body = ConfigValue {
        key,
        value: e.value.clone(),
        source: e.source,
        version: e.version,
    };
    Ok((HeaderMap::from_iter(etag(own)), axum::Json(body)))
}

/// Every key's effective value for the tenant, by key (`config:read`).
#[utoipa::path(get, path = "/v1/tenants/{id}/config", tag = "config", params(TenantPath), responses((status = 200, description = "Every effective value", body = Items<ConfigValue>)))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn list_tenant(ctx: TenantContext) -> ApiResult<axum::Json<Value>> {
    ctx.require("config:read")?;
    let settings = ctx.request().settings.clone().ok_or_else(Problem::internal)?;
    let t = ctx.tenant();
    let items: Vec<ConfigValue> = settings
        .layers
        .all(&t.config, t.plan.as_str())
        .into_iter()
        .map(|(k, e)| ConfigValue {
            key: k.to_string(),
            value: e.value.clone(),
            source: e.source,
            version: e.version,
        })
        .collect();
    Ok(axum::Json(json!({ "items": items })))
}

/// Removes a key from the tenant's layer (`config:write`): its plan's or the default
/// applies again.
#[utoipa::path(delete, path = "/v1/tenants/{id}/config/{key}", tag = "config", params(TenantPath, ("key" = String, Path, description = "The config key: 1–128 of A-Z a-z 0-9 _ - .", pattern = "^[A-Za-z0-9_.-]{1,128}$")), responses((status = 204, description = "Removed")))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn delete_tenant(
    S(state): S<State>,
    ctx: TenantContext,
    Path(p): Path<TenantKey>,
    h: HeaderMap,
) -> ApiResult<StatusCode> {
    ctx.require("config:write")?;
    Target::tenant(&ctx).delete(&state, &p.key, &h).await
}

/// Every version of a key in the tenant's layer, newest first (`config:read`).
#[utoipa::path(get, path = "/v1/tenants/{id}/config/{key}/versions", tag = "config", params(TenantPath, ("key" = String, Path, description = "The config key: 1–128 of A-Z a-z 0-9 _ - .", pattern = "^[A-Za-z0-9_.-]{1,128}$"), PageParams), responses((status = 200, description = "A page of versions", body = Page<VersionView>)))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn tenant_versions(
    S(state): S<State>,
    ctx: TenantContext,
    Path(p): Path<TenantKey>,
    Query(q): Query<PageQuery>,
) -> ApiResult<axum::Json<Page<VersionView>>> {
    ctx.require("config:read")?;
    Target::tenant(&ctx).versions(&state, &p.key, &q).await
}

/// Writes a new version of the tenant's key equal to an earlier one (`config:write`).
#[utoipa::path(post, path = "/v1/tenants/{id}/config/{key}/rollback", tag = "config", params(TenantPath, ("key" = String, Path, description = "The config key: 1–128 of A-Z a-z 0-9 _ - .", pattern = "^[A-Za-z0-9_.-]{1,128}$")), request_body = RollbackBody, responses((status = 200, description = "The new version", body = ConfigValue)))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn tenant_rollback(
    S(state): S<State>,
    ctx: TenantContext,
    Path(p): Path<TenantKey>,
    h: HeaderMap,
    Json(b): Json<RollbackBody>,
) -> ApiResult<Written> {
    ctx.require("config:write")?;
    Target::tenant(&ctx).rollback(&state, &p.key, &h, b.version).await
}

/// This module's routes, with their OpenAPI descriptions.
pub fn router() -> OpenApiRouter<State> {
    OpenApiRouter::new()
        .routes(routes!(list_schemas))
        .routes(routes!(put_schema, get_schema, delete_schema))
        .routes(routes!(put_plan, get_plan, delete_plan))
        .routes(routes!(plan_versions))
        .routes(routes!(plan_rollback))
        .routes(routes!(list_tenant))
        .routes(routes!(put_tenant, get_tenant, delete_tenant))
        .routes(routes!(tenant_versions))
        .routes(routes!(tenant_rollback))
}
