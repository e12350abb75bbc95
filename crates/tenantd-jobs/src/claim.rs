//! Claiming: the lane of the lowest pass with a ready job gives its best job to the worker
//! under a lease, the tenant's running count grows (refused at its cap), and the lane's pass
//! advances by its tenant's stride.
use crate::model::*;
use crate::queue::Jobs;
use crate::sql::{self, BELOW_CAP, JOB_ORDER, LANES_WITH_POLICY, LANE_ORDER, LANE_READY, STRIDE, WAITING};
use crate::Result;
use sqlx::any::AnyRow;
use sqlx::Row;
use std::time::Duration;
use tenantd_core::ids::new_id;
use tenantd_core::TenantId;
use tenantd_store::prelude::*;
use tenantd_store::Backend;

/// How often (by the callers' clock) a claim looks for expired leases even when it found
/// work; one that comes up short always looks.
const REAP_EVERY_MS: i64 = 1_000;

/// What a worker asks for.
#[derive(Debug, Clone)]
pub struct ClaimRequest<'a> {
    /// The queues to take jobs from.
    pub queues: &'a [String],
    /// Only this tenant's jobs (a tenant's own worker); `None` for every tenant's.
    pub tenant: Option<&'a TenantId>,
    /// Who claims (`operator`, `key_…`, `usr_…`): may then report by [`Holder::Claimer`].
    pub claimer: &'a str,
    /// The most jobs to take.
    pub max: u32,
    /// How long each is held (ms).
    pub lease_ms: i64,
}

/// The columns a claim answers.
const CLAIMED_COLS: &str = "id, tenant_id, queue, payload, attempt, run_at";

/// One claim's outcome.
enum Step {
    Got(Claimed),
    /// A lane was chosen but its tenant reached its cap meanwhile: look again.
    Raced,
    /// Nothing to claim.
    Empty,
}

