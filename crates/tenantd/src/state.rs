//! The state every handler shares, and what a change does to it: its event, and the
//! caches it makes stale here and on the other nodes.
use crate::config::Config;
use std::net::SocketAddr;
use std::sync::Arc;
use tenantd_core::TenantId;
use tenantd_edge::Edge;
use tenantd_store::{Catalog, NewEvent};

/// Everything handlers share.
pub struct AppState {
    /// Tenants' data keys, under the master key.
    pub keyring: Arc<crate::keyring::Keyring>,
    /// The catalog.
    pub catalog: Arc<dyn Catalog>,
    /// Tenant data at every tier.
    pub data: Arc<tenantd_data::DataStore>,
    /// The job queue, in the catalog's database.
    pub jobs: tenantd_jobs::Jobs,
    /// The edge (cache, signer, counters).
    pub edge: Arc<Edge>,
    /// Admission and metering (the edge holds the same one).
    pub limiter: Arc<tenantd_limits::Limiter>,
    /// The configuration.
    pub cfg: Arc<Config>,
    /// The gateway, with `gateway_listen`.
    pub gateway: Option<Arc<crate::gateway::Gateway>>,
    /// The gateway's listener, bound at start and taken by [`serve_app`].
    pub(crate) gateway_listener: std::sync::Mutex<Option<tokio::net::TcpListener>>,
    /// Where the gateway listens.
    pub gateway_addr: Option<SocketAddr>,
    /// The API listener's open connections, under the `[server]` limits.
    pub connections: Arc<crate::conn::Connections>,
    /// The gateway listener's, under the same limits.
    pub gateway_connections: Arc<crate::conn::Connections>,
    /// Per tenant and catalog level (`members`, `keys`): held from a growth's check to its
    /// write (see `routes::usage::grow_level`).
    pub level_locks: dashmap::DashMap<(TenantId, &'static str), Arc<tokio::sync::Mutex<()>>>,
    /// Each tenant's data-plane storage level after its latest write, not yet written to
    /// the catalog as the day's snapshot (for invoices).
    pub storage_levels: dashmap::DashMap<TenantId, u64>,
    /// The HTTP API's request counter and latency histogram.
    pub http_metrics: Arc<crate::metrics::requests::HttpMetrics>,
    /// Which tenants get their own series at `/metrics`.
    pub tenant_series: crate::metrics::ranking::TenantSeries,
    /// The job queue's series.
    pub job_metrics: crate::metrics::jobs::JobMetrics,
    /// Webhook deliveries' series.
    pub webhook_metrics: crate::metrics::webhooks::WebhookMetrics,
    /// The job policy (weight, running cap) this node last wrote for each tenant, so an
    /// enqueue writes it only when the tenant's plan or limits changed.
    pub job_policies: Arc<dashmap::DashMap<TenantId, tenantd_jobs::Policy>>,
    /// Tenants whose data this node is restoring from a backup: their data answers
    /// `503` meanwhile.
    pub restoring: dashmap::DashSet<TenantId>,
    /// The operator console's session keys, and the sessions signed out on this node.
    pub console: crate::console::session::Sessions,
}

/// The handle handlers get.
pub type State = Arc<AppState>;

/// What an action's event says beyond the change itself: the reason its principal gave,
/// and where it came from (the console's actions say `via: "console"`). Both are left
/// out of the event's data when `None`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Note<'a> {
    /// Why, in the principal's words.
    pub reason: Option<&'a str>,
    /// Which of tenantd's front ends the principal used, when not the API.
    pub via: Option<&'static str>,
}

impl<'a> Note<'a> {
    /// An action taken in the operator console, with the reason typed, if any.
    pub fn console(reason: Option<&'a str>) -> Self {
        Note {
            reason,
            via: Some("console"),
        }
    }

    /// `data` with `reason` and `via` added (an object; anything else is returned as is).
    pub fn added_to(&self, mut data: serde_json::Value) -> serde_json::Value {
        if let Some(obj) = data.as_object_mut() {
            if let Some(r) = self.reason {
                obj.insert("reason".into(), r.into());
            }
            if let Some(v) = self.via {
                obj.insert("via".into(), v.into());
            }
        }
        data
    }
}

