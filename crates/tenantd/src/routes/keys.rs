//! Tenant API keys: the secret is returned once, only its hash is kept.
use crate::app::State;
use crate::error::ApiResult;
use crate::extract::{Json, PageQuery, Query};
use crate::routes::members::{known_role, may_grant};
use axum::extract::{Path, State as S};
use http::StatusCode;
use tenantd_core::plan::merge_limits;
use tenantd_core::{now_secs, Limit, PlanId};
use tenantd_edge::{keys, Change, Problem, TenantContext};
use tenantd_store::{ApiKey, Page};

/// `POST /v1/tenants/{id}/keys` body.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    /// Display name.
    name: String,
    /// Role (default `member`), no stronger than the caller's.
    role: Option<String>,
    /// RFC 3339; must be in the future.
    expires_at: Option<String>,
    /// Limits narrowing the tenant's.
    #[schema(value_type = Option<Vec<Object>>)]
    limits: Option<Vec<Limit>>,
}

/// Checks that every key limit narrows the tenant's limit of the same resource and window.
async fn check_narrows(state: &State, ctx: &TenantContext, limits: &[Limit]) -> ApiResult<()> {
    let tenant = state.catalog.get_tenant(ctx.tenant_id()).await?;
    let plan = state.catalog.get_plan(&PlanId::parse(&tenant.plan)?).await?;
    let effective = merge_limits(&plan.limits, &tenant.limits);
    for l in limits {
        l.validate().map_err(Problem::invalid)?;
        if let Some(t) = effective
            .iter()
            .find(|t| t.resource == l.resource && t.window == l.window)
        {
            let narrower = match (l.limit, t.limit) {
                (_, None) => true,
                (Some(k), Some(t)) => k <= t,
                (None, Some(_)) => false,
            };
            if !narrower {
                return Err(Problem::invalid(format!(
                    "a key's limit for {} per {:?} can only narrow the tenant's ({:?})",
                    l.resource, l.window, t.limit
                ))
                .into());
            }
        }
    }
    Ok(())
}

/// Creates a key (`keys:manage`); the answer carries the secret, once.
#[utoipa::path(post, path = "/v1/tenants/{id}/keys", tag = "keys", params(("id" = String, Path)), request_body = CreateKey, responses((status = 201, description = "The key with `key` (the secret, shown once), `id`, `prefix`")))]
pub async fn create(
    S(state): S<State>,
    ctx: TenantContext,
    Json(b): Json<CreateKey>,
) -> ApiResult<(StatusCode, axum::Json<serde_json::Value>)> {
    ctx.require("keys:manage")?;
    if b.name.trim().is_empty() || b.name.len() > 200 {
        return Err(Problem::invalid("name must be 1 to 200 characters").into());
    }
    let role = known_role(&state, &ctx, b.role.as_deref().unwrap_or("member")).await?;
    may_grant(&ctx, &role)?;
    let now = now_secs();
    let expires_at = match b.expires_at.as_deref() {
        Some(s) => {
            let t = tenantd_core::ts::parse(s).map_err(|e| Problem::invalid(format!("expires_at: {e}")))?;
            if t <= now {
                return Err(Problem::invalid("expires_at must be in the future").into());
            }
            Some(t)
        }
        None => None,
    };
    let limits = b.limits.unwrap_or_default();
    check_narrows(&state, &ctx, &limits).await?;
    let g = keys::generate();
    let key = ApiKey {
        id: g.id,
        tenant_id: *ctx.tenant_id(),
        name: b.name.trim().to_string(),
        prefix: g.prefix,
        hash: g.hash_hex,
        role: role.name.clone(),
        expires_at,
        limits,
        created_at: now,
        revoked_at: None,
        last_used_at: None,
    };
    let level = crate::routes::usage::grow_level(&state, &ctx, "keys").await?;
    let written = state.catalog.create_key_within(&key, level.max).await;
    level.settle(&state, &ctx, written).await?;
    state
        .record(
            &ctx,
            "key.created",
            serde_json::json!({"key_id": key.id, "role": key.role}),
        )
        .await;
    Ok((StatusCode::CREATED, axum::Json(with_secret(&key, g.secret))))
}

