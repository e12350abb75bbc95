//! [`Jobs`]: the queue's statements, on the catalog's database.
use crate::model::*;
use crate::Result;
use sqlx::any::AnyRow;
use sqlx::Row;
use tenantd_core::ids::new_id;
use tenantd_core::TenantId;
use tenantd_store::prelude::*;
use tenantd_store::{Backend, NewEvent, SqlCatalog, Work};

/// A tenant's pass advances by this over its weight per claim.
const STRIDE: i64 = 1_000_000;
/// The first retry waits this long; each next one twice as long, up to [`MAX_BACKOFF_MS`].
const FIRST_BACKOFF_MS: i64 = 5_000;
/// The longest wait between two attempts.
const MAX_BACKOFF_MS: i64 = 3_600_000;
/// How many tenants one claim looks at, lowest pass first, before it gives up (the others
/// are busy: their ready jobs are being claimed by other workers).
const CANDIDATES: i64 = 8;

const COLS: &str = "id, tenant_id, queue, payload, state, priority, run_at, attempt, max_attempts, lease_expires_at, result, last_error, run_ms, created_at, finished_at";

/// Whether a job row (`j`) can be claimed at `$1` (now, Unix ms).
const CLAIMABLE: &str =
    "((j.state IN ('queued', 'failed') AND j.run_at <= $1) OR (j.state = 'running' AND j.lease_expires_at <= $1))";

/// The queue on a catalog's database.
#[derive(Clone)]
pub struct Jobs {
    catalog: SqlCatalog,
}

impl Jobs {
    /// The queue in `catalog`'s database (its tables come with the catalog's migrations).
    pub fn new(catalog: SqlCatalog) -> Self {
        Self { catalog }
    }

    /// Enqueues a job; a repeat of the tenant's idempotency key answers the first job and
    /// `false`.
    pub async fn enqueue(&self, job: &NewJob, now: i64) -> Result<(Job, bool)> {
        let mut out = self.enqueue_many(std::slice::from_ref(job), now).await?;
        Ok(out.remove(0))
    }

    /// Enqueues jobs in one transaction (all or none), each as [`Jobs::enqueue`] would.
    pub async fn enqueue_many(&self, jobs: &[NewJob], now: i64) -> Result<Vec<(Job, bool)>> {
        if let Some(j) = jobs.iter().find(|j| j.max_attempts == 0) {
            return Err(JobError::Invalid(format!(
                "max_attempts must be at least 1 (queue '{}')",
                j.queue
            )));
        }
        let mut w = self.catalog.begin().await?;
        let mut out = Vec::with_capacity(jobs.len());
        let mut joined: Vec<TenantId> = Vec::new();
        for job in jobs {
            if let Some(key) = &job.idempotency_key {
                if let Some(first) = self.by_key(&mut w, &job.tenant, key, now).await? {
                    out.push((first, false));
                    continue;
                }
            }
            if !joined.contains(&job.tenant) {
                self.join_rotation(&mut w, &job.tenant, now).await?;
                joined.push(job.tenant);
            }
            let id = new_id("job");
            sqlx::query(
                "INSERT INTO jobs (id, tenant_id, queue, payload, state, priority, run_at, max_attempts, idempotency_key, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, 'queued', $5, $6, $7, $8, $9, $9)",
            )
            .bind(&id)
            .bind(job.tenant.as_str())
            .bind(&job.queue)
            .bind(job.payload.to_string())
            .bind(job.priority)
            .bind(job.run_at.unwrap_or(now))
            .bind(i64::from(job.max_attempts))
            .bind(job.idempotency_key.as_deref())
            .bind(now)
            .execute(&mut **w.tx())
            .await?;
            out.push((self.job_in(&mut w, &job.tenant, &id, now).await?, true));
        }
        w.commit().await?;
        Ok(out)
    }

    /// The tenant's job with idempotency key `key`, if any.
    async fn by_key(&self, w: &mut Work, tenant: &TenantId, key: &str, now: i64) -> Result<Option<Job>> {
        let r = sqlx::query(&format!(
            "SELECT {COLS} FROM jobs WHERE tenant_id = $1 AND idempotency_key = $2"
        ))
        .bind(tenant.as_str())
        .bind(key)
        .fetch_optional(&mut **w.tx())
        .await?;
        r.map(|r| job_from(&r, now)).transpose()
    }

