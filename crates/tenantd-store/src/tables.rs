//! The registry of the catalog tables that hold a tenant's rows. Purge deletes from them
//! in this order (and an export reads them); a table that gets a `tenant_id` column is
//! added here, or the registry's test fails.

/// A catalog table holding rows of one tenant each, by its `tenant_id` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TenantTable {
    /// The table's name.
    pub name: &'static str,
    /// What its rows are, for people reading a purge's or an export's report.
    pub holds: &'static str,
    /// A purge keeps its rows as redacted tombstones instead of deleting them (the event
    /// log, whose chain must stay verifiable).
    pub tombstones: bool,
}

const fn table(name: &'static str, holds: &'static str) -> TenantTable {
    TenantTable {
        name,
        holds,
        tombstones: false,
    }
}

/// Every table with a `tenant_id` column, children before their parents. The tenant's
/// own row (`tenants`, by `id`) comes after all of them.
pub const TENANT_TABLES: &[TenantTable] = &[
    table("workspace_members", "workspace memberships"),
    table("workspaces", "workspaces"),
    table("memberships", "members"),
    table("roles", "custom roles"),
    table("api_keys", "API keys"),
    table("domains", "custom domains"),
    table("usage_counters", "usage counters and levels"),
    table("usage_idempotency", "idempotency keys of usage events"),
    table("plan_history", "plan history"),
    table("webhook_deliveries", "webhook delivery attempts"),
    table("webhooks", "webhook endpoints"),
    table("config_values", "its configuration layer, every version"),
    table("tenant_secrets", "its secrets (sealed)"),
    table("archive_chunks", "its exports' and backups' contents"),
    table("archives", "its exports and backups"),
    table("tenant_keys", "its data keys (wrapped; destroyed first by the purge)"),
    table("jobs", "background jobs"),
    table("job_lanes", "its lanes in the job queue's rotation"),
    table("job_tenants", "its job policy and running count"),
    TenantTable {
        name: "audit_events",
        holds: "events (kept as redacted tombstones)",
        tombstones: true,
    },
];
