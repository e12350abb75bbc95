//! Custom domains: a host a tenant claims, proves it controls, and is then resolved by.
use super::SqlCatalog;
use crate::*;
use sqlx::Row;
use tenantd_core::now_secs;

fn domain_from(r: &sqlx::any::AnyRow) -> Result<Domain> {
    Ok(Domain {
        host: r.try_get("host")?,
        tenant_id: TenantId::from_trusted(r.try_get("tenant_id")?),
        token: r.try_get("token")?,
        verified_at: r.try_get("verified_at")?,
        created_at: r.try_get("created_at")?,
    })
}

const COLS: &str = "host, tenant_id, token, verified_at, created_at";

/// One of the tenant's domains, read on `conn`.
async fn domain_in(conn: &mut sqlx::AnyConnection, tenant: &TenantId, host: &str) -> Result<Domain> {
    let r = sqlx::query(&format!(
        "SELECT {COLS} FROM domains WHERE tenant_id = $1 AND host = $2"
    ))
    .bind(tenant.as_str())
    .bind(host)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(StoreError::NotFound("domain"))?;
    domain_from(&r)
}

#[async_trait::async_trait]
impl DomainStore for SqlCatalog {
    /// Claims `host` for the tenant; `Conflict` if any tenant has it.
    async fn add_domain(&self, w: &mut Work, tenant: &TenantId, host: &str, token: &str) -> Result<Domain> {
        // In a savepoint: on PostgreSQL a failed statement would end the unit of work.
        let mut sp = sqlx::Acquire::begin(&mut w.tx).await?;
        let r = sqlx::query("INSERT INTO domains (host, tenant_id, token, created_at) VALUES ($1, $2, $3, $4)")
            .bind(host)
            .bind(tenant.as_str())
            .bind(token)
            .bind(now_secs())
            .execute(&mut *sp)
            .await;
        match r {
            Err(sqlx::Error::Database(d)) if d.is_unique_violation() => {
                return Err(StoreError::Conflict(format!("{host} is already registered")))
            }
            other => other?,
        };
        sp.commit().await?;
        domain_in(&mut w.tx, tenant, host).await
    }

    async fn get_domain(&self, tenant: &TenantId, host: &str) -> Result<Domain> {
        domain_in(&mut *self.pool.acquire().await?, tenant, host).await
    }

    /// Marks the tenant's domain verified at `at` (once).
    async fn verify_domain(&self, w: &mut Work, tenant: &TenantId, host: &str, at: i64) -> Result<Domain> {
        sqlx::query("UPDATE domains SET verified_at = $3 WHERE tenant_id = $1 AND host = $2 AND verified_at IS NULL")
            .bind(tenant.as_str())
            .bind(host)
            .bind(at)
            .execute(&mut *w.tx)
            .await?;
        domain_in(&mut w.tx, tenant, host).await
    }

    /// Releases the tenant's domain.
    async fn delete_domain(&self, w: &mut Work, tenant: &TenantId, host: &str) -> Result<()> {
        let n = sqlx::query("DELETE FROM domains WHERE tenant_id = $1 AND host = $2")
            .bind(tenant.as_str())
            .bind(host)
            .execute(&mut *w.tx)
            .await?
            .rows_affected();
        if n == 0 {
            return Err(StoreError::NotFound("domain"));
        }
        Ok(())
    }

    async fn list_domains(&self, tenant: &TenantId) -> Result<Vec<Domain>> {
        let rows = sqlx::query(&format!(
            "SELECT {COLS} FROM domains WHERE tenant_id = $1 ORDER BY host"
        ))
        .bind(tenant.as_str())
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(domain_from).collect()
    }

    async fn verified_domains(&self) -> Result<Vec<(String, TenantId)>> {
        let rows = sqlx::query(
            "SELECT d.host, d.tenant_id FROM domains d JOIN tenants t ON t.id = d.tenant_id WHERE d.verified_at IS NOT NULL AND t.status <> 'deleted'",
        )
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("host")?, TenantId::from_trusted(r.try_get("tenant_id")?))))
            .collect()
    }
}
