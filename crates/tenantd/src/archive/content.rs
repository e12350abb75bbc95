//! What an export or backup holds of a tenant, read and sent to the tarball builder file
//! by file: the tenant, its members, roles, workspaces, keys (never their secrets), its
//! configuration layer and features, usage, invoices, audit chain, every record by
//! collection, and every blob (listed with its content type in `blobs.ndjson` first, so
//! a restore knows it before the blob comes). Never a secret's value.
use super::tarball::{Body, Entry};
use crate::state::AppState;
use serde::Serialize;
use serde_json::{json, Value};
use std::path::PathBuf;
use tenantd_core::TenantId;
use tenantd_store::{AuditFilter, ConfigOwner, PageRequest};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

/// Pieces of a blob in flight to the builder.
const PIECES: usize = 4;
/// Records or blobs per page read.
const PAGE: u32 = 500;

/// Why a file could not be read.
pub type Failed = String;

fn fail(what: &str, e: impl std::fmt::Display) -> Failed {
    format!("{what}: {e}")
}

/// An ndjson file spooled to disk (its size must be known before the tar header).
struct Spool {
    path: PathBuf,
    file: tokio::io::BufWriter<tokio::fs::File>,
    count: u64,
    size: u64,
}

impl Spool {
    async fn new(dir: &std::path::Path, name: &str) -> Result<Self, Failed> {
        tokio::fs::create_dir_all(dir).await.map_err(|e| e.to_string())?;
        let path = dir.join(format!("{name}-{}.ndjson", tenantd_core::ids::new_id("spool")));
        let file = tokio::fs::File::create(&path).await.map_err(|e| e.to_string())?;
        Ok(Self {
            path,
            file: tokio::io::BufWriter::new(file),
            count: 0,
            size: 0,
        })
    }

    async fn line(&mut self, v: &impl Serialize) -> Result<(), Failed> {
        let mut b = serde_json::to_vec(v).map_err(|e| e.to_string())?;
        b.push(b'\n');
        self.file.write_all(&b).await.map_err(|e| e.to_string())?;
        self.count += 1;
        self.size += b.len() as u64;
        Ok(())
    }

    async fn entry(mut self, path: String) -> Result<Entry, Failed> {
        self.file.flush().await.map_err(|e| e.to_string())?;
        Ok(Entry {
            path,
            count: Some(self.count),
            content_type: None,
            body: Body::File(self.path, self.size),
        })
    }
}

/// The lines of one record in `records/{collection}.ndjson`.
#[derive(Serialize, serde::Deserialize)]
pub struct RecordLine {
    /// Its id.
    pub id: String,
    /// The document.
    pub data: Value,
    /// Its version.
    pub version: i64,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub updated_at: i64,
}

/// One blob in `blobs.ndjson`.
#[derive(Serialize, serde::Deserialize)]
pub struct BlobLine {
    /// Its path (the file is `blobs/{path}`).
    pub path: String,
    /// Its content type.
    pub content_type: String,
    /// Bytes.
    pub size_bytes: i64,
    /// SHA-256 of its content, hex.
    pub sha256: String,
}

/// One configuration value in `config.json`.
#[derive(Serialize, serde::Deserialize)]
pub struct ConfigLine {
    /// Its value.
    pub value: Value,
    /// Its version in the tenant's layer.
    pub version: i64,
}

/// Every item of a paged catalog list, spooled as ndjson.
async fn spool_pages<T, F, Fut>(tmp: &std::path::Path, name: &str, mut list: F) -> Result<Spool, Failed>
where
    T: Serialize,
    F: FnMut(PageRequest) -> Fut,
    Fut: std::future::Future<Output = tenantd_store::Result<tenantd_store::Page<T>>>,
{
    let mut spool = Spool::new(tmp, name).await?;
    let mut after = None;
    loop {
        let p = list(PageRequest { limit: 1000, after })
            .await
            .map_err(|e| fail(name, e))?;
        for item in &p.items {
            spool.line(item).await?;
        }
        match p.next_cursor {
            Some(next) => after = Some(next),
            None => return Ok(spool),
        }
    }
}

