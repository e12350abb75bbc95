//! [`WebhookStore`] on SQL: endpoints, their delivery log, and the dispatch cursors.
use super::{json, to_json, SqlCatalog};
use crate::*;
use sqlx::any::AnyRow;
use sqlx::Row;
use tenantd_core::now_secs;

const COLS: &str = "id, tenant_id, url, event_types, description, secret, previous_secret, previous_until, enabled, \
                    disabled_reason, failing_since, created_at";

fn webhook_from(r: &AnyRow) -> Result<Webhook> {
    let previous: Option<String> = r.try_get("previous_secret")?;
    let until: Option<i64> = r.try_get("previous_until")?;
    Ok(Webhook {
        id: r.try_get("id")?,
        tenant_id: r.try_get("tenant_id")?,
        url: r.try_get("url")?,
        event_types: json(r, "event_types")?,
        description: r.try_get("description")?,
        enabled: r.try_get::<i32, _>("enabled")? != 0,
        disabled_reason: r.try_get("disabled_reason")?,
        failing_since: r.try_get("failing_since")?,
        previous_secret_until: until.filter(|u| *u > now_secs()),
        created_at: r.try_get("created_at")?,
        secrets: WebhookSecrets {
            current: r.try_get("secret")?,
            previous: previous.zip(until),
        },
    })
}

fn delivery_from(r: &AnyRow) -> Result<Delivery> {
    Ok(Delivery {
        row: r.try_get("id")?,
        event_id: r.try_get("event_id")?,
        event_type: r.try_get("event_type")?,
        attempt: r.try_get::<i32, _>("attempt")?.max(1) as u32,
        at: r.try_get("at")?,
        status_code: r
            .try_get::<Option<i32>, _>("status_code")?
            .map(|s| s.clamp(0, 999) as u16),
        duration_ms: r.try_get::<i64, _>("duration_ms")?.max(0) as u64,
        error: r.try_get("error")?,
        next_attempt_at: r.try_get("next_attempt_at")?,
    })
}

/// `NotFound` when a write touched no endpoint (none, or another owner's).
fn found(rows_affected: u64) -> Result<()> {
    match rows_affected {
        0 => Err(StoreError::NotFound("webhook")),
        _ => Ok(()),
    }
}

/// `tenant_id = $n`, or `tenant_id IS NULL` for the operator's.
fn owner(tenant: Option<&TenantId>, n: usize) -> String {
    match tenant {
        Some(_) => format!("tenant_id = ${n}"),
        None => "tenant_id IS NULL".to_string(),
    }
}

#[async_trait::async_trait]
impl WebhookStore for SqlCatalog {
    async fn create_webhook(&self, w: &mut Work, h: &Webhook) -> Result<()> {
        sqlx::query(
            "INSERT INTO webhooks (id, tenant_id, url, event_types, description, secret, enabled, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, 1, $7, $7)",
        )
        .bind(&h.id)
        .bind(h.tenant_id.as_deref())
        .bind(&h.url)
        .bind(to_json(&h.event_types))
        .bind(&h.description)
        .bind(&h.secrets.current)
        .bind(h.created_at)
        .execute(&mut *w.tx)
        .await?;
        Ok(())
    }

