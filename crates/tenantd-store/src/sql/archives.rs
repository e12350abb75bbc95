//! [`ArchiveStore`] on SQL.
use super::SqlCatalog;
use crate::*;
use sqlx::any::AnyRow;
use sqlx::Row;
use tenantd_core::now_secs;

fn archive_from(r: &AnyRow) -> Result<Archive> {
    let counts: Option<String> = r.try_get("counts")?;
    let opt_u64 = |c: &str| -> Result<Option<u64>> { Ok(r.try_get::<Option<i64>, _>(c)?.map(|v| v.max(0) as u64)) };
    Ok(Archive {
        id: r.try_get("id")?,
        tenant: TenantId::from_trusted(r.try_get::<String, _>("tenant_id")?),
        kind: r.try_get("kind")?,
        state: r.try_get("state")?,
        done: r.try_get::<i64, _>("done")?.max(0) as u64,
        total: r.try_get::<i64, _>("total")?.max(0) as u64,
        size_bytes: opt_u64("size_bytes")?,
        sha256: r.try_get("sha256")?,
        chunks: r.try_get("chunks")?,
        key_version: r.try_get("key_version")?,
        schema_version: r.try_get("schema_version")?,
        counts: counts.map(|c| serde_json::from_str(&c)).transpose()?,
        error: r.try_get("error")?,
        created_at: r.try_get("created_at")?,
        finished_at: r.try_get("finished_at")?,
        expires_at: r.try_get("expires_at")?,
    })
}

#[async_trait::async_trait]
impl ArchiveStore for SqlCatalog {
    async fn create_archive(&self, a: &NewArchive) -> Result<Archive> {
        let r = sqlx::query(
            "INSERT INTO archives (id, tenant_id, kind, state, done, total, schema_version, job_id, created_at, expires_at) \
             VALUES ($1, $2, $3, 'queued', 0, 0, $4, $5, $6, $7) RETURNING *",
        )
        .bind(&a.id)
        .bind(a.tenant.as_str())
        .bind(a.kind.as_str())
        .bind(a.schema_version)
        .bind(a.job_id.as_deref())
        .bind(now_secs())
        .bind(a.expires_at)
        .fetch_one(&self.pool)
        .await?;
        archive_from(&r)
    }

    async fn get_archive(&self, tenant: &TenantId, id: &str) -> Result<Archive> {
        let r = sqlx::query("SELECT * FROM archives WHERE tenant_id = $1 AND id = $2")
            .bind(tenant.as_str())
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound("archive"))?;
        archive_from(&r)
    }

    async fn list_archives(&self, tenant: &TenantId, kind: ArchiveKind) -> Result<Vec<Archive>> {
        let rows =
            sqlx::query("SELECT * FROM archives WHERE tenant_id = $1 AND kind = $2 ORDER BY created_at DESC, id DESC")
                .bind(tenant.as_str())
                .bind(kind.as_str())
                .fetch_all(&self.pool)
                .await?;
        rows.iter().map(archive_from).collect()
    }

    async fn put_archive_chunk(&self, tenant: &TenantId, id: &str, seq: i64, data: &[u8]) -> Result<()> {
        sqlx::query(
            "INSERT INTO archive_chunks (archive_id, tenant_id, seq, data) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (archive_id, seq) DO UPDATE SET data = excluded.data",
        )
        .bind(id)
        .bind(tenant.as_str())
        .bind(seq)
        .bind(data)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn archive_chunk(&self, id: &str, seq: i64) -> Result<Option<Vec<u8>>> {
        Ok(
            sqlx::query("SELECT data FROM archive_chunks WHERE archive_id = $1 AND seq = $2")
                .bind(id)
                .bind(seq)
                .fetch_optional(&self.pool)
                .await?
                .map(|r| r.try_get("data"))
                .transpose()?,
        )
    }

    async fn archive_progress(&self, id: &str, state: &str, done: u64, total: u64) -> Result<()> {
        // Never over an archive's end (progress writes may land late).
        sqlx::query(
            "UPDATE archives SET state = $2, done = $3, total = $4 WHERE id = $1 AND state IN ('queued', 'running')",
        )
        .bind(id)
        .bind(state)
        .bind(done as i64)
        .bind(total as i64)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn finish_archive(&self, id: &str, end: &ArchiveEnd) -> Result<()> {
        match end {
            ArchiveEnd::Done {
                size_bytes,
                sha256,
                chunks,
                key_version,
                counts,
            } => {
                sqlx::query(
                    "UPDATE archives SET state = 'done', done = total, size_bytes = $2, sha256 = $3, chunks = $4, \
                     key_version = $5, counts = $6, finished_at = $7 WHERE id = $1",
                )
                .bind(id)
                .bind(*size_bytes as i64)
                .bind(sha256)
                .bind(chunks)
                .bind(key_version)
                .bind(counts.to_string())
                .bind(now_secs())
                .execute(&self.pool)
                .await?;
            }
            ArchiveEnd::Failed(e) => {
                let mut tx = self.pool.begin().await?;
                sqlx::query("DELETE FROM archive_chunks WHERE archive_id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("UPDATE archives SET state = 'failed', error = $2, finished_at = $3 WHERE id = $1")
                    .bind(id)
                    .bind(e)
                    .bind(now_secs())
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
            }
        }
        Ok(())
    }

    async fn delete_archive(&self, id: &str) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM archive_chunks WHERE archive_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let n = sqlx::query("DELETE FROM archives WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(n > 0)
    }

    async fn expired_archives(&self, now: i64) -> Result<Vec<(TenantId, String)>> {
        let rows = sqlx::query("SELECT tenant_id, id FROM archives WHERE expires_at IS NOT NULL AND expires_at <= $1")
            .bind(now)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    TenantId::from_trusted(r.try_get::<String, _>("tenant_id")?),
                    r.try_get("id")?,
                ))
            })
            .collect()
    }
}
