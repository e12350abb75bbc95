//! What a job's holder reports (heartbeat, complete, fail), and cancelling.
use crate::model::*;
use crate::queue::Jobs;
use crate::sql::{self, ONE_LESS, RAN};
use crate::Result;
use sqlx::Row;
use tenantd_core::TenantId;
use tenantd_store::prelude::*;
use tenantd_store::{Backend, NewEvent, Work};

/// The first retry waits this long; each next one twice as long, up to [`MAX_BACKOFF_MS`].
const FIRST_BACKOFF_MS: i64 = 5_000;
/// The longest wait between two attempts.
const MAX_BACKOFF_MS: i64 = 3_600_000;

/// A held job (`$1` id, `$2` its lease or claimer) whose lease runs at `$4` (now).
fn held(by: Holder<'_>) -> String {
    format!(
        "id = $1 AND {} = $2 AND state = 'running' AND lease_expires_at > $4",
        by.column()
    )
}

impl Jobs {
    /// Extends a held job's lease to `now + lease_ms`, and keeps the worker's `progress`
    /// when given.
    pub async fn heartbeat(
        &self,
        job_id: &str,
        by: Holder<'_>,
        lease_ms: i64,
        progress: Option<&serde_json::Value>,
        now: i64,
    ) -> Result<i64> {
        let n = sqlx::query(&format!(
            "UPDATE jobs SET lease_expires_at = $3, updated_at = $4, progress = COALESCE($5, progress) WHERE {}",
            held(by)
        ))
        .bind(job_id)
        .bind(by.value())
        .bind(now + lease_ms)
        .bind(now)
        .bind(progress.map(|p| p.to_string()))
        .execute(self.catalog.pool())
        .await?
        .rows_affected();
        if n == 0 {
            return Err(JobError::NotHeld(job_id.to_string()));
        }
        Ok(now + lease_ms)
    }

    /// Completes a held job with `result`; the milliseconds this run took.
    pub async fn complete(
        &self,
        job_id: &str,
        by: Holder<'_>,
        result: Option<&serde_json::Value>,
        now: i64,
    ) -> Result<i64> {
        let done = |only: &str| {
            format!(
                "UPDATE jobs SET state = 'succeeded', result = $3, run_ms = run_ms + {RAN}, lease_token = NULL, lease_expires_at = NULL, \
                 finished_at = $4, updated_at = $4 WHERE {}{only} RETURNING tenant_id, counted, {RAN} AS ran",
                held(by)
            )
        };
        let result = result.map(|r| r.to_string());
        // On PostgreSQL a job outside any cap is completed in one statement; one under a
        // cap (or one not held) takes the transaction that also frees its place.
        if self.backend() == Backend::Postgres {
            let row = sqlx::query(&done(" AND counted = 0"))
                .bind(job_id)
                .bind(by.value())
                .bind(result.as_deref())
                .bind(now)
                .fetch_optional(self.catalog.pool())
                .await?;
            if let Some(r) = row {
                return Ok(r.try_get("ran")?);
            }
        }
        let mut w = self.catalog.begin().await?;
        let row = sqlx::query(&done(""))
            .bind(job_id)
            .bind(by.value())
            .bind(result)
            .bind(now)
            .fetch_optional(&mut **w.tx())
            .await?;
        if let Some(r) = &row {
            free_one(&mut w, &r.try_get::<String, _>("tenant_id")?, counted(r)?).await?;
        }
        w.commit().await?;
        let row = row.ok_or_else(|| JobError::NotHeld(job_id.to_string()))?;
        Ok(row.try_get("ran")?)
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
        let cols = format!("tenant_id, queue, attempt, max_attempts, counted, {RAN} AS ran");
        let r = self.take_held(&mut w, job_id, by, &cols, now).await?;
        let tenant: String = r.try_get("tenant_id")?;
        let attempt = r.try_get::<i32, _>("attempt")?.max(0) as u32;
        let ran: i64 = r.try_get("ran")?;
        let outcome = if attempt >= r.try_get::<i32, _>("max_attempts")?.max(1) as u32 {
            Failed::Dead
        } else {
            Failed::Retry(now + retry_in_ms.unwrap_or_else(|| backoff(attempt)).max(0))
        };
        let retry_at = match outcome {
            Failed::Retry(at) => Some(at),
            Failed::Dead => None,
        };
        let run = Run {
            job_id,
            tenant: &tenant,
            queue: &r.try_get::<String, _>("queue")?,
            counted: counted(&r)?,
            ran,
        };
        self.release_in(&mut w, &run, retry_at, error, now).await?;
        if outcome == Failed::Dead {
            let data = serde_json::json!({"job_id": job_id, "attempts": attempt, "error": error});
            w.append(&NewEvent::system(&TenantId::from_trusted(tenant), "job.dead", data))
                .await?;
        }
        w.commit().await?;
        Ok((outcome, ran))
    }

    /// Gives a held job back without counting its attempt: it waits `delay_ms` and is
    /// claimable again, as if it had not been claimed (a worker that cannot take it now).
    pub async fn postpone(&self, job_id: &str, by: Holder<'_>, delay_ms: i64, now: i64) -> Result<()> {
        let mut w = self.catalog.begin().await?;
        let r = self
            .take_held(&mut w, job_id, by, "tenant_id, queue, counted", now)
            .await?;
        let (tenant, queue): (String, String) = (r.try_get("tenant_id")?, r.try_get("queue")?);
        sqlx::query(
            "UPDATE jobs SET state = 'queued', run_at = $2, attempt = CASE WHEN attempt > 0 THEN attempt - 1 ELSE 0 END, \
             lease_token = NULL, lease_expires_at = NULL, counted = 0, updated_at = $3 WHERE id = $1",
        )
        .bind(job_id)
        .bind(now + delay_ms.max(0))
        .bind(now)
        .execute(&mut **w.tx())
        .await?;
        sqlx::query(sql::ENSURE_LANE)
            .bind(&tenant)
            .bind(&queue)
            .execute(&mut **w.tx())
            .await?;
        free_one(&mut w, &tenant, counted(&r)?).await?;
        w.commit().await?;
        Ok(())
    }

