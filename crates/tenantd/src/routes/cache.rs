//! The tenant's cache (docs/api.md): JSON values with a TTL and tags, deleted by key,
//! prefix or tag; counted toward `storage_bytes`.
use crate::error::ApiResult;
use crate::extract::Json;
use crate::levels::{deleted, freed, StorageLevel};
use crate::routes::openapi::JsonValue;
use crate::state::State;
use axum::extract::{Path, State as S};
use http::StatusCode;
use serde::Deserialize;
use serde_json::Value;
use tenantd_data::{check_cache_key, check_tag, CacheEntry, CacheSelector};
use tenantd_edge::{Problem, TenantContext};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The longest TTL: a year.
const MAX_TTL: u64 = 365 * 24 * 3600;
/// The most tags on one entry.
const MAX_TAGS: usize = 32;

/// `{*key}`.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct KeyPath {
    /// 1 to 512 characters, no control characters.
    #[param(max_length = 512, pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]+$")]
    key: String,
}

/// `PUT /v1/data/cache/{key}` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutCache {
    /// Any JSON value.
    #[schema(value_type = JsonValue)]
    value: Value,
    /// 1 to 31,536,000; without it the entry stays until deleted.
    #[schema(minimum = 1, maximum = 31536000)]
    #[serde(default, deserialize_with = "tenantd_core::whole::opt_u64")]
    ttl_seconds: Option<u64>,
    /// Up to 32 tags (1 to 64 letters, digits, '_', '-', '.' or ':'), to delete by.
    #[serde(default)]
    #[schema(max_items = 32, value_type = Vec<Tag>)]
    tags: Vec<String>,
}

/// A cache tag: 1 to 64 letters, digits, `_`, `-`, `.` or `:`.
#[derive(utoipa::ToSchema)]
#[schema(value_type = String, pattern = "^[A-Za-z0-9_.:-]{1,64}$")]
#[allow(dead_code)]
pub struct Tag(String);

/// What a delete by prefix or tag removed.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Deleted {
    /// Entries removed.
    deleted: u64,
}

/// Sets a cache entry (`cache:write`): `200` with the entry; `429` when it would pass
/// a hard `storage_bytes` limit (nothing is written). Expired entries are removed, and
/// stop counting, as the tenant writes.
#[utoipa::path(put, path = "/v1/data/cache/{*key}", tag = "data", params(KeyPath), request_body = PutCache, responses((status = 200, description = "The entry", body = CacheEntry)))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn put(
    S(state): S<State>,
    ctx: TenantContext,
    Path(p): Path<KeyPath>,
    Json(b): Json<PutCache>,
) -> ApiResult<axum::Json<CacheEntry>> {
    ctx.require("cache:write")?;
    check_cache_key(&p.key).map_err(crate::error::ApiError::from)?;
    if b.ttl_seconds.is_some_and(|t| t == 0 || t > MAX_TTL) {
        return Err(Problem::invalid(format!("ttl_seconds must be 1 to {MAX_TTL}")).into());
    }
    if b.tags.len() > MAX_TAGS {
        return Err(Problem::invalid(format!("at most {MAX_TAGS} tags")).into());
    }
    for t in &b.tags {
        check_tag(t).map_err(crate::error::ApiError::from)?;
    }
    let level = StorageLevel::of(&state, &ctx).await?;
    let written = state
        .scope(&ctx)
        .await?
        .put_cache(&p.key, &b.value, b.ttl_seconds, &b.tags, level.max)
        .await;
    let e = level.settle(&state, &ctx, written).await?;
    Ok(axum::Json(e))
}

/// A cache entry that has not expired (`cache:read`).
#[utoipa::path(get, path = "/v1/data/cache/{*key}", tag = "data", params(KeyPath), responses((status = 200, description = "The entry", body = CacheEntry)))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn get(S(state): S<State>, ctx: TenantContext, Path(p): Path<KeyPath>) -> ApiResult<axum::Json<CacheEntry>> {
    ctx.require("cache:read")?;
    check_cache_key(&p.key).map_err(crate::error::ApiError::from)?;
    let e = state
        .scope(&ctx)
        .await?
        .get_cache(&p.key)
        .await
        .map_err(crate::error::ApiError::from)?
        .ok_or_else(|| Problem::not_found("cache entry"))?;
    Ok(axum::Json(e))
}

/// Deletes a cache entry (`cache:write`): `204`; `404` if there is none.
#[utoipa::path(delete, path = "/v1/data/cache/{*key}", tag = "data", params(KeyPath), responses((status = 204, description = "Deleted")))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn delete(S(state): S<State>, ctx: TenantContext, Path(p): Path<KeyPath>) -> ApiResult<StatusCode> {
    ctx.require("cache:write")?;
    check_cache_key(&p.key).map_err(crate::error::ApiError::from)?;
    let written = state
        .scope(&ctx)
        .await?
        .delete_cache(CacheSelector::Key(&p.key))
        .await
        .map(|w| tenantd_data::Written {
            value: w.value > 0,
            before: w.before,
            after: w.after,
        });
    deleted(&state, &ctx, written, "cache entry").await
}

/// `DELETE /v1/data/cache` query: exactly one of the two.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct DeleteMany {
    /// Every key starting with this (1 to 512 characters, no control characters).
    #[param(max_length = 512, pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]+$")]
    prefix: Option<String>,
    /// Every entry with this tag.
    #[param(pattern = "^[A-Za-z0-9_.:-]{1,64}$")]
    tag: Option<String>,
}

/// Deletes every entry under `?prefix=` or with `?tag=` (`cache:write`):
/// `{"deleted": n}`.
#[utoipa::path(delete, path = "/v1/data/cache", tag = "data", params(DeleteMany), responses((status = 200, description = "How many entries were removed", body = Deleted)))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn delete_many(
    S(state): S<State>,
    ctx: TenantContext,
    crate::extract::Query(q): crate::extract::Query<DeleteMany>,
) -> ApiResult<axum::Json<Deleted>> {
    ctx.require("cache:write")?;
    let which = match (&q.prefix, &q.tag) {
        (Some(p), None) => {
            check_cache_key(p).map_err(crate::error::ApiError::from)?;
            CacheSelector::Prefix(p)
        }
        (None, Some(t)) => {
            check_tag(t).map_err(crate::error::ApiError::from)?;
            CacheSelector::Tag(t)
        }
        _ => return Err(Problem::invalid("give exactly one of ?prefix= and ?tag=").into()),
    };
    let deleted = state.scope(&ctx).await?.delete_cache(which).await;
    Ok(axum::Json(Deleted {
        deleted: freed(&state, &ctx, deleted).await?,
    }))
}

/// This module's routes, with their OpenAPI descriptions.
pub fn router() -> OpenApiRouter<State> {
    OpenApiRouter::new()
        .routes(routes!(delete_many))
        .routes(routes!(put, get, delete))
}
