//! Permissions (`resource:action`, with `*`, `resource:*` and `*:action` wildcards) and
//! roles (built-in and per-tenant custom ones).
use serde::{Deserialize, Serialize};
use std::fmt;

/// A permission or a permission pattern: `resource:action`, `resource:*`, `*:action` or
/// `*`; each part 1–64 of `a-z 0-9 _ - .` (lower-cased).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
#[serde(transparent)]
#[schema(value_type = String, pattern = "^(\\*|(\\*|[A-Za-z0-9_.-]{1,64}):(\\*|[A-Za-z0-9_.-]{1,64}))$")]
pub struct Permission(String);

/// Why a permission string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid permission '{0}': use resource:action (a-z, 0-9, '_', '-', '.'), with '*' wildcards")]
pub struct PermissionError(pub String);

fn valid_part(p: &str) -> bool {
    p == "*"
        || (!p.is_empty()
            && p.len() <= 64
            && p.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-' || b == b'.'))
}

impl Permission {
    /// Parses `resource:action` or `*`, lower-cased.
    pub fn parse(raw: &str) -> Result<Self, PermissionError> {
        let s = raw.to_ascii_lowercase();
        if s == "*" {
            return Ok(Self(s));
        }
        match s.split_once(':') {
            Some((r, a)) if valid_part(r) && valid_part(a) => Ok(Self(s)),
            _ => Err(PermissionError(raw.to_string())),
        }
    }

    /// A permission known to be valid at compile time.
    pub fn known(s: &'static str) -> Self {
        debug_assert!(Self::parse(s).is_ok(), "{s}");
        Self(s.to_string())
    }

    /// The permission as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this pattern grants `wanted` (a concrete `resource:action`).
    pub fn grants(&self, wanted: &str) -> bool {
        pattern_grants(&self.0, wanted)
    }
}

/// Whether the pattern `pat` grants the concrete permission `wanted`.
pub fn pattern_grants(pat: &str, wanted: &str) -> bool {
    if pat == "*" || pat == wanted {
        return true;
    }
    let (Some((pr, pa)), Some((wr, wa))) = (pat.split_once(':'), wanted.split_once(':')) else {
        return false;
    };
    (pr == "*" || pr == wr) && (pa == "*" || pa == wa)
}

impl<'de> Deserialize<'de> for Permission {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Permission::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The built-in roles (docs/api.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BuiltinRole {
    /// Everything.
    Owner,
    /// Everything but deleting the tenant and managing owners.
    Admin,
    /// Read and write tenant data, read usage and config.
    Member,
    /// Read only.
    Viewer,
    /// Read only, within the workspaces it is added to.
    Guest,
}

/// Permission that deletes the tenant (owners only).
pub const TENANT_DELETE: &str = "tenant:delete";
/// Permission that exports all of the tenant's data (owners only; operators too).
pub const TENANT_EXPORT: &str = "tenant:export";
/// Permission that grants or removes the owner role (owners only).
pub const OWNERS_MANAGE: &str = "owners:manage";

impl BuiltinRole {
    /// All built-in roles, strongest first.
    pub const ALL: [BuiltinRole; 5] = [Self::Owner, Self::Admin, Self::Member, Self::Viewer, Self::Guest];

    /// The role's name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Owner => "owner",
            Self::Admin => "admin",
            Self::Member => "member",
            Self::Viewer => "viewer",
            Self::Guest => "guest",
        }
    }

    /// Looks a built-in role up by name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.name() == name)
    }

    fn allow(self) -> &'static [&'static str] {
        match self {
            Self::Owner | Self::Admin => &["*"],
            Self::Member => &[
                "records:*",
                "blobs:*",
                "cache:*",
                "data:*",
                "usage:read",
                "usage:write",
                "config:read",
                "*:read",
            ],
            Self::Viewer => &["*:read"],
            // Tenant-wide a guest sees only the tenant's record; inside a workspace it
            // was added to it has the role given there (see `/v1/authorize`).
            Self::Guest => &["tenant:read", "workspaces:read"],
        }
    }

    fn deny(self) -> &'static [&'static str] {
        match self {
            Self::Admin => &[TENANT_DELETE, OWNERS_MANAGE, TENANT_EXPORT],
            // `*:read` must not reach the tenant's secrets: owners and admins only, or a
            // custom role that names them.
            Self::Member | Self::Viewer => &["secrets:*"],
            _ => &[],
        }
    }

    /// The role as a value.
    pub fn role(self) -> Role {
        Role {
            name: self.name().to_string(),
            builtin: true,
            allow: self.allow().iter().map(|s| Permission::known(s)).collect(),
            deny: self.deny().iter().map(|s| Permission::known(s)).collect(),
        }
    }
}

/// The resources of tenantd's own permissions (its control plane and its data plane).
/// The configuration may add app permissions to built-in roles (`[roles.*]`), never
/// these: a tenant's `member` must not gain `keys:manage` from a platform setting.
pub const TENANTD_RESOURCES: &[&str] = &[
    "tenant",
    "tenants",
    "members",
    "owners",
    "keys",
    "roles",
    "workspaces",
    "domains",
    "plans",
    "usage",
    "invoices",
    "billing",
    "audit",
    "events",
    "webhooks",
    "config",
    "flags",
    "secrets",
    "jobs",
    "records",
    "blobs",
    "cache",
    "data",
    "leases",
    "exports",
    "backups",
];

