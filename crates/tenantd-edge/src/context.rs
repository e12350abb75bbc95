//! What the edge decided about a request: who is calling, for which tenant, with which
//! role. Built once per request, immutable, handed to handlers by extractors.
use crate::cache::TenantEntry;
use crate::problem::Problem;
use axum::extract::FromRequestParts;
use http::request::Parts;
use std::sync::Arc;
use tenantd_core::flags::{EvalError, Evaluation, Subject};
use tenantd_core::layers::Effective;
use tenantd_core::{Code, Role, TenantId, TenantStatus};

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// Platform staff, with the operator key.
    Operator,
    /// A tenant API key.
    Key {
        /// `key_…`
        id: crate::keys::KeyId,
        /// The key's tenant.
        tenant: TenantId,
    },
    /// A person.
    User {
        /// `usr_…`
        id: String,
        /// Their email.
        email: String,
    },
}

impl Principal {
    /// How the audit trail names this principal.
    pub fn actor(&self) -> String {
        match self {
            Principal::Operator => "operator".into(),
            Principal::Key { id, .. } => id.to_string(),
            Principal::User { id, .. } => id.clone(),
        }
    }
    /// Whether this is the operator.
    pub fn is_operator(&self) -> bool {
        matches!(self, Principal::Operator)
    }
}

/// Permissions an owner keeps on a suspended tenant (docs/api.md).
pub const READABLE_WHEN_SUSPENDED: [&str; 3] = ["tenant:read", "usage:read", "invoices:read"];

/// Whether a principal with `role` may do `permission` on a tenant in `status`: the one
/// place this rule lives. Operators may do anything; on a suspended tenant owners may
/// only read its record, usage and invoices, everyone else gets `tenant_suspended`.
pub fn evaluate(operator: bool, status: TenantStatus, role: &Role, permission: &str) -> Result<bool, Problem> {
    if operator {
        return Ok(true);
    }
    if status == TenantStatus::Suspended && !(role.name == "owner" && READABLE_WHEN_SUSPENDED.contains(&permission)) {
        return Err(Problem::tenant_suspended());
    }
    Ok(role.allows(permission))
}

/// The edge's decision about one request.
#[derive(Debug, Clone)]
pub struct RequestContext {
    /// `req_…`, also in the log and in every error body.
    pub request_id: String,
    /// The caller, when a credential was given.
    pub principal: Option<Principal>,
    /// The tenant, when the request names one and the caller may act for it.
    pub tenant: Option<Arc<TenantEntry>>,
    /// The caller's role in that tenant.
    pub role: Option<Arc<Role>>,
    /// The tightest limit admission applied, for the rate-limit headers.
    pub limit: Option<tenantd_limits::LimitState>,
    /// The API key's own limits, when the caller used a key.
    pub key_limits: Option<Arc<[tenantd_core::Limit]>>,
    /// The flags and shared configuration when the tenant was resolved (in process), or
    /// a remote tenantd's answers for this request (when asked for them).
    pub settings: Option<Arc<crate::Settings>>,
}

impl RequestContext {
    /// The principal, or `401`.
    pub fn principal(&self) -> Result<&Principal, Problem> {
        self.principal.as_ref().ok_or_else(Problem::credential_required)
    }

    /// Whether the caller is the operator.
    pub fn is_operator(&self) -> bool {
        self.principal.as_ref().is_some_and(Principal::is_operator)
    }

    /// `Ok` for the operator, else `403 forbidden` (or `401` without a credential).
    pub fn require_operator(&self) -> Result<(), Problem> {
        if self.principal()?.is_operator() {
            Ok(())
        } else {
            Err(Problem::new(Code::Forbidden, "only operators may do this"))
        }
    }
}

/// A request with a principal acting for a tenant: what tenant-scoped handlers take.
/// The tenant id comes from here, never from the request itself.
#[derive(Debug, Clone)]
pub struct TenantContext {
    ctx: Arc<RequestContext>,
    tenant: Arc<TenantEntry>,
    role: Arc<Role>,
}

impl TenantContext {
    /// From a request context; `401` without principal, `400 tenant_required` without tenant.
    pub fn from_request_context(ctx: Arc<RequestContext>) -> Result<Self, Problem> {
        ctx.principal()?;
        let tenant = ctx.tenant.clone().ok_or_else(Problem::tenant_required)?;
        let role = ctx.role.clone().ok_or_else(Problem::internal)?;
        Ok(Self { ctx, tenant, role })
    }

