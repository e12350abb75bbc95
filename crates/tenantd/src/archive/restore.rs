//! A backup put back (docs/protection.md): into its own tenant (a restore) or into a new
//! one (a clone). A `tenantd.restore` job reads the backup twice: first to check every
//! file against the manifest and the whole against its digest (nothing changes if one
//! differs, or if the backup is of a newer catalog schema), then to replace the tenant's
//! records, blobs and configuration layer with the backup's, keeping records' ids,
//! versions and times. Counts and blob checksums are checked again after. Members, keys,
//! usage, invoices and the audit chain stay as the catalog has them: they are in the
//! backup to read, and usage is never rewound (that would lift a tenant's limits).
use super::content::{BlobLine, ConfigLine, RecordLine};
use super::tarball::{self, FileMeta, Manifest, Part};
use crate::platform_jobs::{Outcome, RESTORE};
use crate::state::AppState;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use tenantd_core::TenantId;
use tenantd_jobs::{Claimed, Jobs, NewJob};
use tenantd_store::{Archive, ConfigOwner, NewEvent};
use tokio::sync::mpsc;

/// A restore's payload: the backup (of `tenant_id`) and the tenant it goes into.
#[derive(serde::Serialize, serde::Deserialize)]
struct Task {
    tenant_id: String,
    backup_id: String,
    into: String,
}

/// Why a backup cannot be restored, before anything changed.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// No such backup of the tenant.
    #[error("no such backup of this tenant")]
    NotFound,
    /// Not built (yet, or it failed).
    #[error("the backup is {0}, not done")]
    NotDone(String),
    /// Written by a newer tenantd.
    #[error(
        "the backup was written at catalog schema version {0}, newer than this tenantd's {ours}: restore it with that version or later",
        ours = tenantd_store::schema_version()
    )]
    Newer(i64),
}

impl AppState {
    /// A backup of `tenant` that can be restored here.
    pub async fn restorable(&self, tenant: &TenantId, backup_id: &str) -> Result<Archive, Refused> {
        let a = match self.catalog.get_archive(tenant, backup_id).await {
            Ok(a) if a.kind == "backup" => a,
            _ => return Err(Refused::NotFound),
        };
        if a.state != "done" {
            return Err(Refused::NotDone(a.state));
        }
        if a.schema_version > tenantd_store::schema_version() {
            return Err(Refused::Newer(a.schema_version));
        }
        Ok(a)
    }

    /// Queues the restore of `backup` (of its tenant) into `into`; the job's id.
    pub async fn start_restore(&self, backup: &Archive, into: &TenantId) -> Result<String, tenantd_jobs::JobError> {
        let task = Task {
            tenant_id: backup.tenant.to_string(),
            backup_id: backup.id.clone(),
            into: into.to_string(),
        };
        let mut job = NewJob::new(Jobs::platform(), RESTORE, json!(task));
        job.max_attempts = 100;
        let (j, _) = self.jobs.enqueue(&job, tenantd_limits::now_ms()).await?;
        Ok(j.id)
    }

    /// The `tenantd.restore` job.
    pub(crate) async fn run_restore(&self, job: &Claimed) -> Outcome {
        let Ok(t) = serde_json::from_value::<Task>(job.payload.clone()) else {
            return Outcome::Failed(format!("not a restore: {}", job.payload));
        };
        let (source, into) = (TenantId::from_trusted(t.tenant_id), TenantId::from_trusted(t.into));
        let a = match self.restorable(&source, &t.backup_id).await {
            Ok(a) => a,
            Err(Refused::NotDone(s)) if s != "failed" => return Outcome::Later(format!("the backup is {s}")),
            Err(e) => {
                return Outcome::Done(
                    json!({"restored": false, "error": format!("the backup cannot be restored: {e}")}),
                )
            }
        };
        self.restoring.insert(into);
        let r = self.restore(&a, &into).await;
        self.restoring.remove(&into);
        self.storage_levels.remove(&into);
        self.changed(tenantd_edge::Change::Config(into.as_str())).await;
        match r {
            Ok(verified) => {
                let kind = if source == into {
                    "backup.restored"
                } else {
                    "backup.cloned"
                };
                let detail = json!({"backup_id": a.id, "from": source.as_str(), "verified": verified});
                if let Err(e) = self.catalog.record_event(&NewEvent::system(&into, kind, detail)).await {
                    tracing::error!(tenant_id = %into, error = %e, "a restore's event was not written");
                }
                tracing::info!(tenant_id = %into, backup_id = %a.id, "restored a backup");
                Outcome::Done(json!({"restored": true, "tenant_id": into.as_str(), "verified": verified}))
            }
            Err(e) => {
                // Not tried again: a restore that failed needs a person to look.
                tracing::error!(tenant_id = %into, backup_id = %a.id, error = %e, "a restore failed");
                Outcome::Done(json!({"restored": false, "error": e}))
            }
        }
    }

