//! tenantd's own background work, on its job queue (docs/jobs.md): purging deleted
//! tenants past their retention and moving tenants' data between tiers. Each task is a
//! job of the platform (the `_platform` tenant, on a `tenantd.` queue), so it survives a
//! restart (a crashed node's lease runs out and another worker, or the restarted node,
//! takes the job again), runs once across nodes, and has a state to look at. Every node
//! runs one platform worker ([`platform_worker`]).
use crate::state::{AppState, State};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tenantd_core::TenantId;
use tenantd_jobs::{ClaimRequest, Claimed, Holder, JobState, Jobs, NewJob};
use tenantd_store::NewEvent;

/// Purges one deleted tenant whose retention ended.
pub const PURGE: &str = "tenantd.purge";
/// Moves one tenant's data to its plan's tier.
pub const MOVE: &str = "tenantd.move";
/// Seals one tenant's values again under its current data key (after a rotation).
pub const RESEAL: &str = "tenantd.reseal";
/// Seals every tenant's values stored in the clear.
pub const SEAL_ALL: &str = "tenantd.seal_all";
/// Builds one export or backup.
pub const BUILD: &str = "tenantd.archive";
/// Restores a backup into its tenant or a clone.
pub const RESTORE: &str = "tenantd.restore";
/// Every platform queue a node's worker takes.
const QUEUES: [&str; 6] = [PURGE, MOVE, RESEAL, SEAL_ALL, BUILD, RESTORE];
/// Who claims platform jobs.
pub const WORKER: &str = "tenantd";
/// How long a platform worker holds a job between heartbeats.
pub(crate) const LEASE_MS: i64 = 15_000;
/// How often a running platform job's lease is extended.
const BEAT: Duration = Duration::from_secs(5);
/// How often a task is tried before its job is dead (the backoff reaches an hour after
/// ten tries, so about four days).
const ATTEMPTS: u32 = 100;

/// A platform job's payload: the tenant it is about, and for a purge the time its
/// retention was checked against.
#[derive(Debug, Serialize, Deserialize)]
struct Task {
    tenant_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    due_at: Option<i64>,
}

/// What a run of a task asks of its job.
pub(crate) enum Outcome {
    Done(serde_json::Value),
    /// Not now: run again in a moment (another worker is on the same tenant).
    Later(String),
    Failed(String),
}

fn now_ms() -> i64 {
    tenantd_limits::now_ms()
}

fn task(tenant: &TenantId, due_at: Option<i64>) -> serde_json::Value {
    json!(Task {
        tenant_id: tenant.to_string(),
        due_at
    })
}

impl AppState {
    /// Moves a tenant's data, in the background, to the tier of the plan it is on, as a
    /// `tenantd.move` job (progress at `GET /v1/tenants/{id}/placement`). If the plan
    /// changes again meanwhile, the job follows up until the placement matches the plan.
    pub async fn request_move(&self, tenant: TenantId) -> Result<(), tenantd_jobs::JobError> {
        let mut job = NewJob::new(Jobs::platform(), MOVE, task(&tenant, None));
        job.max_attempts = ATTEMPTS;
        job.idempotency_key = Some(format!("move:{tenant}:{}", tenantd_core::ids::new_id("m")));
        self.jobs.enqueue(&job, now_ms()).await.map(drop)
    }

