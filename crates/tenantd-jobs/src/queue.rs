//! [`Jobs`]: the queue on the catalog's database; enqueueing, reading, and how tenants are
//! served. Claims are in `claim.rs`, a holder's reports in `finish.rs`, the periodic upkeep
//! in `upkeep.rs`.
use crate::model::*;
use crate::sql::{self, COLS};
use crate::wake::Wake;
use crate::Result;
use sqlx::Row;
use std::sync::Arc;
use tenantd_core::ids::new_id;
use tenantd_core::TenantId;
use tenantd_store::prelude::*;
use tenantd_store::{Backend, SqlCatalog, Work};

/// The tenant id of tenantd's own background work (purges, tier moves): no tenant can
/// have it (`_` is not allowed in tenant ids), so its jobs are never a tenant's.
pub const PLATFORM: &str = "_platform";

/// Queues whose names start with this are tenantd's own; tenants and workers over HTTP
/// cannot use them.
pub const SYSTEM_QUEUE_PREFIX: &str = "tenantd.";

/// The queue in a catalog's database (its tables come with the catalog's migrations).
#[derive(Clone)]
pub struct Jobs {
    pub(crate) catalog: SqlCatalog,
    pub(crate) wake: Arc<Wake>,
    /// When expired leases were last looked for (Unix ms of the callers' clock).
    pub(crate) reaped_at: Arc<std::sync::atomic::AtomicI64>,
}

impl Jobs {
    /// The queue in `catalog`'s database.
    pub fn new(catalog: SqlCatalog) -> Self {
        Self {
            catalog,
            wake: Arc::new(Wake::default()),
            reaped_at: Arc::new(std::sync::atomic::AtomicI64::new(i64::MIN)),
        }
    }

    /// The tenant tenantd's own jobs run under ([`PLATFORM`]).
    pub fn platform() -> TenantId {
        TenantId::from_trusted_str(PLATFORM)
    }

    /// The database the queue is in.
    pub fn backend(&self) -> Backend {
        self.catalog.backend()
    }

    /// Enqueues a job; a repeat of the tenant's idempotency key answers the first job and
    /// `false`.
    pub async fn enqueue(&self, job: &NewJob, now: i64) -> Result<(Job, bool)> {
        check(std::slice::from_ref(job))?;
        let out = match self.backend() {
            // One statement: the lane, the tenant's row and the job.
            Backend::Postgres => {
                let cte = format!(
                    "WITH lane AS ({} RETURNING 1), tenant AS ({} RETURNING 1) {}",
                    sql::ENSURE_LANE,
                    sql::ENSURE_TENANT,
                    sql::insert_job()
                );
                let id = new_id("job");
                let row = bind_job(sqlx::query(&cte), job, &id, now)
                    .fetch_optional(self.catalog.pool())
                    .await?;
                match row {
                    Some(r) => (sql::job_from(&r, now)?, true),
                    None => {
                        let key = job.idempotency_key.as_deref().unwrap_or_default();
                        (self.by_key(&job.tenant, key, now).await?, false)
                    }
                }
            }
            Backend::Sqlite => {
                let mut w = self.catalog.begin().await?;
                let out = self.enqueue_in(&mut w, job, now).await?;
                w.commit().await?;
                out
            }
        };
        self.wake.enqueued();
        Ok(out)
    }

    /// Enqueues jobs in one transaction (all or none), each as [`Jobs::enqueue`] would.
    pub async fn enqueue_many(&self, jobs: &[NewJob], now: i64) -> Result<Vec<(Job, bool)>> {
        check(jobs)?;
        let mut w = self.catalog.begin().await?;
        let mut out = Vec::with_capacity(jobs.len());
        for job in jobs {
            out.push(self.enqueue_in(&mut w, job, now).await?);
        }
        w.commit().await?;
        self.wake.enqueued();
        Ok(out)
    }