/// Sends the tenant's content to `tx`; `progress(done, total)` hears how far.
pub async fn produce(
    state: &AppState,
    tenant: &TenantId,
    tmp: &std::path::Path,
    tx: &mpsc::Sender<Entry>,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<Option<Value>, Failed> {
    let send = |e: Entry| async move {
        tx.send(e)
            .await
            .map_err(|_| "the archive's builder stopped".to_string())
    };
    let json_file = |path: &str, v: &Value, count: Option<u64>| Entry {
        path: path.to_string(),
        count,
        content_type: None,
        body: Body::Bytes(serde_json::to_vec_pretty(v).unwrap_or_default()),
    };
    let c = &*state.catalog;
    let t = c.get_tenant(tenant).await.map_err(|e| fail("the tenant", e))?;
    let scope = if state.data.placement(tenant).await.map_err(|e| e.to_string())?.is_some() {
        Some(state.data.scope(*tenant, None).await.map_err(|e| e.to_string())?)
    } else {
        None
    };
    let (records, blobs) = match &scope {
        Some(s) => s.counts().await.map_err(|e| e.to_string())?,
        None => (0, 0),
    };
    let total = records + blobs;
    progress(0, total);
    send(json_file("tenant.json", &json!(t), None)).await?;

    let members = spool_pages(
        tmp,
        "members",
        |page| async move { c.list_members(tenant, &page).await },
    )
    .await?;
    send(members.entry("members.ndjson".into()).await?).await?;

    let roles = c.list_roles(tenant).await.map_err(|e| fail("roles", e))?;
    send(json_file("roles.json", &json!(roles), Some(roles.len() as u64))).await?;

    let mut workspaces = Spool::new(tmp, "workspaces").await?;
    for w in c.list_workspaces(tenant).await.map_err(|e| fail("workspaces", e))? {
        workspaces.line(&w).await?;
    }
    send(workspaces.entry("workspaces.ndjson".into()).await?).await?;

    let keys = spool_pages(tmp, "keys", |page| async move { c.list_keys(tenant, &page).await }).await?;
    send(keys.entry("keys.ndjson".into()).await?).await?;

    let layer = c
        .config_layer(&ConfigOwner::Tenant(*tenant))
        .await
        .map_err(|e| fail("configuration", e))?;
    let config: serde_json::Map<String, Value> = layer
        .into_iter()
        .filter_map(|e| {
            let line = ConfigLine {
                value: e.value?,
                version: e.version,
            };
            Some((e.key, json!(line)))
        })
        .collect();
    send(json_file(
        "config.json",
        &Value::Object(config.clone()),
        Some(config.len() as u64),
    ))
    .await?;

    let settings = state.edge.cache().settings();
    let subject = tenantd_core::flags::Subject {
        tenant: tenant.as_str(),
        plan: t.plan.as_str(),
        targeting_key: None,
    };
    let features: serde_json::Map<String, Value> = settings
        .flags
        .evaluate_all(&subject)
        .filter_map(|(k, r)| {
            let e = r.ok()?;
            Some((
                k.to_string(),
                json!({"value": e.value, "reason": e.reason, "variant": e.variant}),
            ))
        })
        .collect();
    send(json_file(
        "features.json",
        &Value::Object(features.clone()),
        Some(features.len() as u64),
    ))
    .await?;

    let mut usage = Spool::new(tmp, "usage").await?;
    for r in c.load_counters(tenant, 0).await.map_err(|e| fail("usage", e))? {
        usage
            .line(
                &json!({"resource": r.resource, "key_id": r.scope.map(|k| k.to_string()),
                "window": r.window.as_str(), "period": r.period, "value": r.value}),
            )
            .await?;
    }
    send(usage.entry("usage.ndjson".into()).await?).await?;

    let now = tenantd_core::now_secs();
    let (mut y, mut m) = tenantd_core::ts::year_month(t.created_at);
    let last = tenantd_core::ts::year_month(now);
    while (y, m) <= last {
        let i = crate::billing::inputs(c, tenant, y, m, now)
            .await
            .map_err(|e| fail("invoices", e))?;
        let path = format!("invoices/{y:04}-{m:02}.json");
        send(json_file(&path, &json!(crate::billing::invoice(&i)), None)).await?;
        (y, m) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
    }

    let chain = tenantd_store::chain_name(Some(tenant));
    let mut audit = Spool::new(tmp, "audit").await?;
    let mut after = 0;
    loop {
        let events = c
            .chain_events(chain, &AuditFilter::default(), after, 1000)
            .await
            .map_err(|e| fail("audit", e))?;
        for e in &events {
            audit.line(e).await?;
        }
        match events.last() {
            Some(e) if events.len() == 1000 => after = e.seq,
            _ => break,
        }
    }
    send(audit.entry("audit.ndjson".into()).await?).await?;
    let checkpoint = c
        .latest_checkpoint(chain)
        .await
        .map_err(|e| fail("audit checkpoint", e))?
        .map(|cp| json!(cp));

    let Some(scope) = scope else { return Ok(checkpoint) };
    let mut done = 0u64;
    // Records, a file per collection.
    let mut current: Option<(String, Spool)> = None;
    let mut after: Option<(String, String)> = None;
    loop {
        let page = scope
            .all_records(after.as_ref().map(|(c, i)| (c.as_str(), i.as_str())), PAGE)
            .await
            .map_err(|e| fail("records", e))?;
        for r in &page {
            if current.as_ref().is_none_or(|(c, _)| *c != r.collection) {
                if let Some((c, spool)) = current.take() {
                    send(spool.entry(format!("records/{c}.ndjson")).await?).await?;
                }
                current = Some((r.collection.clone(), Spool::new(tmp, "records").await?));
            }
            let line = RecordLine {
                id: r.id.clone(),
                data: r.doc.clone(),
                version: r.version,
                created_at: r.created_at,
                updated_at: r.updated_at,
            };
            current.as_mut().expect("set above").1.line(&line).await?;
        }
        done += page.len() as u64;
        progress(done, total);
        match page.last() {
            Some(r) if page.len() == PAGE as usize => after = Some((r.collection.clone(), r.id.clone())),
            _ => break,
        }
    }
    if let Some((c, spool)) = current.take() {
        send(spool.entry(format!("records/{c}.ndjson")).await?).await?;
    }
    // Blobs: the index first, then each one's content, a chunk at a time.
    let mut all = Vec::new();
    let mut index = Spool::new(tmp, "blobs").await?;
    let mut after: Option<String> = None;
    loop {
        let page = scope
            .list_blobs("", after.as_deref(), PAGE)
            .await
            .map_err(|e| fail("blobs", e))?;
        for b in &page {
            let line = BlobLine {
                path: b.path.clone(),
                content_type: b.content_type.clone(),
                size_bytes: b.size_bytes,
                sha256: b.sha256.clone(),
            };
            index.line(&line).await?;
        }
        after = page.last().map(|b| b.path.clone());
        let more = page.len() == PAGE as usize;
        all.extend(page);
        if !more {
            break;
        }
    }
    send(index.entry("blobs.ndjson".into()).await?).await?;
    for b in &all {
        let (ptx, prx) = mpsc::channel(PIECES);
        send(Entry {
            path: format!("blobs/{}", b.path),
            count: None,
            content_type: Some(b.content_type.clone()),
            body: Body::Pieces(b.size_bytes.max(0) as u64, prx),
        })
        .await?;
        for seq in 0.. {
            let piece = scope.chunk(b, seq).await.map_err(|e| fail(&b.path, e))?;
            let Some(piece) = piece else { break };
            if ptx.send(piece).await.is_err() {
                return Err("the archive's builder stopped".into());
            }
        }
        done += 1;
        progress(done, total);
    }
    Ok(checkpoint)
}
