//! [`MemberStore`] on SQL: users and their memberships.
use super::{is_unique_violation, user_from, SqlCatalog};
use crate::work::Tx;
use crate::*;
use sqlx::any::AnyRow;
use sqlx::Row;
use tenantd_core::now_secs;

fn member_from(r: &AnyRow) -> Result<Member> {
    Ok(Member {
        user_id: r.try_get("user_id")?,
        email: r.try_get("email")?,
        role: r.try_get("role")?,
        created_at: r.try_get("created_at")?,
    })
}

impl SqlCatalog {
    async fn owner_count(tx: &mut Tx, tenant: &TenantId) -> Result<i64> {
        Ok(
            sqlx::query("SELECT COUNT(*) AS n FROM memberships WHERE tenant_id = $1 AND role = 'owner'")
                .bind(tenant.as_str())
                .fetch_one(&mut **tx)
                .await?
                .try_get("n")?,
        )
    }

    async fn current_role(tx: &mut Tx, tenant: &TenantId, user_id: &str) -> Result<String> {
        sqlx::query("SELECT role FROM memberships WHERE tenant_id = $1 AND user_id = $2")
            .bind(tenant.as_str())
            .bind(user_id)
            .fetch_optional(&mut **tx)
            .await?
            .map(|r| r.try_get("role"))
            .transpose()?
            .ok_or(StoreError::NotFound("member"))
    }

    async fn member_in(tx: &mut Tx, tenant: &TenantId, user_id: &str) -> Result<Member> {
        let r = sqlx::query("SELECT m.user_id, u.email, m.role, m.created_at FROM memberships m JOIN users u ON u.id = m.user_id WHERE m.tenant_id = $1 AND m.user_id = $2")
            .bind(tenant.as_str())
            .bind(user_id)
            .fetch_optional(&mut **tx)
            .await?
            .ok_or(StoreError::NotFound("member"))?;
        member_from(&r)
    }
}

#[async_trait::async_trait]
impl MemberStore for SqlCatalog {
    async fn ensure_user(&self, email: &Email) -> Result<User> {
        let mut tx = self.pool.begin().await?;
        let u = Self::ensure_user_in(&mut tx, email).await?;
        tx.commit().await?;
        Ok(u)
    }

