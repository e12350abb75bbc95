//! Health, metrics and tenantd's public signing keys.
use crate::app::State;
use axum::extract::State as S;
use axum::Json;
use std::sync::atomic::Ordering;

/// `GET /healthz`.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct Health {
    /// `ok`.
    #[schema(pattern = "^ok$")]
    status: String,
}

/// A JSON Web Key Set (RFC 7517).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct Jwks {
    /// The public keys.
    keys: Vec<Jwk>,
}

/// One public Ed25519 key.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct Jwk {
    /// `OKP`.
    kty: String,
    /// `Ed25519`.
    crv: String,
    /// `EdDSA`.
    alg: String,
    /// `sig`.
    r#use: String,
    /// The key's id, as tokens' `kid`.
    kid: String,
    /// The public key, base64url.
    x: String,
}

/// Liveness: 200 once the server serves.
#[utoipa::path(get, path = "/healthz", tag = "system", security(()), responses((status = 200, description = "It serves", body = Health)))]
pub async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

/// This document: the OpenAPI 3.1 description of every endpoint, generated from the router.
#[utoipa::path(get, path = "/openapi.json", tag = "system", security(()), responses((status = 200, description = "OpenAPI document", body = Object)))]
pub async fn openapi_json() -> Json<serde_json::Value> {
    static DOC: std::sync::OnceLock<serde_json::Value> = std::sync::OnceLock::new();
    Json(DOC.get_or_init(super::openapi).clone())
}

/// Prometheus metrics (text exposition format).
#[utoipa::path(get, path = "/metrics", tag = "system", security(()), responses((status = 200, description = "Prometheus text exposition format", content_type = "text/plain", body = String)))]
pub async fn metrics(S(state): S<State>) -> ([(http::HeaderName, &'static str); 1], String) {
    let m = state.edge.metrics();
    let (tenants, keys) = state.edge.cache().sizes();
    let mut out = String::new();
    for (name, help, kind, v) in [
        (
            "tenantd_requests_total",
            "Requests decided by the edge.",
            "counter",
            m.requests.load(Ordering::Relaxed),
        ),
        (
            "tenantd_unauthenticated_total",
            "Requests whose credential was refused (401).",
            "counter",
            m.unauthenticated.load(Ordering::Relaxed),
        ),
        (
            "tenantd_cross_tenant_attempts_total",
            "Requests refused with 403 tenant_mismatch.",
            "counter",
            m.cross_tenant_attempts.load(Ordering::Relaxed),
        ),
        (
            "tenantd_cache_tenants",
            "Tenants in the edge cache.",
            "gauge",
            tenants as u64,
        ),
        (
            "tenantd_cache_keys",
            "API keys in the edge cache.",
            "gauge",
            keys as u64,
        ),
    ]
    .into_iter()
    .chain(state.limiter.shared().into_iter().flat_map(|s| {
        let m = s.metrics();
        [
            (
                "tenantd_redis_up",
                "1 while the shared counters (Redis) answer.",
                "gauge",
                u64::from(m.up.load(Ordering::Relaxed)),
            ),
            (
                "tenantd_redis_errors_total",
                "Redis calls that failed or timed out.",
                "counter",
                m.errors.load(Ordering::Relaxed),
            ),
            (
                "tenantd_counter_fallbacks_total",
                "Decisions made by a plan's counter_failure policy while Redis was unreachable.",
                "counter",
                m.fallbacks.load(Ordering::Relaxed),
            ),
            (
                "tenantd_nodes",
                "Live tenantd nodes sharing the counters.",
                "gauge",
                m.nodes.load(Ordering::Relaxed),
            ),
        ]
    }))
    .chain(state.gateway.iter().flat_map(|g| {
        let m = g.metrics();
        [
            (
                "tenantd_gateway_requests_total",
                "Requests received by the gateway listener.",
                "counter",
                m.requests.load(Ordering::Relaxed),
            ),
            (
                "tenantd_gateway_upstream_unavailable_total",
                "Gateway requests answered 502 upstream_unavailable.",
                "counter",
                m.upstream_unavailable.load(Ordering::Relaxed),
            ),
            (
                "tenantd_gateway_upstream_timeouts_total",
                "Gateway requests answered 504 upstream_timeout.",
                "counter",
                m.upstream_timeouts.load(Ordering::Relaxed),
            ),
            (
                "tenantd_gateway_reloads_total",
                "Gateway configuration reloads applied.",
                "counter",
                m.reloads.load(Ordering::Relaxed),
            ),
            (
                "tenantd_gateway_reload_failures_total",
                "Gateway configuration reloads refused (the previous one stayed).",
                "counter",
                m.reload_failures.load(Ordering::Relaxed),
            ),
        ]
    })) {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}\n"));
    }
    connection_metrics(&state, &mut out);
    ([(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], out)
}

/// Each listener's connections: open now, closed by a limit, refused by the HTTP layer.
fn connection_metrics(state: &State, out: &mut String) {
    let listeners: Vec<(&str, &crate::conn::Connections)> = std::iter::once(("api", &*state.connections))
        .chain(
            state
                .gateway
                .is_some()
                .then_some(("gateway", &*state.gateway_connections)),
        )
        .collect();
    out.push_str(
        "# HELP tenantd_connections_open Connections open now, per listener.\n# TYPE tenantd_connections_open gauge\n",
    );
    for (l, c) in &listeners {
        out.push_str(&format!("tenantd_connections_open{{listener=\"{l}\"}} {}\n", c.len()));
    }
    out.push_str("# HELP tenantd_connections_accepted_total Connections accepted, per listener.\n# TYPE tenantd_connections_accepted_total counter\n");
    for (l, c) in &listeners {
        let n = c.metrics.accepted.load(Ordering::Relaxed);
        out.push_str(&format!("tenantd_connections_accepted_total{{listener=\"{l}\"}} {n}\n"));
    }
    out.push_str("# HELP tenantd_connections_closed_total Connections tenantd closed by a [server] limit: a head not read in time, idle too long, or evicted past max_connections.\n# TYPE tenantd_connections_closed_total counter\n");
    for (l, c) in &listeners {
        let m = &c.metrics;
        for (reason, n) in [
            ("header_timeout", &m.header_timeouts),
            ("idle", &m.idle_closed),
            ("evicted", &m.evicted),
        ] {
            let n = n.load(Ordering::Relaxed);
            out.push_str(&format!(
                "tenantd_connections_closed_total{{listener=\"{l}\",reason=\"{reason}\"}} {n}\n"
            ));
        }
    }
    out.push_str("# HELP tenantd_http_refused_total Requests the HTTP layer refused before any handler (malformed, 414, 431, 505).\n# TYPE tenantd_http_refused_total counter\n");
    for (l, c) in &listeners {
        let n = c.metrics.refused_heads.load(Ordering::Relaxed);
        out.push_str(&format!("tenantd_http_refused_total{{listener=\"{l}\"}} {n}\n"));
    }
}

/// tenantd's public keys, so apps verify its JWTs offline.
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "system", security(()), responses((status = 200, description = "A JWKS with the Ed25519 keys", body = Jwks)))]
pub async fn jwks(S(state): S<State>) -> Json<serde_json::Value> {
    Json(state.edge.signer().jwks())
}