impl Jobs {
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
        let req = ClaimRequest {
            queues,
            tenant,
            claimer,
            max,
            lease_ms,
        };
        self.claim_now(&req, now).await
    }

    /// [`Jobs::claim`]; when there is nothing, waits up to `wait` for a job to be enqueued
    /// (on this node, or on another one sharing a PostgreSQL catalog once
    /// [`Jobs::listen`] runs), and looks again at least once a second for scheduled jobs
    /// and retries whose time came. `clock` gives now (Unix ms).
    pub async fn claim_waiting(
        &self,
        req: &ClaimRequest<'_>,
        wait: Duration,
        clock: impl Fn() -> i64,
    ) -> Result<Vec<Claimed>> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Registered before the claim, so an enqueue between the two is not missed.
            let enqueued = self.wake.notified();
            tokio::pin!(enqueued);
            enqueued.as_mut().enable();
            let got = self.claim_now(req, clock()).await?;
            let now = tokio::time::Instant::now();
            if !got.is_empty() || now >= deadline {
                return Ok(got);
            }
            let step = (deadline - now).min(Duration::from_secs(1));
            let _ = tokio::time::timeout(step, enqueued).await;
        }
    }

    async fn claim_now(&self, req: &ClaimRequest<'_>, now: i64) -> Result<Vec<Claimed>> {
        let mut out = Vec::new();
        if req.queues.is_empty() {
            return Ok(out);
        }
        let last = self.reaped_at.load(std::sync::atomic::Ordering::Relaxed);
        if now.saturating_sub(last) >= REAP_EVERY_MS {
            self.reaped_at.store(now, std::sync::atomic::Ordering::Relaxed);
            self.reap(now).await?;
        }
        let mut reaped = false;
        let mut races = 0;
        while out.len() < req.max as usize {
            match self.claim_one(req, now).await? {
                Step::Got(c) => out.push(c),
                Step::Raced if races < 8 => races += 1,
                // Short of work: jobs whose lease ran out are claimable again.
                Step::Empty | Step::Raced if !reaped => {
                    reaped = true;
                    if self.reap(now).await? == 0 {
                        break;
                    }
                }
                Step::Empty | Step::Raced => break,
            }
        }
        Ok(out)
    }

    /// Claims one job, one job per transaction: a claim locks one lane, one job and one
    /// tenant row, in that order, so claimers never wait on each other in a cycle.
    async fn claim_one(&self, req: &ClaimRequest<'_>, now: i64) -> Result<Step> {
        let lease = new_id("lease");
        match self.backend() {
            Backend::Postgres => {
                // Lanes another claim is serving are passed over, so concurrent claimers
                // spread over the lanes; when every lane with work is being served, share
                // the first one instead (its pass then waits for the other claim's).
                for spread in [true, false] {
                    let sql = claim_statement(req, spread);
                    let row = bind_claim(sqlx::query(&sql), req, &lease, now)
                        .fetch_one(self.catalog.pool())
                        .await?;
                    let picked: i64 = row.try_get("picked")?;
                    if picked == 0 {
                        continue;
                    }
                    return match row.try_get::<Option<String>, _>("id")? {
                        Some(_) => Ok(Step::Got(claimed_from(&row, &lease, req.lease_ms, now)?)),
                        None => Ok(Step::Raced),
                    };
                }
                Ok(Step::Empty)
            }
            Backend::Sqlite => {
                let mut w = self.catalog.begin().await?;
                let lane = bind_lanes(sqlx::query(&lane_select(req)), req, now)
                    .fetch_optional(&mut **w.tx())
                    .await?;
                let Some(lane) = lane else { return Ok(Step::Empty) };
                let (tenant, queue): (String, String) = (lane.try_get("tenant_id")?, lane.try_get("queue")?);
                let pick = format!("SELECT w.id FROM jobs w WHERE w.tenant_id = $2 AND w.queue = $3 AND {WAITING} AND w.run_at <= $1 {JOB_ORDER} LIMIT 1");
                let id: String = sqlx::query_scalar(&pick)
                    .bind(now)
                    .bind(&tenant)
                    .bind(&queue)
                    .fetch_one(&mut **w.tx())
                    .await?;
                let policy = sqlx::query("SELECT weight, max_running FROM job_tenants WHERE tenant_id = $1")
                    .bind(&tenant)
                    .fetch_optional(&mut **w.tx())
                    .await?;
                let (weight, cap): (i64, Option<i64>) = match &policy {
                    Some(p) => (p.try_get("weight")?, p.try_get("max_running")?),
                    None => (1, None),
                };
                let cap = cap.filter(|_| !queue.starts_with(crate::SYSTEM_QUEUE_PREFIX));
                if cap.is_some() {
                    let counted = sqlx::query(&format!(
                        "UPDATE job_tenants SET running = running + 1 WHERE tenant_id = $1 AND {BELOW_CAP}"
                    ))
                    .bind(&tenant)
                    .execute(&mut **w.tx())
                    .await?
                    .rows_affected();
                    if counted == 0 {
                        return Ok(Step::Raced);
                    }
                }
                let row = sqlx::query(&format!(
                    "UPDATE jobs SET {}, counted = $6 WHERE id = $5 RETURNING {CLAIMED_COLS}",
                    claim_set()
                ))
                .bind(now)
                .bind(now + req.lease_ms)
                .bind(&lease)
                .bind(req.claimer)
                .bind(&id)
                .bind(i32::from(cap.is_some()))
                .fetch_one(&mut **w.tx())
                .await?;
                sqlx::query(&format!(
                    "UPDATE job_lanes SET pass = pass + {STRIDE} / $3 WHERE tenant_id = $1 AND queue = $2"
                ))
                .bind(&tenant)
                .bind(&queue)
                .bind(weight.max(1))
                .execute(&mut **w.tx())
                .await?;
                w.commit().await?;
                Ok(Step::Got(claimed_from(&row, &lease, req.lease_ms, now)?))
            }
        }
    }
}

/// The claimed job's new columns: `$1` now, `$2` lease expiry, `$3` lease, `$4` claimer.
fn claim_set() -> &'static str {
    "state = 'running', attempt = attempt + 1, lease_expires_at = $2, lease_token = $3, claimed_by = $4, started_at = $1, updated_at = $1"
}

/// The open lanes of `req`'s queues (and tenant), lowest pass first: `$1` now, the queues
/// from `$5`, then the tenant. `extra` narrows them further.
fn lanes(req: &ClaimRequest<'_>, extra: &str) -> String {
    let queues = sql::placeholders(5, req.queues.len());
    let only = req.tenant.map_or(String::new(), |_| {
        format!(" AND l.tenant_id = ${}", 5 + req.queues.len())
    });
    format!(
        "SELECT l.tenant_id, l.queue, COALESCE(t.weight, 1) AS weight, \
         CASE WHEN {} THEN NULL ELSE t.max_running END AS max_running FROM {LANES_WITH_POLICY} \
         WHERE l.queue IN ({queues}){only} AND {}{extra} {LANE_ORDER}",
        sql::system("l.queue"),
        sql::lane_open()
    )
}

/// SQLite's first servable lane: open, with a ready job.
fn lane_select(req: &ClaimRequest<'_>) -> String {
    format!("{} LIMIT 1", lanes(req, &format!(" AND {LANE_READY}")))
}

