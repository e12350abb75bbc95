//! Background jobs over HTTP: a tenant enqueues, lists and cancels its jobs; workers claim
//! them under a lease and report back. The operator's workers claim every tenant's jobs;
//! a tenant's credential with `jobs:work` claims only its own tenant's (docs/jobs.md).
use crate::error::ApiResult;
use crate::extract::{optional_json, Json, Query, RawBody};
use crate::routes::openapi::JsonValue;
use crate::state::State;
use axum::extract::{Path, State as S};
use http::StatusCode;
use tenantd_core::ts;
use tenantd_edge::{Ctx, Problem, TenantContext};
use tenantd_jobs::{ClaimRequest, Failed, Holder, Job, JobState, NewJob, SYSTEM_QUEUE_PREFIX};
use tenantd_store::Page;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// A queue's name.
const QUEUE_PATTERN: &str = "^[a-z0-9_.-]{1,64}$";

/// `POST /v1/jobs` body.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateJob {
    /// The queue: 1–64 of `a-z 0-9 _ . -`.
    #[schema(pattern = "^[a-z0-9_.-]{1,64}$")]
    queue: String,
    /// What the worker gets.
    #[schema(value_type = JsonValue)]
    payload: serde_json::Value,
    /// Not before this time (RFC 3339); default now.
    #[schema(format = DateTime)]
    run_at: Option<String>,
    /// Runs it may have: 1 to 100 (default 5).
    #[schema(minimum = 1, maximum = 100)]
    #[serde(default, deserialize_with = "tenantd_core::whole::opt_u32")]
    max_attempts: Option<u32>,
    /// The same key again answers the first job (`200`): 1–200 visible ASCII characters.
    #[schema(pattern = "^[!-~]{1,200}$")]
    idempotency_key: Option<String>,
    /// Higher runs first among the tenant's jobs: −1000 to 1000 (default 0).
    #[schema(minimum = -1000, maximum = 1000)]
    #[serde(default, deserialize_with = "tenantd_core::whole::opt_i32")]
    priority: Option<i32>,
}

/// A job, as its tenant sees it.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct JobView {
    /// `job_…`
    job_id: String,
    /// Its tenant.
    #[schema(value_type = String)]
    tenant_id: tenantd_core::TenantId,
    /// Its queue.
    queue: String,
    /// `scheduled`, `queued`, `running`, `succeeded`, `failed` (will retry), `dead` or
    /// `cancelled`.
    #[schema(value_type = String)]
    state: JobState,
    /// What the worker gets.
    #[schema(value_type = JsonValue)]
    payload: serde_json::Value,
    /// Higher runs first.
    priority: i32,
    /// Not before (RFC 3339): its first run, or its next retry.
    #[schema(format = DateTime)]
    run_at: String,
    /// Runs so far.
    attempt: u32,
    /// Runs it may have.
    max_attempts: u32,
    /// While running: until when its worker holds it.
    #[schema(format = DateTime)]
    lease_expires_at: Option<String>,
    /// What the worker answered, once succeeded (`null` until then).
    #[schema(value_type = JsonValue)]
    result: serde_json::Value,
    /// Its last failure.
    last_error: Option<String>,
    /// Seconds it has run, over every attempt.
    run_seconds: f64,
    /// What its worker last reported of its progress (heartbeat), if anything.
    #[schema(value_type = JsonValue)]
    progress: serde_json::Value,
    /// When it was enqueued.
    #[schema(format = DateTime)]
    created_at: String,
    /// When it finished.
    #[schema(format = DateTime)]
    finished_at: Option<String>,
}

fn ms(t: i64) -> String {
    ts::format(t.div_euclid(1000))
}

impl From<Job> for JobView {
    fn from(j: Job) -> Self {
        Self {
            job_id: j.id,
            tenant_id: j.tenant_id,
            queue: j.queue,
            state: j.state,
            payload: j.payload,
            priority: j.priority,
            run_at: ms(j.run_at),
            attempt: j.attempt,
            max_attempts: j.max_attempts,
            lease_expires_at: j.lease_expires_at.map(ms),
            result: j.result.unwrap_or_default(),
            last_error: j.last_error,
            run_seconds: j.run_ms as f64 / 1000.0,
            progress: j.progress.unwrap_or_default(),
            created_at: ms(j.created_at),
            finished_at: j.finished_at.map(ms),
        }
    }
}

