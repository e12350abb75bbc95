//! Usage counters, idempotency keys of usage events, tenant events and plan history.
use super::SqlCatalog;
use crate::*;
use sqlx::Row;
use tenantd_core::usage::MAX_COUNT;
use tenantd_core::{now_secs, KeyId, TenantId, Window};

fn scope_str(s: &Option<KeyId>) -> String {
    s.map(|k| k.to_string()).unwrap_or_default()
}

fn row_from(r: &sqlx::any::AnyRow) -> Result<CounterRow> {
    let scope: String = r.try_get("scope")?;
    let win: String = r.try_get("win")?;
    Ok(CounterRow {
        tenant: TenantId::from_trusted(r.try_get("tenant_id")?),
        scope: KeyId::parse(&scope),
        resource: r.try_get("resource")?,
        window: Window::parse(&win).ok_or_else(|| StoreError::Invalid(format!("stored window '{win}'")))?,
        period: r.try_get("period_start")?,
        value: r.try_get::<i64, _>("value")?.max(0) as u64,
    })
}

#[async_trait::async_trait]
impl UsageStore for SqlCatalog {
    async fn prune_usage(&self, tenant: &TenantId, before: i64) -> Result<u64> {
        Ok(
            sqlx::query("DELETE FROM usage_counters WHERE tenant_id = $1 AND period_start > 0 AND period_start < $2")
                .bind(tenant.as_str())
                .bind(before)
                .execute(&self.pool)
                .await?
                .rows_affected(),
        )
    }

    async fn load_counters(&self, tenant: &TenantId, since: i64) -> Result<Vec<CounterRow>> {
        let rows = sqlx::query("SELECT tenant_id, scope, resource, win, period_start, value FROM usage_counters WHERE tenant_id = $1 AND ((period_start >= $2 AND win <> 'total') OR (win = 'total' AND period_start = 0))")
            .bind(tenant.as_str())
            .bind(since)
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(row_from).collect()
    }

    async fn counters_in(&self, tenant: &TenantId, window: Window, from: i64, to: i64) -> Result<Vec<CounterRow>> {
        let rows = sqlx::query("SELECT tenant_id, scope, resource, win, period_start, value FROM usage_counters WHERE tenant_id = $1 AND scope = '' AND win = $2 AND period_start >= $3 AND period_start < $4 ORDER BY resource, period_start")
            .bind(tenant.as_str())
            .bind(window.as_str())
            .bind(from)
            .bind(to)
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(row_from).collect()
    }

    async fn add_counters(&self, deltas: &[CounterRow]) -> Result<()> {
        let mut tx = self.pool().begin().await?;
        upsert_counters(&mut tx, deltas, Upsert::Add).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn add_counters_in(&self, w: &mut Work, deltas: &[CounterRow]) -> Result<()> {
        upsert_counters(&mut w.tx, deltas, Upsert::Add).await
    }

    async fn set_levels(&self, levels: &[CounterRow]) -> Result<()> {
        let mut tx = self.pool().begin().await?;
        upsert_counters(&mut tx, levels, Upsert::Set).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn record_plan(&self, tenant: &TenantId, at: i64, plan: &str) -> Result<()> {
        let mut tx = self.pool().begin().await?;
        record_plan_in(&mut tx, tenant, at, plan).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn begin_usage(&self, tenant: &TenantId, keys: &[String]) -> Result<Box<dyn UsageWrite>> {
        let mut tx = self.pool().begin().await?;
        let mut fresh = Vec::with_capacity(keys.len());
        let now = now_secs();
        // Keys come sorted, so two writers of overlapping batches lock them in one order.
        for k in keys {
            let n = sqlx::query(
                "INSERT INTO usage_idempotency (tenant_id, idem_key, created_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            )
            .bind(tenant.as_str())
            .bind(k)
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            fresh.push(n == 1);
        }
        Ok(Box::new(SqlUsageWrite {
            tx,
            tenant: *tenant,
            fresh,
        }))
    }

    async fn count(&self, tenant: &TenantId, what: Countable) -> Result<u64> {
        what.count_in(&self.pool, tenant).await
    }

    async fn plan_history(&self, tenant: &TenantId) -> Result<Vec<(i64, String)>> {
        let rows = sqlx::query("SELECT at, plan_id FROM plan_history WHERE tenant_id = $1 ORDER BY at, plan_id")
            .bind(tenant.as_str())
            .fetch_all(self.pool())
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("at")?, r.try_get("plan_id")?)))
            .collect()
    }
}

struct SqlUsageWrite {
    tx: sqlx::Transaction<'static, sqlx::Any>,
    tenant: TenantId,
    fresh: Vec<bool>,
}

#[async_trait::async_trait]
impl UsageWrite for SqlUsageWrite {
    fn fresh(&self) -> &[bool] {
        &self.fresh
    }

