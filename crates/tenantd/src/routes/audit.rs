//! The event log over HTTP (docs/events.md): a tenant's audit trail and the operator's,
//! in pages (newest first) or as NDJSON streams (every match, in `seq` order, each chain
//! ending with its latest checkpoint); chain verification; signed checkpoints.
use crate::error::ApiResult;
use crate::event_log::Verification;
use crate::extract::{page, Query};
use crate::routes::openapi::TenantPath;
use crate::state::State;
use axum::body::{Body, Bytes};
use axum::extract::State as S;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, StatusCode};
use tenantd_edge::{Ctx, Problem, TenantContext};
use tenantd_store::chain::Checkpoint;
use tenantd_store::{chain_name, AuditEvent, AuditFilter, Page};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The media type of the streams.
pub const NDJSON: &str = "application/x-ndjson";
/// Events a stream reads at a time.
const BATCH: u32 = 500;

/// An audit query.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
pub struct AuditQuery {
    /// One type, `noun.verb`, e.g. `security.cross_tenant_attempt`.
    action: Option<String>,
    /// A type (`tenant.created`), or every type under a prefix (`tenant.*`).
    #[serde(rename = "type")]
    #[param(rename = "type", pattern = "^[a-z_]+(\\.[a-z_]+)*(\\.\\*)?$")]
    kind: Option<String>,
    /// `operator`, `usr_…`, `key_…`.
    actor: Option<String>,
    /// RFC 3339, inclusive.
    #[param(format = DateTime)]
    since: Option<String>,
    /// RFC 3339, exclusive.
    #[param(format = DateTime)]
    until: Option<String>,
    /// Items per page: 1 to 1000 (default 50). Streams are not paged.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// The previous page's `next_cursor`, as it was given (any other value is `400`).
    cursor: Option<String>,
}

/// The operator's audit query adds which tenant.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TenantFilter {
    /// Only this tenant's events.
    tenant_id: Option<String>,
}

fn filter(q: &AuditQuery, tenant: Option<String>) -> ApiResult<AuditFilter> {
    let t = |s: &Option<String>, name: &str| -> ApiResult<Option<i64>> {
        s.as_deref()
            .map(|v| tenantd_core::ts::parse(v).map_err(|e| Problem::invalid(format!("{name}: {e}")).into()))
            .transpose()
    };
    let (action, kind_prefix) = match q.kind.as_deref() {
        None => (q.action.clone(), None),
        Some(k) => {
            if !crate::webhooks::dispatch::valid_type(k) {
                return Err(Problem::invalid(
                    "type must be a type such as tenant.created, or a prefix such as tenant.*",
                )
                .into());
            }
            match k.strip_suffix('*') {
                Some(prefix) => (q.action.clone(), Some(prefix.to_string())),
                None if q.action.as_deref().is_some_and(|a| a != k) => {
                    return Err(Problem::invalid("type and action name different types").into())
                }
                None => (Some(k.to_string()), None),
            }
        }
    };
    Ok(AuditFilter {
        tenant_id: tenant,
        action,
        kind_prefix,
        actor: q.actor.clone(),
        since: t(&q.since, "since")?,
        until: t(&q.until, "until")?,
    })
}

/// Whether the caller asked for a stream.
fn wants_stream(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|m| m.trim().starts_with(NDJSON)))
}

/// Every event of `chains` matching `f`, chain after chain in `seq` order, each chain
/// followed by `{"checkpoint": …}` when it has one, as NDJSON, read `BATCH` at a time.
fn stream(state: State, chains: Vec<String>, f: AuditFilter) -> Response {
    struct At {
        chains: std::vec::IntoIter<String>,
        chain: Option<String>,
        after: i64,
    }
    let mut chains = chains.into_iter();
    let first = chains.next();
    let start = At {
        chains,
        chain: first,
        after: 0,
    };
    let lines = futures_util::stream::unfold(Some(start), move |at| {
        let (state, f) = (state.clone(), f.clone());
        async move {
            let mut at = at?;
            let chain = at.chain.clone()?;
            let batch = match state.catalog.chain_events(&chain, &f, at.after, BATCH).await {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(error = %e, "an audit stream failed; it ends here");
                    return Some((Err(std::io::Error::other("the audit stream failed")), None));
                }
            };
            let mut out = String::new();
            for e in &batch {
                out.push_str(&serde_json::to_string(e).unwrap_or_default());
                out.push('\n');
            }
            if batch.len() == BATCH as usize {
                at.after = batch.last().map_or(at.after, |e| e.seq);
            } else {
                // The chain is done: its checkpoint, then the next chain.
                if let Ok(Some(cp)) = state.catalog.latest_checkpoint(&chain).await {
                    out.push_str(&serde_json::json!({"checkpoint": cp}).to_string());
                    out.push('\n');
                }
                at.chain = at.chains.next();
                at.after = 0;
            }
            Some((Ok::<_, std::io::Error>(Bytes::from(out)), Some(at)))
        }
    });
    ([(http::header::CONTENT_TYPE, NDJSON)], Body::from_stream(lines)).into_response()
}

