//! Domain types and rules of tenantd. No I/O lives here: ids are parsed once at the
//! border, permissions and roles are pure values, plans and limits are data, tenant
//! status transitions are checked here and nowhere else.
#![forbid(unsafe_code)]

pub mod crash;
pub mod crypto;
pub mod flags;
pub mod ids;
pub mod layers;
pub mod perms;
pub mod plan;
pub mod problem;
pub mod secret;
pub mod tenant;
pub mod text;
pub mod ts;
pub mod usage;
pub mod whole;

pub use ids::{Email, IdError, KeyId, PlanId, TenantId, UserId, WorkspaceId};
pub use perms::{BuiltinRole, Permission, Role};
pub use plan::{CounterFailure, Enforcement, Isolation, Limit, Plan, Window};
pub use problem::Code;
pub use tenant::{StatusError, TenantStatus};

/// Whether a database URL is PostgreSQL's (`postgres://` or `postgresql://`).
pub fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// A database URL without its password (`postgres://user:***@host/db`), for messages.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => match url[s + 3..at].split_once(':') {
            Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
            None => url.to_string(),
        },
        _ => url.to_string(),
    }
}

/// Seconds since the Unix epoch, now.
pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_url_loses_only_its_password() {
        assert_eq!(
            super::redact_url("postgres://a:secret@h:1/db?x=1"),
            "postgres://a:***@h:1/db?x=1"
        );
        for kept in ["postgres://a@h/db", "sqlite://x.db", "not a url"] {
            assert_eq!(super::redact_url(kept), kept);
        }
    }
}
