//! Online tier moves: copy, freeze, sync, verify, switch and drop the old copy; and,
//! after a crash, undoing the moves that were under way.
use super::{DataStore, Placement};
use crate::copy::{Val, COPIED};
use crate::DataError;
use serde_json::{json, Value};
use sqlx::Row;
use std::time::Instant;
use tenantd_core::{now_secs, Isolation, TenantId};

impl DataStore {
    /// Moves a tenant's data to another tier, online: copies it while it is written,
    /// freezes its writes briefly (they wait, then go to the new place), brings the
    /// copy up to date, verifies counts and checksums of every table, switches the
    /// placement, and drops the old copy after the grace period. Reads keep working
    /// throughout. Progress is in the placement's `move`. A tenant with no placement
    /// yet is simply placed at `to`.
    pub async fn move_tenant(&self, tenant: TenantId, to: Isolation) -> Result<Placement, DataError> {
        let Some(from) = self.placement(&tenant).await? else {
            return self.place(&tenant, to).await;
        };
        if from.tier == to && from.state == "placed" {
            return Ok(from);
        }
        let target = self.location_for(&tenant, to).await?;
        let claimed = sqlx::query(&format!(
            "UPDATE {} SET state = 'moving', target = $2, progress = $3, updated_at = $4 \
             WHERE tenant_id = $1 AND state = 'placed'",
            self.placements()
        ))
        .bind(tenant.as_str())
        .bind(&target)
        .bind(json!({"phase": "starting", "from": from.location, "to": target, "started_at": tenantd_core::ts::format(now_secs())}).to_string())
        .bind(now_secs())
        .execute(&self.admin)
        .await?
        .rows_affected();
        if claimed == 0 {
            return Err(DataError::Invalid(format!(
                "a tier move of '{tenant}' is already under way"
            )));
        }
        if target == from.location {
            // SQLite's schema and database tiers are the same file.
            let progress = json!({"phase": "done", "from": from.location, "to": target});
            return self.finish_move(&tenant, to, &target, progress, None).await;
        }
        match self.copy_over(&tenant, &from.location, &target).await {
            Ok(progress) => {
                let p = self
                    .finish_move(&tenant, to, &target, progress.clone(), Some(&from.location))
                    .await?;
                self.end_move(&tenant, Some(&from.location), progress).await?;
                Ok(Placement {
                    state: "placed".into(),
                    ..p
                })
            }
            Err(e) => {
                tracing::error!(tenant = %tenant, error = %e, "tier move failed; the tenant stays where it was");
                if let Ok(src) = self.open_location(&from.location, false).await {
                    if let Err(e) = src.set_frozen(&tenant, false).await {
                        tracing::error!(tenant = %tenant, error = %e, "a failed move could not thaw the tenant's writes");
                    }
                }
                if let Err(e) = self.drop_copy(&tenant, &target).await {
                    tracing::warn!(tenant = %tenant, error = %e, "a failed move's partial copy was not dropped");
                }
                let failed = json!({"phase": "failed", "from": from.location, "to": target, "error": e.to_string()});
                self.settle_placement(&tenant, &failed).await?;
                Err(e)
            }
        }
    }