/// `/v1/jobs/{job_id}`.
#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct JobPath {
    /// The job's id.
    #[param(pattern = "^job_[a-z2-7]{20}$")]
    job_id: String,
}

/// `GET /v1/jobs` query.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListJobs {
    /// Only this queue.
    #[param(pattern = "^[a-z0-9_.-]{1,64}$")]
    queue: Option<String>,
    /// Only this state.
    #[param(pattern = "^(scheduled|queued|running|succeeded|failed|dead|cancelled)$")]
    state: Option<String>,
    /// Items per page: 1 to 1000 (default 50).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// The previous page's `next_cursor`, as it was given (any other value is `400`).
    cursor: Option<String>,
}

fn now_ms() -> i64 {
    tenantd_limits::now_ms()
}

/// Refuses queue names tenantd keeps for its own work.
fn not_reserved(queue: &str) -> Result<(), Problem> {
    if queue.starts_with(SYSTEM_QUEUE_PREFIX) {
        return Err(Problem::invalid(format!(
            "queue '{queue}': names starting with '{SYSTEM_QUEUE_PREFIX}' are tenantd's own"
        )));
    }
    Ok(())
}

/// Enqueues a job for the calling tenant (`jobs:write`).
#[utoipa::path(post, path = "/v1/jobs", tag = "jobs", request_body = CreateJob, responses(
    (status = 201, description = "Enqueued", body = JobView),
    (status = 200, description = "The job the same idempotency key enqueued first", body = JobView)))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn create(
    S(state): S<State>,
    ctx: TenantContext,
    Json(b): Json<CreateJob>,
) -> ApiResult<(StatusCode, axum::Json<JobView>)> {
    ctx.require("jobs:write")?;
    if !regex_like_queue(&b.queue) {
        return Err(Problem::invalid(format!("queue must match {QUEUE_PATTERN}")).into());
    }
    not_reserved(&b.queue)?;
    let run_at = b
        .run_at
        .as_deref()
        .map(|s| ts::parse(s).map(|secs| secs.saturating_mul(1000)))
        .transpose()
        .map_err(|e| Problem::invalid(format!("run_at: {e}")))?;
    let max_attempts = b.max_attempts.unwrap_or(5);
    if !(1..=100).contains(&max_attempts) {
        return Err(Problem::invalid("max_attempts must be 1 to 100").into());
    }
    let priority = b.priority.unwrap_or(0);
    if !(-1000..=1000).contains(&priority) {
        return Err(Problem::invalid("priority must be -1000 to 1000").into());
    }
    if let Some(k) = &b.idempotency_key {
        if k.is_empty() || k.len() > 200 || !k.bytes().all(|c| c.is_ascii_graphic()) {
            return Err(Problem::invalid("idempotency_key must be 1 to 200 visible ASCII characters").into());
        }
    }
    let job = NewJob {
        tenant: *ctx.tenant_id(),
        queue: b.queue,
        payload: b.payload,
        run_at,
        max_attempts,
        idempotency_key: b.idempotency_key,
        priority,
    };
    state.keep_job_policy(ctx.tenant()).await?;
    let (stored, created) = state.jobs.enqueue(&job, now_ms()).await?;
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, axum::Json(stored.into())))
}

fn regex_like_queue(q: &str) -> bool {
    (1..=64).contains(&q.len())
        && q.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'_' | b'.' | b'-'))
}