    /// Reads the backup through `each` (a file's start, its pieces, its end), and checks
    /// the whole against its digest; the manifest.
    async fn walk(&self, a: &Archive, each: &mut (dyn Visit + Send)) -> Result<Manifest, String> {
        let (ptx, prx) = mpsc::channel(2);
        let (otx, mut orx) = mpsc::channel(8);
        let reader = tokio::task::spawn_blocking(move || tarball::read(prx, otx));
        // Owns the receiver: if a part is refused, the reader's sends fail and it stops.
        let consume = async move {
            let (mut manifest, mut current) = (Vec::new(), String::new());
            while let Some(part) = orx.recv().await {
                match &part {
                    Part::Start(path, _) => current.clone_from(path),
                    Part::Piece(b) if current == "manifest.json" => manifest.extend_from_slice(b),
                    _ => {}
                }
                each.part(part).await?;
            }
            Ok::<_, String>(manifest)
        };
        let (fed, consumed) = tokio::join!(self.read_chunks(a, ptx), consume);
        let read = reader.await.map_err(|e| e.to_string())?;
        fed?;
        let manifest = consumed?;
        let (sha, size) = read.map_err(|e| format!("the backup is not a readable .tar.gz: {e}"))?;
        if Some(&sha) != a.sha256.as_ref() || Some(size) != a.size_bytes {
            return Err("the backup's digest does not match what was recorded when it was made".into());
        }
        let m: Manifest = serde_json::from_slice(&manifest).map_err(|e| format!("the backup's manifest: {e}"))?;
        if m.format != super::FORMAT || m.tenant_id != a.tenant.as_str() {
            return Err("the backup's manifest is not of this format or tenant".into());
        }
        Ok(m)
    }

    /// Checks, replaces, and checks again; the verified counts.
    async fn restore(&self, a: &Archive, into: &TenantId) -> Result<Value, String> {
        // 1. Every file as the manifest lists it.
        let mut check = Check::default();
        let m = self.walk(a, &mut check).await?;
        let seen = check.seen;
        for f in &m.files {
            if seen.get(&f.path) != Some(&(f.size, f.sha256.clone())) {
                return Err(format!("{} does not match the manifest", f.path));
            }
        }
        if seen.len() != m.files.len() + 1 {
            return Err("the backup holds files the manifest does not list".into());
        }
        // 2. Replace.
        let t = self.catalog.get_tenant(into).await.map_err(|e| e.to_string())?;
        let plan = self.catalog.get_plan(&t.plan).await.map_err(|e| e.to_string())?;
        let scope = self
            .data_scope(*into, plan.isolation)
            .await
            .map_err(|e| format!("the tenant's data: {}", e.0.detail))?;
        scope.clear().await.map_err(|e| e.to_string())?;
        let mut apply = Apply {
            scope: &scope,
            file: String::new(),
            line: Vec::new(),
            types: HashMap::new(),
            blob: None,
            config: None,
        };
        self.walk(a, &mut apply).await?;
        if let Some(config) = apply.config.take() {
            self.restore_config(into, config).await?;
        }
        // 3. Check again: records per collection, and every blob by its checksum.
        let (records, blobs) = scope.counts().await.map_err(|e| e.to_string())?;
        let want = |f: &&FileMeta| f.path.starts_with("records/");
        let want_records: u64 = m.files.iter().filter(want).filter_map(|f| f.count).sum();
        let want_blobs: Vec<&FileMeta> = m.files.iter().filter(|f| f.path.starts_with("blobs/")).collect();
        if (records, blobs) != (want_records, want_blobs.len() as u64) {
            return Err(format!(
                "after the restore the tenant has {records} records and {blobs} blobs; the backup has {want_records} and {}",
                want_blobs.len()
            ));
        }
        for f in &want_blobs {
            let path = &f.path["blobs/".len()..];
            let b = scope.get_blob(path).await.map_err(|e| e.to_string())?;
            if b.as_ref().map(|b| &b.sha256) != Some(&f.sha256) {
                return Err(format!("blob {path} does not match the backup after the restore"));
            }
        }
        Ok(json!({"records": records, "blobs": blobs, "files": m.files.len()}))
    }

    /// Makes the tenant's configuration layer the backup's.
    async fn restore_config(&self, into: &TenantId, config: BTreeMap<String, ConfigLine>) -> Result<(), String> {
        let owner = ConfigOwner::Tenant(*into);
        let now = self.catalog.config_layer(&owner).await.map_err(|e| e.to_string())?;
        let mut w = self.catalog.begin().await.map_err(|e| e.to_string())?;
        for e in &now {
            if e.value.is_some() && !config.contains_key(&e.key) {
                self.catalog
                    .put_config(&mut w, &owner, &e.key, None, None, "system")
                    .await
                    .map_err(|e| e.to_string())?;
            }
        }
        for (key, line) in &config {
            let same = now
                .iter()
                .any(|e| &e.key == key && e.value.as_ref() == Some(&line.value));
            if !same {
                self.catalog
                    .put_config(&mut w, &owner, key, Some(&line.value), None, "system")
                    .await
                    .map_err(|e| format!("configuration key {key}: {e}"))?;
            }
        }
        w.commit().await.map_err(|e| e.to_string())
    }
}

