//! Data-key rotation and re-sealing (docs/protection.md): a rotation starts the tenant's
//! next data key version, and a `tenantd.reseal` job seals every record, blob chunk,
//! cache value and secret of the tenant again under it, with progress. Data written in
//! the clear (before encryption, or while `encrypt_data` was off) is sealed by the same
//! code: each start queues one `tenantd.seal_all` job a day that reseals every placed
//! tenant with rows not under its current key.
use crate::keyring::KeyringError;
use crate::platform_jobs::{Outcome, RESEAL, SEAL_ALL};
use crate::state::AppState;
use serde_json::json;
use tenantd_core::TenantId;
use tenantd_jobs::{Claimed, Jobs, NewJob};
use tenantd_store::NewEvent;

/// What `GET /v1/tenants/{id}/data-key` answers.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct DataKeyStatus {
    /// The tenant.
    pub tenant_id: String,
    /// The version new values are sealed under (0: none made yet).
    pub version: i64,
    /// Every version the tenant holds, oldest first (older ones still open older values
    /// and backups).
    pub versions: Vec<KeyVersion>,
    /// `sealed` when every value is under `version`, else `resealing`.
    pub state: &'static str,
    /// Values under the current version (`done`) of all of them (`total`): records,
    /// blob chunks, cache entries and secrets.
    pub progress: Progress,
    /// Whether this node seals records, blobs and cache values (`encrypt_data`).
    pub data_encrypted: bool,
}

/// One data key version.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct KeyVersion {
    /// From 1.
    pub version: i64,
    /// RFC 3339.
    pub created_at: String,
}

/// Done of total.
#[derive(Debug, Clone, Copy, serde::Serialize, utoipa::ToSchema)]
pub struct Progress {
    /// Done.
    pub done: u64,
    /// In all.
    pub total: u64,
}

impl AppState {
    /// Starts the tenant's next data key version and queues the job that seals its
    /// values under it; the version and the job's id.
    pub async fn rotate_data_key(&self, tenant: &TenantId) -> Result<(i64, String), crate::error::ApiError> {
        let version = self.keyring.rotate(tenant).await?;
        let job_id = self.queue_reseal(tenant, &format!("reseal:{tenant}:{version}")).await?;
        let event = NewEvent::system(
            tenant,
            "data_key.rotated",
            json!({"version": version, "job_id": job_id}),
        );
        if let Err(e) = self.catalog.record_event(&event).await {
            tracing::error!(tenant_id = %tenant, error = %e, "a data key rotation's event was not written");
        }
        Ok((version, job_id))
    }

    async fn queue_reseal(&self, tenant: &TenantId, key: &str) -> Result<String, tenantd_jobs::JobError> {
        let mut job = NewJob::new(Jobs::platform(), RESEAL, json!({"tenant_id": tenant.as_str()}));
        job.max_attempts = 100;
        job.idempotency_key = Some(key.to_string());
        let (j, _) = self.jobs.enqueue(&job, tenantd_limits::now_ms()).await?;
        Ok(j.id)
    }

    /// Queues today's `tenantd.seal_all` (one a day across nodes).
    pub async fn queue_seal_all(&self) {
        if !self.data.seals() {
            return;
        }
        let day = tenantd_core::now_secs() / 86_400;
        let mut job = NewJob::new(Jobs::platform(), SEAL_ALL, json!({"tenant_id": "_platform"}));
        job.idempotency_key = Some(format!("seal-all:{day}"));
        if let Err(e) = self.jobs.enqueue(&job, tenantd_limits::now_ms()).await {
            tracing::error!(error = %e, "could not queue the sealing of data stored in the clear");
        }
    }

    /// How far the tenant's values are sealed under its current data key.
    pub async fn data_key_status(&self, tenant: &TenantId) -> Result<DataKeyStatus, crate::error::ApiError> {
        let versions = self.catalog.data_key_versions(tenant).await?;
        let version = versions.last().map_or(0, |v| v.0);
        let mut progress = self.secrets_sealed(tenant, version).await?;
        if self.data.placement(tenant).await?.is_some() {
            let c = self.data.scope(*tenant, None).await?.seal_count(version).await?;
            // Version 0 is no key: rows under it are in the clear, not done.
            progress.done += if version == 0 { 0 } else { c.current };
            progress.total += c.total;
        }
        Ok(DataKeyStatus {
            tenant_id: tenant.to_string(),
            version,
            versions: versions
                .into_iter()
                .map(|(version, at)| KeyVersion {
                    version,
                    created_at: tenantd_core::ts::format(at),
                })
                .collect(),
            state: if progress.done == progress.total {
                "sealed"
            } else {
                "resealing"
            },
            progress,
            data_encrypted: self.data.seals(),
        })
    }