/// The tenant's audit trail, newest first, or (with `Accept: application/x-ndjson`) all
/// of it in `seq` order with its latest checkpoint (`audit:read`).
#[utoipa::path(get, path = "/v1/tenants/{id}/audit", tag = "audit", params(TenantPath, AuditQuery), responses(
    (status = 200, description = "A page of the tenant's events, newest first; or, with Accept: application/x-ndjson, every match as JSON lines in seq order, then its checkpoint", body = Page<AuditEvent>)))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn tenant_audit(
    S(state): S<State>,
    ctx: TenantContext,
    headers: HeaderMap,
    Query(q): Query<AuditQuery>,
) -> ApiResult<Response> {
    ctx.require("audit:read")?;
    let f = filter(&q, Some(ctx.tenant_id().to_string()))?;
    if wants_stream(&headers) {
        return Ok(stream(state, vec![ctx.tenant_id().to_string()], f));
    }
    Ok(axum::Json(state.catalog.list_audit(&f, &page(q.limit, q.cursor.clone())?).await?).into_response())
}

/// Every event, security events included, newest first; or (with `Accept:
/// application/x-ndjson`) every match, chain after chain (the platform's first) in `seq`
/// order, each with its latest checkpoint (operator).
#[utoipa::path(get, path = "/v1/audit", tag = "audit", params(AuditQuery, TenantFilter), responses(
    (status = 200, description = "A page of events, newest first; or, with Accept: application/x-ndjson, every match as JSON lines", body = Page<AuditEvent>)))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn audit(
    S(state): S<State>,
    ctx: Ctx,
    headers: HeaderMap,
    Query(q): Query<AuditQuery>,
    Query(t): Query<TenantFilter>,
) -> ApiResult<Response> {
    ctx.require_operator()?;
    let f = filter(&q, t.tenant_id.clone())?;
    if wants_stream(&headers) {
        let chains = match t.tenant_id {
            Some(id) => vec![id],
            None => state.catalog.chains().await?,
        };
        let f = AuditFilter { tenant_id: None, ..f };
        return Ok(stream(state, chains, f));
    }
    Ok(axum::Json(state.catalog.list_audit(&f, &page(q.limit, q.cursor.clone())?).await?).into_response())
}

/// Checks the tenant's chain: every event, its head, and its latest checkpoint
/// (`audit:read`).
#[utoipa::path(get, path = "/v1/tenants/{id}/audit/verify", tag = "audit", params(TenantPath), responses(
    (status = 200, description = "Whether the chain verifies; where it breaks if not", body = Verification)))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn verify_tenant(S(state): S<State>, ctx: TenantContext) -> ApiResult<axum::Json<Verification>> {
    ctx.require("audit:read")?;
    Ok(axum::Json(state.verify(chain_name(Some(ctx.tenant_id()))).await?))
}

/// Checks the platform's chain (operator).
#[utoipa::path(get, path = "/v1/audit/verify", tag = "audit", responses(
    (status = 200, description = "Whether the platform's chain verifies; where it breaks if not", body = Verification)))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn verify_platform(S(state): S<State>, ctx: Ctx) -> ApiResult<axum::Json<Verification>> {
    ctx.require_operator()?;
    Ok(axum::Json(state.verify(chain_name(None)).await?))
}

/// `POST /v1/audit/checkpoints` answer.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Checkpoints {
    /// One per chain whose head moved since its last checkpoint.
    checkpoints: Vec<Checkpoint>,
}

/// Signs the head of every chain that moved since its last checkpoint, now (operator).
#[utoipa::path(post, path = "/v1/audit/checkpoints", tag = "audit", responses(
    (status = 201, description = "The new checkpoints", body = Checkpoints)))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn checkpoints(S(state): S<State>, ctx: Ctx) -> ApiResult<(StatusCode, axum::Json<Checkpoints>)> {
    ctx.require_operator()?;
    let checkpoints = state.checkpoint_chains().await?;
    Ok((StatusCode::CREATED, axum::Json(Checkpoints { checkpoints })))
}

/// This module's routes, with their OpenAPI descriptions.
pub fn router() -> OpenApiRouter<State> {
    OpenApiRouter::new()
        .routes(routes!(tenant_audit))
        .routes(routes!(audit))
        .routes(routes!(verify_tenant))
        .routes(routes!(verify_platform))
        .routes(routes!(checkpoints))
}
