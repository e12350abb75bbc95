//! [`RoleStore`] on SQL: a tenant's custom roles.
use super::{is_unique_violation, json, to_json, SqlCatalog};
use crate::*;
use sqlx::Row;
use tenantd_core::{now_secs, Role};

#[async_trait::async_trait]
impl RoleStore for SqlCatalog {
    async fn list_roles(&self, tenant: &TenantId) -> Result<Vec<Role>> {
        let rows = sqlx::query("SELECT name, permissions FROM roles WHERE tenant_id = $1 ORDER BY name")
            .bind(tenant.as_str())
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok(Role::custom(r.try_get("name")?, json(r, "permissions")?)))
            .collect()
    }

    async fn get_role(&self, tenant: &TenantId, name: &str) -> Result<Option<Role>> {
        sqlx::query("SELECT name, permissions FROM roles WHERE tenant_id = $1 AND name = $2")
            .bind(tenant.as_str())
            .bind(name)
            .fetch_optional(&self.pool)
            .await?
            .map(|r| Ok(Role::custom(r.try_get("name")?, json(&r, "permissions")?)))
            .transpose()
    }

    async fn create_role(&self, w: &mut Work, tenant: &TenantId, role: &Role) -> Result<()> {
        let r = sqlx::query("INSERT INTO roles (tenant_id, name, permissions, created_at) VALUES ($1, $2, $3, $4)")
            .bind(tenant.as_str())
            .bind(&role.name)
            .bind(to_json(&role.allow))
            .bind(now_secs())
            .execute(&mut *w.tx)
            .await
            .map(|_| ())
            .map_err(StoreError::from);
        match r {
            Err(e) if is_unique_violation(&e) => {
                Err(StoreError::Conflict(format!("role '{}' already exists", role.name)))
            }
            other => other,
        }
    }

    async fn delete_role(&self, w: &mut Work, tenant: &TenantId, name: &str) -> Result<()> {
        let tx = &mut w.tx;
        Self::lock_tenant(tx, tenant).await?;
        for (sql, what) in [
            (
                "SELECT user_id FROM memberships WHERE tenant_id = $1 AND role = $2 LIMIT 1",
                "members",
            ),
            (
                "SELECT id FROM api_keys WHERE tenant_id = $1 AND role = $2 AND revoked_at IS NULL LIMIT 1",
                "API keys",
            ),
            (
                "SELECT user_id FROM workspace_members WHERE tenant_id = $1 AND role = $2 LIMIT 1",
                "workspace members",
            ),
        ] {
            if sqlx::query(sql)
                .bind(tenant.as_str())
                .bind(name)
                .fetch_optional(&mut **tx)
                .await?
                .is_some()
            {
                return Err(StoreError::Conflict(format!("role '{name}' is still held by {what}")));
            }
        }
        let n = sqlx::query("DELETE FROM roles WHERE tenant_id = $1 AND name = $2")
            .bind(tenant.as_str())
            .bind(name)
            .execute(&mut **tx)
            .await?
            .rows_affected();
        if n == 0 {
            return Err(StoreError::NotFound("role"));
        }
        Ok(())
    }
}
