//! The per-tenant series: requests, refusals and quota use of the most active tenants
//! (see [`super::ranking`]), each with its `plan`, the rest under `tenant="_other"`.
use super::ranking::{Series, OTHER};
use super::{gauge, labelled};
use crate::state::State;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use std::fmt;
use std::time::Instant;
use tenantd_core::{TenantId, Window};
use tenantd_edge::activity::{refusal_label, REFUSAL_KINDS};

/// One quota of a named tenant: its use in the current period and its limit.
struct Quota {
    tenant: TenantId,
    plan: String,
    resource: String,
    window: Window,
    used: u64,
    limit: u64,
}

/// What one scrape serves of the tenants, gathered before encoding.
pub(super) struct Scrape {
    series: Series,
    quotas: Vec<Quota>,
}

/// Ranks the tenants' counts now and reads the named tenants' quotas.
pub(super) async fn gather(state: &State) -> Scrape {
    let cache = state.edge.cache();
    let counts = cache
        .activity()
        .into_iter()
        .map(|(id, c, plan)| (id, c, plan.map(|p| p.as_str().to_owned())))
        .collect();
    let series = state.tenant_series.scrape(counts, Instant::now());
    let mut quotas = Vec::new();
    for (id, plan, _) in &series.named {
        let Some(entry) = cache.tenant(id.as_str()) else {
            continue;
        };
        // The limits engine's own counters only: levels (members, storage) and job
        // time are counted in the catalog and the data plane, too dear to read for every
        // named tenant at every scrape (GET …/usage and the console show them).
        let periods = entry
            .limits
            .iter()
            .filter(|l| Window::CALENDAR.contains(&l.window) && l.resource != tenantd_jobs::JOB_SECONDS);
        for l in periods {
            let Some(limit) = l.limit else { continue };
            match state.limiter.current(*id, &l.resource, l.window).await {
                Ok(used) => quotas.push(Quota {
                    tenant: *id,
                    plan: plan.clone(),
                    resource: l.resource.clone(),
                    window: l.window,
                    used,
                    limit,
                }),
                Err(e) => tracing::warn!(tenant_id = %id, error = %e, "quota use not read for /metrics"),
            }
        }
    }
    Scrape { series, quotas }
}

impl Scrape {
    pub(super) fn encode(&self, enc: &mut DescriptorEncoder<'_>) -> fmt::Result {
        let s = &self.series;
        // Every series, named or not, as (tenant, plan, counts).
        let all: Vec<(&str, &str, &tenantd_edge::activity::Counts)> = s
            .named
            .iter()
            .map(|(t, p, c)| (t.as_str(), p.as_str(), c))
            .chain(s.other.iter().map(|(p, c)| (OTHER, p.as_str(), c)))
            .collect();
        labelled(
            enc,
            "tenantd_tenant_requests_total",
            "Requests decided for a tenant (refused ones included), for the most active tenants; the rest under tenant=\"_other\".",
            all.iter()
                .map(|(t, p, c)| ([("tenant", *t), ("plan", *p)], ConstCounter::new(c.requests))),
        )?;
        labelled(
            enc,
            "tenantd_tenant_refusals_total",
            "A tenant's requests the edge refused, by code, for the most active tenants; the rest under tenant=\"_other\".",
            all.iter().flat_map(|(t, p, c)| {
                (0..REFUSAL_KINDS).filter(|i| c.refusals[*i] > 0).map(move |i| {
                    (
                        [("tenant", *t), ("plan", *p), ("code", refusal_label(i))],
                        ConstCounter::new(c.refusals[i]),
                    )
                })
            }),
        )?;
        let quota_labels = |q: &'_ Quota| {
            [
                ("tenant", q.tenant.as_str().to_string()),
                ("plan", q.plan.clone()),
                ("resource", q.resource.clone()),
                ("window", q.window.as_str().to_string()),
            ]
        };
        labelled(
            enc,
            "tenantd_tenant_quota_used",
            "A named tenant's use of a quota in its current period (a level for window=\"total\").",
            self.quotas.iter().map(|q| (quota_labels(q), ConstGauge::new(q.used))),
        )?;
        labelled(
            enc,
            "tenantd_tenant_quota_limit",
            "A named tenant's quota: its plan's limit with the tenant's overrides.",
            self.quotas.iter().map(|q| (quota_labels(q), ConstGauge::new(q.limit))),
        )?;
        gauge(
            enc,
            "tenantd_tenant_series",
            "Tenants with their own tenant label now (at most [metrics] tenant_series).",
            s.named.len() as u64,
        )
    }
}
