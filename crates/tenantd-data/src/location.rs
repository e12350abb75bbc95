//! A location: one place tenant data lives (the row tier's shared tables, a tenant's
//! schema, a tenant's database), and every statement the data plane runs there.
//!
//! Every statement names the tenant, and on PostgreSQL runs in a transaction that sets
//! `tenantd.tenant_id` (for row-level security) and the `search_path` (for the tier).
//! Every write first locks the tenant's `storage` row: writes of one tenant are
//! serialised there, which keeps the storage level exact across nodes and is how a tier
//! move freezes writes (`frozen`).
use crate::{DataError, Written};
use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::{AnyPool, Row};
use tenantd_core::{now_secs, TenantId};

type Tx = sqlx::Transaction<'static, sqlx::Any>;

/// One JSON record of a tenant's collection.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Record {
    /// Its collection.
    pub collection: String,
    /// Its id within the collection.
    pub id: String,
    /// The document.
    pub doc: serde_json::Value,
    /// 1 when created, one more on each write (the ETag).
    pub version: i64,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub updated_at: i64,
}

/// A blob's description (its content is read a chunk at a time).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Blob {
    /// Its path.
    pub path: String,
    /// Where its chunks are.
    #[serde(skip)]
    pub blob_id: String,
    /// The content type it was stored with.
    pub content_type: String,
    /// Its length.
    pub size_bytes: i64,
    /// SHA-256 of its content, in hex.
    pub sha256: String,
    /// 1 when created, one more on each replacement.
    pub version: i64,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub updated_at: i64,
}

/// One cache entry.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CacheEntry {
    /// Its key.
    pub key: String,
    /// The value.
    pub value: serde_json::Value,
    /// Its tags.
    pub tags: Vec<String>,
    /// Unix seconds when it expires, if it does.
    pub expires_at: Option<i64>,
    /// Unix seconds.
    pub updated_at: i64,
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

/// A place tenant data lives.
pub(crate) struct Location {
    /// As the placement table names it.
    pub name: String,
    pub pool: AnyPool,
    pub pg: bool,
    /// The quoted schema (PostgreSQL).
    pub search_path: Option<String>,
}