    /// Purges every deleted tenant whose retention ended by `now` (Unix seconds): each
    /// becomes a `tenantd.purge` job (one per deletion, whichever node lists it), worked
    /// here and by every node's platform worker; answers once all of them have ended, with
    /// the tenants purged, by id. The purge itself is [`AppState::purge`].
    pub async fn purge_due(self: &Arc<Self>, now: i64) -> Vec<TenantId> {
        const BATCH: u32 = 100;
        let mut queued: Vec<(TenantId, String)> = Vec::new();
        let mut after = None;
        loop {
            let due = match self.catalog.purgeable_tenants(now, after.as_ref(), BATCH).await {
                Ok(due) => due,
                Err(e) => {
                    tracing::error!(error = %e, "could not list the deleted tenants due for purging");
                    break;
                }
            };
            for tenant in &due {
                let deleted = self.catalog.get_tenant(tenant).await.ok().and_then(|t| t.deleted_at);
                let mut job = NewJob::new(Jobs::platform(), PURGE, task(tenant, Some(now)));
                job.max_attempts = ATTEMPTS;
                job.idempotency_key = Some(format!("purge:{tenant}:{}", deleted.unwrap_or_default()));
                match self.jobs.enqueue(&job, now_ms()).await {
                    Ok((j, _)) => queued.push((*tenant, j.id)),
                    Err(e) => tracing::error!(tenant_id = %tenant, error = %e, "could not queue a purge"),
                }
            }
            match due.last() {
                Some(last) if due.len() == BATCH as usize => after = Some(*last),
                _ => break,
            }
        }
        let mut purged = Vec::new();
        for (tenant, id) in queued {
            loop {
                match self.jobs.get(&Jobs::platform(), &id, now_ms()).await {
                    Ok(j) if j.state.is_final() => {
                        if j.state == JobState::Succeeded && j.result.is_some_and(|r| r["purged"] == true) {
                            purged.push(tenant);
                        }
                        break;
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::error!(tenant_id = %tenant, error = %e, "could not read a purge's job");
                        break;
                    }
                }
                if !self.work_platform_jobs(&[PURGE], Duration::ZERO).await {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
        purged
    }

    /// Claims one platform job of `queues` (waiting up to `wait` for one), runs it while
    /// keeping its lease, and reports how it went. Whether there was one.
    pub async fn work_platform_jobs(self: &Arc<Self>, queues: &[&str], wait: Duration) -> bool {
        let queues: Vec<String> = queues.iter().map(|q| q.to_string()).collect();
        let platform = Jobs::platform();
        let req = ClaimRequest {
            queues: &queues,
            tenant: Some(&platform),
            claimer: WORKER,
            max: 1,
            lease_ms: LEASE_MS,
        };
        let job = match self.jobs.claim_waiting(&req, wait, now_ms).await {
            Ok(mut got) => match got.pop() {
                Some(j) => j,
                None => return false,
            },
            Err(e) => {
                tracing::error!(error = %e, "could not claim tenantd's own jobs");
                tokio::time::sleep(Duration::from_secs(1)).await;
                return false;
            }
        };
        self.job_metrics.claimed(job.waited_ms);
        self.run_claimed(job).await;
        true
    }

    /// Runs a claimed platform job while keeping its lease, and reports how it went.
    /// Its lines carry the job and, once its payload is read, the tenant it is for.
    #[tracing::instrument(name = "job", skip_all, fields(job_id = %job.job_id, queue = %job.queue, tenant_id = tracing::field::Empty))]
    async fn run_claimed(self: &Arc<Self>, job: Claimed) {
        let beats = {
            let (jobs, id, lease) = (self.jobs.clone(), job.job_id.clone(), job.lease.clone());
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(BEAT).await;
                    if let Err(e) = jobs
                        .heartbeat(&id, Holder::Lease(&lease), LEASE_MS, None, now_ms())
                        .await
                    {
                        tracing::warn!(job_id = %id, error = %e, "a platform job's lease could not be extended");
                    }
                }
            })
        };
        let outcome = self.run(&job).await;
        beats.abort();
        let by = Holder::Lease(&job.lease);
        let reported = match outcome {
            Outcome::Done(result) => self
                .jobs
                .complete(&job.job_id, by, Some(&result), now_ms())
                .await
                .map(|ran| self.job_metrics.finished("succeeded", ran)),
            Outcome::Later(why) => self
                .jobs
                .fail(&job.job_id, by, &why, Some(2_000), now_ms())
                .await
                .map(drop),
            Outcome::Failed(e) => {
                tracing::warn!(job_id = %job.job_id, queue = %job.queue, error = %e, "a platform job failed; it will be retried");
                self.jobs
                    .fail(&job.job_id, by, &e, None, now_ms())
                    .await
                    .map(|(f, ran)| {
                        let dead = f == tenantd_jobs::Failed::Dead;
                        self.job_metrics.finished(if dead { "dead" } else { "failed" }, ran)
                    })
            }
        };
        if let Err(e) = reported {
            tracing::error!(job_id = %job.job_id, error = %e, "a platform job's end could not be recorded; it will run again");
        }
    }