    /// Copies, freezes, syncs and verifies; returns the progress to record.
    async fn copy_over(&self, tenant: &TenantId, from: &str, to: &str) -> Result<Value, DataError> {
        let src = self.open_location(from, false).await?;
        let dst = self.open_location(to, true).await?;
        dst.clear(tenant, false).await?;
        let mut total = 0u64;
        for t in &COPIED {
            total += src.versions(tenant, t).await?.len() as u64;
        }
        let started = tenantd_core::ts::format(now_secs());
        let mut progress = json!({"phase": "copying", "from": from, "to": to, "started_at": started,
            "rows_copied": 0, "rows_total": total});
        self.set_progress(tenant, &progress).await;
        let mut copied = 0u64;
        for t in &COPIED {
            let mut after: Option<Vec<Val>> = None;
            loop {
                let page = src.page(tenant, t, after.as_deref()).await?;
                dst.upsert(tenant, t, &page).await?;
                copied += page.len() as u64;
                progress["rows_copied"] = json!(copied);
                self.set_progress(tenant, &progress).await;
                if page.len() < t.batch() {
                    break;
                }
                after = page.last().map(|r| t.key_of(r));
            }
        }
        tenantd_core::crash::point("move.copied");
        // Writes wait from here until the switch.
        progress["phase"] = json!("frozen");
        self.set_progress(tenant, &progress).await;
        let frozen_at = Instant::now();
        let bytes = src.set_frozen(tenant, true).await?;
        for t in &COPIED {
            let (sv, dv) = (src.versions(tenant, t).await?, dst.versions(tenant, t).await?);
            let changed: Vec<&Vec<Val>> = sv
                .iter()
                .filter(|(k, v)| dv.get(*k) != Some(v))
                .map(|(k, _)| k)
                .collect();
            let gone: Vec<&Vec<Val>> = dv.keys().filter(|k| !sv.contains_key(*k)).collect();
            for keys in changed.chunks(t.batch()) {
                dst.upsert(tenant, t, &src.rows(tenant, t, keys).await?).await?;
            }
            dst.delete_keys(tenant, t, &gone).await?;
        }
        progress["phase"] = json!("verifying");
        self.set_progress(tenant, &progress).await;
        let mut verified = serde_json::Map::new();
        for t in &COPIED {
            let (a, b) = (src.checksum(tenant, t).await?, dst.checksum(tenant, t).await?);
            if a != b {
                return Err(DataError::Invalid(format!(
                    "the copy of {} does not match: {} rows ({}) at the source, {} rows ({}) in the copy",
                    t.name, a.0, a.1, b.0, b.1
                )));
            }
            verified.insert(t.name.to_string(), json!({"rows": a.0, "sha256": a.1}));
        }
        dst.set_storage(tenant, bytes).await?;
        progress["phase"] = json!("switched");
        progress["verified"] = Value::Object(verified);
        progress["frozen_ms"] = json!(frozen_at.elapsed().as_millis() as u64);
        progress["storage_bytes"] = json!(bytes);
        Ok(progress)
    }

    async fn set_progress(&self, tenant: &TenantId, progress: &Value) {
        let r = sqlx::query(&format!(
            "UPDATE {} SET progress = $2, updated_at = $3 WHERE tenant_id = $1",
            self.placements()
        ))
        .bind(tenant.as_str())
        .bind(progress.to_string())
        .bind(now_secs())
        .execute(&self.admin)
        .await;
        if let Err(e) = r {
            tracing::warn!(tenant = %tenant, error = %e, "tier move progress not recorded");
        }
    }

    /// Switches the placement to the new location. `dropping`: the old copy (at that
    /// location) is still to be dropped, and until it is no other move may start (so
    /// that the drop can never touch a place the tenant has moved back to).
    async fn finish_move(
        &self,
        tenant: &TenantId,
        tier: Isolation,
        location: &str,
        progress: Value,
        dropping: Option<&str>,
    ) -> Result<Placement, DataError> {
        sqlx::query(&format!(
            "UPDATE {} SET tier = $2, location = $3, state = $4, target = $5, progress = $6, updated_at = $7 \
             WHERE tenant_id = $1",
            self.placements()
        ))
        .bind(tenant.as_str())
        .bind(tier.as_str())
        .bind(location)
        .bind(if dropping.is_some() { "dropping" } else { "placed" })
        .bind(dropping)
        .bind(progress.to_string())
        .bind(now_secs())
        .execute(&self.admin)
        .await?;
        self.placed.write().unwrap_or_else(|e| e.into_inner()).remove(tenant);
        self.locate(tenant, None).await?;
        self.placement(tenant)
            .await?
            .ok_or_else(|| DataError::Invalid("the placement vanished during the move".into()))
    }