/// `before + delta`, refused when it grows past `max`.
fn level(before: i64, old: i64, new: i64, max: Option<u64>) -> Result<(i64, i64), DataError> {
    let after = before - old + new;
    if after > before && max.is_some_and(|m| after > m as i64) {
        return Err(DataError::LevelReached {
            used: before.max(0) as u64,
            wanted: (after - before) as u64,
        });
    }
    Ok((before, after))
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

const RECORD_COLS: &str = "collection, id, {doc_out} AS doc, version, created_at, updated_at";
const BLOB_COLS: &str = "path, blob_id, content_type, size_bytes, sha256, version, created_at, updated_at";
const CACHE_COLS: &str = "key, value, tags, expires_at, updated_at";

impl Location {
    /// `sql` with this database's spelling of the document column.
    fn sql(&self, sql: &str) -> String {
        let (doc_in, doc_out) = if self.pg {
            ("CAST($4 AS jsonb)", "CAST(doc AS text)")
        } else {
            ("$4", "doc")
        };
        sql.replace("{cols}", RECORD_COLS)
            .replace("{doc_in}", doc_in)
            .replace("{doc_out}", doc_out)
            .replace("{lock}", if self.pg { "FOR UPDATE" } else { "" })
    }

    /// A transaction for `tenant`.
    pub async fn begin(&self, tenant: &TenantId) -> Result<Tx, DataError> {
        let mut tx = self.pool.begin().await?;
        if let Some(path) = &self.search_path {
            sqlx::query("SELECT set_config('tenantd.tenant_id', $1, true), set_config('search_path', $2, true)")
                .bind(tenant.as_str())
                .bind(path)
                .execute(&mut *tx)
                .await?;
        }
        Ok(tx)
    }

    /// A write transaction: the tenant's storage row locked, with its level. `Moving`
    /// while a tier move has frozen the tenant's writes here.
    async fn begin_write(&self, tenant: &TenantId) -> Result<(Tx, i64), DataError> {
        let mut tx = self.begin(tenant).await?;
        loop {
            let row = sqlx::query(&self.sql("SELECT bytes, frozen FROM storage WHERE tenant_id = $1 {lock}"))
                .bind(tenant.as_str())
                .fetch_optional(&mut *tx)
                .await?;
            match row {
                Some(r) if r.try_get::<i64, _>("frozen")? != 0 => return Err(DataError::Moving),
                Some(r) => return Ok((tx, r.try_get("bytes")?)),
                None => {
                    sqlx::query(
                        "INSERT INTO storage (tenant_id, bytes, frozen) VALUES ($1, 0, 0) ON CONFLICT (tenant_id) DO NOTHING",
                    )
                    .bind(tenant.as_str())
                    .execute(&mut *tx)
                    .await?;
                }
            }
        }
    }

    /// Sets the level the write left and commits it.
    async fn finish<T>(
        mut tx: Tx,
        tenant: &TenantId,
        (before, after): (i64, i64),
        value: T,
    ) -> Result<Written<T>, DataError> {
        if after != before {
            sqlx::query("UPDATE storage SET bytes = $2 WHERE tenant_id = $1")
                .bind(tenant.as_str())
                .bind(after)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(Written {
            value,
            before: before.max(0) as u64,
            after: after.max(0) as u64,
        })
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

    async fn old_size(
        &self,
        tx: &mut Tx,
        sql: &str,
        tenant: &TenantId,
        a: &str,
        b: Option<&str>,
    ) -> Result<Option<(i64, AnyRow)>, DataError> {
        let mut q = sqlx::query(sql).bind(tenant.as_str()).bind(a);
        if let Some(b) = b {
            q = q.bind(b);
        }
        match q.fetch_optional(&mut **tx).await? {
            Some(r) => Ok(Some((r.try_get("size_bytes")?, r))),
            None => Ok(None),
        }
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
        let (mut tx, used) = self.begin_write(tenant).await?;
        let old = self
            .old_size(
                &mut tx,
                "SELECT size_bytes, version FROM records WHERE tenant_id = $1 AND collection = $2 AND id = $3",
                tenant,
                collection,
                Some(id),
            )
            .await?;
        if let Some(want) = expected {
            match &old {
                Some((_, r)) if r.try_get::<i64, _>("version")? == want => {}
                _ => return Ok(None),
            }
        }
        let lv = level(used, old.as_ref().map_or(0, |o| o.0), doc.len() as i64, max)?;
        let row = sqlx::query(&self.sql(
            "INSERT INTO records (tenant_id, collection, id, doc, version, size_bytes, created_at, updated_at) \
             VALUES ($1, $2, $3, {doc_in}, 1, $5, $6, $6) \
             ON CONFLICT (tenant_id, collection, id) DO UPDATE SET doc = excluded.doc, \
             version = records.version + 1, size_bytes = excluded.size_bytes, updated_at = excluded.updated_at \
             RETURNING {cols}",
        ))
        .bind(tenant.as_str())
        .bind(collection)
        .bind(id)
        .bind(doc)
        .bind(doc.len() as i64)
        .bind(now_secs())
        .fetch_one(&mut *tx)
        .await?;
        let r = record(&row)?;
        Self::finish(tx, tenant, lv, r).await.map(Some)
    }

    /// A record.
    pub async fn get_record(&self, tenant: &TenantId, collection: &str, id: &str) -> Result<Option<Record>, DataError> {
        let mut tx = self.begin(tenant).await?;
        let row =
            sqlx::query(&self.sql("SELECT {cols} FROM records WHERE tenant_id = $1 AND collection = $2 AND id = $3"))
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
        let rows = sqlx::query(&self.sql(&format!(
            "SELECT {{cols}} FROM records WHERE tenant_id = $1 AND collection = $2 AND id > $3 ORDER BY id LIMIT {}",
            limit.clamp(1, 1000)
        )))
        .bind(tenant.as_str())
        .bind(collection)
        .bind(after)
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
        let (mut tx, used) = self.begin_write(tenant).await?;
        let freed: Option<i64> = sqlx::query(
            "DELETE FROM records WHERE tenant_id = $1 AND collection = $2 AND id = $3 RETURNING size_bytes",
        )
        .bind(tenant.as_str())
        .bind(collection)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
        .map(|r| r.try_get("size_bytes"))
        .transpose()?;
        Self::finish(tx, tenant, (used, used - freed.unwrap_or(0)), freed.is_some()).await
    }

    // ---- blobs ----

    /// Stores one chunk of a blob being uploaded; it is counted, and visible, once the
    /// blob is committed.
    pub async fn stage_chunk(&self, tenant: &TenantId, blob_id: &str, seq: i64, data: &[u8]) -> Result<(), DataError> {
        let mut tx = self.begin(tenant).await?;
        sqlx::query("INSERT INTO blob_chunks (tenant_id, blob_id, seq, data, created_at) VALUES ($1, $2, $3, $4, $5)")
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

    /// Makes an uploaded blob (`new`, its chunks staged) the content of its path,
    /// replacing any earlier one.
    pub async fn commit_blob(
        &self,
        tenant: &TenantId,
        new: &Blob,
        chunks: i64,
        max: Option<u64>,
    ) -> Result<Written<Blob>, DataError> {
        let (mut tx, used) = self.begin_write(tenant).await?;
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
        let old = self
            .old_size(
                &mut tx,
                "SELECT size_bytes, blob_id FROM blobs WHERE tenant_id = $1 AND path = $2",
                tenant,
                &new.path,
                None,
            )
            .await?;
        let lv = level(used, old.as_ref().map_or(0, |o| o.0), new.size_bytes, max)?;
        let row = sqlx::query(&format!(
            "INSERT INTO blobs (tenant_id, path, blob_id, content_type, size_bytes, sha256, version, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, 1, $7, $7) \
             ON CONFLICT (tenant_id, path) DO UPDATE SET blob_id = excluded.blob_id, content_type = excluded.content_type, \
             size_bytes = excluded.size_bytes, sha256 = excluded.sha256, version = blobs.version + 1, updated_at = excluded.updated_at \
             RETURNING {BLOB_COLS}"
        ))
        .bind(tenant.as_str())
        .bind(&new.path)
        .bind(&new.blob_id)
        .bind(&new.content_type)
        .bind(new.size_bytes)
        .bind(&new.sha256)
        .bind(now_secs())
        .fetch_one(&mut *tx)
        .await?;
        if let Some((_, r)) = &old {
            Self::delete_chunks(&mut tx, tenant, &r.try_get::<String, _>("blob_id")?).await?;
        }
        let b = blob(&row)?;
        Self::finish(tx, tenant, lv, b).await
    }

    /// A blob's description.
    pub async fn get_blob(&self, tenant: &TenantId, path: &str) -> Result<Option<Blob>, DataError> {
        let mut tx = self.begin(tenant).await?;
        let row = sqlx::query(&format!(
            "SELECT {BLOB_COLS} FROM blobs WHERE tenant_id = $1 AND path = $2"
        ))
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
        let rows = sqlx::query(&format!(
            "SELECT {BLOB_COLS} FROM blobs WHERE tenant_id = $1 AND substr(path, 1, CAST($2 AS integer)) = $3 AND path > $4 \
             ORDER BY path LIMIT {}",
            limit.clamp(1, 1000)
        ))
        .bind(tenant.as_str())
        .bind(prefix.chars().count() as i64)
        .bind(prefix)
        .bind(after)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.iter().map(blob).collect()
    }

    /// Deletes a blob and its content; `false` when there is none.
    pub async fn delete_blob(&self, tenant: &TenantId, path: &str) -> Result<Written<bool>, DataError> {
        let (mut tx, used) = self.begin_write(tenant).await?;
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
        Self::finish(tx, tenant, (used, used - freed), gone.is_some()).await
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
        let (mut tx, used) = self.begin_write(tenant).await?;
        let used = used - Self::sweep_expired(&mut tx, tenant, now).await?;
        let old = self
            .old_size(
                &mut tx,
                "SELECT size_bytes FROM cache_entries WHERE tenant_id = $1 AND key = $2",
                tenant,
                key,
                None,
            )
            .await?;
        let size = (key.len() + value.len()) as i64;
        let lv = level(used, old.as_ref().map_or(0, |o| o.0), size, max)?;
        let tags = if tags.is_empty() {
            String::new()
        } else {
            format!(",{},", tags.join(","))
        };
        let row = sqlx::query(&format!(
            "INSERT INTO cache_entries (tenant_id, key, value, tags, expires_at, size_bytes, version, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, 1, $7) \
             ON CONFLICT (tenant_id, key) DO UPDATE SET value = excluded.value, tags = excluded.tags, \
             expires_at = excluded.expires_at, size_bytes = excluded.size_bytes, \
             version = cache_entries.version + 1, updated_at = excluded.updated_at \
             RETURNING {CACHE_COLS}"
        ))
        .bind(tenant.as_str())
        .bind(key)
        .bind(value)
        .bind(tags)
        .bind(expires_at)
        .bind(size)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        let e = cache_entry(&row)?;
        Self::finish(tx, tenant, lv, e).await
    }

    /// A cache entry that has not expired.
    pub async fn get_cache(&self, tenant: &TenantId, key: &str) -> Result<Option<CacheEntry>, DataError> {
        let mut tx = self.begin(tenant).await?;
        let row = sqlx::query(&format!(
            "SELECT {CACHE_COLS} FROM cache_entries WHERE tenant_id = $1 AND key = $2 \
             AND (expires_at IS NULL OR expires_at > $3)"
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
        let (mut tx, used) = self.begin_write(tenant).await?;
        let used = used - Self::sweep_expired(&mut tx, tenant, now).await?;
        let (cond, arg, n) = match which {
            CacheSelector::Key(k) => ("key = $2", k.to_string(), 0),
            CacheSelector::Prefix(p) => (
                "substr(key, 1, CAST($3 AS integer)) = $2",
                p.to_string(),
                p.chars().count() as i64,
            ),
            CacheSelector::Tag(t) => ("instr(tags, $2) > 0", format!(",{t},"), 0),
        };
        // PostgreSQL has `strpos` where SQLite has `instr`.
        let cond = if self.pg {
            cond.replace("instr(", "strpos(")
        } else {
            cond.to_string()
        };
        let sql = format!("DELETE FROM cache_entries WHERE tenant_id = $1 AND {cond} RETURNING size_bytes");
        let mut q = sqlx::query_scalar::<_, i64>(&sql).bind(tenant.as_str()).bind(arg);
        if n > 0 {
            q = q.bind(n);
        }
        let sizes = q.fetch_all(&mut *tx).await?;
        let freed: i64 = sizes.iter().sum();
        Self::finish(tx, tenant, (used, used - freed), sizes.len() as u64).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_level_refuses_growth_past_its_maximum_only() {
        assert_eq!(level(10, 0, 5, Some(15)).unwrap(), (10, 15));
        assert!(matches!(
            level(10, 0, 6, Some(15)),
            Err(DataError::LevelReached { used: 10, wanted: 6 })
        ));
        // Shrinking is always allowed, even above the maximum.
        assert_eq!(level(20, 8, 2, Some(15)).unwrap(), (20, 14));
        assert_eq!(level(10, 0, 1_000, None).unwrap(), (10, 1_010));
    }
}
