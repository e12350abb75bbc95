//! Exports and backups of one tenant (docs/protection.md), built by platform jobs into
//! the catalog a chunk at a time, and read back for a download, a restore or a clone.
//!
//! - `tarball`: the `.tar.gz` itself, on a blocking thread; `content`: what goes in.
//! - `restore`: a backup put back into its tenant, or into a new one.
//!
//! Every chunk, an export's as a backup's, is sealed under the tenant's data key (the
//! version current when it was made), bound to the archive and the chunk's place: an
//! export is decrypted only as it is downloaded, and destroying the tenant's keys makes
//! every copy of either unreadable.
mod content;
pub mod restore;
mod tarball;

use crate::platform_jobs::BUILD;
use crate::state::AppState;
use serde_json::json;
use std::sync::Arc;
use tarball::{Entry, Manifest};
use tenantd_core::crypto::TenantKeys;
use tenantd_core::TenantId;
use tenantd_jobs::{Claimed, Jobs, NewJob};
use tenantd_store::{Archive, ArchiveEnd, ArchiveKind, NewArchive, NewEvent};
use tokio::sync::mpsc;

pub use tarball::FORMAT;

/// How long an export is kept.
pub const EXPORT_DAYS: i64 = 7;
/// What an archive's chunks are sealed as (bound to `<archive id>/<seq>`).
const KIND: &str = "archive";

/// A build job's payload.
#[derive(serde::Serialize, serde::Deserialize)]
struct Build {
    tenant_id: String,
    archive_id: String,
}

impl AppState {
    /// Records a new export or backup of the tenant and queues the job that builds it.
    pub async fn start_archive(&self, tenant: &TenantId, kind: ArchiveKind) -> Result<Archive, crate::error::ApiError> {
        let prefix = match kind {
            ArchiveKind::Export => "exp",
            ArchiveKind::Backup => "bak",
        };
        self.start_archive_as(tenant, kind, tenantd_core::ids::new_id(prefix))
            .await
    }

    async fn start_archive_as(
        &self,
        tenant: &TenantId,
        kind: ArchiveKind,
        id: String,
    ) -> Result<Archive, crate::error::ApiError> {
        let mut job = NewJob::new(
            Jobs::platform(),
            BUILD,
            json!(Build {
                tenant_id: tenant.to_string(),
                archive_id: id.clone()
            }),
        );
        job.max_attempts = 3;
        let a = self
            .catalog
            .create_archive(&NewArchive {
                id: id.clone(),
                tenant: *tenant,
                kind,
                schema_version: tenantd_store::schema_version(),
                expires_at: (kind == ArchiveKind::Export).then(|| tenantd_core::now_secs() + EXPORT_DAYS * 86_400),
                job_id: None,
            })
            .await?;
        self.jobs.enqueue(&job, tenantd_limits::now_ms()).await?;
        Ok(a)
    }

    /// The `tenantd.archive` job: builds the archive its payload names.
    pub(crate) async fn run_build(&self, job: &Claimed) -> crate::platform_jobs::Outcome {
        use crate::platform_jobs::Outcome;
        let Ok(b) = serde_json::from_value::<Build>(job.payload.clone()) else {
            return Outcome::Failed(format!("not an archive build: {}", job.payload));
        };
        let tenant = TenantId::from_trusted(b.tenant_id);
        let a = match self.catalog.get_archive(&tenant, &b.archive_id).await {
            Ok(a) => a,
            Err(tenantd_store::StoreError::NotFound(_)) => return Outcome::Done(json!({"built": false})),
            Err(e) => return Outcome::Failed(e.to_string()),
        };
        if a.state == "done" {
            return Outcome::Done(json!({"built": true}));
        }
        match self.build(&a).await {
            Ok(end) => {
                if let Err(e) = self.catalog.finish_archive(&a.id, &end).await {
                    return Outcome::Failed(e.to_string());
                }
                if a.kind == "backup" {
                    self.keep_newest_backups(&tenant).await;
                }
                let kind = if a.kind == "backup" {
                    "backup.created"
                } else {
                    "export.created"
                };
                let ev = NewEvent::system(&tenant, kind, json!({"id": a.id}));
                if let Err(e) = self.catalog.record_event(&ev).await {
                    tracing::error!(tenant_id = %tenant, error = %e, "an archive's event was not written");
                }
                Outcome::Done(json!({"built": true}))
            }
            Err(e) => {
                tracing::warn!(tenant_id = %tenant, archive_id = %a.id, error = %e, "an export or backup failed");
                if let Err(e2) = self.catalog.finish_archive(&a.id, &ArchiveEnd::Failed(e.clone())).await {
                    return Outcome::Failed(e2.to_string());
                }
                Outcome::Done(json!({"built": false, "error": e}))
            }
        }
    }

