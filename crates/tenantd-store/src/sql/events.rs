//! [`EventStore`] on SQL: the event log.
use super::{json, SqlCatalog};
use crate::*;
use sqlx::Row;

#[async_trait::async_trait]
impl EventStore for SqlCatalog {
    async fn record_event(&self, ev: &NewEvent) -> Result<i64> {
        let mut w = self.begin().await?;
        let id = w.append(ev).await?;
        w.commit().await?;
        Ok(id)
    }

    async fn add_audit_counts(&self, repeats: &[(i64, u64)]) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        for (id, n) in repeats {
            sqlx::query("UPDATE audit_events SET count = count + $1 WHERE id = $2")
                .bind(i64::try_from(*n).unwrap_or(i64::MAX / 2))
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn list_audit(&self, f: &AuditFilter, page: &PageRequest) -> Result<Page<AuditEvent>> {
        let mut sql = String::from(
            "SELECT id, at, tenant_id, actor, action, detail, request_id, count FROM audit_events WHERE 1 = 1",
        );
        // Placeholders are numbered in the order their values are pushed.
        let mut binds: Vec<Bind> = Vec::new();
        let mut cond = |sql: &mut String, col: &str, op: &str, v: Bind| {
            binds.push(v);
            sql.push_str(&format!(" AND {col} {op} ${}", binds.len()));
        };
        for (col, v) in [("tenant_id", &f.tenant_id), ("action", &f.action), ("actor", &f.actor)] {
            if let Some(v) = v {
                cond(&mut sql, col, "=", Bind::Text(v.clone()));
            }
        }
        if let Some(s) = f.since {
            cond(&mut sql, "at", ">=", Bind::Int(s));
        }
        if let Some(u) = f.until {
            cond(&mut sql, "at", "<", Bind::Int(u));
        }
        if let Some(id) = self.cursors().after_id(page)? {
            cond(&mut sql, "id", "<", Bind::Int(id));
        }
        sql.push_str(&format!(" ORDER BY id DESC LIMIT {}", page.limit + 1));
        let mut q = sqlx::query(&sql);
        for b in binds {
            q = match b {
                Bind::Text(s) => q.bind(s),
                Bind::Int(i) => q.bind(i),
            };
        }
        let rows = q.fetch_all(&self.pool).await?;
        let items = rows
            .iter()
            .map(|r| {
                Ok(AuditEvent {
                    id: r.try_get("id")?,
                    at: r.try_get("at")?,
                    tenant_id: r.try_get("tenant_id")?,
                    actor: r.try_get("actor")?,
                    action: r.try_get("action")?,
                    detail: json(r, "detail")?,
                    request_id: r.try_get("request_id")?,
                    count: r.try_get::<i64, _>("count")?.max(1) as u64,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(self.cursors().page(items, page.limit, |e| e.id.to_string()))
    }

    async fn list_events(&self, tenant: &TenantId, page: &PageRequest) -> Result<Page<TenantEvent>> {
        let after = self.cursors().after_id(page)?.unwrap_or(0);
        let rows = sqlx::query(&format!(
            "SELECT id, tenant_id, action, detail, at FROM audit_events WHERE tenant_id = $1 AND action LIKE 'quota.%' AND id > $2 ORDER BY id LIMIT {}",
            page.limit + 1
        ))
        .bind(tenant.as_str())
        .bind(after)
        .fetch_all(self.pool())
        .await?;
        let items = rows
            .iter()
            .map(|r| {
                let data: String = r.try_get("detail")?;
                Ok(TenantEvent {
                    id: r.try_get("id")?,
                    tenant_id: TenantId::from_trusted(r.try_get("tenant_id")?),
                    kind: r.try_get("action")?,
                    data: serde_json::from_str(&data)?,
                    at: r.try_get("at")?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(self.cursors().page(items, page.limit, |e| e.id.to_string()))
    }
}

/// A text or integer bind value, for queries built from optional filters.
enum Bind {
    Text(String),
    Int(i64),
}