    async fn commit(
        mut self: Box<Self>,
        deltas: &[CounterRow],
        levels: &[CounterRow],
        events: &[(&str, serde_json::Value)],
    ) -> Result<()> {
        upsert_counters(&mut self.tx, deltas, Upsert::Add).await?;
        upsert_counters(&mut self.tx, levels, Upsert::Set).await?;
        for (kind, data) in events {
            crate::work::append_in(&mut self.tx, &NewEvent::system(&self.tenant, kind, data.clone())).await?;
        }
        self.tx.commit().await?;
        Ok(())
    }
}

/// What an upsert does to a counter that exists.
#[derive(Clone, Copy)]
enum Upsert {
    /// Adds the row's value, stopping at [`MAX_COUNT`].
    Add,
    /// Replaces it (a level's snapshot).
    Set,
}

/// Writes counter rows in `tx`.
async fn upsert_counters(tx: &mut sqlx::Transaction<'_, sqlx::Any>, rows: &[CounterRow], how: Upsert) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    // Both sides are at most MAX_COUNT, so the sum fits a BIGINT before it is capped.
    let update = match how {
        Upsert::Add => format!(
            "CASE WHEN usage_counters.value + excluded.value > {MAX_COUNT} THEN {MAX_COUNT} ELSE usage_counters.value + excluded.value END"
        ),
        Upsert::Set => "excluded.value".to_string(),
    };
    let sql = format!("INSERT INTO usage_counters (tenant_id, scope, resource, win, period_start, value) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (tenant_id, scope, resource, win, period_start) DO UPDATE SET value = {update}");
    for d in rows {
        sqlx::query(&sql)
            .bind(d.tenant.as_str())
            .bind(scope_str(&d.scope))
            .bind(&d.resource)
            .bind(d.window.as_str())
            .bind(d.period)
            .bind(d.value.min(MAX_COUNT) as i64)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

impl Countable {
    /// The tenant's count, read through `e` (the pool, or a write's transaction).
    pub(crate) async fn count_in<'e, E: sqlx::Executor<'e, Database = sqlx::Any>>(
        self,
        e: E,
        tenant: &TenantId,
    ) -> Result<u64> {
        let sql = match self {
            Countable::Members => "SELECT COUNT(*) AS n FROM memberships WHERE tenant_id = $1",
            Countable::ActiveKeys => "SELECT COUNT(*) AS n FROM api_keys WHERE tenant_id = $1 AND revoked_at IS NULL",
        };
        let n: i64 = sqlx::query(sql)
            .bind(tenant.as_str())
            .fetch_one(e)
            .await?
            .try_get("n")?;
        Ok(n.max(0) as u64)
    }
}

/// Records that `tenant` is on `plan` from `at`. A change within the same second replaces
/// the one before it: the last plan of a second is the one billed.
pub(crate) async fn record_plan_in(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    tenant: &TenantId,
    at: i64,
    plan: &str,
) -> Result<()> {
    sqlx::query("DELETE FROM plan_history WHERE tenant_id = $1 AND at = $2")
        .bind(tenant.as_str())
        .bind(at)
        .execute(&mut **tx)
        .await?;
    sqlx::query("INSERT INTO plan_history (tenant_id, at, plan_id) VALUES ($1, $2, $3)")
        .bind(tenant.as_str())
        .bind(at)
        .bind(plan)
        .execute(&mut **tx)
        .await?;
    Ok(())
}
