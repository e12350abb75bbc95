//! [`KeyStore`] on SQL: tenants' API keys.
use super::{json, to_json, SqlCatalog};
use crate::*;
use sqlx::any::AnyRow;
use sqlx::Row;

const KEY_COLS: &str =
    "id, tenant_id, name, prefix, hash, role, expires_at, limits, created_at, revoked_at, last_used_at";

fn key_from(r: &AnyRow) -> Result<ApiKey> {
    Ok(ApiKey {
        id: r.try_get("id")?,
        tenant_id: TenantId::from_trusted(r.try_get("tenant_id")?),
        name: r.try_get("name")?,
        prefix: r.try_get("prefix")?,
        hash: r.try_get("hash")?,
        role: r.try_get("role")?,
        expires_at: r.try_get("expires_at")?,
        limits: json(r, "limits")?,
        created_at: r.try_get("created_at")?,
        revoked_at: r.try_get("revoked_at")?,
        last_used_at: r.try_get("last_used_at")?,
    })
}

impl SqlCatalog {
    /// A key by id, read on `conn`.
    async fn key_in(conn: &mut sqlx::AnyConnection, id: &str) -> Result<Option<ApiKey>> {
        sqlx::query(&format!("SELECT {KEY_COLS} FROM api_keys WHERE id = $1"))
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?
            .map(|r| key_from(&r))
            .transpose()
    }
}

#[async_trait::async_trait]
impl KeyStore for SqlCatalog {
    async fn create_key_within(&self, w: &mut Work, k: &ApiKey, max: Option<u64>) -> Result<()> {
        let tx = &mut w.tx;
        if max.is_some() {
            Self::lock_tenant(tx, &k.tenant_id).await?;
            Self::below_level(tx, &k.tenant_id, Countable::ActiveKeys, max).await?;
        }
        sqlx::query(&format!(
            "INSERT INTO api_keys ({KEY_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
        ))
        .bind(&k.id)
        .bind(k.tenant_id.as_str())
        .bind(&k.name)
        .bind(&k.prefix)
        .bind(&k.hash)
        .bind(&k.role)
        .bind(k.expires_at)
        .bind(to_json(&k.limits))
        .bind(k.created_at)
        .bind(k.revoked_at)
        .bind(k.last_used_at)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    async fn get_key(&self, id: &str) -> Result<Option<ApiKey>> {
        Self::key_in(&mut *self.pool.acquire().await?, id).await
    }

    async fn list_keys(&self, tenant: &TenantId, page: &PageRequest) -> Result<Page<ApiKey>> {
        let after = self.cursors().after(page)?.unwrap_or_default();
        let rows = sqlx::query(&format!(
            "SELECT {KEY_COLS} FROM api_keys WHERE tenant_id = $1 AND id > $2 ORDER BY id LIMIT {}",
            page.limit + 1
        ))
        .bind(tenant.as_str())
        .bind(after)
        .fetch_all(&self.pool)
        .await?;
        let items = rows.iter().map(key_from).collect::<Result<Vec<_>>>()?;
        Ok(self.cursors().page(items, page.limit, |k| k.id.clone()))
    }

    async fn revoke_key(&self, w: &mut Work, tenant: &TenantId, id: &str, at: i64) -> Result<(ApiKey, bool)> {
        let changed =
            sqlx::query("UPDATE api_keys SET revoked_at = $3 WHERE tenant_id = $1 AND id = $2 AND revoked_at IS NULL")
                .bind(tenant.as_str())
                .bind(id)
                .bind(at)
                .execute(&mut *w.tx)
                .await?
                .rows_affected()
                > 0;
        match Self::key_in(&mut w.tx, id).await? {
            Some(k) if k.tenant_id == *tenant => Ok((k, changed)),
            _ => Err(StoreError::NotFound("api key")),
        }
    }

    async fn rotate_key(
        &self,
        w: &mut Work,
        tenant: &TenantId,
        id: &str,
        prefix: &str,
        hash_hex: &str,
    ) -> Result<ApiKey> {
        let key = match Self::key_in(&mut w.tx, id).await? {
            Some(k) if k.tenant_id == *tenant => k,
            _ => return Err(StoreError::NotFound("api key")),
        };
        if key.revoked_at.is_some() {
            return Err(StoreError::Conflict(
                "a revoked key cannot be rotated; create a new one".into(),
            ));
        }
        sqlx::query(
            "UPDATE api_keys SET prefix = $3, hash = $4 WHERE tenant_id = $1 AND id = $2 AND revoked_at IS NULL",
        )
        .bind(tenant.as_str())
        .bind(id)
        .bind(prefix)
        .bind(hash_hex)
        .execute(&mut *w.tx)
        .await?;
        Self::key_in(&mut w.tx, id)
            .await?
            .ok_or(StoreError::NotFound("api key"))
    }

    async fn touch_keys(&self, used: &[(String, i64)]) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        for (id, at) in used {
            sqlx::query(
                "UPDATE api_keys SET last_used_at = $2 WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < $2)",
            )
            .bind(id)
            .bind(*at)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}
