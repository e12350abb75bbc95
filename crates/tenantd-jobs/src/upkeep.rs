//! The queue's upkeep, run every second or so by every node (each step is safe to run on
//! several at once): jobs whose lease ran out go back to their lanes (or are dead), run
//! time is metered as `job_seconds`, idle lanes are dropped, and finished jobs are deleted
//! after [`KEEP_FINISHED_MS`].
use crate::finish::{counted, Run};
use crate::queue::{Jobs, PLATFORM};
use crate::sql::{self, WAITING};
use crate::Result;
use sqlx::Row;
use std::collections::BTreeMap;
use tenantd_core::usage::CounterRow;
use tenantd_core::{TenantId, Window};
use tenantd_store::prelude::*;
use tenantd_store::{Backend, NewEvent};

/// Finished jobs are kept this long (7 days), then deleted with their payloads.
pub const KEEP_FINISHED_MS: i64 = 7 * 86_400_000;
/// The resource a tenant's job run time is metered as.
pub const JOB_SECONDS: &str = "job_seconds";
/// Rows one step of the upkeep handles per transaction.
const BATCH: i64 = 500;

/// What one round of upkeep did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Upkept {
    /// Jobs whose lease ran out: back in their lanes, or dead.
    pub reaped: u64,
    /// Whole job seconds added to tenants' usage.
    pub metered_seconds: u64,
    /// Lanes dropped for having no waiting job.
    pub lanes_dropped: u64,
    /// Lanes brought back for waiting jobs that had none.
    pub lanes_restored: u64,
    /// Finished jobs deleted after their keeping time.
    pub deleted: u64,
}

impl Jobs {
    /// One round of upkeep at `now` (Unix ms).
    pub async fn upkeep(&self, now: i64) -> Result<Upkept> {
        Ok(Upkept {
            reaped: self.reap(now).await?,
            metered_seconds: self.meter(now).await?,
            lanes_dropped: self.drop_idle_lanes().await?,
            lanes_restored: self.restore_lanes().await?,
            deleted: self.delete_finished(now).await?,
        })
    }

    /// Jobs whose lease ran out by `now`: run again at once (the attempt counts), or dead
    /// when it was their last (with a `job.dead` event); their run time counts up to the
    /// lease's end. How many.
    pub async fn reap(&self, now: i64) -> Result<u64> {
        let mut total = 0;
        loop {
            let mut w = self.catalog.begin().await?;
            let rows = sqlx::query(&format!(
                "SELECT id, tenant_id, queue, attempt, max_attempts, counted, \
                 CASE WHEN started_at < lease_expires_at THEN lease_expires_at - started_at ELSE 0 END AS ran \
                 FROM jobs WHERE state = 'running' AND lease_expires_at <= $1 ORDER BY lease_expires_at LIMIT {BATCH}{}",
                sql::skip_locked(self.backend())
            ))
            .bind(now)
            .fetch_all(&mut **w.tx())
            .await?;
            for r in &rows {
                let (id, tenant, queue): (String, String, String) =
                    (r.try_get("id")?, r.try_get("tenant_id")?, r.try_get("queue")?);
                let attempt = r.try_get::<i32, _>("attempt")?;
                let last = attempt >= r.try_get::<i32, _>("max_attempts")?;
                let error = "the lease ran out before the worker reported";
                let run = Run {
                    job_id: &id,
                    tenant: &tenant,
                    queue: &queue,
                    counted: counted(r)?,
                    ran: r.try_get("ran")?,
                };
                self.release_in(&mut w, &run, (!last).then_some(now), error, now)
                    .await?;
                if last {
                    let data = serde_json::json!({"job_id": id, "attempts": attempt, "error": error});
                    w.append(&NewEvent::system(&TenantId::from_trusted(tenant), "job.dead", data))
                        .await?;
                }
            }
            w.commit().await?;
            total += rows.len() as u64;
            if (rows.len() as i64) < BATCH {
                return Ok(total);
            }
        }
    }

