//! [`VaultStore`] on SQL: the master key's fingerprint, tenants' wrapped data keys, and
//! tenants' sealed secrets. Nothing here is ever in the clear.
use super::SqlCatalog;
use crate::*;
use sqlx::any::AnyRow;
use sqlx::Row;
use tenantd_core::now_secs;

fn secret_from(r: &AnyRow) -> Result<StoredSecret> {
    Ok(StoredSecret {
        name: r.try_get("name")?,
        version: r.try_get("version")?,
        key_version: i64::from(r.try_get::<i32, _>("key_version")?),
        sealed: r.try_get("value")?,
        updated_at: r.try_get("updated_at")?,
    })
}

#[async_trait::async_trait]
impl VaultStore for SqlCatalog {
    async fn master_fingerprint(&self) -> Result<Option<String>> {
        Ok(sqlx::query("SELECT fingerprint FROM master_key WHERE id = 1")
            .fetch_optional(&self.pool)
            .await?
            .map(|r| r.try_get("fingerprint"))
            .transpose()?)
    }

    async fn claim_master_fingerprint(&self, fingerprint: &str) -> Result<String> {
        sqlx::query("INSERT INTO master_key (id, fingerprint) VALUES (1, $1) ON CONFLICT (id) DO NOTHING")
            .bind(fingerprint)
            .execute(&self.pool)
            .await?;
        self.master_fingerprint()
            .await?
            .ok_or_else(|| StoreError::Invalid("the master key's fingerprint was not stored".into()))
    }

    async fn data_keys(&self, tenant: &TenantId) -> Result<Vec<(i64, String)>> {
        let rows = sqlx::query("SELECT version, wrapped FROM tenant_keys WHERE tenant_id = $1 ORDER BY version")
            .bind(tenant.as_str())
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((i64::from(r.try_get::<i32, _>("version")?), r.try_get("wrapped")?)))
            .collect()
    }

    async fn data_key_versions(&self, tenant: &TenantId) -> Result<Vec<(i64, i64)>> {
        let rows = sqlx::query("SELECT version, created_at FROM tenant_keys WHERE tenant_id = $1 ORDER BY version")
            .bind(tenant.as_str())
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((i64::from(r.try_get::<i32, _>("version")?), r.try_get("created_at")?)))
            .collect()
    }

    async fn add_data_key(&self, tenant: &TenantId, version: i64, wrapped: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO tenant_keys (tenant_id, version, wrapped, created_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (tenant_id, version) DO NOTHING",
        )
        .bind(tenant.as_str())
        .bind(version as i32)
        .bind(wrapped)
        .bind(now_secs())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn shred(&self, w: &mut Work, tenant: &TenantId) -> Result<u64> {
        Ok(sqlx::query("DELETE FROM tenant_keys WHERE tenant_id = $1")
            .bind(tenant.as_str())
            .execute(&mut *w.tx)
            .await?
            .rows_affected())
    }

    async fn all_data_keys(&self, w: &mut Work) -> Result<Vec<(TenantId, i64, String)>> {
        let rows = sqlx::query("SELECT tenant_id, version, wrapped FROM tenant_keys ORDER BY tenant_id, version")
            .fetch_all(&mut *w.tx)
            .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    TenantId::from_trusted(r.try_get("tenant_id")?),
                    i64::from(r.try_get::<i32, _>("version")?),
                    r.try_get("wrapped")?,
                ))
            })
            .collect()
    }

    async fn rewrap_data_key(&self, w: &mut Work, tenant: &TenantId, version: i64, wrapped: &str) -> Result<()> {
        sqlx::query("UPDATE tenant_keys SET wrapped = $3 WHERE tenant_id = $1 AND version = $2")
            .bind(tenant.as_str())
            .bind(version as i32)
            .bind(wrapped)
            .execute(&mut *w.tx)
            .await?;
        Ok(())
    }

    async fn set_master_fingerprint(&self, w: &mut Work, fingerprint: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO master_key (id, fingerprint) VALUES (1, $1) \
             ON CONFLICT (id) DO UPDATE SET fingerprint = excluded.fingerprint",
        )
        .bind(fingerprint)
        .execute(&mut *w.tx)
        .await?;
        Ok(())
    }

    async fn put_secret(
        &self,
        w: &mut Work,
        tenant: &TenantId,
        name: &str,
        key_version: i64,
        sealed: &str,
    ) -> Result<StoredSecret> {
        let now = now_secs();
        let r = sqlx::query(
            "INSERT INTO tenant_secrets (tenant_id, name, version, key_version, value, updated_at) \
             VALUES ($1, $2, 1, $3, $4, $5) \
             ON CONFLICT (tenant_id, name) DO UPDATE SET version = tenant_secrets.version + 1, \
             key_version = excluded.key_version, value = excluded.value, updated_at = excluded.updated_at \
             RETURNING *",
        )
        .bind(tenant.as_str())
        .bind(name)
        .bind(key_version as i32)
        .bind(sealed)
        .bind(now)
        .fetch_one(&mut *w.tx)
        .await?;
        secret_from(&r)
    }

    async fn get_secret(&self, tenant: &TenantId, name: &str) -> Result<Option<StoredSecret>> {
        sqlx::query("SELECT * FROM tenant_secrets WHERE tenant_id = $1 AND name = $2")
            .bind(tenant.as_str())
            .bind(name)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(secret_from)
            .transpose()
    }

    async fn list_secrets(&self, tenant: &TenantId) -> Result<Vec<StoredSecret>> {
        let rows = sqlx::query("SELECT * FROM tenant_secrets WHERE tenant_id = $1 ORDER BY name")
            .bind(tenant.as_str())
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(secret_from).collect()
    }

    async fn reseal_secret(
        &self,
        tenant: &TenantId,
        name: &str,
        version: i64,
        key_version: i64,
        sealed: &str,
    ) -> Result<bool> {
        let n = sqlx::query(
            "UPDATE tenant_secrets SET key_version = $4, value = $5 WHERE tenant_id = $1 AND name = $2 AND version = $3",
        )
        .bind(tenant.as_str())
        .bind(name)
        .bind(version)
        .bind(key_version as i32)
        .bind(sealed)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n > 0)
    }

    async fn delete_secret(&self, w: &mut Work, tenant: &TenantId, name: &str) -> Result<StoredSecret> {
        let r = sqlx::query("DELETE FROM tenant_secrets WHERE tenant_id = $1 AND name = $2 RETURNING *")
            .bind(tenant.as_str())
            .bind(name)
            .fetch_optional(&mut *w.tx)
            .await?
            .ok_or(StoreError::NotFound("secret"))?;
        secret_from(&r)
    }
}