fn with_secret(key: &ApiKey, secret: String) -> serde_json::Value {
    let mut v = serde_json::to_value(key).expect("a key serialises");
    v["key"] = serde_json::Value::String(secret);
    v
}

/// The tenant's keys, never their secrets (`keys:read`).
#[utoipa::path(get, path = "/v1/tenants/{id}/keys", tag = "keys", params(("id" = String, Path), ("limit" = Option<u32>, Query), ("cursor" = Option<String>, Query)), responses((status = 200, description = "`{\"items\": [key], \"next_cursor\"?}` with `last_used_at`")))]
pub async fn list(
    S(state): S<State>,
    ctx: TenantContext,
    Query(q): Query<PageQuery>,
) -> ApiResult<axum::Json<Page<ApiKey>>> {
    ctx.require("keys:read")?;
    // Write queued last-use times first so the list is current.
    state.flush_key_usage().await;
    Ok(axum::Json(state.catalog.list_keys(ctx.tenant_id(), &q.page()?).await?))
}

#[derive(serde::Deserialize)]
pub struct KeyPath {
    key_id: String,
}

/// Revokes a key (`keys:manage`); it answers 401 from this moment.
#[utoipa::path(delete, path = "/v1/tenants/{id}/keys/{key_id}", tag = "keys", params(("id" = String, Path), ("key_id" = String, Path)), responses((status = 204, description = "Revoked"), (status = 404, description = "not_found")))]
pub async fn revoke(S(state): S<State>, ctx: TenantContext, Path(p): Path<KeyPath>) -> ApiResult<StatusCode> {
    ctx.require("keys:manage")?;
    let k = state.catalog.revoke_key(ctx.tenant_id(), &p.key_id, now_secs()).await?;
    state.changed(Change::Key(&k.id)).await;
    state
        .record(&ctx, "key.revoked", serde_json::json!({"key_id": k.id}))
        .await;
    Ok(StatusCode::NO_CONTENT)
}

/// Replaces a key's secret (`keys:manage`, and a role the caller could grant itself): the
/// old secret stops working at once, the new one is returned once.
#[utoipa::path(post, path = "/v1/tenants/{id}/keys/{key_id}/rotate", tag = "keys", params(("id" = String, Path), ("key_id" = String, Path)), responses((status = 200, description = "The key with its new `key`"), (status = 403, description = "The key's role is one the caller could not grant"), (status = 409, description = "Revoked")))]
pub async fn rotate(
    S(state): S<State>,
    ctx: TenantContext,
    Path(p): Path<KeyPath>,
) -> ApiResult<axum::Json<serde_json::Value>> {
    ctx.require("keys:manage")?;
    let g = keys::regenerate(&p.key_id).ok_or_else(|| Problem::not_found("api key"))?;
    // The new secret carries the key's role: only a caller who could grant that role
    // may receive it (an admin rotating an owner's key would become an owner).
    let held = state
        .catalog
        .get_key(&p.key_id)
        .await?
        .filter(|k| k.tenant_id == *ctx.tenant_id())
        .ok_or_else(|| Problem::not_found("api key"))?;
    may_grant(&ctx, &*known_role(&state, &ctx, &held.role).await?)?;
    let k = state
        .catalog
        .rotate_key(ctx.tenant_id(), &p.key_id, &g.prefix, &g.hash_hex)
        .await?;
    state.changed(Change::Key(&k.id)).await;
    state
        .record(&ctx, "key.rotated", serde_json::json!({"key_id": k.id}))
        .await;
    Ok(axum::Json(with_secret(&k, g.secret)))
}
