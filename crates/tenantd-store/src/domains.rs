//! Custom domains: a host a tenant claims, proves it controls, and is then resolved by.
use crate::{Result, SqlCatalog, StoreError, Work};
use serde::Serialize;
use sqlx::Row;
use tenantd_core::{now_secs, TenantId};

/// A tenant's custom domain.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Domain {
    /// Lower-case host name, no port.
    pub host: String,
    /// The tenant that claimed it.
    #[schema(value_type = String)]
    pub tenant_id: TenantId,
    /// What the host must serve to prove control.
    pub token: String,
    /// When it was verified; unverified hosts name no tenant.
    #[serde(serialize_with = "tenantd_core::ts::ser_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub verified_at: Option<i64>,
    /// Unix seconds.
    #[serde(serialize_with = "tenantd_core::ts::ser")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: i64,
}

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

/// Claims `host` for the tenant; `Conflict` if any tenant has it.
pub(crate) async fn add(w: &mut Work, tenant: &TenantId, host: &str, token: &str) -> Result<Domain> {
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
    get(&mut w.tx, tenant, host).await
}

/// One of the tenant's domains, read on `conn`.
pub(crate) async fn get(conn: &mut sqlx::AnyConnection, tenant: &TenantId, host: &str) -> Result<Domain> {
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

/// Marks the tenant's domain verified at `at` (once).
pub(crate) async fn verify(w: &mut Work, tenant: &TenantId, host: &str, at: i64) -> Result<Domain> {
    sqlx::query("UPDATE domains SET verified_at = $3 WHERE tenant_id = $1 AND host = $2 AND verified_at IS NULL")
        .bind(tenant.as_str())
        .bind(host)
        .bind(at)
        .execute(&mut *w.tx)
        .await?;
    get(&mut w.tx, tenant, host).await
}

/// Releases the tenant's domain.
pub(crate) async fn delete(w: &mut Work, tenant: &TenantId, host: &str) -> Result<()> {
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

impl SqlCatalog {
    pub(crate) async fn list_domains_sql(&self, tenant: &TenantId) -> Result<Vec<Domain>> {
        let rows = sqlx::query(&format!(
            "SELECT {COLS} FROM domains WHERE tenant_id = $1 ORDER BY host"
        ))
        .bind(tenant.as_str())
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(domain_from).collect()
    }

    pub(crate) async fn verified_domains_sql(&self) -> Result<Vec<(String, TenantId)>> {
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