/// The calling tenant's jobs, newest first (`jobs:read`).
#[utoipa::path(get, path = "/v1/jobs", tag = "jobs", params(ListJobs), responses((status = 200, description = "A page of jobs", body = Page<JobView>)))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn list(
    S(state): S<State>,
    ctx: TenantContext,
    Query(q): Query<ListJobs>,
) -> ApiResult<axum::Json<Page<JobView>>> {
    ctx.require("jobs:read")?;
    if q.queue.as_deref().is_some_and(|q| !regex_like_queue(q)) {
        return Err(Problem::invalid(format!("queue must match {QUEUE_PATTERN}")).into());
    }
    let page = crate::extract::page(q.limit, q.cursor.clone())?;
    let wanted = match q.state.as_deref() {
        Some(s) => Some(JobState::parse(s).ok_or_else(|| Problem::invalid(format!("state: no such state '{s}'")))?),
        None => None,
    };
    let after = state.catalog.cursors().after(&page)?;
    let jobs = state
        .jobs
        .list(
            ctx.tenant_id(),
            q.queue.as_deref(),
            wanted,
            page.limit + 1,
            after.as_deref(),
            now_ms(),
        )
        .await?;
    let items: Vec<JobView> = jobs.into_iter().map(JobView::from).collect();
    Ok(axum::Json(
        state.catalog.cursors().page(items, page.limit, |j| j.job_id.clone()),
    ))
}

/// One of the calling tenant's jobs (`jobs:read`).
#[utoipa::path(get, path = "/v1/jobs/{job_id}", tag = "jobs", params(JobPath), responses((status = 200, description = "The job", body = JobView)))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn get(S(state): S<State>, ctx: TenantContext, Path(p): Path<JobPath>) -> ApiResult<axum::Json<JobView>> {
    ctx.require("jobs:read")?;
    Ok(axum::Json(
        state.jobs.get(ctx.tenant_id(), &p.job_id, now_ms()).await?.into(),
    ))
}

/// Cancels one of the calling tenant's jobs that has not finished (`jobs:write`); a
/// running one's worker loses its lease.
#[utoipa::path(post, path = "/v1/jobs/{job_id}/cancel", tag = "jobs", params(JobPath), responses((status = 200, description = "The cancelled job", body = JobView)))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn cancel(S(state): S<State>, ctx: TenantContext, Path(p): Path<JobPath>) -> ApiResult<axum::Json<JobView>> {
    ctx.require("jobs:write")?;
    Ok(axum::Json(
        state.jobs.cancel(ctx.tenant_id(), &p.job_id, now_ms()).await?.into(),
    ))
}

/// `POST /v1/jobs/claim` body.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Claim {
    /// The queues to take jobs from: 1 to 20 names.
    #[schema(min_items = 1, max_items = 20, value_type = Vec<String>, pattern = "^[a-z0-9_.-]{1,64}$")]
    queues: Vec<String>,
    /// How many jobs at most: 1 to 100 (default 1).
    #[schema(minimum = 1, maximum = 100)]
    #[serde(default, deserialize_with = "tenantd_core::whole::opt_u32")]
    max: Option<u32>,
    /// How long the worker holds each: 1 to 3600 seconds (default 30).
    #[schema(minimum = 1, maximum = 3600)]
    #[serde(default, deserialize_with = "tenantd_core::whole::opt_u32")]
    lease_seconds: Option<u32>,
    /// When there is nothing to claim, wait up to this long for a job: 0 to 30 seconds
    /// (default 0).
    #[schema(minimum = 0, maximum = 30)]
    #[serde(default, deserialize_with = "tenantd_core::whole::opt_u32")]
    wait_seconds: Option<u32>,
}

/// A claimed job.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ClaimedView {
    /// `job_…`
    job_id: String,
    /// Its tenant.
    #[schema(value_type = String)]
    tenant_id: tenantd_core::TenantId,
    /// Its queue.
    queue: String,
    /// What to do.
    #[schema(value_type = JsonValue)]
    payload: serde_json::Value,
    /// This run's number, from 1.
    attempt: u32,
    /// Report back before this (RFC 3339), or heartbeat.
    #[schema(format = DateTime)]
    lease_expires_at: String,
}

/// `POST /v1/jobs/claim` answer.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Claimed {
    /// What was claimed; empty when there was nothing.
    jobs: Vec<ClaimedView>,
}