/// Checks a permission the configuration adds to a built-in role: an app's own
/// (`reports:write`, `reports:*`), never one of tenantd's ([`TENANTD_RESOURCES`]) nor a
/// wildcard resource that would reach them.
pub fn check_platform_grant(p: &Permission) -> Result<(), String> {
    let resource = p.as_str().split_once(':').map_or("*", |(r, _)| r);
    if resource == "*" || TENANTD_RESOURCES.contains(&resource) {
        return Err(format!(
            "'{p}' reaches tenantd's own permissions; built-in roles may only gain app permissions such as 'reports:write'"
        ));
    }
    Ok(())
}

/// A role: a name and the permission patterns it grants (and, for built-ins, denies).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Role {
    /// The role's name, unique within a tenant.
    pub name: String,
    /// Whether this is one of the built-in roles.
    pub builtin: bool,
    /// Patterns granted.
    #[serde(rename = "permissions")]
    pub allow: Vec<Permission>,
    /// Patterns refused even when granted (built-in `admin` only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<Permission>,
}

impl Role {
    /// A tenant's own role.
    pub fn custom(name: String, permissions: Vec<Permission>) -> Self {
        Self {
            name,
            builtin: false,
            allow: permissions,
            deny: Vec::new(),
        }
    }

    /// Whether this role grants the concrete permission `wanted`.
    pub fn allows(&self, wanted: &str) -> bool {
        self.allow.iter().any(|p| p.grants(wanted)) && !self.deny.iter().any(|p| p.grants(wanted))
    }

    /// Whether every permission this role would grant is also granted by `other`
    /// (used so nobody hands out a role stronger than their own).
    pub fn is_within(&self, other: &Role) -> bool {
        // Each of this role's patterns is granted by one of the other's, and whatever the
        // other denies this role either denies too or does not grant.
        let allowed = self
            .allow
            .iter()
            .all(|p| other.allow.iter().any(|o| pattern_covers(o.as_str(), p.as_str())));
        let denied = other.deny.iter().all(|d| {
            self.deny.iter().any(|sd| pattern_covers(sd.as_str(), d.as_str()))
                || !self.allow.iter().any(|p| pattern_covers(p.as_str(), d.as_str()))
        });
        allowed && denied
    }
}

/// Whether pattern `outer` grants everything pattern `inner` grants.
fn pattern_covers(outer: &str, inner: &str) -> bool {
    if outer == "*" || outer == inner {
        return true;
    }
    if inner == "*" {
        return false;
    }
    let (Some((or, oa)), Some((ir, ia))) = (outer.split_once(':'), inner.split_once(':')) else {
        return false;
    };
    (or == "*" || or == ir) && (oa == "*" || oa == ia)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards() {
        assert!(pattern_grants("*", "records:write"));
        assert!(pattern_grants("records:*", "records:write"));
        assert!(pattern_grants("*:read", "records:read"));
        assert!(!pattern_grants("*:read", "records:write"));
        assert!(!pattern_grants("records:read", "records:write"));
        assert!(!pattern_grants("blobs:*", "records:read"));
    }

    #[test]
    fn parse_permissions() {
        assert!(Permission::parse("Records:Write").is_ok());
        assert!(Permission::parse("*").is_ok());
        assert!(Permission::parse("records").is_err());
        assert!(Permission::parse("a:b:c").is_err());
        assert!(Permission::parse(":x").is_err());
    }

    #[test]
    fn builtin_roles() {
        let owner = BuiltinRole::Owner.role();
        let admin = BuiltinRole::Admin.role();
        let member = BuiltinRole::Member.role();
        let viewer = BuiltinRole::Viewer.role();
        let guest = BuiltinRole::Guest.role();
        assert!(owner.allows(TENANT_DELETE) && owner.allows(OWNERS_MANAGE) && owner.allows(TENANT_EXPORT));
        assert!(admin.allows("keys:manage") && !admin.allows(TENANT_DELETE) && !admin.allows(TENANT_EXPORT));
        assert!(!admin.allows(OWNERS_MANAGE));
        assert!(member.allows("records:write") && member.allows("usage:read"));
        assert!(!member.allows("keys:manage") && !member.allows("members:manage"));
        assert!(viewer.allows("records:read") && !viewer.allows("records:write"));
        assert!(guest.allows("tenant:read") && !guest.allows("records:read"));
        for r in [&member, &viewer, &guest] {
            assert!(!r.allows("secrets:read"), "{}", r.name);
        }
        assert!(admin.allows("secrets:read") && admin.allows("secrets:write"));
    }

    #[test]
    fn only_app_permissions_may_be_added_to_builtin_roles() {
        let p = |s| Permission::parse(s).unwrap();
        assert!(check_platform_grant(&p("reports:write")).is_ok());
        assert!(check_platform_grant(&p("reports:*")).is_ok());
        for refused in [
            "keys:manage",
            "members:*",
            "*:read",
            "*",
            "records:write",
            "config:write",
        ] {
            assert!(check_platform_grant(&p(refused)).is_err(), "{refused}");
        }
    }

    #[test]
    fn role_containment() {
        let owner = BuiltinRole::Owner.role();
        let admin = BuiltinRole::Admin.role();
        let viewer = BuiltinRole::Viewer.role();
        assert!(viewer.is_within(&admin));
        assert!(admin.is_within(&owner));
        assert!(!owner.is_within(&admin));
        assert!(!admin.is_within(&viewer));
        let custom = Role::custom("r".into(), vec![Permission::parse("reports:write").unwrap()]);
        assert!(custom.is_within(&admin));
        assert!(!custom.is_within(&viewer));
        assert!(admin.is_within(&admin), "an admin may hand out admin");
        let owners = Role::custom("o".into(), vec![Permission::parse("owners:*").unwrap()]);
        assert!(!owners.is_within(&admin));
    }
}
