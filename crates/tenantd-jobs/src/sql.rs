//! The queue's SQL pieces, each written once and used by both backends. On PostgreSQL the
//! hot paths (enqueue, claim, complete) run as one statement each (the pieces joined in a
//! `WITH`), so a job costs three round trips as in the plainest `SKIP LOCKED` queue; on
//! SQLite, embedded and serialised by its write lock, the same pieces run one after the
//! other in a transaction.
use crate::model::{Job, JobError, JobState};
use crate::Result;
use sqlx::any::AnyRow;
use sqlx::Row;
use tenantd_core::TenantId;
use tenantd_store::Backend;

/// A lane's pass advances by this over its tenant's weight per claim.
pub(crate) const STRIDE: i64 = 1_000_000;

/// A job's columns, as [`job_from`] reads them.
pub(crate) const COLS: &str = "id, tenant_id, queue, payload, state, priority, run_at, attempt, max_attempts, lease_expires_at, result, last_error, run_ms, progress, created_at, finished_at";

/// A job (`w`) waiting for a run: queued, or failed and waiting for its retry. Matches the
/// partial index `jobs_waiting`.
pub(crate) const WAITING: &str = "w.state IN ('queued', 'failed')";

/// The order a lane's jobs are claimed in (the index `jobs_waiting`).
pub(crate) const JOB_ORDER: &str = "ORDER BY w.priority DESC, w.run_at, w.id";

/// Lanes (`l`) with their tenants' policies (`t`: weight and running cap).
pub(crate) const LANES_WITH_POLICY: &str = "job_lanes l LEFT JOIN job_tenants t ON t.tenant_id = l.tenant_id";

/// Whether a queue (`q`) is tenantd's own: its jobs run whatever their tenant's status
/// and cap (a suspended tenant's `tenant.suspended` webhook is still delivered), and are
/// not metered or shown to the tenant.
pub(crate) fn system(q: &str) -> String {
    format!("{q} LIKE 'tenantd.%'")
}

/// Whether lane `l`'s tenant (policy `t`) may be served: not suspended or deleted, not at
/// its running cap; tenantd's own queues always.
pub(crate) fn lane_open() -> String {
    format!(
        "({} OR (NOT EXISTS (SELECT 1 FROM tenants x WHERE x.id = l.tenant_id AND x.status <> 'active') \
         AND (t.max_running IS NULL OR t.running < t.max_running)))",
        system("l.queue")
    )
}

/// Whether lane `l` has a job whose time has come by `$1` (now).
pub(crate) const LANE_READY: &str =
    "EXISTS (SELECT 1 FROM jobs w WHERE w.tenant_id = l.tenant_id AND w.queue = l.queue AND w.state IN ('queued', 'failed') AND w.run_at <= $1)";

/// The lanes a claim looks at first: lowest pass, then by name (a stable tie-break).
pub(crate) const LANE_ORDER: &str = "ORDER BY l.pass, l.tenant_id, l.queue";

/// A tenant row (`job_tenants`) below its running cap.
pub(crate) const BELOW_CAP: &str = "(job_tenants.max_running IS NULL OR job_tenants.running < job_tenants.max_running)";

/// One running job fewer, never below zero.
pub(crate) const ONE_LESS: &str = "running = CASE WHEN running > 0 THEN running - 1 ELSE 0 END";

/// The milliseconds a running job has run by `$4` (now).
pub(crate) const RAN: &str = "(CASE WHEN started_at < $4 THEN $4 - started_at ELSE 0 END)";

/// The tenant's row in `job_tenants`, made if missing (`$1` the tenant); taking no lock
/// when it exists.
pub(crate) const ENSURE_TENANT: &str = "INSERT INTO job_tenants (tenant_id) SELECT $1 \
     WHERE NOT EXISTS (SELECT 1 FROM job_tenants WHERE tenant_id = $1) ON CONFLICT (tenant_id) DO NOTHING";

/// A new job (`$1` tenant, `$2` queue, `$3` id, `$4` payload, `$5` priority, `$6` run_at,
/// `$7` max_attempts, `$8` idempotency key, `$9` now); nothing when the tenant already
/// has a job with its idempotency key.
pub(crate) fn insert_job() -> String {
    format!(
        "INSERT INTO jobs (id, tenant_id, queue, payload, state, priority, run_at, max_attempts, idempotency_key, created_at, updated_at) \
         VALUES ($3, $1, $2, $4, 'queued', $5, $6, $7, $8, $9, $9) \
         ON CONFLICT (tenant_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING RETURNING {COLS}"
    )
}