    async fn run(&self, job: &Claimed) -> Outcome {
        let Ok(task) = serde_json::from_value::<Task>(job.payload.clone()) else {
            return Outcome::Failed(format!("not a task: {}", job.payload));
        };
        let tenant = TenantId::from_trusted(task.tenant_id);
        tracing::Span::current().record("tenant_id", tenant.as_str());
        match job.queue.as_str() {
            PURGE => match self
                .purge(&tenant, task.due_at.unwrap_or_else(tenantd_core::now_secs))
                .await
            {
                Ok(rows) => Outcome::Done(json!({"purged": rows.is_some(), "catalog_rows": rows})),
                Err(e) => Outcome::Failed(e),
            },
            MOVE => self.run_move(&tenant, &job.job_id).await,
            RESEAL => self.run_reseal(&tenant, job).await,
            BUILD => self.run_build(job).await,
            RESTORE => self.run_restore(job).await,
            SEAL_ALL => self.run_seal_all().await,
            other => Outcome::Failed(format!("no platform task is called {other}")),
        }
    }

    /// Moves the tenant's data to its plan's tier; a move a crash interrupted is undone
    /// first (unless another worker's move of the tenant is live: then later).
    async fn run_move(&self, tenant: &TenantId, job_id: &str) -> Outcome {
        let key = format!("move:{tenant}:");
        for _ in 0..10 {
            let tier = match self.catalog.get_tenant(tenant).await {
                Ok(t) => match self.catalog.get_plan(&t.plan).await {
                    Ok(p) => p.isolation,
                    Err(e) => return Outcome::Failed(format!("its plan could not be read: {e}")),
                },
                Err(tenantd_store::StoreError::NotFound(_)) => {
                    return Outcome::Done(json!({"moved": false, "why": "purged"}))
                }
                Err(e) => return Outcome::Failed(format!("the tenant could not be read: {e}")),
            };
            let placement = match self.data.placement(tenant).await {
                Ok(p) => p,
                Err(e) => return Outcome::Failed(format!("its placement could not be read: {e}")),
            };
            match placement {
                // Never used: placed at its plan's tier on first use.
                None => return Outcome::Done(json!({"moved": false, "why": "unplaced"})),
                Some(p) if p.state != "placed" => {
                    match self
                        .jobs
                        .running_with_key(&Jobs::platform(), MOVE, &key, job_id, now_ms())
                        .await
                    {
                        Ok(true) => return Outcome::Later("another worker is moving this tenant".into()),
                        Ok(false) => {}
                        Err(e) => return Outcome::Failed(e.to_string()),
                    }
                    tracing::warn!(tenant_id = %tenant, "undoing a tier move that was interrupted");
                    if let Err(e) = self.data.recover(tenant).await {
                        return Outcome::Failed(format!("the interrupted move could not be undone: {e}"));
                    }
                }
                Some(p) if p.tier == tier => {
                    return Outcome::Done(json!({"moved": true, "tier": tier, "location": p.location}));
                }
                Some(from) => {
                    let moved = match self.data.move_tenant(*tenant, tier).await {
                        Ok(p) => p,
                        Err(e) => return Outcome::Failed(format!("tenant data not moved: {e}")),
                    };
                    tracing::info!(tenant_id = %tenant, tier = %tier.as_str(), "tenant data moved");
                    // The placement lives with the tenant data, which may be another
                    // database than the catalog: the event follows the switch.
                    let data = json!({"from": {"tier": from.tier, "location": from.location},
                        "to": {"tier": moved.tier, "location": moved.location}});
                    if let Err(e) = self
                        .catalog
                        .record_event(&NewEvent::system(tenant, "placement.moved", data))
                        .await
                    {
                        tracing::error!(tenant_id = %tenant, error = %e, "a tier move's placement.moved event was not written");
                    }
                }
            }
        }
        Outcome::Later("the plan kept changing; following up".into())
    }