    async fn get_webhook(&self, tenant: Option<&TenantId>, id: &str) -> Result<Webhook> {
        let r = sqlx::query(&format!(
            "SELECT {COLS} FROM webhooks WHERE id = $1 AND {}",
            owner(tenant, 2)
        ))
        .bind(id)
        .bind(tenant.map(|t| t.as_str()))
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound("webhook"))?;
        webhook_from(&r)
    }

    async fn webhook_by_id(&self, id: &str) -> Result<Option<Webhook>> {
        let r = sqlx::query(&format!("SELECT {COLS} FROM webhooks WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        r.as_ref().map(webhook_from).transpose()
    }

    async fn list_webhooks(&self, tenant: Option<&TenantId>, page: &PageRequest) -> Result<Page<Webhook>> {
        let after = self.cursors().after(page)?.unwrap_or_default();
        let rows = sqlx::query(&format!(
            "SELECT {COLS} FROM webhooks WHERE {} AND id > $2 ORDER BY id LIMIT {}",
            owner(tenant, 1),
            page.limit + 1
        ))
        .bind(tenant.map(|t| t.as_str()))
        .bind(after)
        .fetch_all(&self.pool)
        .await?;
        let items = rows.iter().map(webhook_from).collect::<Result<Vec<_>>>()?;
        Ok(self.cursors().page(items, page.limit, |h| h.id.clone()))
    }

    async fn webhooks_for(&self, tenant: Option<&TenantId>) -> Result<Vec<Webhook>> {
        let rows = sqlx::query(&format!(
            "SELECT {COLS} FROM webhooks WHERE enabled = 1 AND (tenant_id IS NULL OR tenant_id = $1) ORDER BY id"
        ))
        .bind(tenant.map(|t| t.as_str()))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(webhook_from).collect()
    }

    async fn update_webhook(&self, w: &mut Work, h: &Webhook) -> Result<()> {
        let n = sqlx::query(
            "UPDATE webhooks SET url = $2, event_types = $3, description = $4, enabled = $5, \
             disabled_reason = CASE WHEN $5 = 1 THEN NULL ELSE disabled_reason END, \
             failing_since = CASE WHEN $5 = 1 AND enabled = 0 THEN NULL ELSE failing_since END, updated_at = $6 WHERE id = $1",
        )
        .bind(&h.id)
        .bind(&h.url)
        .bind(to_json(&h.event_types))
        .bind(&h.description)
        .bind(i32::from(h.enabled))
        .bind(now_secs())
        .execute(&mut *w.tx)
        .await?
        .rows_affected();
        found(n)
    }

    async fn delete_webhook(&self, w: &mut Work, tenant: Option<&TenantId>, id: &str) -> Result<()> {
        let n = sqlx::query(&format!("DELETE FROM webhooks WHERE id = $1 AND {}", owner(tenant, 2)))
            .bind(id)
            .bind(tenant.map(|t| t.as_str()))
            .execute(&mut *w.tx)
            .await?
            .rows_affected();
        found(n)?;
        sqlx::query("DELETE FROM webhook_deliveries WHERE webhook_id = $1")
            .bind(id)
            .execute(&mut *w.tx)
            .await?;
        Ok(())
    }

    async fn rotate_webhook_secret(
        &self,
        w: &mut Work,
        tenant: Option<&TenantId>,
        id: &str,
        secret: &str,
        until: i64,
    ) -> Result<Webhook> {
        let n = sqlx::query(&format!(
            "UPDATE webhooks SET previous_secret = secret, previous_until = $3, secret = $4, updated_at = $5 WHERE id = $1 AND {}",
            owner(tenant, 2)
        ))
        .bind(id)
        .bind(tenant.map(|t| t.as_str()))
        .bind(until)
        .bind(secret)
        .bind(now_secs())
        .execute(&mut *w.tx)
        .await?
        .rows_affected();
        found(n)?;
        let r = sqlx::query(&format!("SELECT {COLS} FROM webhooks WHERE id = $1"))
            .bind(id)
            .fetch_one(&mut *w.tx)
            .await?;
        webhook_from(&r)
    }

    async fn record_delivery(&self, w: &mut Work, hook: &Webhook, d: &Delivery) -> Result<()> {
        sqlx::query(
            "INSERT INTO webhook_deliveries (webhook_id, tenant_id, event_id, event_type, attempt, at, status_code, duration_ms, error, next_attempt_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(&hook.id)
        .bind(hook.tenant_id.as_deref())
        .bind(&d.event_id)
        .bind(&d.event_type)
        .bind(d.attempt as i32)
        .bind(d.at)
        .bind(d.status_code.map(i32::from))
        .bind(d.duration_ms.min(i64::MAX as u64) as i64)
        .bind(d.error.as_deref())
        .bind(d.next_attempt_at)
        .execute(&mut *w.tx)
        .await?;
        let ok = d.error.is_none();
        sqlx::query(if ok {
            "UPDATE webhooks SET failing_since = NULL WHERE id = $1 AND $2 = $2"
        } else {
            "UPDATE webhooks SET failing_since = COALESCE(failing_since, $2) WHERE id = $1"
        })
        .bind(&hook.id)
        .bind(d.at)
        .execute(&mut *w.tx)
        .await?;
        Ok(())
    }

    async fn disable_webhook(&self, w: &mut Work, id: &str, reason: &str) -> Result<bool> {
        Ok(sqlx::query(
            "UPDATE webhooks SET enabled = 0, disabled_reason = $2, updated_at = $3 WHERE id = $1 AND enabled = 1",
        )
        .bind(id)
        .bind(reason)
        .bind(now_secs())
        .execute(&mut *w.tx)
        .await?
        .rows_affected()
            > 0)
    }

    async fn list_deliveries(&self, id: &str, page: &PageRequest) -> Result<Page<Delivery>> {
        let mut sql = String::from("SELECT * FROM webhook_deliveries WHERE webhook_id = $1");
        let before = self.cursors().after_id(page)?;
        if before.is_some() {
            sql.push_str(" AND id < $2");
        }
        sql.push_str(&format!(" ORDER BY id DESC LIMIT {}", page.limit + 1));
        let rows = sqlx::query(&sql)
            .bind(id)
            .bind(before.unwrap_or_default())
            .fetch_all(&self.pool)
            .await?;
        let items = rows.iter().map(delivery_from).collect::<Result<Vec<_>>>()?;
        Ok(self.cursors().page(items, page.limit, |d| d.row.to_string()))
    }

    async fn prune_deliveries(&self, before: i64) -> Result<u64> {
        Ok(sqlx::query("DELETE FROM webhook_deliveries WHERE at < $1")
            .bind(before)
            .execute(&self.pool)
            .await?
            .rows_affected())
    }

    async fn chains_to_dispatch(&self, limit: u32) -> Result<Vec<(String, i64)>> {
        let rows = sqlx::query(&format!(
            "SELECT h.chain, COALESCE(c.seq, 0) AS seq FROM event_chains h LEFT JOIN webhook_cursors c ON c.chain = h.chain \
             WHERE h.seq > COALESCE(c.seq, 0) AND h.chain NOT LIKE '%@%' ORDER BY h.chain LIMIT {limit}"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("chain")?, r.try_get("seq")?)))
            .collect()
    }

    async fn lock_cursor(&self, w: &mut Work, chain: &str) -> Result<Option<i64>> {
        sqlx::query("INSERT INTO webhook_cursors (chain, seq) VALUES ($1, 0) ON CONFLICT (chain) DO NOTHING")
            .bind(chain)
            .execute(&mut *w.tx)
            .await?;
        let lock = match self.backend {
            Backend::Postgres => " FOR UPDATE SKIP LOCKED",
            Backend::Sqlite => "",
        };
        Ok(
            sqlx::query_scalar(&format!("SELECT seq FROM webhook_cursors WHERE chain = $1{lock}"))
                .bind(chain)
                .fetch_optional(&mut *w.tx)
                .await?,
        )
    }

    async fn set_cursor(&self, w: &mut Work, chain: &str, seq: i64) -> Result<()> {
        sqlx::query("UPDATE webhook_cursors SET seq = $2 WHERE chain = $1")
            .bind(chain)
            .bind(seq)
            .execute(&mut *w.tx)
            .await?;
        Ok(())
    }
}