    /// Builds an archive: the tenant's content through the tarball builder into its
    /// chunks (sealed, for a backup).
    async fn build(&self, a: &Archive) -> Result<ArchiveEnd, String> {
        let tenant = a.tenant;
        let keys = self.keyring.keys(&tenant).await.map_err(|e| e.to_string())?;
        let head = Manifest {
            format: FORMAT,
            schema_version: a.schema_version,
            tenant_id: tenant.to_string(),
            kind: a.kind.clone(),
            created_at: tenantd_core::ts::format(a.created_at),
            audit_checkpoint: None,
            files: Vec::new(),
        };
        let (etx, erx) = mpsc::channel::<Entry>(1);
        let (ctx_, mut crx) = mpsc::channel::<Vec<u8>>(2);
        let builder = tokio::task::spawn_blocking(move || tarball::build(erx, ctx_, head));
        // Owns the receiver: if a chunk cannot be stored, the builder's sends fail and
        // it stops (and so does the producer).
        let sealing = keys.clone();
        let store = async move {
            let keys = sealing;
            let mut seq = 0i64;
            while let Some(chunk) = crx.recv().await {
                let data = seal_chunk(&keys, &a.id, seq, &chunk)?;
                self.catalog
                    .put_archive_chunk(&tenant, &a.id, seq, &data)
                    .await
                    .map_err(|e| e.to_string())?;
                seq += 1;
            }
            Ok::<i64, String>(seq)
        };
        let tmp = self.cfg.data_dir.join("tmp");
        let id = a.id.clone();
        let catalog = self.catalog.clone();
        let last = std::sync::Mutex::new(std::time::Instant::now() - std::time::Duration::from_secs(1));
        let progress = move |done: u64, total: u64| {
            // At most a write a second (and the first): progress is for people.
            let mut at = last.lock().unwrap_or_else(|e| e.into_inner());
            if at.elapsed() >= std::time::Duration::from_secs(1) || done == total {
                *at = std::time::Instant::now();
                let (catalog, id) = (catalog.clone(), id.clone());
                tokio::spawn(async move { catalog.archive_progress(&id, "running", done, total).await });
            }
        };
        let produce = async move {
            let r = content::produce(self, &tenant, &tmp, &etx, &progress).await;
            drop(etx);
            r
        };
        let (produced, stored) = tokio::join!(produce, store);
        let built = builder
            .await
            .map_err(|e| format!("the archive's builder failed: {e}"))?;
        let checkpoint = produced?;
        let chunks = stored?;
        let mut built = built.map_err(|e| format!("the archive could not be written: {e}"))?;
        built.manifest.audit_checkpoint = checkpoint;
        let counts: serde_json::Map<String, serde_json::Value> = built
            .manifest
            .files
            .iter()
            .filter_map(|f| f.count.map(|c| (f.path.clone(), json!(c))))
            .collect();
        Ok(ArchiveEnd::Done {
            size_bytes: built.size,
            sha256: built.sha256,
            chunks,
            key_version: Some(keys.current()),
            counts: serde_json::Value::Object(counts),
        })
    }