    /// Adds run time not yet metered to each tenant's `job_seconds` usage (its day and
    /// month counters), in whole seconds; the remainder waits for the next run time. The
    /// jobs, the counters and the remainders change in one transaction, so every
    /// millisecond counts exactly once. tenantd's own jobs are not metered. Whole seconds
    /// added.
    pub async fn meter(&self, now: i64) -> Result<u64> {
        let mut total = 0;
        loop {
            let mut w = self.catalog.begin().await?;
            let rows = sqlx::query(&format!(
                "SELECT id, tenant_id, queue, run_ms - metered_ms AS delta FROM jobs WHERE run_ms > metered_ms LIMIT {BATCH}{}",
                sql::skip_locked(self.backend())
            ))
            .fetch_all(&mut **w.tx())
            .await?;
            let mut per_tenant: BTreeMap<String, i64> = BTreeMap::new();
            for r in &rows {
                let id: String = r.try_get("id")?;
                sqlx::query("UPDATE jobs SET metered_ms = run_ms WHERE id = $1")
                    .bind(&id)
                    .execute(&mut **w.tx())
                    .await?;
                // tenantd's own work (webhook deliveries of a tenant's events) is not billed.
                if !r.try_get::<String, _>("queue")?.starts_with(crate::SYSTEM_QUEUE_PREFIX) {
                    *per_tenant.entry(r.try_get("tenant_id")?).or_default() += r.try_get::<i64, _>("delta")?;
                }
            }
            let mut counters = Vec::new();
            let now_s = now.div_euclid(1000);
            for (tenant, ms) in per_tenant.into_iter().filter(|(t, _)| t != PLATFORM) {
                let unbilled: Option<i64> = sqlx::query_scalar(
                    "UPDATE job_tenants SET unbilled_ms = unbilled_ms + $2 WHERE tenant_id = $1 RETURNING unbilled_ms",
                )
                .bind(&tenant)
                .bind(ms)
                .fetch_optional(&mut **w.tx())
                .await?;
                let unbilled = unbilled.unwrap_or(ms);
                let seconds = unbilled.div_euclid(1000);
                if seconds == 0 {
                    continue;
                }
                sqlx::query("UPDATE job_tenants SET unbilled_ms = unbilled_ms - $2 WHERE tenant_id = $1")
                    .bind(&tenant)
                    .bind(seconds * 1000)
                    .execute(&mut **w.tx())
                    .await?;
                total += seconds as u64;
                for window in [Window::Day, Window::Month] {
                    counters.push(CounterRow {
                        tenant: TenantId::from_trusted_str(&tenant),
                        scope: None,
                        resource: JOB_SECONDS.to_string(),
                        window,
                        period: window.period(now_s).map_or(0, |(start, _)| start),
                        value: seconds as u64,
                    });
                }
            }
            self.catalog.add_counters_in(&mut w, &counters).await?;
            w.commit().await?;
            if (rows.len() as i64) < BATCH {
                return Ok(total);
            }
        }
    }

    /// Drops lanes with no waiting job (their tenants come back at the lowest pass when
    /// they enqueue again). On PostgreSQL each lane is locked first and looked at again in
    /// a new statement, which sees the jobs of enqueues that held it meanwhile, so no job is
    /// left in a dropped lane.
    pub async fn drop_idle_lanes(&self) -> Result<u64> {
        let idle = format!(
            "NOT EXISTS (SELECT 1 FROM jobs w WHERE w.tenant_id = l.tenant_id AND w.queue = l.queue AND {WAITING})"
        );
        let mut w = self.catalog.begin().await?;
        let lanes = sqlx::query(&format!(
            "SELECT l.tenant_id, l.queue FROM job_lanes l WHERE {idle} LIMIT {BATCH}{}",
            sql::skip_locked(self.backend())
        ))
        .fetch_all(&mut **w.tx())
        .await?;
        let mut dropped = 0;
        for r in &lanes {
            dropped += sqlx::query(&format!(
                "DELETE FROM job_lanes WHERE tenant_id = $1 AND queue = $2 AND NOT EXISTS \
                 (SELECT 1 FROM jobs w WHERE w.tenant_id = $1 AND w.queue = $2 AND {WAITING})"
            ))
            .bind(r.try_get::<String, _>("tenant_id")?)
            .bind(r.try_get::<String, _>("queue")?)
            .execute(&mut **w.tx())
            .await?
            .rows_affected();
        }
        w.commit().await?;
        Ok(dropped)
    }

    /// Brings back the lane of every waiting job that has none (an enqueue that raced the
    /// upkeep's drop of its lane, on PostgreSQL). How many.
    pub async fn restore_lanes(&self) -> Result<u64> {
        let sql = match self.backend() {
            Backend::Postgres => sql::RESTORE_LANES.to_string(),
            // One writer at a time, so no lane is dropped under an enqueue; the repair is
            // kept alike for a catalog edited by hand.
            Backend::Sqlite => format!(
                "INSERT INTO job_lanes (tenant_id, queue, pass) SELECT DISTINCT w.tenant_id, w.queue, \
                 COALESCE((SELECT MIN(o.pass) FROM job_lanes o WHERE o.queue = w.queue), 0) FROM jobs w \
                 WHERE {WAITING} AND NOT EXISTS (SELECT 1 FROM job_lanes x WHERE x.tenant_id = w.tenant_id AND x.queue = w.queue) \
                 ON CONFLICT (tenant_id, queue) DO NOTHING"
            ),
        };
        Ok(sqlx::query(&sql).execute(self.catalog.pool()).await?.rows_affected())
    }

    /// Deletes jobs finished before `now − KEEP_FINISHED_MS` whose run time is metered.
    pub async fn delete_finished(&self, now: i64) -> Result<u64> {
        let sql = format!(
            "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs WHERE finished_at < $1 AND run_ms = metered_ms LIMIT {BATCH})"
        );
        Ok(sqlx::query(&sql)
            .bind(now - KEEP_FINISHED_MS)
            .execute(self.catalog.pool())
            .await?
            .rows_affected())
    }
}
