//! `[retention]` as configured (docs/protection.md): days to keep each tenant's audit
//! events, usage rows and data, by its status; applied by `retention`.
use serde::Deserialize;
use tenantd_core::TenantStatus;

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
    /// The retention of tenants with status `s`.
    pub fn of(&self, s: TenantStatus) -> Keep {
        match s {
            TenantStatus::Active => self.active,
            TenantStatus::Suspended => self.suspended,
            TenantStatus::Deleted => self.deleted,
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