/// Claims jobs: the operator's worker from every tenant (or the one named by
/// `X-Tenant-ID`), a tenant's credential with `jobs:work` from its own tenant only.
/// Tenants are served round-robin by weight; a suspended tenant's jobs are held.
#[utoipa::path(post, path = "/v1/jobs/claim", tag = "jobs", request_body = Claim, responses((status = 200, description = "The claimed jobs", body = Claimed)))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn claim(S(state): S<State>, Ctx(ctx): Ctx, Json(b): Json<Claim>) -> ApiResult<axum::Json<Claimed>> {
    let principal = ctx.principal()?;
    let tenant = if principal.is_operator() {
        ctx.tenant.as_ref().map(|t| t.id)
    } else {
        let t = TenantContext::from_request_context(ctx.clone())?;
        t.require("jobs:work")?;
        Some(*t.tenant_id())
    };
    if b.queues.is_empty() || b.queues.len() > 20 || !b.queues.iter().all(|q| regex_like_queue(q)) {
        return Err(Problem::invalid(format!("queues must hold 1 to 20 names matching {QUEUE_PATTERN}")).into());
    }
    for q in &b.queues {
        not_reserved(q)?;
    }
    let in_range = |v: Option<u32>, default: u32, lo: u32, hi: u32, name: &str| -> Result<u32, Problem> {
        let v = v.unwrap_or(default);
        if (lo..=hi).contains(&v) {
            Ok(v)
        } else {
            Err(Problem::invalid(format!("{name} must be {lo} to {hi}")))
        }
    };
    let max = in_range(b.max, 1, 1, 100, "max")?;
    let lease_ms = i64::from(in_range(b.lease_seconds, 30, 1, 3600, "lease_seconds")?) * 1000;
    let wait = std::time::Duration::from_secs(u64::from(in_range(b.wait_seconds, 0, 0, 30, "wait_seconds")?));
    let claimer = principal.actor();
    let req = ClaimRequest {
        queues: &b.queues,
        tenant: tenant.as_ref(),
        claimer: &claimer,
        max,
        lease_ms,
    };
    let got = state.jobs.claim_waiting(&req, wait, now_ms).await?;
    let jobs = got
        .into_iter()
        .map(|c| {
            state.job_metrics.claimed(c.waited_ms);
            ClaimedView {
                job_id: c.job_id,
                tenant_id: c.tenant_id,
                queue: c.queue,
                payload: c.payload,
                attempt: c.attempt,
                lease_expires_at: ms(c.lease_expires_at),
            }
        })
        .collect();
    Ok(axum::Json(Claimed { jobs }))
}

/// `POST /v1/jobs/{job_id}/heartbeat` body.
#[derive(Debug, Default, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    /// The new lease, from now: 1 to 3600 seconds (default 30).
    #[schema(minimum = 1, maximum = 3600)]
    #[serde(default, deserialize_with = "tenantd_core::whole::opt_u32")]
    lease_seconds: Option<u32>,
    /// The job's progress, kept with it and shown to its tenant (any JSON, at most 4 KiB).
    #[schema(value_type = Option<JsonValue>)]
    progress: Option<serde_json::Value>,
}

/// A lease extended.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Lease {
    /// Report back before this (RFC 3339), or heartbeat again.
    #[schema(format = DateTime)]
    lease_expires_at: String,
}

/// Extends the lease of a job the caller claimed; `409` when it no longer holds it.
#[utoipa::path(post, path = "/v1/jobs/{job_id}/heartbeat", tag = "jobs", params(JobPath), request_body(content = Option<Heartbeat>), responses((status = 200, description = "The extended lease", body = Lease)))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn heartbeat(
    S(state): S<State>,
    Ctx(ctx): Ctx,
    Path(p): Path<JobPath>,
    RawBody(body): RawBody,
) -> ApiResult<axum::Json<Lease>> {
    let claimer = ctx.principal()?.actor();
    let beat = optional_json::<Heartbeat>(&body)?;
    let secs = beat.lease_seconds.unwrap_or(30);
    if !(1..=3600).contains(&secs) {
        return Err(Problem::invalid("lease_seconds must be 1 to 3600").into());
    }
    let progress = beat.progress.filter(|p| !p.is_null());
    if progress.as_ref().is_some_and(|p| p.to_string().len() > 4096) {
        return Err(Problem::invalid("progress must be at most 4 KiB of JSON").into());
    }
    let until = state
        .jobs
        .heartbeat(
            &p.job_id,
            Holder::Claimer(&claimer),
            i64::from(secs) * 1000,
            progress.as_ref(),
            now_ms(),
        )
        .await?;
    Ok(axum::Json(Lease {
        lease_expires_at: ms(until),
    }))
}

