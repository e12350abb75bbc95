//! Usage counters as they are persisted: one value per tenant (or API key), resource,
//! window and calendar period.
use crate::{KeyId, TenantId, Window};

/// The largest count tenantd keeps: 2^53 − 1, the largest integer that JSON readers,
/// Redis's Lua and a BIGINT all hold exactly. A usage event's `quantity` is at most this,
/// and every counter stops here instead of wrapping (docs/limits.md).
pub const MAX_COUNT: u64 = (1 << 53) - 1;

/// `a + b`, stopping at [`MAX_COUNT`]: the one way every counter grows.
pub fn saturating_count(a: u64, b: u64) -> u64 {
    a.saturating_add(b).min(MAX_COUNT)
}

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
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct TenantEvent {
    /// Increasing id.
    pub id: i64,
    /// The tenant.
    #[schema(value_type = String)]
    pub tenant_id: TenantId,
    /// `quota.warning`, `quota.exceeded`, …
    #[serde(rename = "type")]
    pub kind: String,
    /// What happened.
    pub data: serde_json::Value,
    /// When (Unix seconds).
    #[serde(serialize_with = "crate::ts::ser")]
    #[schema(value_type = String, format = DateTime)]
    pub at: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_stop_at_the_maximum_instead_of_wrapping() {
        assert_eq!(saturating_count(1, 2), 3);
        assert_eq!(saturating_count(MAX_COUNT - 1, 1), MAX_COUNT);
        assert_eq!(saturating_count(MAX_COUNT, 1), MAX_COUNT);
        assert_eq!(saturating_count(u64::MAX - 100, 200), MAX_COUNT);
        assert_eq!(MAX_COUNT, 9_007_199_254_740_991);
    }
}