    async fn secrets_sealed(&self, tenant: &TenantId, version: i64) -> Result<Progress, tenantd_store::StoreError> {
        let all = self.catalog.list_secrets(tenant).await?;
        let done = all.iter().filter(|s| s.key_version == version).count() as u64;
        Ok(Progress {
            done,
            total: all.len() as u64,
        })
    }

    /// Seals the tenant's secrets again under its current key; how many.
    async fn reseal_secrets(&self, tenant: &TenantId) -> Result<u64, KeyringError> {
        let current = self.keyring.keys(tenant).await?.current();
        let mut n = 0;
        for s in self.catalog.list_secrets(tenant).await? {
            if s.key_version == current {
                continue;
            }
            let plain = self
                .keyring
                .open_value(tenant, crate::routes::secrets::KIND, &s.name, s.key_version, &s.sealed)
                .await?;
            let (v, sealed) = self
                .keyring
                .seal(tenant, crate::routes::secrets::KIND, &s.name, &plain)
                .await?;
            if self
                .catalog
                .reseal_secret(tenant, &s.name, s.version, v, &sealed)
                .await?
            {
                n += 1;
            }
        }
        Ok(n)
    }

    /// The `tenantd.reseal` job: every value of the tenant under its current key, with
    /// progress in the job's heartbeats.
    pub(crate) async fn run_reseal(&self, tenant: &TenantId, job: &Claimed) -> Outcome {
        let secrets = match self.reseal_secrets(tenant).await {
            Ok(n) => n,
            Err(e) => return Outcome::Failed(format!("its secrets were not sealed again: {e}")),
        };
        let data = match self.reseal_data(tenant, Some(job)).await {
            Ok(n) => n,
            Err(e) => return Outcome::Failed(format!("its data was not sealed again: {e}")),
        };
        tracing::info!(tenant_id = %tenant, secrets, rows = data, "sealed a tenant's values under its current data key");
        Outcome::Done(json!({"resealed": {"secrets": secrets, "rows": data}}))
    }

    async fn reseal_data(&self, tenant: &TenantId, job: Option<&Claimed>) -> Result<u64, tenantd_data::DataError> {
        if self.data.placement(tenant).await?.is_none() {
            return Ok(0);
        }
        let scope = self.data.scope(*tenant, None).await?;
        let (tx, mut rx) = tokio::sync::watch::channel((0u64, 0u64));
        let report = async {
            let Some(job) = job else { return };
            while rx.changed().await.is_ok() {
                let (done, total) = *rx.borrow_and_update();
                let p = json!({"done": done, "total": total});
                let by = tenantd_jobs::Holder::Lease(&job.lease);
                if let Err(e) = self
                    .jobs
                    .heartbeat(
                        &job.job_id,
                        by,
                        crate::platform_jobs::LEASE_MS,
                        Some(&p),
                        tenantd_limits::now_ms(),
                    )
                    .await
                {
                    tracing::warn!(job_id = %job.job_id, error = %e, "a reseal's progress was not recorded");
                }
            }
        };
        let work = async move {
            let r = scope
                .reseal(|done, total| {
                    tx.send_replace((done, total));
                })
                .await;
            drop(tx);
            r
        };
        let (r, ()) = tokio::join!(work, report);
        r
    }

    /// The `tenantd.seal_all` job: every placed tenant with values not under its current
    /// key is sealed again.
    pub(crate) async fn run_seal_all(&self) -> Outcome {
        let (mut after, mut tenants, mut rows) = (None, 0u64, 0u64);
        loop {
            let page = match self.data.placed_tenants(after.as_ref(), 200).await {
                Ok(p) => p,
                Err(e) => return Outcome::Failed(format!("the placed tenants could not be listed: {e}")),
            };
            for t in &page {
                match self.reseal_data(t, None).await {
                    Ok(0) => {}
                    Ok(n) => {
                        tenants += 1;
                        rows += n;
                    }
                    Err(e) => tracing::warn!(tenant_id = %t, error = %e, "a tenant's data was not sealed"),
                }
            }
            match page.last() {
                Some(last) if page.len() == 200 => after = Some(*last),
                _ => break,
            }
        }
        if rows > 0 {
            tracing::info!(tenants, rows, "sealed data stored in the clear");
        }
        Outcome::Done(json!({"tenants": tenants, "rows": rows}))
    }
}
