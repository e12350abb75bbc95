//! Exports (owners and operators), backups, restore and clone (operators): docs/protection.md.
use crate::archive::restore::Refused;
use crate::error::ApiResult;
use crate::extract::Json;
use crate::routes::openapi::TenantPath;
use crate::state::State;
use axum::body::Body;
use axum::extract::{Path, State as S};
use axum::response::{IntoResponse, Response};
use http::{header, HeaderMap, HeaderValue, StatusCode};
use serde_json::{json, Value};
use std::time::Duration;
use tenantd_core::perms::TENANT_EXPORT;
use tenantd_core::{Code, PlanId, TenantId};
use tenantd_edge::{Problem, TenantContext};
use tenantd_store::{Archive, ArchiveKind, NewEvent};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// How long `restore` and `clone` wait for their job before answering `202`.
const WAIT: Duration = Duration::from_secs(30);

/// An export or backup as the API shows it.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ArchiveView {
    /// `exp_…` or `bak_…`.
    id: String,
    /// `queued`, `running`, `done` or `failed`.
    state: String,
    /// Records and blobs written, of all.
    #[schema(value_type = crate::sealing::Progress)]
    progress: Value,
    /// Bytes of the `.tar.gz`, once done.
    size_bytes: Option<u64>,
    /// Its SHA-256, once done.
    sha256: Option<String>,
    /// The catalog schema version it was written at.
    schema_version: i64,
    /// Rows per file, once done.
    #[schema(value_type = Option<Object>)]
    counts: Option<Value>,
    /// Why it failed.
    error: Option<String>,
    /// RFC 3339.
    created_at: String,
    /// RFC 3339, when it is deleted (exports: 7 days after).
    expires_at: Option<String>,
}

impl From<Archive> for ArchiveView {
    fn from(a: Archive) -> Self {
        Self {
            id: a.id,
            state: a.state,
            progress: json!({"done": a.done, "total": a.total}),
            size_bytes: a.size_bytes,
            sha256: a.sha256,
            schema_version: a.schema_version,
            counts: a.counts,
            error: a.error,
            created_at: tenantd_core::ts::format(a.created_at),
            expires_at: a.expires_at.map(tenantd_core::ts::format),
        }
    }
}

/// `{id}/{eid}`.
#[derive(serde::Deserialize)]
pub struct ArchivePath {
    #[allow(dead_code)]
    id: String,
    aid: String,
}

fn operator_only(ctx: &TenantContext, what: &str) -> Result<(), Problem> {
    if ctx.principal().is_operator() {
        Ok(())
    } else {
        Err(Problem::new(Code::Forbidden, format!("only operators may {what}")))
    }
}

async fn archive_of(state: &State, ctx: &TenantContext, id: &str, kind: ArchiveKind) -> ApiResult<Archive> {
    match state.catalog.get_archive(ctx.tenant_id(), id).await {
        Ok(a) if a.kind == kind.as_str() => Ok(a),
        Ok(_) | Err(tenantd_store::StoreError::NotFound(_)) => Err(Problem::not_found(kind.as_str()).into()),
        Err(e) => Err(e.into()),
    }
}

/// Starts an export of all of the tenant's data (`tenant:export`: owners and operators):
/// `202 {"export_id"}`.
#[utoipa::path(post, path = "/v1/tenants/{id}/exports", tag = "protection", params(TenantPath), responses((status = 202, description = "Started", body = Object)))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn export(S(state): S<State>, ctx: TenantContext) -> ApiResult<(StatusCode, axum::Json<Value>)> {
    let a = start_export(&state, &ctx).await?;
    Ok((StatusCode::ACCEPTED, axum::Json(json!({"export_id": a.id}))))
}

/// Starts an export of the tenant's data (`tenant:export`); `export.created` follows
/// when it is built.
pub async fn start_export(state: &State, ctx: &TenantContext) -> ApiResult<Archive> {
    ctx.require(TENANT_EXPORT)?;
    state.start_archive(ctx.tenant_id(), ArchiveKind::Export).await
}

/// An export's state and progress (`tenant:export`).
#[utoipa::path(get, path = "/v1/tenants/{id}/exports/{aid}", tag = "protection", params(TenantPath, ("aid" = String, Path, description = "exp_…")), responses((status = 200, description = "The export", body = ArchiveView)))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn export_status(
    S(state): S<State>,
    ctx: TenantContext,
    Path(p): Path<ArchivePath>,
) -> ApiResult<axum::Json<ArchiveView>> {
    ctx.require(TENANT_EXPORT)?;
    Ok(axum::Json(
        archive_of(&state, &ctx, &p.aid, ArchiveKind::Export).await?.into(),
    ))
}