    /// Destroys a purgeable tenant's data keys (crypto-shredding), with a platform
    /// `tenant.shredded` event: from then on nothing sealed under them opens, wherever a
    /// copy of it is. Nothing when it has none left (a purge run again), or is gone.
    async fn shred(&self, tenant: &TenantId, now: i64) -> Result<(), tenantd_store::StoreError> {
        match self.catalog.get_tenant(tenant).await {
            // A tenant past its retention cannot be restored: the check holds.
            Ok(t) if t.status == tenantd_core::TenantStatus::Deleted && t.purge_after.is_some_and(|p| p <= now) => {}
            Ok(_) => {
                return Err(tenantd_store::StoreError::Conflict(
                    "the tenant is not due for purging".into(),
                ))
            }
            Err(tenantd_store::StoreError::NotFound(_)) => return Ok(()),
            Err(e) => return Err(e),
        }
        let mut w = self.catalog.begin().await?;
        let keys = self.catalog.shred(&mut w, tenant).await?;
        if keys > 0 {
            let detail = json!({"tenant_id": tenant.as_str(), "data_keys": keys});
            w.commit_with(&NewEvent::new(None, "system", "tenant.shredded", detail, ""))
                .await?;
            tracing::info!(tenant_id = %tenant, data_keys = keys, "destroyed a purged tenant's data keys");
        }
        self.keyring.forget(tenant);
        Ok(())
    }

    /// Purges one deleted tenant past its retention at `now` (Unix seconds): first its data
    /// (records, blobs, cache; a schema or database is dropped), then every catalog row of
    /// it, then its data once more (what a request placed meanwhile), then what this node
    /// and the others cached of it; an operator-wide `tenant.purged` event records it.
    /// `None` when another node purged it first. Each step is safe to run again, so a purge
    /// a crash interrupted finishes when its job runs again.
    async fn purge(&self, tenant: &TenantId, now: i64) -> Result<Option<u64>, String> {
        self.shred(tenant, now)
            .await
            .map_err(|e| format!("its data keys were not destroyed: {e}"))?;
        self.data
            .remove(tenant)
            .await
            .map_err(|e| format!("its data was not removed: {e}"))?;
        tenantd_core::crash::point("purge.data_removed");
        let purged = async {
            let mut w = self.catalog.begin().await?;
            let rows = self.catalog.purge_tenant(&mut w, tenant, now).await?;
            let detail = json!({"tenant_id": tenant.as_str(), "catalog_rows": rows});
            w.commit_with(&NewEvent::new(None, "system", "tenant.purged", detail, ""))
                .await?;
            Ok::<_, tenantd_store::StoreError>(rows)
        };
        let rows = match purged.await {
            Ok(rows) => rows,
            Err(tenantd_store::StoreError::NotFound(_)) => return Ok(None),
            Err(e) => return Err(format!("its catalog rows were not purged: {e}")),
        };
        // Data an operator's request placed between the two steps (the tenant is unknown
        // from here on, so nothing can place it again).
        if let Err(e) = self.data.remove(tenant).await {
            tracing::error!(tenant_id = %tenant, error = %e, "data written to a tenant while it was purged was not removed");
        }
        self.storage_levels.remove(tenant);
        self.changed(tenantd_edge::Change::Purged(tenant.as_str())).await;
        tracing::info!(tenant_id = %tenant, "purged a deleted tenant");
        Ok(Some(rows))
    }
}

/// This node's platform worker: on a single node (SQLite) it first frees the jobs a
/// crashed process of it held, and every node queues a move for each tenant whose last
/// move did not settle; then it works platform jobs as they come.
pub fn platform_worker(state: &State) -> tokio::task::JoinHandle<()> {
    let state = state.clone();
    tokio::spawn(async move {
        if state.jobs.backend() == tenantd_store::Backend::Sqlite {
            if let Err(e) = state.jobs.release_claims_of(WORKER, now_ms()).await {
                tracing::error!(error = %e, "could not free the platform jobs of the last run");
            }
        }
        match state.data.unsettled().await {
            Ok(tenants) => {
                for tenant in tenants {
                    tracing::warn!(tenant_id = %tenant, "a tier move did not settle; queueing it again");
                    if let Err(e) = state.request_move(tenant).await {
                        tracing::error!(tenant_id = %tenant, error = %e, "could not queue a tier move");
                    }
                }
            }
            Err(e) => tracing::error!(error = %e, "could not look for unsettled tier moves"),
        }
        state.queue_seal_all().await;
        loop {
            state.work_platform_jobs(&QUEUES, Duration::from_secs(10)).await;
        }
    })
}