/// What a pass over a backup does with each part of it.
trait Visit {
    fn part(&mut self, part: Part) -> futures_util::future::BoxFuture<'_, Result<(), String>>;
}

/// The first pass: each file's size and digest.
#[derive(Default)]
struct Check {
    seen: BTreeMap<String, (u64, String)>,
    size: u64,
}

impl Visit for Check {
    fn part(&mut self, part: Part) -> futures_util::future::BoxFuture<'_, Result<(), String>> {
        match part {
            Part::Start(_, s) => self.size = s,
            Part::End(path, sha) => drop(self.seen.insert(path, (self.size, sha))),
            Part::Piece(_) => {}
        }
        Box::pin(async { Ok(()) })
    }
}

impl Visit for Apply<'_> {
    fn part(&mut self, part: Part) -> futures_util::future::BoxFuture<'_, Result<(), String>> {
        Box::pin(self.apply(part))
    }
}

/// The second pass of a restore: each file's content put back.
struct Apply<'a> {
    scope: &'a tenantd_data::Scope<'a>,
    file: String,
    line: Vec<u8>,
    types: HashMap<String, String>,
    /// The blob being staged: its id, chunks and bytes so far.
    blob: Option<(String, i64, i64)>,
    config: Option<BTreeMap<String, ConfigLine>>,
}

impl Apply<'_> {
    async fn apply(&mut self, part: Part) -> Result<(), String> {
        match part {
            Part::Start(path, _) => {
                self.file = path;
                self.line.clear();
                if self.file.starts_with("blobs/") {
                    self.blob = Some((tenantd_data::new_blob_id(), 0, 0));
                }
            }
            Part::Piece(b) => {
                if let Some((id, seq, size)) = &mut self.blob {
                    self.scope.stage_chunk(id, *seq, &b).await.map_err(|e| e.to_string())?;
                    *seq += 1;
                    *size += b.len() as i64;
                } else if self.file == "config.json" {
                    self.line.extend_from_slice(&b);
                } else if self.wanted() {
                    self.line.extend_from_slice(&b);
                    let mut lines: Vec<Vec<u8>> = Vec::new();
                    while let Some(n) = self.line.iter().position(|c| *c == b'\n') {
                        lines.push(self.line.drain(..=n).collect());
                    }
                    for l in lines {
                        self.on_line(&l).await?;
                    }
                }
            }
            Part::End(path, sha) => {
                if let Some((id, chunks, size)) = self.blob.take() {
                    let staged = Staged {
                        blob_id: id,
                        chunks,
                        size,
                        sha256: sha,
                    };
                    self.commit_blob(&path["blobs/".len()..], staged).await?;
                } else if path == "config.json" {
                    let c = serde_json::from_slice(&self.line).map_err(|e| format!("config.json: {e}"))?;
                    self.config = Some(c);
                } else if !self.line.is_empty() && self.wanted() {
                    let rest = std::mem::take(&mut self.line);
                    self.on_line(&rest).await?;
                }
            }
        }
        Ok(())
    }

    /// Files whose lines are put back.
    fn wanted(&self) -> bool {
        self.file.starts_with("records/") || self.file == "blobs.ndjson"
    }

    async fn on_line(&mut self, l: &[u8]) -> Result<(), String> {
        let l = l.strip_suffix(b"\n").unwrap_or(l);
        if l.is_empty() {
            return Ok(());
        }
        let bad = |e: serde_json::Error| format!("{}: {e}", self.file);
        if self.file == "blobs.ndjson" {
            let b: BlobLine = serde_json::from_slice(l).map_err(bad)?;
            self.types.insert(b.path, b.content_type);
            return Ok(());
        }
        let collection = self.file["records/".len()..].trim_end_matches(".ndjson").to_string();
        let r: RecordLine = serde_json::from_slice(l).map_err(bad)?;
        let record = tenantd_data::Record {
            collection,
            id: r.id,
            doc: r.data,
            version: r.version,
            created_at: r.created_at,
            updated_at: r.updated_at,
            key_version: 0,
        };
        self.scope.restore_record(&record).await.map_err(|e| e.to_string())
    }

    async fn commit_blob(&mut self, path: &str, s: Staged) -> Result<(), String> {
        let blob = tenantd_data::Blob {
            blob_id: s.blob_id,
            content_type: self
                .types
                .get(path)
                .cloned()
                .unwrap_or_else(|| "application/octet-stream".into()),
            created_at: 0,
            path: path.to_string(),
            sha256: s.sha256,
            size_bytes: s.size,
            updated_at: 0,
            version: 1,
        };
        self.scope
            .commit_blob(&blob, s.chunks, None)
            .await
            .map(drop)
            .map_err(|e| format!("blob {path}: {e}"))
    }
}

/// A blob's staged chunks, ready to commit.
struct Staged {
    blob_id: String,
    chunks: i64,
    size: i64,
    sha256: String,
}