/// A done export's `.tar.gz` (`tenant:export`), streamed.
#[utoipa::path(get, path = "/v1/tenants/{id}/exports/{aid}/download", tag = "protection", params(TenantPath, ("aid" = String, Path, description = "exp_…")), responses((status = 200, description = "The archive", content_type = "application/gzip", body = crate::routes::openapi::Bytes)))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn download(S(state): S<State>, ctx: TenantContext, Path(p): Path<ArchivePath>) -> ApiResult<Response> {
    ctx.require(TENANT_EXPORT)?;
    let a = archive_of(&state, &ctx, &p.aid, ArchiveKind::Export).await?;
    if a.state != "done" {
        return Err(Problem::new(Code::Conflict, format!("the export is {}, not done", a.state)).into());
    }
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/gzip"));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(a.size_bytes.unwrap_or(0)));
    let name = format!("attachment; filename=\"{}-{}.tar.gz\"", a.tenant, a.id);
    if let Ok(v) = HeaderValue::from_str(&name) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    tokio::spawn(async move {
        if let Err(e) = state.read_chunks(&a, tx).await {
            tracing::error!(archive_id = %a.id, error = %e, "an export download failed part-way");
        }
    });
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|c| (Ok::<_, std::io::Error>(axum::body::Bytes::from(c)), rx))
    });
    Ok((StatusCode::OK, headers, Body::from_stream(body)).into_response())
}

/// Starts a backup of the tenant (operators): `202 {"backup_id"}`.
#[utoipa::path(post, path = "/v1/tenants/{id}/backups", tag = "protection", params(TenantPath), responses((status = 202, description = "Started", body = Object)))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn backup(S(state): S<State>, ctx: TenantContext) -> ApiResult<(StatusCode, axum::Json<Value>)> {
    operator_only(&ctx, "back a tenant up")?;
    let a = state.start_archive(ctx.tenant_id(), ArchiveKind::Backup).await?;
    Ok((StatusCode::ACCEPTED, axum::Json(json!({"backup_id": a.id}))))
}

/// The tenant's backups, newest first (operators).
#[utoipa::path(get, path = "/v1/tenants/{id}/backups", tag = "protection", params(TenantPath), responses((status = 200, description = "Its backups", body = crate::routes::openapi::Items<ArchiveView>)))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn backups(S(state): S<State>, ctx: TenantContext) -> ApiResult<axum::Json<Value>> {
    operator_only(&ctx, "list a tenant's backups")?;
    let items: Vec<ArchiveView> = state
        .catalog
        .list_archives(ctx.tenant_id(), ArchiveKind::Backup)
        .await?
        .into_iter()
        .map(ArchiveView::from)
        .collect();
    Ok(axum::Json(json!({ "items": items })))
}

/// One backup (operators).
#[utoipa::path(get, path = "/v1/tenants/{id}/backups/{aid}", tag = "protection", params(TenantPath, ("aid" = String, Path, description = "bak_…")), responses((status = 200, description = "The backup", body = ArchiveView)))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn backup_status(
    S(state): S<State>,
    ctx: TenantContext,
    Path(p): Path<ArchivePath>,
) -> ApiResult<axum::Json<ArchiveView>> {
    operator_only(&ctx, "read a tenant's backups")?;
    Ok(axum::Json(
        archive_of(&state, &ctx, &p.aid, ArchiveKind::Backup).await?.into(),
    ))
}

/// `POST …/restore` body.
#[derive(Default, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RestoreBody {
    /// One of the tenant's backups (without it: undelete the tenant).
    pub backup_id: Option<String>,
}

fn refused(r: Refused, id: &str) -> Problem {
    match r {
        Refused::NotFound => Problem::not_found("backup"),
        other => Problem::new(Code::Conflict, format!("backup {id}: {other}")),
    }
}

