//! Tenant status and its transitions.
use serde::{Deserialize, Serialize};

/// Days a soft-deleted tenant is kept before it may be purged.
pub const RETENTION_DAYS: i64 = 30;

/// Where a tenant is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TenantStatus {
    /// Serving.
    Active,
    /// Refused on the data plane; owners and operators may still read it.
    Suspended,
    /// Soft-deleted, in retention; invisible to all but operators.
    Deleted,
}

/// A status change that is not allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a {from} tenant cannot be {verb}")]
pub struct StatusError {
    /// Current status, as a word.
    pub from: &'static str,
    /// The attempted change, as a past participle.
    pub verb: &'static str,
}

/// The lifecycle operations that change a tenant's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// active → suspended
    Suspend,
    /// suspended → active
    Resume,
    /// active or suspended → deleted
    Delete,
    /// deleted → the status it had before deletion
    Restore,
}

impl TenantStatus {
    /// The status as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Suspended => "suspended",
            Self::Deleted => "deleted",
        }
    }

    /// Parses a stored status.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(Self::Active),
            "suspended" => Some(Self::Suspended),
            "deleted" => Some(Self::Deleted),
            _ => None,
        }
    }

    /// The status after `t`, or why `t` is not allowed. `Restore` yields `Active`; the
    /// store brings back `Suspended` when the tenant was suspended before deletion.
    pub fn apply(self, t: Transition) -> Result<TenantStatus, StatusError> {
        use TenantStatus::*;
        let (ok, verb) = match t {
            Transition::Suspend => (self == Active, "suspended"),
            Transition::Resume => (self == Suspended, "resumed"),
            Transition::Delete => (self != Deleted, "deleted"),
            Transition::Restore => (self == Deleted, "restored"),
        };
        if !ok {
            return Err(StatusError {
                from: self.as_str(),
                verb,
            });
        }
        Ok(match t {
            Transition::Suspend => Suspended,
            Transition::Resume | Transition::Restore => Active,
            Transition::Delete => Deleted,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use TenantStatus::*;
    use Transition::*;

    #[test]
    fn transitions() {
        assert_eq!(Active.apply(Suspend), Ok(Suspended));
        assert_eq!(Suspended.apply(Resume), Ok(Active));
        assert_eq!(Active.apply(Delete), Ok(Deleted));
        assert_eq!(Suspended.apply(Delete), Ok(Deleted));
        assert_eq!(Deleted.apply(Restore), Ok(Active));
        assert!(Deleted.apply(Resume).is_err());
        assert!(Deleted.apply(Suspend).is_err());
        assert!(Active.apply(Resume).is_err());
        assert!(Suspended.apply(Suspend).is_err());
        assert!(Active.apply(Restore).is_err());
        assert_eq!(
            Deleted.apply(Resume).unwrap_err().to_string(),
            "a deleted tenant cannot be resumed"
        );
    }
}
