//! What a caller may hand out: a role that exists in its tenant, no stronger than its own
//! (the owner role only with `owners:manage`), and a guest's ceiling in workspaces.
use crate::error::ApiResult;
use crate::state::State;
use std::sync::Arc;
use tenantd_core::perms::OWNERS_MANAGE;
use tenantd_core::{Code, Role};
use tenantd_edge::{Problem, TenantContext};

/// The role named `name` in the context's tenant, or `400` if there is none.
pub async fn known_role(state: &State, ctx: &TenantContext, name: &str) -> ApiResult<Arc<Role>> {
    if let Some(r) = state.edge.cache().builtin_role(name) {
        return Ok(r);
    }
    match state.catalog.get_role(ctx.tenant_id(), name).await? {
        Some(r) => Ok(Arc::new(r)),
        None => Err(Problem::new(Code::NotFound, format!("role '{name}' does not exist in this tenant")).into()),
    }
}

/// Refuses handing out a role stronger than the caller's own (operators excepted), and
/// the owner role without `owners:manage`.
pub fn may_grant(ctx: &TenantContext, role: &Role) -> ApiResult<()> {
    if role.name == "owner" {
        ctx.require(OWNERS_MANAGE)?;
    }
    if ctx.principal().is_operator() || role.is_within(ctx.role()) {
        Ok(())
    } else {
        Err(Problem::new(
            Code::Forbidden,
            format!("role '{}' grants more than your own role", role.name),
        )
        .into())
    }
}

/// The most a guest may do, in any workspace: read (the `viewer` role).
pub fn guest_ceiling() -> tenantd_core::Role {
    tenantd_core::BuiltinRole::Viewer.role()
}
