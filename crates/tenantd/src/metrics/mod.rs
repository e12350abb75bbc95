//! tenantd's metrics, as `GET /metrics` serves them, rendered by `prometheus-client` in
//! the Prometheus text format (0.0.4).
//!
//! The hot-path counters stay plain atomics where they are counted (the edge, the shared
//! counters, the gateway, each listener's connections): [`render`] reads them at scrape
//! time through a [`Collector`]. The HTTP API's requests are counted and timed here, by
//! the [`track`] middleware, per route template, method and status.
pub mod jobs;
pub mod ranking;
pub mod requests;
pub mod tenants;
pub mod webhooks;

use crate::state::State;
pub use jobs::JobMetrics;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{prometheus_text, DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use requests::family_name;
pub use requests::{track, HttpMetrics};
use std::fmt;
use std::sync::atomic::Ordering::Relaxed;
use tenantd_core::Code;

/// The `Content-Type` of [`render`]'s text.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// Every metric of this server, in the Prometheus text format ([`CONTENT_TYPE`]).
pub async fn render(state: &State) -> Result<String, fmt::Error> {
    let tenants = tenants::gather(state).await;
    let pools = [
        ("catalog", state.catalog.pool_use()),
        ("data", tenantd_store::PoolUse::sum(&state.data.pools().await)),
    ];
    let mut scrape = Registry::default();
    scrape.register_collector(Box::new(Atomics {
        state: state.clone(),
        tenants,
        pools,
    }));
    let mut out = String::with_capacity(16 * 1024);
    prometheus_text::encode(&mut out, &scrape)?;
    prometheus_text::encode(&mut out, state.http_metrics.registry())?;
    prometheus_text::encode(&mut out, state.job_metrics.registry())?;
    prometheus_text::encode(&mut out, state.webhook_metrics.registry())?;
    Ok(out)
}

/// The atomics counted on the hot paths, read at scrape time, with what the scrape
/// gathered before encoding (the tenants' series, the pools' use).
struct Atomics {
    state: State,
    tenants: tenants::Scrape,
    pools: [(&'static str, tenantd_store::PoolUse); 2],
}

impl fmt::Debug for Atomics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Atomics")
    }
}

impl Collector for Atomics {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> fmt::Result {
        let state = &self.state;
        let m = state.edge.metrics();
        let (tenants, keys) = state.edge.cache().sizes();
        counter(
            &mut enc,
            "tenantd_requests_total",
            "Requests decided by the edge.",
            m.requests.load(Relaxed),
        )?;
        counter(
            &mut enc,
            "tenantd_unauthenticated_total",
            "Requests whose credential was refused (401).",
            m.unauthenticated.load(Relaxed),
        )?;
        counter(
            &mut enc,
            "tenantd_cross_tenant_attempts_total",
            "Requests refused with 403 tenant_mismatch.",
            m.cross_tenant_attempts.load(Relaxed),
        )?;
        labelled(
            &mut enc,
            "tenantd_edge_refusals_total",
            "Requests the edge refused, by problem code.",
            Code::ALL
                .iter()
                .zip(&m.refusals)
                .map(|(code, n)| ([("code", code.as_str())], ConstCounter::new(n.load(Relaxed)))),
        )?;
        single(
            &mut enc,
            "tenantd_admission_duration_seconds",
            &format!(
                "Time the limits engine takes to admit a request (one admission in {} timed).",
                tenantd_edge::pipeline::ADMISSION_SAMPLE
            ),
            m.admission.clone(),
        )?;
        self.tenants.encode(&mut enc)?;
        pools(&self.pools, &mut enc)?;
        gauge(
            &mut enc,
            "tenantd_cache_tenants",
            "Tenants in the edge cache.",
            tenants as u64,
        )?;
        gauge(
            &mut enc,
            "tenantd_cache_keys",
            "API keys in the edge cache.",
            keys as u64,
        )?;
        if let Some(s) = state.limiter.shared() {
            let m = s.metrics();
            gauge(
                &mut enc,
                "tenantd_redis_up",
                "1 while the shared counters (Redis) answer.",
                u64::from(m.up.load(Relaxed)),
            )?;
            counter(
                &mut enc,
                "tenantd_redis_errors_total",
                "Redis calls that failed or timed out.",
                m.errors.load(Relaxed),
            )?;
            counter(
                &mut enc,
                "tenantd_counter_fallbacks_total",
                "Decisions made by a plan's counter_failure policy while Redis was unreachable.",
                m.fallbacks.load(Relaxed),
            )?;
            gauge(
                &mut enc,
                "tenantd_nodes",
                "Live tenantd nodes sharing the counters.",
                m.nodes.load(Relaxed),
            )?;
        }
        if let Some(g) = &state.gateway {
            let m = g.metrics();
            for (name, help, n) in [
                (
                    "tenantd_gateway_requests_total",
                    "Requests received by the gateway listener.",
                    &m.requests,
                ),
                (
                    "tenantd_gateway_upstream_unavailable_total",
                    "Gateway requests answered 502 upstream_unavailable.",
                    &m.upstream_unavailable,
                ),
                (
                    "tenantd_gateway_upstream_timeouts_total",
                    "Gateway requests answered 504 upstream_timeout.",
                    &m.upstream_timeouts,
                ),
                (
                    "tenantd_gateway_reloads_total",
                    "Gateway configuration reloads applied.",
                    &m.reloads,
                ),
                (
                    "tenantd_gateway_reload_failures_total",
                    "Gateway configuration reloads refused (the previous one stayed).",
                    &m.reload_failures,
                ),
            ] {
                counter(&mut enc, name, help, n.load(Relaxed))?;
            }
            single(
                &mut enc,
                "tenantd_gateway_upstream_duration_seconds",
                "Time from sending a request upstream to its response head.",
                m.upstream_latency.0.clone(),
            )?;
        }
        connections(state, &mut enc)
    }
}

/// The catalog's and the data plane's connections: open and idle, and the most each opens.
fn pools(pools: &[(&'static str, tenantd_store::PoolUse)], enc: &mut DescriptorEncoder<'_>) -> fmt::Result {
    labelled(
        enc,
        "tenantd_pool_connections",
        "Database connections open now, by pool (catalog, data) and state (idle, in_use).",
        pools.iter().flat_map(|(pool, u)| {
            [("idle", u.idle), ("in_use", u.open.saturating_sub(u.idle))]
                .map(|(state, n)| ([("pool", *pool), ("state", state)], ConstGauge::new(u64::from(n))))
        }),
    )?;
    labelled(
        enc,
        "tenantd_pool_max_connections",
        "The most connections each pool opens (the data pools summed).",
        pools
            .iter()
            .map(|(pool, u)| ([("pool", *pool)], ConstGauge::new(u64::from(u.max)))),
    )
}

/// Each listener's connections: open now, closed by a limit, refused by the HTTP layer.
fn connections(state: &State, enc: &mut DescriptorEncoder<'_>) -> fmt::Result {
    let listeners: Vec<(&str, &crate::conn::Connections)> = std::iter::once(("api", &*state.connections))
        .chain(
            state
                .gateway
                .is_some()
                .then_some(("gateway", &*state.gateway_connections)),
        )
        .collect();
    labelled(
        enc,
        "tenantd_connections_open",
        "Connections open now, per listener.",
        listeners
            .iter()
            .map(|(l, c)| ([("listener", *l)], ConstGauge::new(c.len() as u64))),
    )?;
    labelled(
        enc,
        "tenantd_connections_accepted_total",
        "Connections accepted, per listener.",
        listeners
            .iter()
            .map(|(l, c)| ([("listener", *l)], ConstCounter::new(c.metrics.accepted.load(Relaxed)))),
    )?;
    labelled(
        enc,
        "tenantd_connections_closed_total",
        "Connections tenantd closed by a [server] limit: a head not read in time, idle too long, or evicted past max_connections.",
        listeners.iter().flat_map(|(l, c)| {
            let m = &c.metrics;
            [
                ("header_timeout", &m.header_timeouts),
                ("idle", &m.idle_closed),
                ("evicted", &m.evicted),
            ]
            .map(|(reason, n)| ([("listener", *l), ("reason", reason)], ConstCounter::new(n.load(Relaxed))))
        }),
    )?;
    labelled(
        enc,
        "tenantd_http_refused_total",
        "Requests the HTTP layer refused before any handler (malformed, 414, 431, 505).",
        listeners.iter().map(|(l, c)| {
            (
                [("listener", *l)],
                ConstCounter::new(c.metrics.refused_heads.load(Relaxed)),
            )
        }),
    )
}

fn counter(enc: &mut DescriptorEncoder<'_>, name: &'static str, help: &str, v: u64) -> fmt::Result {
    single(enc, family_name(name), help, ConstCounter::new(v))
}

fn gauge(enc: &mut DescriptorEncoder<'_>, name: &str, help: &str, v: u64) -> fmt::Result {
    single(enc, name, help, ConstGauge::new(v))
}

/// A metric of one unlabelled series. `help` is written as given.
fn single(enc: &mut DescriptorEncoder<'_>, name: &str, help: &str, metric: impl EncodeMetric) -> fmt::Result {
    let e = enc.encode_descriptor(name, help, None, metric.metric_type())?;
    metric.encode(e)
}

/// A metric of one series per label set, all of `M`'s type. `help` is written as given.
fn labelled<L: EncodeLabelSet, M: EncodeMetric + prometheus_client::metrics::TypedMetric>(
    enc: &mut DescriptorEncoder<'_>,
    name: &'static str,
    help: &str,
    series: impl IntoIterator<Item = (L, M)>,
) -> fmt::Result {
    let name = match M::TYPE {
        MetricType::Counter => family_name(name),
        _ => name,
    };
    let mut e = enc.encode_descriptor(name, help, None, M::TYPE)?;
    for (labels, m) in series {
        m.encode(e.encode_family(&labels)?)?;
    }
    Ok(())
}