    /// Enqueues a job in the caller's unit of work, to commit with its other changes (a
    /// tenant's purge with its deletion). Call [`Jobs::enqueued`] after the commit to wake
    /// waiting workers at once.
    pub async fn enqueue_in(&self, w: &mut Work, job: &NewJob, now: i64) -> Result<(Job, bool)> {
        check(std::slice::from_ref(job))?;
        sqlx::query(sql::ENSURE_LANE)
            .bind(job.tenant.as_str())
            .bind(&job.queue)
            .execute(&mut **w.tx())
            .await?;
        sqlx::query(sql::ENSURE_TENANT)
            .bind(job.tenant.as_str())
            .execute(&mut **w.tx())
            .await?;
        let id = new_id("job");
        let insert = sql::insert_job();
        match bind_job(sqlx::query(&insert), job, &id, now)
            .fetch_optional(&mut **w.tx())
            .await?
        {
            Some(r) => Ok((sql::job_from(&r, now)?, true)),
            None => {
                let key = job.idempotency_key.as_deref().unwrap_or_default();
                let r = sqlx::query(&format!(
                    "SELECT {COLS} FROM jobs WHERE tenant_id = $1 AND idempotency_key = $2"
                ))
                .bind(job.tenant.as_str())
                .bind(key)
                .fetch_one(&mut **w.tx())
                .await?;
                Ok((sql::job_from(&r, now)?, false))
            }
        }
    }

    /// How many enqueue notifications this queue heard from the channel (its own nodes'
    /// included), since [`Jobs::listen`].
    pub fn heard(&self) -> u64 {
        self.wake.heard()
    }

    /// On PostgreSQL, starts announcing this node's enqueues to the other nodes and
    /// listening for theirs (`LISTEN`/`NOTIFY` on [`crate::CHANNEL`]), so a worker waiting
    /// on any node wakes at once. Both tasks end when the last clone of this queue is
    /// dropped. Nothing to do on SQLite (one node).
    pub async fn listen(&self) -> Result<()> {
        if self.backend() != Backend::Postgres {
            return Ok(());
        }
        Wake::start(&self.wake, self.catalog.url(), self.catalog.pool().clone()).await
    }

    /// Wakes the workers waiting for jobs (after jobs were enqueued in a caller's unit of
    /// work).
    pub fn enqueued(&self) {
        self.wake.enqueued();
    }

    async fn by_key(&self, tenant: &TenantId, key: &str, now: i64) -> Result<Job> {
        let r = sqlx::query(&format!(
            "SELECT {COLS} FROM jobs WHERE tenant_id = $1 AND idempotency_key = $2"
        ))
        .bind(tenant.as_str())
        .bind(key)
        .fetch_one(self.catalog.pool())
        .await?;
        sql::job_from(&r, now)
    }

    /// Sets how the tenant is served: its weight and its running cap (from its plan).
    pub async fn set_policy(&self, tenant: &TenantId, p: Policy) -> Result<()> {
        sqlx::query(
            "INSERT INTO job_tenants (tenant_id, weight, max_running) VALUES ($1, $2, $3) \
             ON CONFLICT (tenant_id) DO UPDATE SET weight = excluded.weight, max_running = excluded.max_running",
        )
        .bind(tenant.as_str())
        .bind(i64::from(p.weight.max(1)))
        .bind(p.max_running.map(|m| m.min(i64::MAX as u64) as i64))
        .execute(self.catalog.pool())
        .await?;
        Ok(())
    }

    /// Every tenant the queue has a policy for (each that ever enqueued).
    pub async fn tenants(&self) -> Result<Vec<TenantId>> {
        let ids: Vec<String> = sqlx::query_scalar("SELECT tenant_id FROM job_tenants ORDER BY tenant_id")
            .fetch_all(self.catalog.pool())
            .await?;
        Ok(ids.into_iter().map(TenantId::from_trusted).collect())
    }

    /// Brings a tenant's lanes up to the lowest pass of the other tenants' lanes of the same
    /// queues, in `w`: a tenant whose jobs were held (suspended) banks no credit meanwhile,
    /// so on resuming it takes its turn with the others instead of ahead of them.
    pub async fn rejoin_in(&self, w: &mut Work, tenant: &TenantId) -> Result<()> {
        let greatest = sql::greatest(self.backend());
        sqlx::query(&format!(
            "UPDATE job_lanes SET pass = {greatest}(pass, COALESCE((SELECT MIN(o.pass) FROM job_lanes o \
             WHERE o.queue = job_lanes.queue AND o.tenant_id <> $1), 0)) WHERE tenant_id = $1"
        ))
        .bind(tenant.as_str())
        .execute(&mut **w.tx())
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
        let mut sql = format!("SELECT {COLS} FROM jobs WHERE tenant_id = $1{}", own_only(tenant));
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
            .map(|r| sql::job_from(r, now))
            .collect()
    }