    /// The columns `cols` of a job `by` holds, its row locked for the rest of `w`
    /// (`NotHeld` when it holds none).
    async fn take_held(
        &self,
        w: &mut Work,
        job_id: &str,
        by: Holder<'_>,
        cols: &str,
        now: i64,
    ) -> Result<sqlx::any::AnyRow> {
        sqlx::query(&format!(
            "SELECT {cols} FROM jobs WHERE {}{}",
            held(by),
            sql::for_update(self.backend())
        ))
        .bind(job_id)
        .bind(by.value())
        .bind(0_i64)
        .bind(now)
        .fetch_optional(&mut **w.tx())
        .await?
        .ok_or_else(|| JobError::NotHeld(job_id.to_string()))
    }

    /// Ends a run that did not succeed, in `w`: `retry_at` makes the job `failed` (waiting
    /// for that time, in its lane again), `None` makes it `dead`. The run's time is added
    /// and its place under the tenant's cap freed.
    pub(crate) async fn release_in(
        &self,
        w: &mut Work,
        run: &Run<'_>,
        retry_at: Option<i64>,
        error: &str,
        now: i64,
    ) -> Result<()> {
        let (state, finished) = match retry_at {
            Some(_) => ("failed", None),
            None => ("dead", Some(now)),
        };
        sqlx::query(
            "UPDATE jobs SET state = $2, run_at = COALESCE($3, run_at), last_error = $4, run_ms = run_ms + $5, lease_token = NULL, \
             lease_expires_at = NULL, counted = 0, finished_at = $6, updated_at = $7 WHERE id = $1",
        )
        .bind(run.job_id)
        .bind(state)
        .bind(retry_at)
        .bind(error)
        .bind(run.ran)
        .bind(finished)
        .bind(now)
        .execute(&mut **w.tx())
        .await?;
        if retry_at.is_some() {
            sqlx::query(sql::ENSURE_LANE)
                .bind(run.tenant)
                .bind(run.queue)
                .execute(&mut **w.tx())
                .await?;
        }
        free_one(w, run.tenant, run.counted).await
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
        let was = sqlx::query(&format!(
            "SELECT counted FROM jobs WHERE id = $1 AND tenant_id = $2{}",
            sql::for_update(self.backend())
        ))
        .bind(job_id)
        .bind(tenant.as_str())
        .fetch_one(&mut **w.tx())
        .await?;
        sqlx::query(
            "UPDATE jobs SET state = 'cancelled', lease_token = NULL, lease_expires_at = NULL, counted = 0, finished_at = $3, updated_at = $3 \
             WHERE id = $1 AND tenant_id = $2 AND state IN ('queued', 'failed', 'running')",
        )
        .bind(job_id)
        .bind(tenant.as_str())
        .bind(now)
        .execute(&mut **w.tx())
        .await?;
        free_one(&mut w, tenant.as_str(), counted(&was)?).await?;
        let job = self.job_in(&mut w, tenant, job_id, now).await?;
        w.commit().await?;
        Ok(job)
    }

    /// Cancels every unfinished job of a tenant (it was deleted), in the caller's unit of
    /// work, but tenantd's own (its events' webhook deliveries still go); how many.
    pub async fn cancel_all_in(&self, w: &mut Work, tenant: &TenantId, now: i64) -> Result<u64> {
        let n = sqlx::query(&format!(
            "UPDATE jobs SET state = 'cancelled', lease_token = NULL, lease_expires_at = NULL, counted = 0, finished_at = $2, updated_at = $2 \
             WHERE tenant_id = $1 AND state IN ('queued', 'running', 'failed') AND NOT {}",
            sql::system("queue")
        ))
        .bind(tenant.as_str())
        .bind(now)
        .execute(&mut **w.tx())
        .await?
        .rows_affected();
        sqlx::query("UPDATE job_tenants SET running = 0 WHERE tenant_id = $1")
            .bind(tenant.as_str())
            .execute(&mut **w.tx())
            .await?;
        Ok(n)
    }

    /// [`Jobs::cancel_all_in`] in a unit of work of its own.
    pub async fn cancel_all(&self, tenant: &TenantId, now: i64) -> Result<u64> {
        let mut w = self.catalog.begin().await?;
        let n = self.cancel_all_in(&mut w, tenant, now).await?;
        w.commit().await?;
        Ok(n)
    }
}

/// A run that ends: which job, whose, and what it took.
pub(crate) struct Run<'a> {
    pub job_id: &'a str,
    pub tenant: &'a str,
    pub queue: &'a str,
    /// It counts toward its tenant's running cap.
    pub counted: bool,
    /// Milliseconds it ran.
    pub ran: i64,
}

/// Whether a job row counts toward its tenant's cap.
pub(crate) fn counted(r: &sqlx::any::AnyRow) -> Result<bool> {
    Ok(r.try_get::<i32, _>("counted")? != 0)
}

/// One running job fewer under the tenant's cap, in `w`, if the job was `counted`.
async fn free_one(w: &mut Work, tenant: &str, counted: bool) -> Result<()> {
    if counted {
        sqlx::query(&format!("UPDATE job_tenants SET {ONE_LESS} WHERE tenant_id = $1"))
            .bind(tenant)
            .execute(&mut **w.tx())
            .await?;
    }
    Ok(())
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
