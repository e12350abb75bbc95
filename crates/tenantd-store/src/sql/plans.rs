//! [`PlanStore`] on SQL.
use super::{is_unique_violation, json, to_json, SqlCatalog};
use crate::*;
use sqlx::any::AnyRow;
use sqlx::Row;
use tenantd_core::now_secs;

fn plan_from(r: &AnyRow) -> Result<Plan> {
    let isolation: String = r.try_get("isolation")?;
    Ok(Plan {
        id: PlanId::parse(&r.try_get::<String, _>("id")?).map_err(|e| StoreError::Invalid(e.to_string()))?,
        name: r.try_get("name")?,
        price: r.try_get("price")?,
        currency: r.try_get("currency")?,
        limits: json(r, "limits")?,
        features: json(r, "features")?,
        isolation: serde_json::from_value(serde_json::Value::String(isolation))?,
        counter_failure: serde_json::from_value(serde_json::Value::String(r.try_get("counter_failure")?))?,
        job_weight: r.try_get::<i32, _>("job_weight")?.max(1) as u32,
        backup_every_hours: r.try_get::<i32, _>("backup_every_hours")?.max(0) as u32,
        backup_keep: r.try_get::<i32, _>("backup_keep")?.max(1) as u32,
    })
}

#[async_trait::async_trait]
impl PlanStore for SqlCatalog {
    async fn list_plans(&self) -> Result<Vec<Plan>> {
        let rows = sqlx::query("SELECT * FROM plans ORDER BY id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(plan_from).collect()
    }

    async fn get_plan(&self, id: &PlanId) -> Result<Plan> {
        let r = sqlx::query("SELECT * FROM plans WHERE id = $1")
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound("plan"))?;
        plan_from(&r)
    }

    async fn create_plan(&self, w: &mut Work, p: &Plan) -> Result<()> {
        let now = now_secs();
        let r = sqlx::query("INSERT INTO plans (id, name, price, currency, limits, features, isolation, created_at, updated_at, counter_failure, job_weight, backup_every_hours, backup_keep) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, $9, $10, $11, $12)")
            .bind(p.id.as_str())
            .bind(&p.name)
            .bind(&p.price)
            .bind(&p.currency)
            .bind(to_json(&p.limits))
            .bind(to_json(&p.features))
            .bind(to_json(&p.isolation).trim_matches('"').to_string())
            .bind(now)
            .bind(p.counter_failure.as_str())
            .bind(p.job_weight as i32)
            .bind(p.backup_every_hours as i32)
            .bind(p.backup_keep as i32)
            .execute(&mut *w.tx)
            .await
            .map(|_| ())
            .map_err(StoreError::from);
        match r {
            Err(e) if is_unique_violation(&e) => Err(StoreError::Conflict(format!("plan '{}' already exists", p.id))),
            other => other,
        }
    }

    async fn update_plan(&self, w: &mut Work, p: &Plan) -> Result<()> {
        let n = sqlx::query("UPDATE plans SET name = $2, price = $3, currency = $4, limits = $5, features = $6, isolation = $7, updated_at = $8, counter_failure = $9, job_weight = $10, backup_every_hours = $11, backup_keep = $12 WHERE id = $1")
            .bind(p.id.as_str())
            .bind(&p.name)
            .bind(&p.price)
            .bind(&p.currency)
            .bind(to_json(&p.limits))
            .bind(to_json(&p.features))
            .bind(to_json(&p.isolation).trim_matches('"').to_string())
            .bind(now_secs())
            .bind(p.counter_failure.as_str())
            .bind(p.job_weight as i32)
            .bind(p.backup_every_hours as i32)
            .bind(p.backup_keep as i32)
            .execute(&mut *w.tx)
            .await?
            .rows_affected();
        if n == 0 {
            return Err(StoreError::NotFound("plan"));
        }
        Ok(())
    }

    async fn delete_plan(&self, w: &mut Work, id: &PlanId) -> Result<()> {
        let in_use = || {
            StoreError::Conflict(format!(
                "plan '{id}' is in use by tenants; move them to another plan first"
            ))
        };
        // A tenant put on the plan by another node after the check (PostgreSQL) holds
        // it by the tenants.plan_id foreign key instead.
        let used = sqlx::query("SELECT id FROM tenants WHERE plan_id = $1 LIMIT 1")
            .bind(id.as_str())
            .fetch_optional(&mut *w.tx)
            .await?
            .is_some();
        if used {
            return Err(in_use());
        }
        let n = match sqlx::query("DELETE FROM plans WHERE id = $1")
            .bind(id.as_str())
            .execute(&mut *w.tx)
            .await
        {
            Ok(done) => done.rows_affected(),
            Err(sqlx::Error::Database(d)) if d.is_foreign_key_violation() => return Err(in_use()),
            Err(e) => return Err(e.into()),
        };
        if n == 0 {
            return Err(StoreError::NotFound("plan"));
        }
        // A plan made later under the same id starts without this one's configuration.
        sqlx::query("DELETE FROM config_values WHERE tenant_id = '' AND plan_id = $1")
            .bind(id.as_str())
            .execute(&mut *w.tx)
            .await?;
        Ok(())
    }
}