    /// One of the tenant's jobs, as of `now`.
    pub async fn get(&self, tenant: &TenantId, job_id: &str, now: i64) -> Result<Job> {
        let r = sqlx::query(&format!(
            "SELECT {COLS} FROM jobs WHERE id = $1 AND tenant_id = $2{}",
            own_only(tenant)
        ))
        .bind(job_id)
        .bind(tenant.as_str())
        .fetch_optional(self.catalog.pool())
        .await?
        .ok_or(JobError::NotFound)?;
        sql::job_from(&r, now)
    }

    /// Whether a job of `tenant` on `queue` other than `except`, whose idempotency key
    /// starts with `key_prefix`, is held by a worker whose lease runs at `now`: tenantd's
    /// own work uses it to tell a live run of the same task from an interrupted one.
    pub async fn running_with_key(
        &self,
        tenant: &TenantId,
        queue: &str,
        key_prefix: &str,
        except: &str,
        now: i64,
    ) -> Result<bool> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM jobs WHERE tenant_id = $1 AND queue = $2 AND state = 'running' AND lease_expires_at > $3 \
             AND id <> $4 AND substr(idempotency_key, 1, $5) = $6",
        )
        .bind(tenant.as_str())
        .bind(queue)
        .bind(now)
        .bind(except)
        .bind(key_prefix.len() as i32)
        .bind(key_prefix)
        .fetch_one(self.catalog.pool())
        .await?;
        Ok(n > 0)
    }

    /// Ends the leases of every job `claimer` holds, as if they had run out at `now`, and
    /// reaps them: on a single node (SQLite) the jobs a crashed process held are claimable
    /// again at the next start instead of after their leases. How many.
    pub async fn release_claims_of(&self, claimer: &str, now: i64) -> Result<u64> {
        sqlx::query("UPDATE jobs SET lease_expires_at = $2 WHERE state = 'running' AND claimed_by = $1 AND lease_expires_at > $2")
            .bind(claimer)
            .bind(now)
            .execute(self.catalog.pool())
            .await?;
        self.reap(now).await
    }

    /// How many jobs each queue has in each unfinished state (`queued` counts the
    /// scheduled too), for metrics.
    pub async fn depth(&self) -> Result<Vec<(String, JobState, u64)>> {
        let rows = sqlx::query(
            "SELECT queue, state, COUNT(*) AS n FROM jobs WHERE state IN ('queued', 'failed', 'running') GROUP BY queue, state",
        )
        .fetch_all(self.catalog.pool())
        .await?;
        rows.iter()
            .map(|r| {
                let state: String = r.try_get("state")?;
                Ok((
                    r.try_get("queue")?,
                    JobState::parse(&state).unwrap_or(JobState::Queued),
                    r.try_get::<i64, _>("n")?.max(0) as u64,
                ))
            })
            .collect()
    }

    pub(crate) async fn job_in(&self, w: &mut Work, tenant: &TenantId, job_id: &str, now: i64) -> Result<Job> {
        let r = sqlx::query(&format!(
            "SELECT {COLS} FROM jobs WHERE id = $1 AND tenant_id = $2{}",
            own_only(tenant)
        ))
        .bind(job_id)
        .bind(tenant.as_str())
        .fetch_optional(&mut **w.tx())
        .await?
        .ok_or(JobError::NotFound)?;
        sql::job_from(&r, now)
    }
}

/// A tenant sees its own jobs, not tenantd's work for it (the platform sees its own).
fn own_only(tenant: &TenantId) -> String {
    if tenant.as_str() == PLATFORM {
        String::new()
    } else {
        format!(" AND NOT {}", sql::system("queue"))
    }
}

/// Refuses jobs the queue cannot take.
fn check(jobs: &[NewJob]) -> Result<()> {
    match jobs.iter().find(|j| j.max_attempts == 0) {
        Some(j) => Err(JobError::Invalid(format!(
            "max_attempts must be at least 1 (queue '{}')",
            j.queue
        ))),
        None => Ok(()),
    }
}

/// Binds a new job's values in [`sql::insert_job`]'s order.
fn bind_job<'q>(
    q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    job: &'q NewJob,
    id: &'q str,
    now: i64,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    q.bind(job.tenant.as_str())
        .bind(job.queue.as_str())
        .bind(id)
        .bind(job.payload.to_string())
        .bind(job.priority)
        .bind(job.run_at.unwrap_or(now))
        .bind(i64::from(job.max_attempts))
        .bind(job.idempotency_key.as_deref())
        .bind(now)
}