/// Waits up to [`WAIT`] for a platform job: `200` with its result, or `202` with its id.
async fn answer(state: &State, job_id: String, extra: Value) -> ApiResult<(StatusCode, axum::Json<Value>)> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let j = state
            .jobs
            .get(&tenantd_jobs::Jobs::platform(), &job_id, tenantd_limits::now_ms())
            .await?;
        if j.state.is_final() || tokio::time::Instant::now() >= deadline {
            let mut body = json!({"job_id": j.id, "state": j.state});
            if let Some(r) = &j.result {
                body["result"] = r.clone();
            }
            if let Some(e) = &j.last_error {
                body["error"] = json!(e);
            }
            if let (Value::Object(b), Value::Object(x)) = (&mut body, extra.clone()) {
                b.extend(x);
            }
            let ok = j.state == tenantd_jobs::JobState::Succeeded
                && j.result.as_ref().is_some_and(|r| r["restored"] == true);
            let status = match j.state {
                _ if ok => StatusCode::OK,
                s if s.is_final() => {
                    let why = j.result.as_ref().and_then(|r| r["error"].as_str().map(str::to_string));
                    let why = why.or(j.last_error).unwrap_or_else(|| "the restore failed".into());
                    return Err(Problem::new(Code::Internal, why).into());
                }
                _ => StatusCode::ACCEPTED,
            };
            return Ok((status, axum::Json(body)));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Replaces the tenant's data with a backup's (`POST …/restore` with `backup_id`,
/// operators). Answers when done (`200`, with the verified counts) or, after 30 s, `202`
/// with the job; the tenant's data answers `503` meanwhile.
pub async fn restore_backup(
    state: &State,
    ctx: &TenantContext,
    backup_id: &str,
) -> ApiResult<(StatusCode, axum::Json<Value>)> {
    operator_only(ctx, "restore a tenant")?;
    let a = state
        .restorable(ctx.tenant_id(), backup_id)
        .await
        .map_err(|r| refused(r, backup_id))?;
    let job = state.start_restore(&a, ctx.tenant_id()).await?;
    answer(state, job, json!({})).await
}

/// `POST …/clone` body.
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CloneBody {
    /// The new tenant's id.
    #[schema(pattern = "^[A-Za-z0-9]([A-Za-z0-9-]{0,37}[A-Za-z0-9])?$")]
    new_id: String,
    /// Its plan (default: the source's).
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    plan: Option<String>,
    /// The backup to clone from (default: a new backup, made first).
    backup_id: Option<String>,
}

/// Makes a new tenant from a backup of this one (operators): its owners, and its data
/// and configuration at the new plan's tier. Answers as `restore` does.
#[utoipa::path(post, path = "/v1/tenants/{id}/clone", tag = "protection", params(TenantPath), request_body = CloneBody, responses((status = 200, description = "Cloned and verified", body = Object), (status = 202, description = "Still cloning", body = Object)))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn clone(
    S(state): S<State>,
    ctx: TenantContext,
    Json(b): Json<CloneBody>,
) -> ApiResult<(StatusCode, axum::Json<Value>)> {
    operator_only(&ctx, "clone a tenant")?;
    let source = *ctx.tenant_id();
    let new_id = TenantId::parse(&b.new_id)?;
    let plan = match &b.plan {
        Some(p) => PlanId::parse(p)?,
        None => ctx.tenant().plan.clone(),
    };
    let plan = state.catalog.get_plan(&plan).await?;
    let backup = match &b.backup_id {
        Some(id) => state.restorable(&source, id).await.map_err(|r| refused(r, id))?,
        None => {
            let a = state.start_archive(&source, ArchiveKind::Backup).await?;
            wait_built(&state, &source, &a.id).await?
        }
    };
    let owner = first_owner(&state, &source).await?;
    let new = tenantd_store::NewTenant {
        id: new_id,
        name: new_id.to_string(),
        plan: plan.id.clone(),
        owner_email: owner,
        settings: json!({}),
    };
    let t = match state
        .create_tenant(&new, "operator", &ctx.request().request_id, Default::default())
        .await?
    {
        tenantd_store::Created::New(t) => t,
        tenantd_store::Created::Existing(_) => {
            return Err(Problem::new(Code::Conflict, format!("tenant {new_id} exists")).into())
        }
    };
    let ev = NewEvent::system(
        &source,
        "tenant.clone_started",
        json!({"new_id": t.id, "backup_id": backup.id}),
    );
    state.catalog.record_event(&ev).await?;
    let job = state.start_restore(&backup, &new_id).await?;
    answer(&state, job, json!({"tenant_id": new_id, "backup_id": backup.id})).await
}

async fn wait_built(state: &State, tenant: &TenantId, id: &str) -> ApiResult<Archive> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match state.restorable(tenant, id).await {
            Ok(a) => return Ok(a),
            Err(Refused::NotDone(s)) if s != "failed" && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(r) => return Err(refused(r, id).into()),
        }
    }
}

async fn first_owner(state: &State, tenant: &TenantId) -> ApiResult<tenantd_core::Email> {
    let page = tenantd_store::PageRequest {
        limit: 1000,
        after: None,
    };
    let members = state.catalog.list_members(tenant, &page).await?;
    let owner = members
        .items
        .iter()
        .find(|m| m.role == "owner")
        .ok_or_else(|| Problem::new(Code::Conflict, "the tenant has no owner to give the clone"))?;
    Ok(tenantd_core::Email::parse(&owner.email)?)
}

pub fn router() -> OpenApiRouter<State> {
    OpenApiRouter::new()
        .routes(routes!(export))
        .routes(routes!(export_status))
        .routes(routes!(download))
        .routes(routes!(backup, backups))
        .routes(routes!(backup_status))
        .routes(routes!(clone))
}
