//! What the catalog keeps of tenant configuration and feature flags (docs/config.md).
use serde_json::Value;
use tenantd_core::{PlanId, TenantId};

/// A configuration key's schema and default.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigSchema {
    /// The key.
    pub key: String,
    /// Its JSON Schema (2020-12).
    pub schema: Value,
    /// The value when no plan or tenant layer has one.
    pub default: Option<Value>,
    /// Raised by every change, from 1.
    pub version: i64,
    /// Unix seconds.
    pub updated_at: i64,
}

/// Whose layer a configuration value is in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigOwner {
    /// A plan's: every tenant on it.
    Plan(PlanId),
    /// One tenant's.
    Tenant(TenantId),
}

impl ConfigOwner {
    /// `(tenant_id, plan_id)` as stored: the other is `''`.
    pub(crate) fn columns(&self) -> (&str, &str) {
        match self {
            ConfigOwner::Plan(p) => ("", p.as_str()),
            ConfigOwner::Tenant(t) => (t.as_str(), ""),
        }
    }
}

impl std::fmt::Display for ConfigOwner {
    /// `plan 'pro'` or `tenant 'acme'`, as messages name a layer.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigOwner::Plan(p) => write!(f, "plan '{p}'"),
            ConfigOwner::Tenant(t) => write!(f, "tenant '{t}'"),
        }
    }
}

/// One version of a key in a layer.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigEntry {
    /// The key.
    pub key: String,
    /// From 1 in each layer.
    pub version: i64,
    /// `None`: this version removed the layer's value.
    pub value: Option<Value>,
    /// Who wrote it (`operator`, `usr_…`, `key_…`).
    pub actor: String,
    /// Unix seconds.
    pub at: i64,
}

/// A tenant's secret as stored: its value sealed, never in the clear.
#[derive(Clone, PartialEq)]
pub struct StoredSecret {
    /// The secret's name.
    pub name: String,
    /// Raised by every write, from 1.
    pub version: i64,
    /// The version of the tenant's data key that sealed it.
    pub key_version: i64,
    /// base64 of the sealed value.
    pub sealed: String,
    /// Unix seconds.
    pub updated_at: i64,
}

impl std::fmt::Debug for StoredSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredSecret")
            .field("name", &self.name)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}
