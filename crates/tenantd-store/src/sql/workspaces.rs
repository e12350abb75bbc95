//! [`WorkspaceStore`] on SQL: a tenant's workspaces and their members.
use super::{is_unique_violation, user_from, SqlCatalog};
use crate::*;
use sqlx::Row;
use tenantd_core::now_secs;

impl SqlCatalog {
    async fn workspace_members(
        conn: &mut sqlx::AnyConnection,
        tenant: &TenantId,
        ws: &str,
    ) -> Result<Vec<WorkspaceMember>> {
        let rows = sqlx::query("SELECT w.user_id, u.email, w.role FROM workspace_members w JOIN users u ON u.id = w.user_id WHERE w.tenant_id = $1 AND w.workspace_id = $2 ORDER BY w.user_id")
            .bind(tenant.as_str())
            .bind(ws)
            .fetch_all(&mut *conn)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(WorkspaceMember {
                    user_id: r.try_get("user_id")?,
                    email: r.try_get("email")?,
                    role: r.try_get("role")?,
                })
            })
            .collect()
    }

    /// A workspace with its members, read on `conn` (a unit of work's, to see its own
    /// changes).
    async fn workspace_in(conn: &mut sqlx::AnyConnection, tenant: &TenantId, id: &str) -> Result<Workspace> {
        let r = sqlx::query("SELECT id, name, created_at FROM workspaces WHERE tenant_id = $1 AND id = $2")
            .bind(tenant.as_str())
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?
            .ok_or(StoreError::NotFound("workspace"))?;
        Ok(Workspace {
            id: r.try_get("id")?,
            name: r.try_get("name")?,
            created_at: r.try_get("created_at")?,
            members: Self::workspace_members(conn, tenant, id).await?,
        })
    }
}

#[async_trait::async_trait]
impl WorkspaceStore for SqlCatalog {
    async fn list_workspaces(&self, tenant: &TenantId) -> Result<Vec<Workspace>> {
        let rows = sqlx::query("SELECT id, name, created_at FROM workspaces WHERE tenant_id = $1 ORDER BY id")
            .bind(tenant.as_str())
            .fetch_all(&self.pool)
            .await?;
        let mut conn = self.pool.acquire().await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let id: String = r.try_get("id")?;
            let members = Self::workspace_members(&mut conn, tenant, &id).await?;
            out.push(Workspace {
                id,
                name: r.try_get("name")?,
                created_at: r.try_get("created_at")?,
                members,
            });
        }
        Ok(out)
    }

    async fn get_workspace(&self, tenant: &TenantId, id: &str) -> Result<Workspace> {
        Self::workspace_in(&mut *self.pool.acquire().await?, tenant, id).await
    }

    async fn create_workspace(&self, w: &mut Work, tenant: &TenantId, id: &str, name: &str) -> Result<Workspace> {
        let r = sqlx::query("INSERT INTO workspaces (tenant_id, id, name, created_at) VALUES ($1, $2, $3, $4)")
            .bind(tenant.as_str())
            .bind(id)
            .bind(name)
            .bind(now_secs())
            .execute(&mut *w.tx)
            .await
            .map_err(StoreError::from);
        match r {
            Err(e) if is_unique_violation(&e) => {
                return Err(StoreError::Conflict(format!("workspace '{id}' already exists")))
            }
            other => other?,
        };
        Self::workspace_in(&mut w.tx, tenant, id).await
    }

    async fn rename_workspace(&self, w: &mut Work, tenant: &TenantId, id: &str, name: &str) -> Result<Workspace> {
        let n = sqlx::query("UPDATE workspaces SET name = $3 WHERE tenant_id = $1 AND id = $2")
            .bind(tenant.as_str())
            .bind(id)
            .bind(name)
            .execute(&mut *w.tx)
            .await?
            .rows_affected();
        if n == 0 {
            return Err(StoreError::NotFound("workspace"));
        }
        Self::workspace_in(&mut w.tx, tenant, id).await
    }

    async fn delete_workspace(&self, w: &mut Work, tenant: &TenantId, id: &str) -> Result<()> {
        let tx = &mut w.tx;
        sqlx::query("DELETE FROM workspace_members WHERE tenant_id = $1 AND workspace_id = $2")
            .bind(tenant.as_str())
            .bind(id)
            .execute(&mut **tx)
            .await?;
        let n = sqlx::query("DELETE FROM workspaces WHERE tenant_id = $1 AND id = $2")
            .bind(tenant.as_str())
            .bind(id)
            .execute(&mut **tx)
            .await?
            .rows_affected();
        if n == 0 {
            return Err(StoreError::NotFound("workspace"));
        }
        Ok(())
    }

    async fn add_workspace_member(
        &self,
        w: &mut Work,
        tenant: &TenantId,
        ws: &str,
        email: &Email,
        role: &str,
    ) -> Result<WorkspaceMember> {
        Self::workspace_in(&mut w.tx, tenant, ws).await?;
        // Someone who is not a member of the tenant is no one here: add them first.
        let user = sqlx::query("SELECT u.id, u.email, u.created_at FROM users u JOIN memberships m ON m.user_id = u.id WHERE m.tenant_id = $1 AND u.email = $2")
            .bind(tenant.as_str())
            .bind(email.as_str())
            .fetch_optional(&mut *w.tx)
            .await?
            .map(|r| user_from(&r))
            .transpose()?
            .ok_or(StoreError::NotFound("tenant member"))?;
        sqlx::query("INSERT INTO workspace_members (tenant_id, workspace_id, user_id, role, created_at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tenant_id, workspace_id, user_id) DO UPDATE SET role = excluded.role")
            .bind(tenant.as_str())
            .bind(ws)
            .bind(&user.id)
            .bind(role)
            .bind(now_secs())
            .execute(&mut *w.tx)
            .await?;
        Ok(WorkspaceMember {
            user_id: user.id,
            email: user.email,
            role: role.to_string(),
        })
    }

    async fn workspace_role(&self, tenant: &TenantId, ws: &str, user_id: &str) -> Result<Option<String>> {
        Ok(sqlx::query(
            "SELECT role FROM workspace_members WHERE tenant_id = $1 AND workspace_id = $2 AND user_id = $3",
        )
        .bind(tenant.as_str())
        .bind(ws)
        .bind(user_id)
        .fetch_optional(&self.pool)
        .await?
        .map(|r| r.try_get("role"))
        .transpose()?)
    }
}