/// `POST /v1/jobs/{job_id}/complete` body.
#[derive(Debug, Default, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Complete {
    /// What the job produced, kept with it.
    #[schema(value_type = JsonValue)]
    #[serde(default)]
    result: serde_json::Value,
}

/// Completes a job the caller claimed; `409` when it no longer holds it.
#[utoipa::path(post, path = "/v1/jobs/{job_id}/complete", tag = "jobs", params(JobPath), request_body(content = Option<Complete>), responses((status = 204, description = "Completed")))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn complete(
    S(state): S<State>,
    Ctx(ctx): Ctx,
    Path(p): Path<JobPath>,
    RawBody(body): RawBody,
) -> ApiResult<StatusCode> {
    let claimer = ctx.principal()?.actor();
    let result = optional_json::<Complete>(&body)?.result;
    let result = (!result.is_null()).then_some(result);
    let ran = state
        .jobs
        .complete(&p.job_id, Holder::Claimer(&claimer), result.as_ref(), now_ms())
        .await?;
    state.job_metrics.finished("succeeded", ran);
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/jobs/{job_id}/fail` body.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Fail {
    /// What went wrong: 1 to 2000 characters.
    #[schema(min_length = 1, max_length = 2000)]
    error: String,
    /// Retry after this many seconds (0 to 86,400) instead of the backoff.
    #[schema(minimum = 0, maximum = 86400)]
    #[serde(default, deserialize_with = "tenantd_core::whole::opt_u32")]
    retry_in_seconds: Option<u32>,
}

/// What a failure did.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct FailOutcome {
    /// `failed` (it will run again) or `dead` (that was its last attempt).
    state: &'static str,
    /// When it runs again, while `failed`.
    #[schema(format = DateTime)]
    next_attempt_at: Option<String>,
}

/// Fails a job the caller claimed: retried with exponential backoff and jitter until
/// its `max_attempts`, then `dead` (a `job.dead` event); `409` when it no longer holds it.
#[utoipa::path(post, path = "/v1/jobs/{job_id}/fail", tag = "jobs", params(JobPath), request_body = Fail, responses((status = 200, description = "What the failure did", body = FailOutcome)))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn fail(
    S(state): S<State>,
    Ctx(ctx): Ctx,
    Path(p): Path<JobPath>,
    Json(b): Json<Fail>,
) -> ApiResult<axum::Json<FailOutcome>> {
    let claimer = ctx.principal()?.actor();
    if b.error.is_empty() || b.error.chars().count() > 2000 {
        return Err(Problem::invalid("error must be 1 to 2000 characters").into());
    }
    if b.retry_in_seconds.is_some_and(|s| s > 86_400) {
        return Err(Problem::invalid("retry_in_seconds must be 0 to 86400").into());
    }
    let retry = b.retry_in_seconds.map(|s| i64::from(s) * 1000);
    let (outcome, ran) = state
        .jobs
        .fail(&p.job_id, Holder::Claimer(&claimer), &b.error, retry, now_ms())
        .await?;
    state
        .job_metrics
        .finished(if outcome == Failed::Dead { "dead" } else { "failed" }, ran);
    Ok(axum::Json(match outcome {
        Failed::Retry(at) => FailOutcome {
            state: "failed",
            next_attempt_at: Some(ms(at)),
        },
        Failed::Dead => FailOutcome {
            state: "dead",
            next_attempt_at: None,
        },
    }))
}

/// This module's routes, with their OpenAPI descriptions.
pub fn router() -> OpenApiRouter<State> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(claim))
        .routes(routes!(get))
        .routes(routes!(cancel))
        .routes(routes!(heartbeat))
        .routes(routes!(complete))
        .routes(routes!(fail))
}