    /// The tenant's id.
    pub fn tenant_id(&self) -> &TenantId {
        &self.tenant.id
    }
    /// The tenant as the edge saw it.
    pub fn tenant(&self) -> &TenantEntry {
        &self.tenant
    }
    /// The caller.
    pub fn principal(&self) -> &Principal {
        self.ctx.principal.as_ref().expect("checked at construction")
    }
    /// The caller's role here.
    pub fn role(&self) -> &Role {
        &self.role
    }
    /// The request id.
    pub fn request_id(&self) -> &str {
        &self.ctx.request_id
    }
    /// The whole request context.
    pub fn request(&self) -> &RequestContext {
        &self.ctx
    }

    /// The subject flags are evaluated for: this tenant, and `targeting_key`.
    fn subject<'a>(&'a self, targeting_key: Option<&'a str>) -> Subject<'a> {
        Subject {
            tenant: self.tenant.id.as_str(),
            plan: self.tenant.plan.as_str(),
            targeting_key,
        }
    }

    /// Evaluates flag `key` for this tenant, with `targeting_key` for rollouts by
    /// targeting key; `None` if there is no such flag (or no settings: a remote edge not
    /// asked for them). No I/O: the flags are this node's snapshot.
    ///
    /// Against a remote tenantd asked for settings, only the caller's own evaluations
    /// are known: another targeting key answers `None`.
    pub fn flag_for(&self, key: &str, targeting_key: Option<&str>) -> Option<Result<Evaluation<'_>, EvalError>> {
        let s = self.ctx.settings.as_ref()?;
        if let Some(e) = &s.evaluated {
            return (targeting_key == Some(&self.principal().actor())).then(|| e.flag(key).map(Ok))?;
        }
        s.flags.evaluate(key, &self.subject(targeting_key))
    }

    /// [`TenantContext::flag_for`] with the caller (`usr_…`, `key_…`, `operator`) as the
    /// targeting key.
    pub fn flag(&self, key: &str) -> Option<Result<Evaluation<'_>, EvalError>> {
        let caller = self.principal().actor();
        self.flag_for(key, Some(&caller))
    }

    /// Whether boolean flag `key` is on for this tenant and caller (`false` when it is
    /// off, missing, not boolean or cannot be evaluated).
    pub fn enabled(&self, key: &str) -> bool {
        matches!(self.flag(key), Some(Ok(e)) if e.value == &serde_json::Value::Bool(true))
    }

    /// Configuration `key`'s effective value for this tenant: its own, its plan's or the
    /// default, with the source.
    pub fn config(&self, key: &str) -> Option<Effective<'_>> {
        let s = self.ctx.settings.as_ref()?;
        if let Some(e) = &s.evaluated {
            return e.config(key);
        }
        s.layers.effective(&self.tenant.config, self.tenant.plan.as_str(), key)
    }

    /// Whether the caller may do `permission` here. Operators may do anything; on a
    /// suspended tenant owners may only read its record, usage and invoices.
    pub fn allows(&self, permission: &str) -> Result<bool, Problem> {
        evaluate(
            self.principal().is_operator(),
            self.tenant.status,
            &self.role,
            permission,
        )
    }

    /// `Ok` if allowed; `403 forbidden` or `403 tenant_suspended` otherwise.
    pub fn require(&self, permission: &str) -> Result<(), Problem> {
        if self.allows(permission)? {
            Ok(())
        } else {
            Err(Problem::forbidden(permission))
        }
    }
}

fn context_of(parts: &Parts) -> Result<Arc<RequestContext>, Problem> {
    parts.extensions.get::<Arc<RequestContext>>().cloned().ok_or_else(|| {
        tracing::error!("handler reached without the edge layer");
        Problem::internal()
    })
}

impl<S: Send + Sync> FromRequestParts<S> for TenantContext {
    type Rejection = Problem;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Problem> {
        TenantContext::from_request_context(context_of(parts)?)
    }
}

/// Any request's context (principal and tenant optional).
#[derive(Debug, Clone)]
pub struct Ctx(pub Arc<RequestContext>);

impl<S: Send + Sync> FromRequestParts<S> for Ctx {
    type Rejection = Problem;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Problem> {
        context_of(parts).map(Ctx)
    }
}

impl std::ops::Deref for Ctx {
    type Target = RequestContext;
    fn deref(&self) -> &RequestContext {
        &self.0
    }
}
