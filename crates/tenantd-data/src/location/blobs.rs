//! Blobs at a location: the chunks an upload stages, committed as a path's content, and
//! read back a chunk at a time.
use super::{Arg, Location, Tx};
use crate::{DataError, Written};
use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::Row;
use tenantd_core::{now_secs, TenantId};

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

impl Location {
    /// Stores one chunk of a blob being uploaded (as stored: sealed under `key_version`);
    /// it is counted, and visible, once the blob is committed.
    pub async fn stage_chunk(
        &self,
        tenant: &TenantId,
        blob_id: &str,
        seq: i64,
        (data, key_version): (&[u8], i64),
    ) -> Result<(), DataError> {
        let mut tx = self.begin(tenant).await?;
        // A chunk a tier move copied already is left as it is (the same bytes).
        sqlx::query(
            "INSERT INTO blob_chunks (tenant_id, blob_id, seq, data, created_at, key_version) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (tenant_id, blob_id, seq) DO NOTHING",
        )
        .bind(tenant.as_str())
        .bind(blob_id)
        .bind(seq)
        .bind(data)
        .bind(now_secs())
        .bind(key_version)
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

    /// Chunk `seq` of a blob's content as stored, with the data key version it is
    /// sealed under; `None` past its end.
    pub async fn chunk(&self, tenant: &TenantId, blob_id: &str, seq: i64) -> Result<Option<(Vec<u8>, i64)>, DataError> {
        let mut tx = self.begin(tenant).await?;
        let row =
            sqlx::query("SELECT data, key_version FROM blob_chunks WHERE tenant_id = $1 AND blob_id = $2 AND seq = $3")
                .bind(tenant.as_str())
                .bind(blob_id)
                .bind(seq)
                .fetch_optional(&mut *tx)
                .await?;
        tx.commit().await?;
        Ok(row
            .map(|r| Ok::<_, sqlx::Error>((r.try_get("data")?, r.try_get("key_version")?)))
            .transpose()?)
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
}
