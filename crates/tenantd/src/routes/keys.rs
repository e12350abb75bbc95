//! Tenant API keys: the secret is returned once, only its hash is kept.
use crate::error::ApiResult;
use crate::extract::{Json, PageQuery, Query};
use crate::grants::{known_role, may_grant};
use crate::routes::openapi::{PageParams, TenantPath};
use crate::state::{AppState, Note, State};
use axum::extract::{Path, State as S};
use http::StatusCode;
use tenantd_core::plan::merge_limits;
use tenantd_core::{now_secs, Limit};
use tenantd_edge::{keys, Change, Problem, TenantContext};
use tenantd_store::{ApiKey, Page};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// `POST /v1/tenants/{id}/keys` body.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    /// Display name: 1–200 characters, not only spaces.
    #[schema(min_length = 1, max_length = 200, pattern = "^[^\\u0000]*[^\\s\\u0000][^\\u0000]*$")]
    name: String,
    /// Role (default `member`), no stronger than the caller's (`404` when the tenant
    /// has no such role).
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    role: Option<String>,
    /// When it stops working (RFC 3339); must be in the future.
    #[schema(format = DateTime)]
    expires_at: Option<String>,
    /// Limits narrowing the tenant's.
    limits: Option<Vec<Limit>>,
}

/// A key as created or rotated: with its secret, shown this once.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct KeyWithSecret {
    #[serde(flatten)]
    key: ApiKey,
    /// The secret (`tdk_…`), shown this once: only its hash is kept.
    #[serde(rename = "key")]
    secret: String,
}

/// `{id}/keys/{key_id}`.
#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct KeyPath {
    /// The key's id.
    #[param(pattern = "^key_[a-z2-7]{20}$")]
    key_id: String,
}

/// Checks that every key limit narrows the tenant's limit of the same resource and window.
async fn check_narrows(state: &State, ctx: &TenantContext, limits: &[Limit]) -> ApiResult<()> {
    let tenant = state.catalog.get_tenant(ctx.tenant_id()).await?;
    let plan = state.catalog.get_plan(&tenant.plan).await?;
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
#[utoipa::path(post, path = "/v1/tenants/{id}/keys", tag = "keys", params(TenantPath), request_body = CreateKey, responses((status = 201, description = "The key with `key`, the secret, shown once", body = KeyWithSecret)))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn create(
    S(state): S<State>,
    ctx: TenantContext,
    Json(b): Json<CreateKey>,
) -> ApiResult<(StatusCode, axum::Json<KeyWithSecret>)> {
    ctx.require("keys:manage")?;
    let name = tenantd_core::text::display_name("name", &b.name).map_err(Problem::invalid)?;
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
        name,
        prefix: g.prefix,
        hash: g.hash_hex,
        role: role.name.clone(),
        expires_at,
        limits,
        created_at: now,
        revoked_at: None,
        last_used_at: None,
    };
    let level = crate::levels::grow_level(&state, &ctx, "keys").await?;
    let written = async {
        let mut w = state.catalog.begin().await?;
        state.catalog.create_key_within(&mut w, &key, level.max).await?;
        let detail = serde_json::json!({"key_id": key.id, "role": key.role});
        w.commit_with(&AppState::event_of(&ctx, "key.created", detail)).await
    }
    .await;
    level.settle(&state, &ctx, written).await?;
    Ok((StatusCode::CREATED, axum::Json(with_secret(&key, g.secret))))
}

fn with_secret(key: &ApiKey, secret: String) -> KeyWithSecret {
    KeyWithSecret {
        key: key.clone(),
        secret,
    }
}

/// The tenant's keys, never their secrets (`keys:read`).
#[utoipa::path(get, path = "/v1/tenants/{id}/keys", tag = "keys", params(TenantPath, PageParams), responses((status = 200, description = "A page of keys, never their secrets", body = Page<ApiKey>)))]
#[tracing::instrument(level = "debug", skip_all)]
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

/// Revokes a key (`keys:manage`); it answers 401 from this moment.
#[utoipa::path(delete, path = "/v1/tenants/{id}/keys/{key_id}", tag = "keys", params(TenantPath, KeyPath), responses((status = 204, description = "Revoked")))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn revoke(S(state): S<State>, ctx: TenantContext, Path(p): Path<KeyPath>) -> ApiResult<StatusCode> {
    revoke_key(&state, &ctx, &p.key_id, Note::default()).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Revokes the tenant's key `key_id` (`keys:manage`) with its `key.revoked` event
/// (`note` added); it answers 401 from this moment. A key revoked before stays as it
/// was: nothing changed, so nothing is recorded.
pub async fn revoke_key(state: &State, ctx: &TenantContext, key_id: &str, note: Note<'_>) -> ApiResult<()> {
    ctx.require("keys:manage")?;
    let mut w = state.catalog.begin().await?;
    let (k, changed) = state
        .catalog
        .revoke_key(&mut w, ctx.tenant_id(), key_id, now_secs())
        .await?;
    if !changed {
        return Ok(());
    }
    let detail = note.added_to(serde_json::json!({"key_id": k.id}));
    w.commit_with(&AppState::event_of(ctx, "key.revoked", detail)).await?;
    state.changed(Change::Key(&k.id)).await;
    Ok(())
}

/// Replaces a key's secret (`keys:manage`, and a role the caller could grant itself): the
/// old secret stops working at once, the new one is returned once.
#[utoipa::path(post, path = "/v1/tenants/{id}/keys/{key_id}/rotate", tag = "keys", params(TenantPath, KeyPath), responses((status = 200, description = "The key with its new `key`", body = KeyWithSecret)))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn rotate(
    S(state): S<State>,
    ctx: TenantContext,
    Path(p): Path<KeyPath>,
) -> ApiResult<axum::Json<KeyWithSecret>> {
    ctx.require("keys:manage")?;
    let g = keys::regenerate(&p.key_id).ok_or_else(|| Problem::not_found("api key"))?;
    // The new secret carries the key's role: only a caller who could grant that role
    // may receive it (an admin rotating an owner's key would become an owner).
    let held = tenant_key(&state, &ctx, &p.key_id).await?;
    may_grant(&ctx, &*known_role(&state, &ctx, &held.role).await?)?;
    let mut w = state.catalog.begin().await?;
    let k = state
        .catalog
        .rotate_key(&mut w, ctx.tenant_id(), &p.key_id, &g.prefix, &g.hash_hex)
        .await?;
    w.commit_with(&AppState::event_of(
        &ctx,
        "key.rotated",
        serde_json::json!({"key_id": k.id}),
    ))
    .await?;
    state.changed(Change::Key(&k.id)).await;
    Ok(axum::Json(with_secret(&k, g.secret)))
}

/// The tenant's key `key_id`: `404` when there is none, or it is another tenant's.
pub async fn tenant_key(state: &State, ctx: &TenantContext, key_id: &str) -> ApiResult<tenantd_store::ApiKey> {
    state
        .catalog
        .get_key(key_id)
        .await?
        .filter(|k| k.tenant_id == *ctx.tenant_id())
        .ok_or_else(|| Problem::not_found("api key").into())
}

/// This module's routes, with their OpenAPI descriptions.
pub fn router() -> OpenApiRouter<State> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(revoke))
        .routes(routes!(rotate))
}