    /// Drops the old copy of a switched move, after the grace period, and ends the move.
    async fn end_move(&self, tenant: &TenantId, old: Option<&str>, mut progress: Value) -> Result<(), DataError> {
        tokio::time::sleep(self.grace).await;
        if let Some(old) = old {
            if let Err(e) = self.drop_copy(tenant, old).await {
                tracing::error!(tenant = %tenant, location = %old, error = %e, "the old copy of a moved tenant was not dropped");
            }
        }
        progress["phase"] = json!("done");
        self.settle_placement(tenant, &progress).await
    }

    /// Marks the tenant's placement as settled where it is (no move under way), with
    /// `progress` as its last move's.
    async fn settle_placement(&self, tenant: &TenantId, progress: &Value) -> Result<(), DataError> {
        sqlx::query(&format!(
            "UPDATE {} SET state = 'placed', target = NULL, progress = $2, updated_at = $3 WHERE tenant_id = $1",
            self.placements()
        ))
        .bind(tenant.as_str())
        .bind(progress.to_string())
        .bind(now_secs())
        .execute(&self.admin)
        .await?;
        Ok(())
    }

    /// The tenants whose placement is not settled: a move was under way (or its old copy
    /// was being dropped) when the process that ran it stopped, or it still runs.
    pub async fn unsettled(&self) -> Result<Vec<TenantId>, DataError> {
        let rows: Vec<String> = sqlx::query_scalar(&format!(
            "SELECT tenant_id FROM {} WHERE state <> 'placed' ORDER BY tenant_id",
            self.placements()
        ))
        .fetch_all(&self.admin)
        .await?;
        rows.iter()
            .map(|id| TenantId::parse(id).map_err(|e| DataError::Invalid(e.to_string())))
            .collect()
    }

    /// Up to `limit` placed tenants with ids after `after`, by id.
    pub async fn placed_tenants(&self, after: Option<&TenantId>, limit: u32) -> Result<Vec<TenantId>, DataError> {
        let rows: Vec<String> = sqlx::query_scalar(&format!(
            "SELECT tenant_id FROM {} WHERE tenant_id > $1 ORDER BY tenant_id LIMIT $2",
            self.placements()
        ))
        .bind(after.map_or("", |t| t.as_str()))
        .bind(i64::from(limit))
        .fetch_all(&self.admin)
        .await?;
        rows.iter()
            .map(|id| TenantId::parse(id).map_err(|e| DataError::Invalid(e.to_string())))
            .collect()
    }

    /// After a crash: the tenant's move that was under way is undone (the tenant thawed
    /// where it was, the partial copy dropped), or, if it had switched, its old copy is
    /// dropped. The caller must know that no other process runs the move (tenantd's job
    /// queue does: one live tier-move job per tenant). `true` when a move was undone, so
    /// the caller should move the tenant again.
    pub async fn recover(&self, tenant: &TenantId) -> Result<bool, DataError> {
        let Some(r) = sqlx::query(&format!(
            "SELECT location, state, target, progress FROM {} WHERE tenant_id = $1 AND state <> 'placed'",
            self.placements()
        ))
        .bind(tenant.as_str())
        .fetch_optional(&self.admin)
        .await?
        else {
            return Ok(false);
        };
        let location: String = r.try_get("location")?;
        let target: Option<String> = r.try_get("target")?;
        if r.try_get::<String, _>("state")? == "dropping" {
            let progress: Option<String> = r.try_get("progress")?;
            let progress = progress
                .and_then(|p| serde_json::from_str(&p).ok())
                .unwrap_or(json!({}));
            self.end_move(tenant, target.as_deref(), progress).await?;
            return Ok(false);
        }
        self.open_location(&location, false)
            .await?
            .set_frozen(tenant, false)
            .await?;
        if let Some(t) = target.as_deref().filter(|t| *t != location) {
            if let Err(e) = self.drop_copy(tenant, t).await {
                tracing::warn!(tenant = %tenant, error = %e, "an interrupted move's partial copy was not dropped");
            }
        }
        self.settle_placement(tenant, &json!({"phase": "interrupted", "from": location}))
            .await?;
        Ok(true)
    }
}
