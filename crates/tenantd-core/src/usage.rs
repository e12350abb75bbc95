//! Usage counters as they are persisted: one value per tenant (or API key), resource,
//! window and calendar period.
use crate::{KeyId, TenantId, Window};

/// A persisted counter, or a delta to add to one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CounterRow {
    /// The tenant.
    pub tenant: TenantId,
    /// `None` for the tenant's own counter, else the API key's.
    pub scope: Option<KeyId>,
    /// `api_calls`, `storage_bytes`, …
    pub resource: String,
    /// A calendar window, or `total` for levels.
    pub window: Window,
    /// Start of the UTC period (Unix seconds); 0 for levels.
    pub period: i64,
    /// The value (or the delta).
    pub value: u64,
}

/// A tenant event (`quota.warning`, `quota.exceeded`), stored for delivery.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TenantEvent {
    /// Increasing id.
    pub id: i64,
    /// The tenant.
    pub tenant_id: TenantId,
    /// `quota.warning`, `quota.exceeded`, …
    #[serde(rename = "type")]
    pub kind: String,
    /// What happened.
    pub data: serde_json::Value,
    /// When (Unix seconds).
    #[serde(serialize_with = "crate::ts::ser")]
    pub at: i64,
}