/// PostgreSQL's claim in one statement. The open lanes are taken in pass order, each
/// asked for its best ready job (`SKIP LOCKED`), and the first that has one gives it: one
/// index probe per claim, however many lanes there are. With `spread`, a lane is only
/// taken if no other claim is serving it (a transaction-scoped advisory lock, which
/// writes nothing), so concurrent claimers spread over the lanes instead of queueing for
/// the same lane's pass. The lanes come with their tenants' weights and caps. Then, for a
/// tenant with a running cap, its running count grows
/// (refused at the cap: the condition is checked again on the row's newest version); the
/// job gets its lease and the lane its new pass. It answers one row: `picked` (whether a
/// job was chosen) and the claimed job's columns, null when the cap refused it.
fn claim_statement(req: &ClaimRequest<'_>, spread: bool) -> String {
    let free = if spread {
        format!("WHERE pg_try_advisory_xact_lock({LANE_LOCKS}, hashtext(o.tenant_id || '/' || o.queue))")
    } else {
        String::new()
    };
    format!(
        "WITH pick AS (SELECT j.id, l.tenant_id, l.queue, l.weight, l.max_running FROM (SELECT o.* FROM ({lanes} OFFSET 0) o {free}) l \
             CROSS JOIN LATERAL (SELECT w.id FROM jobs w WHERE w.tenant_id = l.tenant_id AND w.queue = l.queue \
              AND {WAITING} AND w.run_at <= $1 {JOB_ORDER} LIMIT 1 FOR UPDATE SKIP LOCKED) j LIMIT 1), \
         cap AS (UPDATE job_tenants SET running = running + 1 FROM pick WHERE pick.max_running IS NOT NULL \
             AND job_tenants.tenant_id = pick.tenant_id AND {BELOW_CAP} RETURNING 1), \
         claimed AS (UPDATE jobs SET {set}, counted = CASE WHEN pick.max_running IS NULL THEN 0 ELSE 1 END FROM pick \
             WHERE jobs.id = pick.id AND jobs.state IN ('queued', 'failed') AND (pick.max_running IS NULL OR EXISTS (SELECT 1 FROM cap)) \
             RETURNING jobs.id, jobs.tenant_id, jobs.queue, jobs.payload, jobs.attempt, jobs.run_at), \
         advanced AS (UPDATE job_lanes SET pass = job_lanes.pass + {STRIDE} / GREATEST(pick.weight, 1) FROM pick \
             WHERE job_lanes.tenant_id = pick.tenant_id AND job_lanes.queue = pick.queue AND EXISTS (SELECT 1 FROM claimed) RETURNING 1) \
         SELECT p.picked, c.id, c.tenant_id, c.queue, c.payload, c.attempt, c.run_at \
         FROM (SELECT COUNT(*) AS picked FROM pick) p LEFT JOIN claimed c ON TRUE",
        lanes = lanes(req, ""),
        set = claim_set(),
    )
}

/// The first key of the advisory locks a claim takes on the lanes it serves.
const LANE_LOCKS: i32 = 0x6a6f_6273; // "jobs"

type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>;

/// Binds `$1` now, `$2` the lease's expiry, `$3` the lease, `$4` the claimer, the queues,
/// then the tenant.
fn bind_claim<'q>(q: AnyQuery<'q>, req: &ClaimRequest<'q>, lease: &'q str, now: i64) -> AnyQuery<'q> {
    let q = q.bind(now).bind(now + req.lease_ms).bind(lease).bind(req.claimer);
    bind_rest(q, req)
}

/// [`lane_select`]'s values alone: `$2`–`$4` are unused there, so they are bound empty.
fn bind_lanes<'q>(q: AnyQuery<'q>, req: &ClaimRequest<'q>, now: i64) -> AnyQuery<'q> {
    bind_rest(q.bind(now).bind(0_i64).bind("").bind(""), req)
}

fn bind_rest<'q>(mut q: AnyQuery<'q>, req: &ClaimRequest<'q>) -> AnyQuery<'q> {
    for queue in req.queues {
        q = q.bind(queue.as_str());
    }
    if let Some(t) = req.tenant {
        q = q.bind(t.as_str());
    }
    q
}

fn claimed_from(r: &AnyRow, lease: &str, lease_ms: i64, now: i64) -> Result<Claimed> {
    let payload: String = r.try_get("payload")?;
    let run_at: i64 = r.try_get("run_at")?;
    Ok(Claimed {
        job_id: r.try_get("id")?,
        tenant_id: TenantId::from_trusted(r.try_get("tenant_id")?),
        queue: r.try_get("queue")?,
        payload: serde_json::from_str(&payload)?,
        attempt: r.try_get::<i32, _>("attempt")?.max(0) as u32,
        lease_expires_at: now + lease_ms,
        waited_ms: (now - run_at).max(0),
        lease: lease.to_string(),
    })
}
