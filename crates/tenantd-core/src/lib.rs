//! Domain types and rules of tenantd. No I/O lives here: ids are parsed once at the
//! border, permissions and roles are pure values, plans and limits are data, tenant
//! status transitions are checked here and nowhere else.
#![forbid(unsafe_code)]

pub mod ids;
pub mod perms;
pub mod plan;
pub mod problem;
pub mod tenant;
pub mod ts;
pub mod usage;

pub use ids::{Email, IdError, KeyId, PlanId, TenantId, UserId, WorkspaceId};
pub use perms::{BuiltinRole, Permission, Role};
pub use plan::{CounterFailure, Enforcement, Isolation, Limit, Plan, Window};
pub use problem::Code;
pub use tenant::{StatusError, TenantStatus};

/// Seconds since the Unix epoch, now.
pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