    /// An archive's chunks in order, opened with its tenant's keys, sent to `tx`; stops
    /// early if `tx` is dropped.
    pub(crate) async fn read_chunks(&self, a: &Archive, tx: mpsc::Sender<Vec<u8>>) -> Result<(), String> {
        let v = a
            .key_version
            .ok_or_else(|| format!("the {} {} is not done", a.kind, a.id))?;
        let keys = self
            .keyring
            .load(&a.tenant, Some(v))
            .await
            .map_err(|e| e.to_string())?
            .filter(|k| k.has(v))
            .ok_or_else(|| {
                format!(
                    "the {} cannot be decrypted: tenant {}'s data key version {v} is gone (crypto-shredded)",
                    a.kind, a.tenant
                )
            })?;
        for seq in 0..a.chunks.unwrap_or(0) {
            let stored = self
                .catalog
                .archive_chunk(&a.id, seq)
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("the archive is missing its chunk {seq}"))?;
            let data = keys
                .open(v, KIND, &chunk_name(&a.id, seq), &stored)
                .map_err(|e| format!("the {}'s chunk {seq} does not decrypt: {e}", a.kind))?;
            if tx.send(data).await.is_err() {
                break;
            }
        }
        Ok(())
    }

    /// Backs up every active tenant whose plan sets `backup_every_hours` and whose newest
    /// backup is older than that. A backup's id names its tenant and time slot, so nodes
    /// running this at the same time make it once.
    pub async fn schedule_backups(&self, now: i64) {
        let plans = match self.catalog.list_plans().await {
            Ok(p) => p,
            Err(e) => return tracing::warn!(error = %e, "scheduled backups: could not list plans"),
        };
        for plan in plans.iter().filter(|p| p.backup_every_hours > 0) {
            let every = i64::from(plan.backup_every_hours) * 3600;
            let filter = tenantd_store::TenantFilter {
                status: Some(tenantd_core::TenantStatus::Active),
                plan: Some(plan.id.to_string()),
                search: None,
            };
            let mut page = tenantd_store::PageRequest {
                limit: 500,
                after: None,
            };
            loop {
                let tenants = match self.catalog.list_tenants(&filter, &page).await {
                    Ok(t) => t,
                    Err(e) => return tracing::warn!(error = %e, "scheduled backups: could not list tenants"),
                };
                for t in &tenants.items {
                    let newest = self
                        .catalog
                        .list_archives(&t.id, ArchiveKind::Backup)
                        .await
                        .ok()
                        .and_then(|a| a.into_iter().find(|a| a.state != "failed").map(|a| a.created_at));
                    if newest.is_some_and(|at| at > now - every) {
                        continue;
                    }
                    let id = format!("bak_{}_{}", t.id.as_str().replace('-', "_"), now / every);
                    match self.start_archive_as(&t.id, ArchiveKind::Backup, id).await {
                        Ok(a) => tracing::info!(tenant_id = %t.id, backup_id = %a.id, "started a scheduled backup"),
                        Err(e) => tracing::debug!(tenant_id = %t.id, error = %e.0.detail,
                            "a scheduled backup was not started (another node did)"),
                    }
                }
                match tenants.next_cursor {
                    Some(next) => page.after = Some(next),
                    None => break,
                }
            }
        }
    }

    /// Deletes the tenant's done backups past its plan's `backup_keep`, oldest first.
    async fn keep_newest_backups(&self, tenant: &TenantId) {
        let keep = match self.catalog.get_tenant(tenant).await {
            Ok(t) => match self.catalog.get_plan(&t.plan).await {
                Ok(p) => p.backup_keep.max(1) as usize,
                Err(_) => return,
            },
            Err(_) => return,
        };
        let Ok(all) = self.catalog.list_archives(tenant, ArchiveKind::Backup).await else {
            return;
        };
        for old in all.iter().filter(|a| a.state == "done").skip(keep) {
            match self.catalog.delete_archive(&old.id).await {
                Ok(_) => tracing::info!(tenant_id = %tenant, backup_id = %old.id, "deleted a backup past backup_keep"),
                Err(e) => {
                    tracing::warn!(tenant_id = %tenant, backup_id = %old.id, error = %e, "an old backup was not deleted")
                }
            }
        }
    }

    /// Deletes exports past their 7 days.
    pub async fn drop_expired_archives(&self) {
        match self.catalog.expired_archives(tenantd_core::now_secs()).await {
            Ok(gone) => {
                for (tenant, id) in gone {
                    match self.catalog.delete_archive(&id).await {
                        Ok(_) => tracing::info!(tenant_id = %tenant, archive_id = %id, "deleted an expired export"),
                        Err(e) => {
                            tracing::warn!(tenant_id = %tenant, archive_id = %id, error = %e, "an expired export was not deleted")
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not list expired exports"),
        }
    }
}

fn seal_chunk(k: &Arc<TenantKeys>, id: &str, seq: i64, chunk: &[u8]) -> Result<Vec<u8>, String> {
    k.seal(KIND, &chunk_name(id, seq), chunk)
        .map(|(_, b)| b)
        .map_err(|e| e.to_string())
}

/// A chunk's name in its associated data: `<archive id>/<seq>`.
fn chunk_name(id: &str, seq: i64) -> String {
    format!("{id}/{seq}")
}
