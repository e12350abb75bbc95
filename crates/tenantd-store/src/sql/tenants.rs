//! [`TenantStore`] on SQL: tenants, their lifecycle and their purge.
use super::{is_unique_violation, json, to_json, SqlCatalog};
use crate::work::Tx;
use crate::*;
use sqlx::any::AnyRow;
use sqlx::Row;
use tenantd_core::plan::merge_limits;
use tenantd_core::tenant::Transition;
use tenantd_core::{now_secs, TenantStatus};

const TENANT_COLS: &str =
    "id, name, plan_id, status, status_reason, settings, limits, created_at, updated_at, deleted_at, purge_after";

fn tenant_from(r: &AnyRow) -> Result<Tenant> {
    let status: String = r.try_get("status")?;
    Ok(Tenant {
        id: TenantId::from_trusted(r.try_get("id")?),
        name: r.try_get("name")?,
        plan: PlanId::parse(&r.try_get::<String, _>("plan_id")?).map_err(|e| StoreError::Invalid(e.to_string()))?,
        status: TenantStatus::parse(&status).ok_or_else(|| StoreError::Invalid(format!("stored status '{status}'")))?,
        status_reason: r.try_get("status_reason")?,
        settings: json(r, "settings")?,
        limits: json(r, "limits")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
        deleted_at: r.try_get("deleted_at")?,
        purge_after: r.try_get("purge_after")?,
    })
}