impl AppState {
    /// The calling tenant's data: at its placement, or (the first time) placed at its
    /// plan's tier.
    pub async fn scope(&self, ctx: &tenantd_edge::TenantContext) -> crate::error::ApiResult<tenantd_data::Scope<'_>> {
        let tenant = *ctx.tenant_id();
        if self.restoring.contains(&tenant) {
            let mut p = tenantd_edge::Problem::new(
                tenantd_core::Code::Unavailable,
                "the tenant's data is being restored from a backup; retry in a moment",
            );
            p.headers.push((http::header::RETRY_AFTER, http::HeaderValue::from(5)));
            return Err(p.into());
        }
        self.data_scope(tenant, ctx.tenant().isolation).await
    }

    /// A tenant's data: at its placement, or (the first time) placed at `tier`.
    pub async fn data_scope(
        &self,
        tenant: TenantId,
        tier: tenantd_core::Isolation,
    ) -> crate::error::ApiResult<tenantd_data::Scope<'_>> {
        match self.data.scope(tenant, None).await {
            Err(tenantd_data::DataError::NotPlaced) => self
                .data
                .scope(tenant, Some(tier))
                .await
                .map_err(crate::error::ApiError::from),
            r => r.map_err(crate::error::ApiError::from),
        }
    }

    /// Creates a tenant and its owner (`tenant.created` by `actor`, with `note`), and
    /// places its data at its plan's tier (retried on first use if that fails).
    pub async fn create_tenant(
        &self,
        new: &tenantd_store::NewTenant,
        actor: &str,
        request_id: &str,
        note: Note<'_>,
    ) -> Result<tenantd_store::Created<tenantd_store::Tenant>, tenantd_store::StoreError> {
        let mut w = self.catalog.begin().await?;
        let created = self.catalog.create_tenant(&mut w, new).await?;
        let tenantd_store::Created::New(t) = &created else {
            return Ok(created);
        };
        let detail = note.added_to(serde_json::json!({"plan": t.plan, "owner": new.owner_email}));
        w.commit_with(&NewEvent::new(Some(&t.id), actor, "tenant.created", detail, request_id))
            .await?;
        self.changed(tenantd_edge::Change::Tenant(t.id.as_str())).await;
        match self.catalog.get_plan(&new.plan).await {
            Ok(plan) => {
                if let Err(e) = self.data.place(&t.id, plan.isolation).await {
                    tracing::error!(tenant_id = %t.id, error = %e, "the new tenant's data was not placed; it will be on first use");
                }
            }
            Err(e) => tracing::error!(tenant_id = %t.id, error = %e, "the new tenant's plan could not be read"),
        }
        Ok(created)
    }

    /// The event of what the context's principal did to its tenant, for the unit of work
    /// that does it.
    pub fn event_of(ctx: &tenantd_edge::TenantContext, action: &str, detail: serde_json::Value) -> NewEvent {
        NewEvent::new(
            Some(ctx.tenant_id()),
            ctx.principal().actor(),
            action,
            detail,
            ctx.request_id(),
        )
    }

    /// Writes the tenant's job policy (its plan's weight and its running cap) unless this
    /// node last wrote the same.
    pub async fn keep_job_policy(&self, tenant: &tenantd_edge::TenantEntry) -> Result<(), tenantd_jobs::JobError> {
        let policy = job_policy(tenant);
        if self.job_policies.get(&tenant.id).is_some_and(|p| *p == policy) {
            return Ok(());
        }
        self.jobs.set_policy(&tenant.id, policy).await?;
        self.job_policies.insert(tenant.id, policy);
        Ok(())
    }

    /// Writes the job policy of a tenant whose plan or limits changed, from the catalog.
    pub async fn refresh_job_policy(&self, tenant: &TenantId) -> crate::error::ApiResult<()> {
        let t = self.catalog.get_tenant(tenant).await?;
        let plan = self.catalog.get_plan(&t.plan).await?;
        let entry = crate::directory::tenant_entry(&t, &plan);
        self.job_policies.remove(tenant);
        self.keep_job_policy(&entry).await?;
        Ok(())
    }

    /// Drops what `change` made stale from this node's cache and tells the other nodes.
    pub async fn changed(&self, change: tenantd_edge::Change<'_>) {
        self.edge.cache().forget(change);
        self.job_policies.clear();
        forget_purged(&self.data, &self.limiter, &self.keyring, change).await;
        reload_settings(&self.edge, Some(change)).await;
        if let Err(e) = self.catalog.publish(&change.topic()).await {
            tracing::error!(error = %e, topic = %change.topic(), "could not publish a cache invalidation");
        }
    }
}

/// After the edge's cache has dropped what `change` made stale (whether this node made the
/// change or heard of it): for a purged tenant, its cached placement and connections and
/// its counters (here and in Redis), so a new tenant under its id starts afresh.
pub(crate) async fn forget_purged(
    data: &tenantd_data::DataStore,
    limiter: &tenantd_limits::Limiter,
    keyring: &crate::keyring::Keyring,
    change: tenantd_edge::Change<'_>,
) {
    if let tenantd_edge::Change::Purged(t) = change {
        let Ok(tenant) = TenantId::parse(t) else { return };
        keyring.forget(&tenant);
        data.forget(&tenant).await;
        if let Err(e) = limiter.forget(tenant).await {
            tracing::warn!(tenant_id = %tenant, error = %e, "a purged tenant's counters were not all removed");
        }
    }
}

/// Loads the flags and shared configuration again when `change` touched them (`None`:
/// anything may have changed). A failure keeps the previous ones and is logged.
pub(crate) async fn reload_settings(edge: &tenantd_edge::Edge, change: Option<tenantd_edge::Change<'_>>) {
    use tenantd_edge::Change;
    if matches!(change, None | Some(Change::Settings | Change::Plan(_))) {
        if let Err(e) = edge.reload_settings().await {
            tracing::error!(error = %e, "could not reload flags and configuration; the previous ones stay");
        }
    }
}

/// How a tenant's jobs are served: its plan's `job_weight`, and its
/// `jobs`/`concurrent` limit (the plan's or its override) as the running cap.
pub fn job_policy(tenant: &tenantd_edge::TenantEntry) -> tenantd_jobs::Policy {
    tenantd_jobs::Policy {
        weight: tenant.job_weight,
        max_running: tenant
            .limits
            .iter()
            .filter(|l| l.resource == "jobs" && l.window == tenantd_core::Window::Concurrent)
            .filter_map(|l| l.limit)
            .min(),
    }
}

/// Writes the `data.operator_access` event of an operator's access to `tenant`'s data,
/// before the access: `Err` (a `500`) when it cannot be written, and the access must
/// not happen.
pub async fn record_operator_access(
    state: &State,
    tenant: &tenantd_core::TenantId,
    request_id: &str,
    detail: serde_json::Value,
) -> Result<(), tenantd_edge::Problem> {
    let ev = tenantd_store::NewEvent::new(Some(tenant), "operator", "data.operator_access", detail, request_id);
    match state.catalog.record_event(&ev).await {
        Ok(_) => Ok(()),
        Err(e) => {
            tracing::error!(error = %e, "an operator's access to tenant data was refused: its audit event could not be written");
            Err(tenantd_edge::Problem::internal())
        }
    }
}