/// The lane of tenant `$1` and queue `$2`, made if missing at the lowest pass of the
/// queue's lanes (a tenant that was idle banks no credit); no lock is taken when it
/// exists. On PostgreSQL the upkeep may drop a lane just as a job is added to it (the
/// addition's snapshot saw the lane): the upkeep's next round brings back the lane of any
/// waiting job that has none ([`RESTORE_LANES`]).
pub(crate) const ENSURE_LANE: &str = "INSERT INTO job_lanes (tenant_id, queue, pass) \
     SELECT $1, $2, COALESCE((SELECT MIN(pass) FROM job_lanes WHERE queue = $2), 0) \
     WHERE NOT EXISTS (SELECT 1 FROM job_lanes WHERE tenant_id = $1 AND queue = $2) \
     ON CONFLICT (tenant_id, queue) DO NOTHING";

/// PostgreSQL: the lanes of waiting jobs that have none, made at their queue's lowest
/// pass. The distinct lanes of the waiting jobs are read by skipping through the index
/// `jobs_waiting` (one probe per lane, however many jobs wait).
pub(crate) const RESTORE_LANES: &str = "WITH RECURSIVE l AS ( \
       (SELECT w.tenant_id, w.queue FROM jobs w WHERE w.state IN ('queued', 'failed') ORDER BY w.tenant_id, w.queue LIMIT 1) \
       UNION ALL \
       SELECT n.tenant_id, n.queue FROM l CROSS JOIN LATERAL (SELECT w.tenant_id, w.queue FROM jobs w \
         WHERE w.state IN ('queued', 'failed') AND (w.tenant_id, w.queue) > (l.tenant_id, l.queue) \
         ORDER BY w.tenant_id, w.queue LIMIT 1) n) \
     INSERT INTO job_lanes (tenant_id, queue, pass) \
     SELECT l.tenant_id, l.queue, COALESCE((SELECT MIN(o.pass) FROM job_lanes o WHERE o.queue = l.queue), 0) FROM l \
     WHERE NOT EXISTS (SELECT 1 FROM job_lanes x WHERE x.tenant_id = l.tenant_id AND x.queue = l.queue) \
     ON CONFLICT (tenant_id, queue) DO NOTHING";

/// `FOR UPDATE SKIP LOCKED` where the backend has it (PostgreSQL); SQLite serialises
/// writers instead.
pub(crate) fn skip_locked(b: Backend) -> &'static str {
    match b {
        Backend::Postgres => " FOR UPDATE SKIP LOCKED",
        Backend::Sqlite => "",
    }
}

/// `FOR UPDATE` where the backend has it (PostgreSQL).
pub(crate) fn for_update(b: Backend) -> &'static str {
    match b {
        Backend::Postgres => " FOR UPDATE",
        Backend::Sqlite => "",
    }
}

/// The larger of two values.
pub(crate) fn greatest(b: Backend) -> &'static str {
    match b {
        Backend::Postgres => "GREATEST",
        Backend::Sqlite => "max",
    }
}

/// `$first, $first+1, …` for `n` values.
pub(crate) fn placeholders(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A stored job; a queued one whose `run_at` is after `now` shows as scheduled.
pub(crate) fn job_from(r: &AnyRow, now: i64) -> Result<Job> {
    let state: String = r.try_get("state")?;
    let run_at: i64 = r.try_get("run_at")?;
    let state = match JobState::parse(&state) {
        Some(JobState::Queued) if run_at > now => JobState::Scheduled,
        Some(s) => s,
        None => return Err(JobError::Invalid(format!("stored job state '{state}'"))),
    };
    let json = |col: &str| -> Result<Option<serde_json::Value>> {
        let s: Option<String> = r.try_get(col)?;
        Ok(s.map(|s| serde_json::from_str(&s)).transpose()?)
    };
    Ok(Job {
        id: r.try_get("id")?,
        tenant_id: TenantId::from_trusted(r.try_get("tenant_id")?),
        queue: r.try_get("queue")?,
        payload: json("payload")?.unwrap_or_default(),
        state,
        priority: r.try_get("priority")?,
        run_at,
        attempt: r.try_get::<i32, _>("attempt")?.max(0) as u32,
        max_attempts: r.try_get::<i32, _>("max_attempts")?.max(1) as u32,
        lease_expires_at: r.try_get("lease_expires_at")?,
        result: json("result")?,
        last_error: r.try_get("last_error")?,
        run_ms: r.try_get("run_ms")?,
        progress: json("progress")?,
        created_at: r.try_get("created_at")?,
        finished_at: r.try_get("finished_at")?,
    })
}
