//! Retention (docs/protection.md): how long each tenant's audit events, usage rows and
//! data are kept, by the tenant's status, and how long a deleted tenant waits for its
//! purge. Applied with every purge run: events past their time become redacted
//! tombstones (the chain still verifies), usage rows are deleted, and a tenant suspended
//! longer than its status's `data_days` is deleted (then purged `deleted_tenant_days`
//! later, its keys destroyed first).
use crate::retention_policy::Keep;
use crate::state::AppState;
use serde_json::json;
use tenantd_core::tenant::Transition;
use tenantd_core::TenantStatus;
use tenantd_store::{PageRequest, TenantFilter};

/// What one run did.
#[derive(Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Applied {
    /// Events made tombstones.
    pub events: u64,
    /// Usage rows deleted.
    pub usage_rows: u64,
    /// Suspended tenants deleted.
    pub tenants_deleted: u64,
}

impl AppState {
    /// Applies `[retention]` to every tenant as of `now` (Unix seconds).
    pub async fn apply_retention(&self, now: i64) -> Applied {
        let mut done = Applied::default();
        for status in [TenantStatus::Active, TenantStatus::Suspended, TenantStatus::Deleted] {
            let keep: Keep = self.cfg.retention.of(status);
            let filter = TenantFilter {
                status: Some(status),
                ..Default::default()
            };
            let mut page = PageRequest {
                limit: 500,
                after: None,
            };
            loop {
                let tenants = match self.catalog.list_tenants(&filter, &page).await {
                    Ok(p) => p,
                    Err(e) => {
                        tracing::error!(error = %e, "retention: could not list tenants");
                        return done;
                    }
                };
                for t in &tenants.items {
                    let before = |days: u32| now - i64::from(days) * 86_400;
                    if keep.audit_days > 0 {
                        match self.catalog.redact_events_before(&t.id, before(keep.audit_days)).await {
                            Ok(n) => done.events += n,
                            Err(e) => tracing::warn!(tenant_id = %t.id, error = %e, "retention: events not redacted"),
                        }
                    }
                    if keep.usage_days > 0 {
                        match self.catalog.prune_usage(&t.id, before(keep.usage_days)).await {
                            Ok(n) => done.usage_rows += n,
                            Err(e) => tracing::warn!(tenant_id = %t.id, error = %e, "retention: usage not pruned"),
                        }
                    }
                    if status == TenantStatus::Suspended && keep.data_days > 0 && t.updated_at < before(keep.data_days)
                    {
                        done.tenants_deleted += u64::from(self.retire(&t.id).await);
                    }
                }
                match tenants.next_cursor {
                    Some(next) => page.after = Some(next),
                    None => break,
                }
            }
        }
        if done != Applied::default() {
            tracing::info!(
                events = done.events,
                usage_rows = done.usage_rows,
                tenants_deleted = done.tenants_deleted,
                "applied retention"
            );
        }
        done
    }

    /// Deletes a tenant suspended past its data retention; whether it did.
    async fn retire(&self, tenant: &tenantd_core::TenantId) -> bool {
        let r = async {
            let mut w = self.catalog.begin().await?;
            self.catalog
                .transition_tenant(&mut w, tenant, Transition::Delete, None)
                .await?;
            let ev = tenantd_store::NewEvent::new(
                Some(tenant),
                "system",
                "tenant.deleted",
                json!({"reason": "retention: suspended longer than [retention.suspended] data_days"}),
                "",
            );
            w.commit_with(&ev).await
        };
        match r.await {
            Ok(_) => {
                self.changed(tenantd_edge::Change::Tenant(tenant.as_str())).await;
                true
            }
            Err(e) => {
                tracing::warn!(tenant_id = %tenant, error = %e, "retention: a suspended tenant was not deleted");
                false
            }
        }
    }
}