/// `text` for a `LIKE … ESCAPE '\'` pattern: its `%`, `_` and `\` match themselves.
fn like_escaped(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

impl SqlCatalog {
    /// The stored tenant `new` names, as `create_tenant` answers a repeat of it:
    /// `Existing` when it is the same request, `Conflict` when it is another one.
    async fn repeat_of(tx: &mut Tx, new: &NewTenant) -> Result<Option<Created<Tenant>>> {
        let Some(existing) = Self::tenant_in(tx, &new.id).await? else {
            return Ok(None);
        };
        let same_owner: Option<String> = sqlx::query_scalar(
            "SELECT m.role FROM memberships m JOIN users u ON u.id = m.user_id WHERE m.tenant_id = $1 AND u.email = $2",
        )
        .bind(new.id.as_str())
        .bind(new.owner_email.as_str())
        .fetch_optional(&mut **tx)
        .await?;
        if existing.plan == new.plan && existing.name == new.name && same_owner.as_deref() == Some("owner") {
            return Ok(Some(Created::Existing(existing)));
        }
        Err(StoreError::Conflict(format!(
            "tenant '{}' already exists with a different name, plan or owner",
            new.id
        )))
    }

    /// Inserts a new tenant's rows: the tenant, its first plan and its owner.
    async fn insert_tenant(tx: &mut sqlx::Transaction<'_, sqlx::Any>, new: &NewTenant) -> Result<()> {
        let now = now_secs();
        let inserted = sqlx::query("INSERT INTO tenants (id, name, plan_id, status, settings, limits, created_at, updated_at) VALUES ($1, $2, $3, 'active', $4, '[]', $5, $5)")
            .bind(new.id.as_str())
            .bind(&new.name)
            .bind(new.plan.as_str())
            .bind(to_json(&new.settings))
            .bind(now)
            .execute(&mut **tx)
            .await;
        match inserted {
            Err(sqlx::Error::Database(d)) if d.is_foreign_key_violation() => return Err(StoreError::NotFound("plan")),
            other => other?,
        };
        super::usage::record_plan_in(tx, &new.id, now, new.plan.as_str()).await?;
        let user = Self::ensure_user_in(tx, &new.owner_email).await?;
        sqlx::query("INSERT INTO memberships (tenant_id, user_id, role, created_at) VALUES ($1, $2, 'owner', $3)")
            .bind(new.id.as_str())
            .bind(&user.id)
            .bind(now)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    async fn tenant_in(tx: &mut Tx, id: &TenantId) -> Result<Option<Tenant>> {
        sqlx::query(&format!("SELECT {TENANT_COLS} FROM tenants WHERE id = $1"))
            .bind(id.as_str())
            .fetch_optional(&mut **tx)
            .await?
            .map(|r| tenant_from(&r))
            .transpose()
    }

    async fn find_tenant(&self, id: &TenantId) -> Result<Option<Tenant>> {
        sqlx::query(&format!("SELECT {TENANT_COLS} FROM tenants WHERE id = $1"))
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await?
            .map(|r| tenant_from(&r))
            .transpose()
    }
}

#[async_trait::async_trait]
impl TenantStore for SqlCatalog {
    async fn create_tenant(&self, w: &mut Work, new: &NewTenant) -> Result<Created<Tenant>> {
        if let Some(repeat) = Self::repeat_of(&mut w.tx, new).await? {
            return Ok(repeat);
        }
        let plan_exists = sqlx::query("SELECT id FROM plans WHERE id = $1")
            .bind(new.plan.as_str())
            .fetch_optional(&mut *w.tx)
            .await?
            .is_some();
        if !plan_exists {
            return Err(StoreError::NotFound("plan"));
        }
        // In a savepoint: a concurrent identical request (on another PostgreSQL node) may
        // win the race, and this one then answers as a repeat would.
        let mut sp = sqlx::Acquire::begin(&mut w.tx).await?;
        match Self::insert_tenant(&mut sp, new).await {
            Ok(()) => sp.commit().await?,
            Err(e) if is_unique_violation(&e) => {
                sp.rollback().await?;
                if let Some(repeat) = Self::repeat_of(&mut w.tx, new).await? {
                    return Ok(repeat);
                }
                return Err(e);
            }
            Err(e) => return Err(e),
        }
        let t = Self::tenant_in(&mut w.tx, &new.id)
            .await?
            .ok_or(StoreError::NotFound("tenant"))?;
        Ok(Created::New(t))
    }

    async fn get_tenant(&self, id: &TenantId) -> Result<Tenant> {
        self.find_tenant(id).await?.ok_or(StoreError::NotFound("tenant"))
    }

    async fn list_tenants(&self, filter: &TenantFilter, page: &PageRequest) -> Result<Page<Tenant>> {
        let mut sql = format!("SELECT {TENANT_COLS} FROM tenants WHERE ");
        let mut args: Vec<String> = Vec::new();
        match filter.status {
            Some(s) => {
                args.push(s.as_str().to_string());
                sql.push_str("status = $1");
            }
            None => sql.push_str("status <> 'deleted'"),
        }
        if let Some(plan) = &filter.plan {
            args.push(plan.clone());
            sql.push_str(&format!(" AND plan_id = ${}", args.len()));
        }
        if let Some(text) = filter.search.as_deref().filter(|t| !t.is_empty()) {
            let pattern = format!("%{}%", like_escaped(&text.to_lowercase()));
            args.push(pattern.clone());
            args.push(pattern);
            sql.push_str(&format!(
                " AND (id LIKE ${} ESCAPE '\\' OR lower(name) LIKE ${} ESCAPE '\\')",
                args.len() - 1,
                args.len()
            ));
        }
        if let Some(after) = self.cursors().after(page)? {
            args.push(after);
            sql.push_str(&format!(" AND id > ${}", args.len()));
        }
        sql.push_str(&format!(" ORDER BY id LIMIT {}", page.limit + 1));
        let mut q = sqlx::query(&sql);
        for a in &args {
            q = q.bind(a.as_str());
        }
        let rows = q.fetch_all(&self.pool).await?;
        let items = rows.iter().map(tenant_from).collect::<Result<Vec<_>>>()?;
        Ok(self.cursors().page(items, page.limit, |t| t.id.to_string()))
    }

    async fn update_tenant(&self, w: &mut Work, id: &TenantId, patch: &TenantPatch) -> Result<Tenant> {
        let tx = &mut w.tx;
        Self::lock_tenant(tx, id).await?;
        let r = sqlx::query(&format!("SELECT {TENANT_COLS} FROM tenants WHERE id = $1"))
            .bind(id.as_str())
            .fetch_one(&mut **tx)
            .await?;
        let mut t = tenant_from(&r)?;
        if t.status == TenantStatus::Deleted {
            return Err(StoreError::Conflict(
                "a deleted tenant cannot be changed; restore it first".into(),
            ));
        }
        if let Some(plan) = &patch.plan {
            let exists = sqlx::query("SELECT id FROM plans WHERE id = $1")
                .bind(plan.as_str())
                .fetch_optional(&mut **tx)
                .await?
                .is_some();
            if !exists {
                return Err(StoreError::NotFound("plan"));
            }
            if t.plan != *plan {
                super::usage::record_plan_in(tx, id, now_secs(), plan.as_str()).await?;
            }
            t.plan = plan.clone();
        }
        if let Some(name) = &patch.name {
            t.name = name.clone();
        }
        if let Some(s) = &patch.settings {
            t.settings = s.clone();
        }
        if let Some(l) = &patch.limits {
            t.limits = merge_limits(&t.limits, l);
        }
        sqlx::query("UPDATE tenants SET name = $2, plan_id = $3, settings = $4, limits = $5 WHERE id = $1")
            .bind(id.as_str())
            .bind(&t.name)
            .bind(t.plan.as_str())
            .bind(to_json(&t.settings))
            .bind(to_json(&t.limits))
            .execute(&mut **tx)
            .await?;
        Self::tenant_in(tx, id).await?.ok_or(StoreError::NotFound("tenant"))
    }

    async fn transition_tenant(
        &self,
        w: &mut Work,
        id: &TenantId,
        tr: Transition,
        reason: Option<&str>,
    ) -> Result<Tenant> {
        let tx = &mut w.tx;
        Self::lock_tenant(tx, id).await?;
        let r =
            sqlx::query("SELECT status, status_reason, status_before_delete, purge_after FROM tenants WHERE id = $1")
                .bind(id.as_str())
                .fetch_one(&mut **tx)
                .await?;
        let status: String = r.try_get("status")?;
        let current =
            TenantStatus::parse(&status).ok_or_else(|| StoreError::Invalid(format!("stored status '{status}'")))?;
        let mut next = current.apply(tr)?;
        let now = now_secs();
        let mut reason: Option<String> = reason.map(str::to_string);
        let (mut deleted_at, mut purge_after, mut before) = (None, None, None::<String>);
        match tr {
            Transition::Delete => {
                reason = r.try_get("status_reason")?;
                deleted_at = Some(now);
                purge_after = Some(now + self.deleted_tenant_days * 86_400);
                before = Some(current.as_str().to_string());
            }
            Transition::Restore => {
                let due: Option<i64> = r.try_get("purge_after")?;
                if let Some(due) = due.filter(|&d| d <= now) {
                    return Err(StoreError::Conflict(format!(
                        "the tenant's retention period ended at {}; it is being purged and cannot be restored",
                        tenantd_core::ts::format(due)
                    )));
                }
                // Come back as it was before deletion, suspension included.
                let prev: Option<String> = r.try_get("status_before_delete")?;
                if prev.as_deref() == Some("suspended") {
                    next = TenantStatus::Suspended;
                    reason = r.try_get("status_reason")?;
                }
            }
            Transition::Suspend | Transition::Resume => {}
        }
        sqlx::query("UPDATE tenants SET status = $2, status_reason = $3, status_before_delete = $4, deleted_at = $5, purge_after = $6 WHERE id = $1")
            .bind(id.as_str())
            .bind(next.as_str())
            .bind(reason)
            .bind(before)
            .bind(deleted_at)
            .bind(purge_after)
            .execute(&mut **tx)
            .await?;
        Self::tenant_in(tx, id).await?.ok_or(StoreError::NotFound("tenant"))
    }

    async fn purgeable_tenants(&self, now: i64, after: Option<&TenantId>, limit: u32) -> Result<Vec<TenantId>> {
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM tenants WHERE status = $1 AND purge_after <= $2 AND id > $3 ORDER BY id LIMIT $4",
        )
        .bind(TenantStatus::Deleted.as_str())
        .bind(now)
        .bind(after.map_or("", TenantId::as_str))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        ids.iter()
            .map(|id| TenantId::parse(id).map_err(|e| StoreError::Invalid(format!("stored tenant id '{id}': {e}"))))
            .collect()
    }

    async fn purge_tenant(&self, w: &mut Work, id: &TenantId, now: i64) -> Result<u64> {
        let tx = &mut w.tx;
        Self::lock_tenant(tx, id).await?;
        let r = sqlx::query("SELECT status, purge_after FROM tenants WHERE id = $1")
            .bind(id.as_str())
            .fetch_one(&mut **tx)
            .await?;
        let (status, due): (String, Option<i64>) = (r.try_get("status")?, r.try_get("purge_after")?);
        if status != TenantStatus::Deleted.as_str() {
            return Err(StoreError::Conflict(format!("the tenant is {status}, not deleted")));
        }
        if due.is_none_or(|due| due > now) {
            return Err(StoreError::Conflict(
                "the tenant's retention period has not ended".into(),
            ));
        }
        let users: Vec<String> = sqlx::query_scalar("SELECT user_id FROM memberships WHERE tenant_id = $1")
            .bind(id.as_str())
            .fetch_all(&mut **tx)
            .await?;
        // The tenant's events become redacted tombstones (seq, type, time, digest and links
        // stay, so the chain still verifies; its tenant, actors and data go), and its chain
        // is closed under a name of its own: a new tenant under the same id starts its own.
        let closed = format!("{id}@{now}");
        let mut rows = sqlx::query(
            "UPDATE audit_events SET tenant_id = NULL, detail = 'null', actor = '', actor_type = 'system', request_id = '', \
             redacted = 1, chain = $2 WHERE chain = $1",
        )
        .bind(id.as_str())
        .bind(&closed)
        .execute(&mut **tx)
        .await?
        .rows_affected();
        for t in ["event_chains", "audit_checkpoints"] {
            sqlx::query(&format!("UPDATE {t} SET chain = $2 WHERE chain = $1"))
                .bind(id.as_str())
                .bind(&closed)
                .execute(&mut **tx)
                .await?;
        }
        // Children before their parents; the tenant's row last.
        for table in crate::TENANT_TABLES.iter().filter(|t| !t.tombstones) {
            let table = table.name;
            rows += sqlx::query(&format!("DELETE FROM {table} WHERE tenant_id = $1"))
                .bind(id.as_str())
                .execute(&mut **tx)
                .await?
                .rows_affected();
        }
        rows += sqlx::query("DELETE FROM tenants WHERE id = $1")
            .bind(id.as_str())
            .execute(&mut **tx)
            .await?
            .rows_affected();
        for user in users {
            rows += sqlx::query(
                "DELETE FROM users WHERE id = $1 \
                 AND NOT EXISTS (SELECT 1 FROM memberships WHERE user_id = $1) \
                 AND NOT EXISTS (SELECT 1 FROM workspace_members WHERE user_id = $1)",
            )
            .bind(&user)
            .execute(&mut **tx)
            .await?
            .rows_affected();
        }
        Ok(rows)
    }
}
