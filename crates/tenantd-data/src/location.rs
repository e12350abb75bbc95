//! A location: one place tenant data lives (the row tier's shared tables, a tenant's
//! schema, a tenant's database), and every statement the data plane runs there.
//!
//! Every statement names the tenant, and on PostgreSQL runs in a transaction that sets
//! `tenantd.tenant_id` (for row-level security) and the `search_path` (for the tier).
//! Every write ends by adding its bytes to the tenant's `storage` row, which it holds
//! from that statement to the commit ([`Location::settle`]): that keeps the storage
//! level exact across nodes, and is how a tier move freezes writes (`frozen`).
use crate::{DataError, Written};
use serde::Serialize;
use sqlx::any::AnyPoolOptions;
use sqlx::any::AnyRow;
use sqlx::{AnyPool, Row};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, OnceLock, RwLock};
use std::time::{Duration, Instant};
use tenantd_core::{now_secs, TenantId};

type Tx = sqlx::Transaction<'static, sqlx::Any>;

// Serialized as the API answers them: times in RFC 3339, fields in alphabetical order
// (as the API has always written them).

/// One JSON record of a tenant's collection.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Record {
    /// Its collection.
    pub collection: String,
    /// Unix seconds.
    #[serde(serialize_with = "tenantd_core::ts::ser")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: i64,
    /// The document.
    #[serde(rename = "data")]
    pub doc: serde_json::Value,
    /// Its id within the collection.
    pub id: String,
    /// Unix seconds.
    #[serde(serialize_with = "tenantd_core::ts::ser")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: i64,
    /// 1 when created, one more on each write (the ETag).
    pub version: i64,
}

/// A blob's description (its content is read a chunk at a time).
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Blob {
    /// Where its chunks are.
    #[serde(skip)]
    pub blob_id: String,
    /// The content type it was stored with.
    pub content_type: String,
    /// Unix seconds.
    #[serde(serialize_with = "tenantd_core::ts::ser")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: i64,
    /// Its path.
    pub path: String,
    /// SHA-256 of its content, in hex.
    pub sha256: String,
    /// Its length.
    pub size_bytes: i64,
    /// Unix seconds.
    #[serde(serialize_with = "tenantd_core::ts::ser")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: i64,
    /// 1 when created, one more on each replacement.
    pub version: i64,
}

/// One cache entry.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct CacheEntry {
    /// Unix seconds when it expires, if it does.
    #[serde(serialize_with = "tenantd_core::ts::ser_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<i64>,
    /// Its key.
    pub key: String,
    /// Its tags.
    pub tags: Vec<String>,
    /// Unix seconds.
    #[serde(serialize_with = "tenantd_core::ts::ser")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: i64,
    /// The value.
    pub value: serde_json::Value,
}