    async fn get_user(&self, id: &str) -> Result<User> {
        let r = sqlx::query("SELECT id, email, created_at FROM users WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound("user"))?;
        user_from(&r)
    }

    async fn find_user_by_email(&self, email: &Email) -> Result<Option<User>> {
        sqlx::query("SELECT id, email, created_at FROM users WHERE email = $1")
            .bind(email.as_str())
            .fetch_optional(&self.pool)
            .await?
            .map(|r| user_from(&r))
            .transpose()
    }

    async fn user_memberships(&self, user_id: &str) -> Result<Vec<(TenantId, String)>> {
        let rows = sqlx::query("SELECT m.tenant_id, m.role FROM memberships m JOIN tenants t ON t.id = m.tenant_id WHERE m.user_id = $1 AND t.status <> 'deleted' ORDER BY m.tenant_id")
            .bind(user_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((TenantId::from_trusted(r.try_get("tenant_id")?), r.try_get("role")?)))
            .collect()
    }

    async fn member_role(&self, tenant: &TenantId, user_id: &str) -> Result<Option<String>> {
        Ok(
            sqlx::query("SELECT role FROM memberships WHERE tenant_id = $1 AND user_id = $2")
                .bind(tenant.as_str())
                .bind(user_id)
                .fetch_optional(&self.pool)
                .await?
                .map(|r| r.try_get("role"))
                .transpose()?,
        )
    }

    async fn list_members(&self, tenant: &TenantId, page: &PageRequest) -> Result<Page<Member>> {
        let after = self.cursors().after(page)?.unwrap_or_default();
        let rows = sqlx::query(&format!("SELECT m.user_id, u.email, m.role, m.created_at FROM memberships m JOIN users u ON u.id = m.user_id WHERE m.tenant_id = $1 AND m.user_id > $2 ORDER BY m.user_id LIMIT {}", page.limit + 1))
            .bind(tenant.as_str())
            .bind(after)
            .fetch_all(&self.pool)
            .await?;
        let items = rows.iter().map(member_from).collect::<Result<Vec<_>>>()?;
        Ok(self.cursors().page(items, page.limit, |m| m.user_id.clone()))
    }

    async fn add_member_within(
        &self,
        w: &mut Work,
        tenant: &TenantId,
        email: &Email,
        role: &str,
        max: Option<u64>,
    ) -> Result<Member> {
        let tx = &mut w.tx;
        Self::lock_tenant(tx, tenant).await?;
        Self::below_level(tx, tenant, Countable::Members, max).await?;
        let user = Self::ensure_user_in(tx, email).await?;
        let r = sqlx::query("INSERT INTO memberships (tenant_id, user_id, role, created_at) VALUES ($1, $2, $3, $4)")
            .bind(tenant.as_str())
            .bind(&user.id)
            .bind(role)
            .bind(now_secs())
            .execute(&mut **tx)
            .await
            .map_err(StoreError::from);
        match r {
            Err(e) if is_unique_violation(&e) => {
                return Err(StoreError::Conflict(format!("{email} is already a member")))
            }
            other => other?,
        };
        let m = Self::member_in(tx, tenant, &user.id).await?;
        Ok(m)
    }

    async fn set_member_role(&self, w: &mut Work, tenant: &TenantId, user_id: &str, role: &str) -> Result<Member> {
        let tx = &mut w.tx;
        Self::lock_tenant(tx, tenant).await?;
        let current = Self::current_role(tx, tenant, user_id).await?;
        if current == "owner" && role != "owner" && Self::owner_count(tx, tenant).await? <= 1 {
            return Err(StoreError::LastOwner);
        }
        sqlx::query("UPDATE memberships SET role = $3 WHERE tenant_id = $1 AND user_id = $2")
            .bind(tenant.as_str())
            .bind(user_id)
            .bind(role)
            .execute(&mut **tx)
            .await?;
        let m = Self::member_in(tx, tenant, user_id).await?;
        Ok(m)
    }

    async fn remove_member(&self, w: &mut Work, tenant: &TenantId, user_id: &str) -> Result<()> {
        let tx = &mut w.tx;
        Self::lock_tenant(tx, tenant).await?;
        let current = Self::current_role(tx, tenant, user_id).await?;
        if current == "owner" && Self::owner_count(tx, tenant).await? <= 1 {
            return Err(StoreError::LastOwner);
        }
        for sql in [
            "DELETE FROM workspace_members WHERE tenant_id = $1 AND user_id = $2",
            "DELETE FROM memberships WHERE tenant_id = $1 AND user_id = $2",
        ] {
            sqlx::query(sql)
                .bind(tenant.as_str())
                .bind(user_id)
                .execute(&mut **tx)
                .await?;
        }
        Ok(())
    }

    async fn erase_user(&self, w: &mut Work, user_id: &str, pseudonym: &str) -> Result<Erased> {
        let tx = &mut w.tx;
        let email: String = sqlx::query_scalar("SELECT email FROM users WHERE id = $1")
            .bind(user_id)
            .fetch_optional(&mut **tx)
            .await?
            .ok_or(StoreError::NotFound("user"))?;
        let tenants: Vec<String> =
            sqlx::query_scalar("SELECT tenant_id FROM memberships WHERE user_id = $1 ORDER BY tenant_id")
                .bind(user_id)
                .fetch_all(&mut **tx)
                .await?;
        for sql in [
            "DELETE FROM workspace_members WHERE user_id = $1",
            "DELETE FROM memberships WHERE user_id = $1",
            "DELETE FROM users WHERE id = $1",
        ] {
            sqlx::query(sql).bind(user_id).execute(&mut **tx).await?;
        }
        let mut ownerless = Vec::new();
        for t in &tenants {
            let owners: i64 = sqlx::query_scalar(
                "SELECT CAST(COUNT(*) AS bigint) FROM memberships WHERE tenant_id = $1 AND role = 'owner'",
            )
            .bind(t)
            .fetch_one(&mut **tx)
            .await?;
            if owners == 0 {
                ownerless.push(t.clone());
            }
        }
        // The email as it appears inside JSON text (escaped as JSON escapes it).
        let quoted = serde_json::Value::String(email.clone()).to_string();
        let inner = &quoted[1..quoted.len() - 1];
        let find = match self.backend() {
            Backend::Postgres => "strpos(detail, $1) > 0 OR strpos(actor, $1) > 0",
            Backend::Sqlite => "instr(detail, $1) > 0 OR instr(actor, $1) > 0",
        };
        let n = sqlx::query(&format!(
            "UPDATE audit_events SET detail = replace(detail, $1, $2), actor = replace(actor, $1, $2), redacted = 1 \
             WHERE {find}"
        ))
        .bind(inner)
        .bind(pseudonym)
        .execute(&mut **tx)
        .await?
        .rows_affected();
        Ok(Erased {
            tenants,
            ownerless,
            events: n,
        })
    }
}