    /// Puts the tenant in the rotation at the lowest pass of the tenants with ready work,
    /// unless it is already further on.
    async fn join_rotation(&self, w: &mut Work, tenant: &TenantId, now: i64) -> Result<()> {
        let floor: Option<i64> = sqlx::query_scalar(&format!(
            "SELECT MIN(t.pass) FROM job_tenants t WHERE t.tenant_id <> $2 AND EXISTS \
             (SELECT 1 FROM jobs j WHERE j.tenant_id = t.tenant_id AND {CLAIMABLE})"
        ))
        .bind(now)
        .bind(tenant.as_str())
        .fetch_one(&mut **w.tx())
        .await?;
        let greater = match self.catalog.backend() {
            Backend::Sqlite => "max",
            Backend::Postgres => "GREATEST",
        };
        sqlx::query(&format!(
            "INSERT INTO job_tenants (tenant_id, pass) VALUES ($1, $2) \
             ON CONFLICT (tenant_id) DO UPDATE SET pass = {greater}(job_tenants.pass, excluded.pass)"
        ))
        .bind(tenant.as_str())
        .bind(floor.unwrap_or(0))
        .execute(&mut **w.tx())
        .await?;
        Ok(())
    }

    /// Sets how the tenant is served: its weight, its running cap, whether it is held.
    pub async fn set_policy(&self, tenant: &TenantId, p: Policy) -> Result<()> {
        sqlx::query(
            "INSERT INTO job_tenants (tenant_id, weight, max_running, held) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (tenant_id) DO UPDATE SET weight = excluded.weight, max_running = excluded.max_running, held = excluded.held",
        )
        .bind(tenant.as_str())
        .bind(i64::from(p.weight.max(1)))
        .bind(p.max_running.map(|m| m.min(i64::MAX as u64) as i64))
        .bind(i32::from(p.held))
        .execute(self.catalog.pool())
        .await?;
        Ok(())
    }

    /// Sets the most of the tenant's jobs that may run at once (its plan's
    /// `jobs`/`concurrent` limit), keeping its weight and hold.
    pub async fn set_cap(&self, tenant: &TenantId, max_running: Option<u64>) -> Result<()> {
        sqlx::query(
            "INSERT INTO job_tenants (tenant_id, max_running) VALUES ($1, $2) \
             ON CONFLICT (tenant_id) DO UPDATE SET max_running = excluded.max_running",
        )
        .bind(tenant.as_str())
        .bind(max_running.map(|m| m.min(i64::MAX as u64) as i64))
        .execute(self.catalog.pool())
        .await?;
        Ok(())
    }

    /// The tenant's jobs, newest first, up to `limit` after job id `before` (a page's
    /// last), of `queue` and in `state` when given.
    pub async fn list(
        &self,
        tenant: &TenantId,
        queue: Option<&str>,
        state: Option<JobState>,
        limit: u32,
        before: Option<&str>,
        now: i64,
    ) -> Result<Vec<Job>> {
        let mut sql = format!("SELECT {COLS} FROM jobs WHERE tenant_id = $1");
        let mut args: Vec<String> = Vec::new();
        if let Some(q) = queue {
            args.push(q.to_string());
            sql.push_str(&format!(" AND queue = ${}", args.len() + 1));
        }
        if let Some(b) = before {
            args.push(b.to_string());
            sql.push_str(&format!(" AND id < ${}", args.len() + 1));
        }
        // Scheduled and queued are one stored state, told apart by run_at.
        match state {
            Some(JobState::Scheduled) => sql.push_str(&format!(" AND state = 'queued' AND run_at > {now}")),
            Some(JobState::Queued) => sql.push_str(&format!(" AND state = 'queued' AND run_at <= {now}")),
            Some(st) => sql.push_str(&format!(" AND state = '{}'", st.as_str())),
            None => {}
        }
        sql.push_str(&format!(" ORDER BY id DESC LIMIT {limit}"));
        let mut q = sqlx::query(&sql).bind(tenant.as_str());
        for a in &args {
            q = q.bind(a.as_str());
        }
        q.fetch_all(self.catalog.pool())
            .await?
            .iter()
            .map(|r| job_from(r, now))
            .collect()
    }

