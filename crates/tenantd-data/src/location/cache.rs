//! The cache at a location: JSON values by key, with expiry and tags.
use super::{Arg, Location, Tx};
use crate::{DataError, Written};
use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::Row;
use tenantd_core::{now_secs, TenantId};

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
    /// The data key version `value` is sealed under (0: stored in the clear).
    #[serde(skip)]
    pub key_version: i64,
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

fn cache_entry(row: &AnyRow) -> Result<CacheEntry, DataError> {
    let value: String = row.try_get("value")?;
    let tags: String = row.try_get("tags")?;
    Ok(CacheEntry {
        key: row.try_get("key")?,
        value: serde_json::from_str(&value)?,
        tags: tags.split(',').filter(|t| !t.is_empty()).map(str::to_string).collect(),
        expires_at: row.try_get("expires_at")?,
        updated_at: row.try_get("updated_at")?,
        key_version: row.try_get("key_version")?,
    })
}

impl Location {
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

    /// Sets a cache entry (`value` as stored JSON text, sealed under `key_version`;
    /// `size`: the entry's length in the clear).
    pub async fn put_cache(
        &self,
        tenant: &TenantId,
        key: &str,
        (value, size, key_version): (&str, i64, i64),
        expires_at: Option<i64>,
        tags: &[String],
        max: Option<u64>,
    ) -> Result<Written<CacheEntry>, DataError> {
        let now = now_secs();
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
            Arg::Int(key_version),
        ];
        let put = self
            .put_keyed(
                &mut tx,
                Some(
                    "INSERT INTO cache_entries (tenant_id, key, value, tags, expires_at, size_bytes, version, updated_at, key_version) \
                     VALUES ($1, $2, $3, $4, $5, $6, 1, $7, $8) ON CONFLICT (tenant_id, key) DO NOTHING RETURNING {cache_cols}",
                ),
                "SELECT size_bytes FROM cache_entries WHERE tenant_id = $1 AND key = $2 {lock}",
                "UPDATE cache_entries SET value = $3, tags = $4, expires_at = $5, size_bytes = $6, \
                 version = version + 1, updated_at = $7, key_version = $8 WHERE tenant_id = $1 AND key = $2 RETURNING {cache_cols}",
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