/// Which cache entries a delete removes.
#[derive(Debug, Clone, Copy)]
pub enum CacheSelector<'a> {
    /// One key.
    Key(&'a str),
    /// Every key starting with this.
    Prefix(&'a str),
    /// Every entry with this tag.
    Tag(&'a str),
}

/// One statement parameter.
#[derive(Clone, Copy)]
pub(crate) enum Arg<'a> {
    Text(&'a str),
    Int(i64),
    OptInt(Option<i64>),
    Bytes(&'a [u8]),
}

pub(crate) type Query<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>;

/// `q` with these parameters bound, in order.
pub(crate) fn bind<'q>(mut q: Query<'q>, args: impl IntoIterator<Item = Arg<'q>>) -> Query<'q> {
    for a in args {
        q = match a {
            Arg::Text(v) => q.bind(v),
            Arg::Int(v) => q.bind(v),
            Arg::OptInt(v) => q.bind(v),
            Arg::Bytes(v) => q.bind(v),
        };
    }
    q
}

/// A keyed write: the row written, and the row it replaced (its `size_bytes` and what
/// `lock` selected), if any.
struct Put {
    row: AnyRow,
    prior: Option<AnyRow>,
}

impl Put {
    /// How much the write changed the tenant's storage.
    fn delta(&self, size: i64) -> Result<i64, DataError> {
        match &self.prior {
            Some(p) => Ok(size - p.try_get::<i64, _>("size_bytes")?),
            None => Ok(size),
        }
    }
}

/// A place tenant data lives.
pub(crate) struct Location {
    /// As the placement table names it.
    pub name: String,
    pub pool: AnyPool,
    pub pg: bool,
    /// The quoted schema (PostgreSQL).
    pub search_path: Option<String>,
    /// When `pool` last lost a connection (shared with the pool's `before_acquire`).
    pub lost: Arc<Lost>,
}

/// How long a pooled connection may sit idle and still be handed out without a ping.
const TRUSTED_IDLE: Duration = Duration::from_secs(10);
/// How often a transaction is begun again after meeting a connection the server had
/// closed (each time, the connections idle since then are pinged first).
const LOST_RETRIES: u32 = 2;

/// When a pool last found one of its connections closed by the server (a restart,
/// `pg_terminate_backend`, a proxy's idle timeout): its other connections idle since
/// then may be closed too, and are pinged before use.
#[derive(Debug, Default)]
pub(crate) struct Lost(AtomicU64);

impl Lost {
    /// Nanoseconds since the first call (never 0, which means "never lost").
    fn now() -> u64 {
        static EPOCH: OnceLock<Instant> = OnceLock::new();
        u64::try_from(EPOCH.get_or_init(Instant::now).elapsed().as_nanos())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    fn mark(&self) {
        self.0.store(Self::now(), Ordering::Relaxed);
    }

    /// Whether a connection idle for `idle` was idle when the last loss was found.
    fn suspects(&self, idle: Duration) -> bool {
        let at = self.0.load(Ordering::Relaxed);
        at != 0 && Duration::from_nanos(Self::now().saturating_sub(at)) < idle
    }
}

/// Options of a pool that tenant requests use, with at most `max` connections. sqlx
/// pings a connection when it goes back to the pool (always) and, by default, again when
/// it is taken out: two extra round trips around every transaction. Here the second
/// ping is made only for a connection idle longer than [`TRUSTED_IDLE`], or idle since
/// the pool last `lost` a connection. A transaction that still meets a closed one fails
/// at its `BEGIN`, where nothing has run, and [`Location::begin`] begins it again.
pub(crate) fn request_pool(max: u32, lost: Arc<Lost>) -> AnyPoolOptions {
    AnyPoolOptions::new()
        .max_connections(max.max(1))
        .test_before_acquire(false)
        .before_acquire(move |conn, meta| {
            let check = meta.idle_for > TRUSTED_IDLE || lost.suspects(meta.idle_for);
            Box::pin(async move {
                if check {
                    sqlx::Connection::ping(conn).await?;
                }
                Ok(true)
            })
        })
}

/// Whether `e` says the connection itself is gone (closed, reset, or the server shut
/// the session down), as opposed to a statement failing.
fn connection_lost(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(d) => d.code().is_some_and(|c| c.starts_with("57P") || c.starts_with("08")),
        _ => false,
    }
}

fn record(row: &AnyRow) -> Result<Record, DataError> {
    let doc: String = row.try_get("doc")?;
    Ok(Record {
        collection: row.try_get("collection")?,
        id: row.try_get("id")?,
        doc: serde_json::from_str(&doc)?,
        version: row.try_get("version")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn blob(row: &AnyRow) -> Result<Blob, DataError> {
    Ok(Blob {
        path: row.try_get("path")?,
        blob_id: row.try_get("blob_id")?,
        content_type: row.try_get("content_type")?,
        size_bytes: row.try_get("size_bytes")?,
        sha256: row.try_get("sha256")?,
        version: row.try_get("version")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn cache_entry(row: &AnyRow) -> Result<CacheEntry, DataError> {
    let value: String = row.try_get("value")?;
    let tags: String = row.try_get("tags")?;
    Ok(CacheEntry {
        key: row.try_get("key")?,
        value: serde_json::from_str(&value)?,
        tags: tags.split(',').filter(|t| !t.is_empty()).map(str::to_string).collect(),
        expires_at: row.try_get("expires_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

/// `template` in PostgreSQL's (`pg`) or SQLite's spelling: `{record_cols}`,
/// `{blob_cols}` and `{cache_cols}` are the columns the row readers take, `{doc_in}` is
/// parameter `$4` as a document, `{lock}` locks the selected row, `{instr}` finds a
/// substring.
fn resolve(template: &str, pg: bool) -> String {
    let pick = |postgres, sqlite| if pg { postgres } else { sqlite };
    template
        .replace(
            "{record_cols}",
            "collection, id, {doc_out} AS doc, version, created_at, updated_at",
        )
        .replace(
            "{blob_cols}",
            "path, blob_id, content_type, size_bytes, sha256, version, created_at, updated_at",
        )
        .replace("{cache_cols}", "key, value, tags, expires_at, updated_at")
        .replace("{doc_in}", pick("CAST($4 AS jsonb)", "$4"))
        .replace("{doc_out}", pick("CAST(doc AS text)", "doc"))
        .replace("{lock}", pick("FOR UPDATE", ""))
        .replace("{instr}", pick("strpos", "instr"))
}

impl Location {
    /// A statement in this database's spelling ([`resolve`]). Each template is resolved
    /// once per process and database, not on every call.
    fn sql(&self, template: &'static str) -> &'static str {
        type Resolved = RwLock<HashMap<(usize, bool), &'static str>>;
        static RESOLVED: LazyLock<Resolved> = LazyLock::new(Resolved::default);
        // Keyed by where the template is: one entry per statement in this file.
        let key = (template.as_ptr() as usize, self.pg);
        if let Some(s) = RESOLVED.read().unwrap_or_else(|e| e.into_inner()).get(&key) {
            return s;
        }
        let mut resolved = RESOLVED.write().unwrap_or_else(|e| e.into_inner());
        resolved
            .entry(key)
            .or_insert_with(|| Box::leak(resolve(template, self.pg).into_boxed_str()))
    }

    /// A transaction for `tenant`. On PostgreSQL its first statement sets the tenant
    /// and the tier's schema for this transaction only, sent with `BEGIN` in one round
    /// trip (as literals: a tenant id is only `a-z`, `0-9` and `-`, and a schema is
    /// tenantd's own name; quotes are doubled all the same).
    ///
    /// A connection the server had closed meanwhile (a restart, `pg_terminate_backend`,
    /// a proxy's idle timeout) fails here, before anything ran: the transaction is begun
    /// again, on a connection that works.
    pub async fn begin(&self, tenant: &TenantId) -> Result<Tx, DataError> {
        let mut retries = 0;
        loop {
            let begun = match &self.search_path {
                Some(path) => {
                    let lit = |v: &str| format!("'{}'", v.replace('\'', "''"));
                    let begin = format!(
                        "BEGIN; SELECT set_config('tenantd.tenant_id', {}, true), set_config('search_path', {}, true)",
                        lit(tenant.as_str()),
                        lit(path)
                    );
                    self.pool.begin_with(begin).await
                }
                None => self.pool.begin().await,
            };
            match begun {
                Err(e) if connection_lost(&e) => {
                    self.lost.mark();
                    if retries == LOST_RETRIES {
                        return Err(e.into());
                    }
                    retries += 1;
                }
                r => return Ok(r?),
            }
        }
    }

    /// Ends a write: adds `delta` to the tenant's storage level and commits. The
    /// tenant's `storage` row is locked only from here to the commit, so writes of one
    /// tenant overlap up to this point. Refused (and rolled back, so nothing is written):
    /// growth past `max` (`LevelReached`), and any write while a tier move has frozen
    /// the tenant here (`Moving`).
    async fn settle<T>(
        &self,
        mut tx: Tx,
        tenant: &TenantId,
        delta: i64,
        max: Option<u64>,
        value: T,
    ) -> Result<Written<T>, DataError> {
        let limit = max.filter(|_| delta > 0).map(|m| m.min(i64::MAX as u64) as i64);
        let sql = match limit {
            Some(_) => "UPDATE storage SET bytes = bytes + $2 WHERE tenant_id = $1 AND frozen = 0 AND bytes + $2 <= $3 RETURNING bytes",
            None => "UPDATE storage SET bytes = bytes + $2 WHERE tenant_id = $1 AND frozen = 0 RETURNING bytes",
        };
        for _ in 0..2 {
            let mut q = sqlx::query_scalar::<_, i64>(sql).bind(tenant.as_str()).bind(delta);
            if let Some(l) = limit {
                q = q.bind(l);
            }
            if let Some(after) = q.fetch_optional(&mut *tx).await? {
                tx.commit().await?;
                return Ok(Written {
                    value,
                    before: (after - delta).max(0) as u64,
                    after: after.max(0) as u64,
                });
            }
            // Frozen, full, or the tenant's first write here.
            let row = sqlx::query("SELECT bytes, frozen FROM storage WHERE tenant_id = $1")
                .bind(tenant.as_str())
                .fetch_optional(&mut *tx)
                .await?;
            match row {
                Some(r) if r.try_get::<i64, _>("frozen")? != 0 => return Err(DataError::Moving),
                Some(r) => {
                    return Err(DataError::LevelReached {
                        used: r.try_get::<i64, _>("bytes")?.max(0) as u64,
                        wanted: delta.max(0) as u64,
                    })
                }
                None => {
                    sqlx::query("INSERT INTO storage (tenant_id, bytes, frozen) VALUES ($1, 0, 0) ON CONFLICT (tenant_id) DO NOTHING")
                        .bind(tenant.as_str())
                        .execute(&mut *tx)
                        .await?;
                }
            }
        }
        Err(DataError::Db(sqlx::Error::RowNotFound))
    }

    /// The tenant's storage level here.
    pub async fn used(&self, tenant: &TenantId) -> Result<u64, DataError> {
        let mut tx = self.begin(tenant).await?;
        let n: Option<i64> = sqlx::query("SELECT bytes FROM storage WHERE tenant_id = $1")
            .bind(tenant.as_str())
            .fetch_optional(&mut *tx)
            .await?
            .map(|r| r.try_get("bytes"))
            .transpose()?;
        tx.commit().await?;
        Ok(n.unwrap_or(0).max(0) as u64)
    }

    /// Writes the row of one key so that its size delta is exact under concurrent
    /// writes: `insert` (`… ON CONFLICT … DO NOTHING RETURNING …`) when the key is free;
    /// otherwise `lock` (`SELECT size_bytes, … {lock}` on the key: the first `key` of
    /// `args`) and, if `accept` takes that row, `update` (`… RETURNING …`). `insert` and
    /// `update` take all of `args`. `None`: no `insert` and no row, or `accept` refused.
    /// The three are templates ([`resolve`]).
    #[allow(clippy::too_many_arguments)]
    async fn put_keyed(
        &self,
        tx: &mut Tx,
        insert: Option<&'static str>,
        lock: &'static str,
        update: &'static str,
        args: &[Arg<'_>],
        key: usize,
        accept: impl Fn(&AnyRow) -> bool,
    ) -> Result<Option<Put>, DataError> {
        let (insert, lock, update) = (insert.map(|i| self.sql(i)), self.sql(lock), self.sql(update));
        // A row deleted between the insert and the lock: insert again.
        for _ in 0..3 {
            if let Some(insert) = insert {
                if let Some(row) = bind(sqlx::query(insert), args.iter().copied())
                    .fetch_optional(&mut **tx)
                    .await?
                {
                    return Ok(Some(Put { row, prior: None }));
                }
            }
            let Some(prior) = bind(sqlx::query(lock), args[..key].iter().copied())
                .fetch_optional(&mut **tx)
                .await?
            else {
                if insert.is_none() {
                    return Ok(None);
                }
                continue;
            };
            if !accept(&prior) {
                return Ok(None);
            }
            let row = bind(sqlx::query(update), args.iter().copied())
                .fetch_one(&mut **tx)
                .await?;
            return Ok(Some(Put {
                row,
                prior: Some(prior),
            }));
        }
        Err(DataError::Db(sqlx::Error::RowNotFound))
    }

    // ---- records ----

    /// Creates or replaces a record (`expected`: only at that version; `None` returned
    /// when it is missing or has changed).
    pub async fn write_record(
        &self,
        tenant: &TenantId,
        collection: &str,
        id: &str,
        doc: &str,
        expected: Option<i64>,
        max: Option<u64>,
    ) -> Result<Option<Written<Record>>, DataError> {
        let size = doc.len() as i64;
        let mut tx = self.begin(tenant).await?;
        let args = [
            Arg::Text(tenant.as_str()),
            Arg::Text(collection),
            Arg::Text(id),
            Arg::Text(doc),
            Arg::Int(size),
            Arg::Int(now_secs()),
        ];
        let put = self
            .put_keyed(
                &mut tx,
                expected.is_none().then_some(
                    "INSERT INTO records (tenant_id, collection, id, doc, version, size_bytes, created_at, updated_at) \
                     VALUES ($1, $2, $3, {doc_in}, 1, $5, $6, $6) \
                     ON CONFLICT (tenant_id, collection, id) DO NOTHING RETURNING {record_cols}",
                ),
                "SELECT size_bytes, version FROM records WHERE tenant_id = $1 AND collection = $2 AND id = $3 {lock}",
                "UPDATE records SET doc = {doc_in}, version = version + 1, size_bytes = $5, updated_at = $6 \
                 WHERE tenant_id = $1 AND collection = $2 AND id = $3 RETURNING {record_cols}",
                &args,
                3,
                |prior| expected.is_none_or(|want| prior.try_get::<i64, _>("version").ok() == Some(want)),
            )
            .await?;
        let Some(put) = put else { return Ok(None) };
        let (delta, r) = (put.delta(size)?, record(&put.row)?);
        self.settle(tx, tenant, delta, max, r).await.map(Some)
    }

    /// A record.
    pub async fn get_record(&self, tenant: &TenantId, collection: &str, id: &str) -> Result<Option<Record>, DataError> {
        let mut tx = self.begin(tenant).await?;
        let row = sqlx::query(
            self.sql("SELECT {record_cols} FROM records WHERE tenant_id = $1 AND collection = $2 AND id = $3"),
        )
        .bind(tenant.as_str())
        .bind(collection)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        row.as_ref().map(record).transpose()
    }

    /// Up to `limit` records of a collection with ids after `after`, by id.
    pub async fn list_records(
        &self,
        tenant: &TenantId,
        collection: &str,
        after: &str,
        limit: u32,
    ) -> Result<Vec<Record>, DataError> {
        let mut tx = self.begin(tenant).await?;
        let rows = sqlx::query(self.sql(
            "SELECT {record_cols} FROM records WHERE tenant_id = $1 AND collection = $2 AND id > $3 ORDER BY id LIMIT $4",
        ))
        .bind(tenant.as_str())
        .bind(collection)
        .bind(after)
        .bind(i64::from(limit.clamp(1, 1000)))
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.iter().map(record).collect()
    }

    /// Deletes a record; `false` when there is none.
    pub async fn delete_record(
        &self,
        tenant: &TenantId,
        collection: &str,
        id: &str,
    ) -> Result<Written<bool>, DataError> {
        let mut tx = self.begin(tenant).await?;
        let freed: Option<i64> = sqlx::query_scalar(
            "DELETE FROM records WHERE tenant_id = $1 AND collection = $2 AND id = $3 RETURNING size_bytes",
        )
        .bind(tenant.as_str())
        .bind(collection)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        self.settle(tx, tenant, -freed.unwrap_or(0), None, freed.is_some())
            .await
    }

    // ---- blobs ----

    /// Stores one chunk of a blob being uploaded; it is counted, and visible, once the
    /// blob is committed.
    pub async fn stage_chunk(&self, tenant: &TenantId, blob_id: &str, seq: i64, data: &[u8]) -> Result<(), DataError> {
        let mut tx = self.begin(tenant).await?;
        // A chunk a tier move copied already is left as it is (the same bytes).
        sqlx::query(
            "INSERT INTO blob_chunks (tenant_id, blob_id, seq, data, created_at) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (tenant_id, blob_id, seq) DO NOTHING",
        )
        .bind(tenant.as_str())
        .bind(blob_id)
        .bind(seq)
        .bind(data)
        .bind(now_secs())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Deletes the chunks of uploads that were never committed (the process stopped
    /// mid-upload) and are older than `before` (Unix seconds); returns how many.
    pub async fn sweep_abandoned_uploads(&self, tenant: &TenantId, before: i64) -> Result<u64, DataError> {
        let mut tx = self.begin(tenant).await?;
        let n = sqlx::query(
            "DELETE FROM blob_chunks WHERE tenant_id = $1 AND created_at < $2 AND NOT EXISTS \
             (SELECT 1 FROM blobs WHERE blobs.tenant_id = blob_chunks.tenant_id AND blobs.blob_id = blob_chunks.blob_id)",
        )
        .bind(tenant.as_str())
        .bind(before)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(n)
    }

    /// Removes an upload's chunks (refused, failed, or replaced).
    pub async fn discard_chunks(&self, tenant: &TenantId, blob_id: &str) -> Result<(), DataError> {
        let mut tx = self.begin(tenant).await?;
        Self::delete_chunks(&mut tx, tenant, blob_id).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn delete_chunks(tx: &mut Tx, tenant: &TenantId, blob_id: &str) -> Result<(), DataError> {
        sqlx::query("DELETE FROM blob_chunks WHERE tenant_id = $1 AND blob_id = $2")
            .bind(tenant.as_str())
            .bind(blob_id)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// Makes an uploaded blob (`new`, its `chunks` chunks staged) the content of its
    /// path, replacing any earlier one.
    pub async fn commit_blob(
        &self,
        tenant: &TenantId,
        new: &Blob,
        chunks: i64,
        max: Option<u64>,
    ) -> Result<Written<Blob>, DataError> {
        let mut tx = self.begin(tenant).await?;
        let staged: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM blob_chunks WHERE tenant_id = $1 AND blob_id = $2")
            .bind(tenant.as_str())
            .bind(&new.blob_id)
            .fetch_one(&mut *tx)
            .await?;
        if staged != chunks {
            return Err(DataError::Invalid(format!(
                "the upload is incomplete ({staged} of {chunks} parts stored); upload it again"
            )));
        }
        let args = [
            Arg::Text(tenant.as_str()),
            Arg::Text(&new.path),
            Arg::Text(&new.blob_id),
            Arg::Text(&new.content_type),
            Arg::Int(new.size_bytes),
            Arg::Text(&new.sha256),
            Arg::Int(now_secs()),
        ];
        let put = self
            .put_keyed(
                &mut tx,
                Some(
                    "INSERT INTO blobs (tenant_id, path, blob_id, content_type, size_bytes, sha256, version, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, 1, $7, $7) ON CONFLICT (tenant_id, path) DO NOTHING RETURNING {blob_cols}",
                ),
                "SELECT size_bytes, blob_id FROM blobs WHERE tenant_id = $1 AND path = $2 {lock}",
                "UPDATE blobs SET blob_id = $3, content_type = $4, size_bytes = $5, sha256 = $6, \
                 version = version + 1, updated_at = $7 WHERE tenant_id = $1 AND path = $2 RETURNING {blob_cols}",
                &args,
                2,
                |_| true,
            )
            .await?
            .ok_or(DataError::Db(sqlx::Error::RowNotFound))?;
        if let Some(prior) = &put.prior {
            Self::delete_chunks(&mut tx, tenant, &prior.try_get::<String, _>("blob_id")?).await?;
        }
        let (delta, b) = (put.delta(new.size_bytes)?, blob(&put.row)?);
        self.settle(tx, tenant, delta, max, b).await
    }

    /// A blob's description.
    pub async fn get_blob(&self, tenant: &TenantId, path: &str) -> Result<Option<Blob>, DataError> {
        let mut tx = self.begin(tenant).await?;
        let row = sqlx::query(self.sql("SELECT {blob_cols} FROM blobs WHERE tenant_id = $1 AND path = $2"))
            .bind(tenant.as_str())
            .bind(path)
            .fetch_optional(&mut *tx)
            .await?;
        tx.commit().await?;
        row.as_ref().map(blob).transpose()
    }

    /// Chunk `seq` of a blob's content; `None` past its end.
    pub async fn chunk(&self, tenant: &TenantId, blob_id: &str, seq: i64) -> Result<Option<Vec<u8>>, DataError> {
        let mut tx = self.begin(tenant).await?;
        let row = sqlx::query("SELECT data FROM blob_chunks WHERE tenant_id = $1 AND blob_id = $2 AND seq = $3")
            .bind(tenant.as_str())
            .bind(blob_id)
            .bind(seq)
            .fetch_optional(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(row.map(|r| r.try_get("data")).transpose()?)
    }

    /// Up to `limit` blobs whose path starts with `prefix`, after `after`, by path.
    pub async fn list_blobs(
        &self,
        tenant: &TenantId,
        prefix: &str,
        after: &str,
        limit: u32,
    ) -> Result<Vec<Blob>, DataError> {
        let mut tx = self.begin(tenant).await?;
        let rows = sqlx::query(self.sql(
            "SELECT {blob_cols} FROM blobs WHERE tenant_id = $1 AND substr(path, 1, CAST($2 AS integer)) = $3 \
             AND path > $4 ORDER BY path LIMIT $5",
        ))
        .bind(tenant.as_str())
        .bind(prefix.chars().count() as i64)
        .bind(prefix)
        .bind(after)
        .bind(i64::from(limit.clamp(1, 1000)))
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.iter().map(blob).collect()
    }

    /// Deletes a blob and its content; `false` when there is none.
    pub async fn delete_blob(&self, tenant: &TenantId, path: &str) -> Result<Written<bool>, DataError> {
        let mut tx = self.begin(tenant).await?;
        let gone = sqlx::query("DELETE FROM blobs WHERE tenant_id = $1 AND path = $2 RETURNING size_bytes, blob_id")
            .bind(tenant.as_str())
            .bind(path)
            .fetch_optional(&mut *tx)
            .await?;
        let mut freed = 0;
        if let Some(r) = &gone {
            freed = r.try_get("size_bytes")?;
            Self::delete_chunks(&mut tx, tenant, &r.try_get::<String, _>("blob_id")?).await?;
        }
        self.settle(tx, tenant, -freed, None, gone.is_some()).await
    }

    // ---- cache ----

    /// Removes the tenant's expired entries in a write; returns the bytes freed.
    async fn sweep_expired(tx: &mut Tx, tenant: &TenantId, now: i64) -> Result<i64, DataError> {
        let rows = sqlx::query(
            "DELETE FROM cache_entries WHERE tenant_id = $1 AND expires_at IS NOT NULL AND expires_at <= $2 RETURNING size_bytes",
        )
        .bind(tenant.as_str())
        .bind(now)
        .fetch_all(&mut **tx)
        .await?;
        rows.iter()
            .map(|r| r.try_get::<i64, _>("size_bytes").map_err(DataError::from))
            .sum()
    }

    /// Sets a cache entry (`value` as JSON text).
    pub async fn put_cache(
        &self,
        tenant: &TenantId,
        key: &str,
        value: &str,
        expires_at: Option<i64>,
        tags: &[String],
        max: Option<u64>,
    ) -> Result<Written<CacheEntry>, DataError> {
        let now = now_secs();
        let size = (key.len() + value.len()) as i64;
        let tags = if tags.is_empty() {
            String::new()
        } else {
            format!(",{},", tags.join(","))
        };
        let mut tx = self.begin(tenant).await?;
        let freed = Self::sweep_expired(&mut tx, tenant, now).await?;
        let args = [
            Arg::Text(tenant.as_str()),
            Arg::Text(key),
            Arg::Text(value),
            Arg::Text(&tags),
            Arg::OptInt(expires_at),
            Arg::Int(size),
            Arg::Int(now),
        ];
        let put = self
            .put_keyed(
                &mut tx,
                Some(
                    "INSERT INTO cache_entries (tenant_id, key, value, tags, expires_at, size_bytes, version, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, 1, $7) ON CONFLICT (tenant_id, key) DO NOTHING RETURNING {cache_cols}",
                ),
                "SELECT size_bytes FROM cache_entries WHERE tenant_id = $1 AND key = $2 {lock}",
                "UPDATE cache_entries SET value = $3, tags = $4, expires_at = $5, size_bytes = $6, \
                 version = version + 1, updated_at = $7 WHERE tenant_id = $1 AND key = $2 RETURNING {cache_cols}",
                &args,
                2,
                |_| true,
            )
            .await?
            .ok_or(DataError::Db(sqlx::Error::RowNotFound))?;
        let (delta, e) = (put.delta(size)? - freed, cache_entry(&put.row)?);
        self.settle(tx, tenant, delta, max, e).await
    }

    /// A cache entry that has not expired.
    pub async fn get_cache(&self, tenant: &TenantId, key: &str) -> Result<Option<CacheEntry>, DataError> {
        let mut tx = self.begin(tenant).await?;
        let row = sqlx::query(self.sql(
            "SELECT {cache_cols} FROM cache_entries WHERE tenant_id = $1 AND key = $2 \
             AND (expires_at IS NULL OR expires_at > $3)",
        ))
        .bind(tenant.as_str())
        .bind(key)
        .bind(now_secs())
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        row.as_ref().map(cache_entry).transpose()
    }

    /// Deletes cache entries; returns how many live ones it removed.
    pub async fn delete_cache(&self, tenant: &TenantId, which: CacheSelector<'_>) -> Result<Written<u64>, DataError> {
        let now = now_secs();
        let mut tx = self.begin(tenant).await?;
        let expired = Self::sweep_expired(&mut tx, tenant, now).await?;
        let (sql, arg, n) = match which {
            CacheSelector::Key(k) => (
                "DELETE FROM cache_entries WHERE tenant_id = $1 AND key = $2 RETURNING size_bytes",
                k.to_string(),
                0,
            ),
            CacheSelector::Prefix(p) => (
                "DELETE FROM cache_entries WHERE tenant_id = $1 AND substr(key, 1, CAST($3 AS integer)) = $2 \
                 RETURNING size_bytes",
                p.to_string(),
                p.chars().count() as i64,
            ),
            CacheSelector::Tag(t) => (
                "DELETE FROM cache_entries WHERE tenant_id = $1 AND {instr}(tags, $2) > 0 RETURNING size_bytes",
                format!(",{t},"),
                0,
            ),
        };
        let mut q = sqlx::query_scalar::<_, i64>(self.sql(sql))
            .bind(tenant.as_str())
            .bind(arg);
        if n > 0 {
            q = q.bind(n);
        }
        let sizes = q.fetch_all(&mut *tx).await?;
        let freed: i64 = sizes.iter().sum();
        self.settle(tx, tenant, -(freed + expired), None, sizes.len() as u64)
            .await
    }
}