    /// Claims up to `max` jobs of `queues`, fairly across tenants (only `tenant`'s when
    /// given: a tenant's own worker), each held until `now + lease_ms`.
    pub async fn claim(
        &self,
        queues: &[String],
        tenant: Option<&TenantId>,
        claimer: &str,
        max: u32,
        lease_ms: i64,
        now: i64,
    ) -> Result<Vec<Claimed>> {
        let mut out = Vec::new();
        // One job per transaction: a claim locks one job and one tenant's rotation row,
        // so claimers on other nodes never wait on each other in a cycle.
        while out.len() < max as usize {
            match self.claim_one(queues, tenant, claimer, lease_ms, now).await? {
                Some(c) => out.push(c),
                None => break,
            }
        }
        Ok(out)
    }

    async fn claim_one(
        &self,
        queues: &[String],
        tenant: Option<&TenantId>,
        claimer: &str,
        lease_ms: i64,
        now: i64,
    ) -> Result<Option<Claimed>> {
        if queues.is_empty() {
            return Ok(None);
        }
        // $1 now, $2.. the queues, then the tenant.
        let qs: Vec<String> = (0..queues.len()).map(|i| format!("${}", i + 2)).collect();
        let in_queues = format!("j.queue IN ({})", qs.join(", "));
        let only = tenant.map_or(String::new(), |_| format!(" AND t.tenant_id = ${}", queues.len() + 2));
        let sql = format!(
            "SELECT t.tenant_id, t.weight FROM job_tenants t WHERE t.held = 0{only} \
             AND NOT EXISTS (SELECT 1 FROM tenants x WHERE x.id = t.tenant_id AND x.status <> 'active') \
             AND EXISTS (SELECT 1 FROM jobs j WHERE j.tenant_id = t.tenant_id AND {in_queues} AND {CLAIMABLE}) \
             AND (t.max_running IS NULL OR t.max_running > (SELECT COUNT(*) FROM jobs r \
                  WHERE r.tenant_id = t.tenant_id AND r.state = 'running' AND r.lease_expires_at > $1)) \
             ORDER BY t.pass, t.tenant_id LIMIT {CANDIDATES}"
        );
        let mut w = self.catalog.begin().await?;
        let mut q = sqlx::query(&sql).bind(now);
        for queue in queues {
            q = q.bind(queue.as_str());
        }
        if let Some(t) = tenant {
            q = q.bind(t.as_str());
        }
        let candidates = q.fetch_all(&mut **w.tx()).await?;
        let lock = match self.catalog.backend() {
            Backend::Postgres => " FOR UPDATE OF j SKIP LOCKED",
            Backend::Sqlite => "",
        };
        for c in candidates {
            let tid: String = c.try_get("tenant_id")?;
            let weight: i64 = c.try_get("weight")?;
            let pick = format!(
                "SELECT j.id FROM jobs j WHERE j.tenant_id = ${} AND {in_queues} AND {CLAIMABLE} \
                 ORDER BY j.priority DESC, j.run_at, j.id LIMIT 1{lock}",
                queues.len() + 2
            );
            let mut q = sqlx::query_scalar::<_, String>(&pick).bind(now);
            for queue in queues {
                q = q.bind(queue.as_str());
            }
            let Some(id) = q.bind(&tid).fetch_optional(&mut **w.tx()).await? else {
                // Its ready jobs are being claimed by other workers right now.
                continue;
            };
            let lease = new_id("lease");
            let expires = now + lease_ms;
            sqlx::query(
                "UPDATE jobs SET state = 'running', attempt = attempt + 1, lease_expires_at = $2, lease_token = $3, \
                 claimed_by = $5, started_at = $4, updated_at = $4 WHERE id = $1",
            )
            .bind(&id)
            .bind(expires)
            .bind(&lease)
            .bind(now)
            .bind(claimer)
            .execute(&mut **w.tx())
            .await?;
            sqlx::query("UPDATE job_tenants SET pass = pass + $2 WHERE tenant_id = $1")
                .bind(&tid)
                .bind(STRIDE / weight.max(1))
                .execute(&mut **w.tx())
                .await?;
            let job = self
                .job_in(&mut w, &TenantId::from_trusted(tid.clone()), &id, now)
                .await?;
            w.commit().await?;
            return Ok(Some(Claimed {
                job_id: job.id,
                tenant_id: job.tenant_id,
                queue: job.queue,
                payload: job.payload,
                attempt: job.attempt,
                lease_expires_at: expires,
                lease,
            }));
        }
        Ok(None)
    }

