//! Retention (docs/protection.md): how long each tenant's audit events, usage rows and
//! data are kept, by the tenant's status, and how long a deleted tenant waits for its
//! purge. Applied with every purge run: events past their time become redacted
//! tombstones (the chain still verifies), usage rows are deleted, and a tenant suspended
//! longer than its status's `data_days` is deleted (then purged `deleted_tenant_days`
//! later, its keys destroyed first).
use crate::state::AppState;
use serde::Deserialize;
use serde_json::json;
use tenantd_core::tenant::Transition;
use tenantd_core::TenantStatus;
use tenantd_store::{PageRequest, TenantFilter};

/// One status's retention, in days (0: kept).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keep {
    /// Audit events.
    pub audit_days: u32,
    /// Usage rows (counters of past periods).
    pub usage_days: u32,
    /// The tenant's data (suspended tenants only: then the tenant is deleted).
    pub data_days: u32,
}

/// `[retention.<status>]` as written: a field left out keeps its default.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeepFile {
    audit_days: Option<u32>,
    usage_days: Option<u32>,
    data_days: Option<u32>,
}

impl KeepFile {
    fn over(self, d: Keep) -> Keep {
        Keep {
            audit_days: self.audit_days.unwrap_or(d.audit_days),
            usage_days: self.usage_days.unwrap_or(d.usage_days),
            data_days: self.data_days.unwrap_or(d.data_days),
        }
    }
}

/// `[retention]` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RetentionFile {
    deleted_tenant_days: Option<u32>,
    active: Option<KeepFile>,
    suspended: Option<KeepFile>,
    deleted: Option<KeepFile>,
}

impl<'de> Deserialize<'de> for Retention {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let f = RetentionFile::deserialize(d)?;
        let def = Retention::default();
        Ok(Retention {
            deleted_tenant_days: f.deleted_tenant_days.unwrap_or(def.deleted_tenant_days),
            active: f.active.unwrap_or_default().over(def.active),
            suspended: f.suspended.unwrap_or_default().over(def.suspended),
            deleted: f.deleted.unwrap_or_default().over(def.deleted),
        })
    }
}

/// The `[retention]` table (each field left out keeps its default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retention {
    /// How long a deleted tenant can be restored before its purge (0: the next purge run).
    pub deleted_tenant_days: u32,
    /// Active tenants: audit 7 years, usage 1 year, data kept.
    pub active: Keep,
    /// Suspended tenants: audit 1 year, usage 30 days, data 1 year.
    pub suspended: Keep,
    /// Deleted tenants (until their purge): audit 90 days, usage 7 days.
    pub deleted: Keep,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            deleted_tenant_days: 30,
            active: Keep {
                audit_days: 7 * 365,
                usage_days: 365,
                data_days: 0,
            },
            suspended: Keep {
                audit_days: 365,
                usage_days: 30,
                data_days: 365,
            },
            deleted: Keep {
                audit_days: 90,
                usage_days: 7,
                data_days: 0,
            },
        }
    }
}

impl Retention {
    fn of(&self, s: TenantStatus) -> Keep {
        match s {
            TenantStatus::Active => self.active,
            TenantStatus::Suspended => self.suspended,
            TenantStatus::Deleted => self.deleted,
        }
    }
}

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
            let keep = self.cfg.retention.of(status);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_field_left_out_keeps_its_default() {
        let r: Retention = toml::from_str("deleted_tenant_days = 0\n[suspended]\ndata_days = 2\n").unwrap();
        assert_eq!(r.deleted_tenant_days, 0);
        assert_eq!(
            r.suspended,
            Keep {
                audit_days: 365,
                usage_days: 30,
                data_days: 2
            }
        );
        assert_eq!(r.active, Retention::default().active);
        assert!(toml::from_str::<Retention>("[active]\nlogs = 1\n").is_err());
    }
}