    /// Extends a held job's lease to `now + lease_ms`.
    pub async fn heartbeat(&self, job_id: &str, by: Holder<'_>, lease_ms: i64, now: i64) -> Result<i64> {
        let n = sqlx::query(
            &format!("UPDATE jobs SET lease_expires_at = $3, updated_at = $4 WHERE id = $1 AND {} = $2 AND state = 'running' AND lease_expires_at > $4", by.column()),
        )
        .bind(job_id)
        .bind(by.value())
        .bind(now + lease_ms)
        .bind(now)
        .execute(self.catalog.pool())
        .await?
        .rows_affected();
        if n == 0 {
            return Err(JobError::NotHeld(job_id.to_string()));
        }
        Ok(now + lease_ms)
    }

    /// Takes the job out of `lease`'s hands in `w`: its run time, or `NotHeld`.
    async fn release(&self, w: &mut Work, job_id: &str, by: Holder<'_>, now: i64) -> Result<(TenantId, i64, u32, u32)> {
        let r = sqlx::query(
            &format!("SELECT tenant_id, started_at, attempt, max_attempts FROM jobs WHERE id = $1 AND {} = $2 AND state = 'running' AND lease_expires_at > $3", by.column()),
        )
        .bind(job_id)
        .bind(by.value())
        .bind(now)
        .fetch_optional(&mut **w.tx())
        .await?
        .ok_or_else(|| JobError::NotHeld(job_id.to_string()))?;
        let started: Option<i64> = r.try_get("started_at")?;
        Ok((
            TenantId::from_trusted(r.try_get("tenant_id")?),
            (now - started.unwrap_or(now)).max(0),
            r.try_get::<i32, _>("attempt")?.max(0) as u32,
            r.try_get::<i32, _>("max_attempts")?.max(1) as u32,
        ))
    }

    /// Completes a held job with `result`; the milliseconds this run took.
    pub async fn complete(
        &self,
        job_id: &str,
        by: Holder<'_>,
        result: Option<&serde_json::Value>,
        now: i64,
    ) -> Result<i64> {
        let mut w = self.catalog.begin().await?;
        let (_, ran, _, _) = self.release(&mut w, job_id, by, now).await?;
        sqlx::query(
            "UPDATE jobs SET state = 'succeeded', result = $2, run_ms = run_ms + $3, lease_token = NULL, lease_expires_at = NULL, \
             finished_at = $4, updated_at = $4 WHERE id = $1",
        )
        .bind(job_id)
        .bind(result.map(|r| r.to_string()))
        .bind(ran)
        .bind(now)
        .execute(&mut **w.tx())
        .await?;
        w.commit().await?;
        Ok(ran)
    }

    /// Fails a held job: it runs again after `retry_in_ms` (or the backoff of its attempt,
    /// with ±20% jitter), or, on its last attempt, is dead, with its `job.dead` event.
    pub async fn fail(
        &self,
        job_id: &str,
        by: Holder<'_>,
        error: &str,
        retry_in_ms: Option<i64>,
        now: i64,
    ) -> Result<(Failed, i64)> {
        let mut w = self.catalog.begin().await?;
        let (tenant, ran, attempt, max) = self.release(&mut w, job_id, by, now).await?;
        let outcome = if attempt >= max {
            Failed::Dead
        } else {
            Failed::Retry(now + retry_in_ms.unwrap_or_else(|| backoff(attempt)).max(0))
        };
        let (state, run_at, finished) = match outcome {
            Failed::Dead => ("dead", None, Some(now)),
            Failed::Retry(at) => ("failed", Some(at), None),
        };
        sqlx::query(
            "UPDATE jobs SET state = $2, run_at = COALESCE($3, run_at), last_error = $4, run_ms = run_ms + $5, lease_token = NULL, \
             lease_expires_at = NULL, finished_at = $6, updated_at = $7 WHERE id = $1",
        )
        .bind(job_id)
        .bind(state)
        .bind(run_at)
        .bind(error)
        .bind(ran)
        .bind(finished)
        .bind(now)
        .execute(&mut **w.tx())
        .await?;
        if outcome == Failed::Dead {
            let data = serde_json::json!({"job_id": job_id, "attempts": attempt, "error": error});
            w.append(&NewEvent::system(&tenant, "job.dead", data)).await?;
        }
        w.commit().await?;
        Ok((outcome, ran))
    }

    /// Cancels a job that has not finished; a running one's worker loses its lease.
    pub async fn cancel(&self, tenant: &TenantId, job_id: &str, now: i64) -> Result<Job> {
        let mut w = self.catalog.begin().await?;
        let job = self.job_in(&mut w, tenant, job_id, now).await?;
        if job.state.is_final() {
            return Err(JobError::Conflict(format!(
                "the job is {}; only an unfinished job can be cancelled",
                job.state.as_str()
            )));
        }
        sqlx::query(
            "UPDATE jobs SET state = 'cancelled', lease_token = NULL, lease_expires_at = NULL, finished_at = $3, updated_at = $3 \
             WHERE id = $1 AND tenant_id = $2",
        )
        .bind(job_id)
        .bind(tenant.as_str())
        .bind(now)
        .execute(&mut **w.tx())
        .await?;
        let job = self.job_in(&mut w, tenant, job_id, now).await?;
        w.commit().await?;
        Ok(job)
    }

    /// Cancels every unfinished job of a tenant (it was deleted); how many.
    pub async fn cancel_all(&self, tenant: &TenantId, now: i64) -> Result<u64> {
        Ok(sqlx::query(
            "UPDATE jobs SET state = 'cancelled', lease_token = NULL, lease_expires_at = NULL, finished_at = $2, updated_at = $2 \
             WHERE tenant_id = $1 AND state IN ('queued', 'running', 'failed')",
        )
        .bind(tenant.as_str())
        .bind(now)
        .execute(self.catalog.pool())
        .await?
        .rows_affected())
    }

    /// One of the tenant's jobs, as of `now`.
    pub async fn get(&self, tenant: &TenantId, job_id: &str, now: i64) -> Result<Job> {
        let r = sqlx::query(&format!("SELECT {COLS} FROM jobs WHERE id = $1 AND tenant_id = $2"))
            .bind(job_id)
            .bind(tenant.as_str())
            .fetch_optional(self.catalog.pool())
            .await?
            .ok_or(JobError::NotFound)?;
        job_from(&r, now)
    }

    async fn job_in(&self, w: &mut Work, tenant: &TenantId, job_id: &str, now: i64) -> Result<Job> {
        let r = sqlx::query(&format!("SELECT {COLS} FROM jobs WHERE id = $1 AND tenant_id = $2"))
            .bind(job_id)
            .bind(tenant.as_str())
            .fetch_optional(&mut **w.tx())
            .await?
            .ok_or(JobError::NotFound)?;
        job_from(&r, now)
    }
}

/// The wait before retrying after failed attempt `attempt` (from 1): 5 s, doubling, up to
/// an hour, ±20%.
pub(crate) fn backoff(attempt: u32) -> i64 {
    let base = FIRST_BACKOFF_MS
        .saturating_mul(1_i64 << attempt.saturating_sub(1).min(20))
        .min(MAX_BACKOFF_MS);
    let jitter = rand::random::<f64>() * 0.4 - 0.2;
    base + (base as f64 * jitter) as i64
}

/// A stored job; a queued one whose `run_at` is after `now` shows as scheduled.
fn job_from(r: &AnyRow, now: i64) -> Result<Job> {
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
        created_at: r.try_get("created_at")?,
        finished_at: r.try_get("finished_at")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_five_seconds_to_an_hour_with_jitter() {
        for (attempt, base) in [
            (1, 5_000),
            (2, 10_000),
            (3, 20_000),
            (10, 2_560_000),
            (11, 3_600_000),
            (40, 3_600_000),
        ] {
            for _ in 0..50 {
                let b = backoff(attempt);
                assert!(b >= base * 8 / 10 && b <= base * 12 / 10, "attempt {attempt}: {b}");
            }
        }
    }
}
