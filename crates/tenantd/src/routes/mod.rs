//! The HTTP API. Every route is registered through utoipa-axum, so `/openapi.json` is
//! generated from the same list that routes requests and cannot miss an endpoint.
use crate::state::State;
use axum::response::IntoResponse;
use axum::Router;
use tenantd_core::Code;
use tenantd_edge::{EdgeLayer, Problem};
use utoipa_axum::router::OpenApiRouter;

pub mod archives;
pub mod audit;
pub mod billing;
pub mod blobs;
pub mod cache;
pub mod config;
pub mod data;
pub mod data_key;
pub mod domains;
pub mod edge;
pub mod flags;
pub mod identity;
pub mod jobs;
pub mod keys;
pub mod members;
pub mod openapi;
pub mod plans;
pub mod secrets;
pub mod system;
pub mod tenants;
pub mod usage;
pub mod usage_events;
pub mod webhooks;
pub mod workspaces;

/// Every route with its OpenAPI description: each module's own router, merged.
pub fn api() -> OpenApiRouter<State> {
    OpenApiRouter::with_openapi(openapi::base())
        .merge(system::router())
        .merge(plans::router())
        .merge(tenants::router())
        .merge(members::router())
        .merge(workspaces::router())
        .merge(domains::router())
        .merge(keys::router())
        .merge(identity::router())
        .merge(audit::router())
        .merge(webhooks::router())
        .merge(config::router())
        .merge(flags::router())
        .merge(secrets::router())
        .merge(data_key::router())
        .merge(archives::router())
        .merge(usage::router())
        .merge(usage_events::router())
        .merge(billing::router())
        .merge(edge::router())
        .merge(jobs::router())
        .merge(data::router())
        .merge(blobs::router())
        .merge(cache::router())
}

/// The OpenAPI document, as `/openapi.json` serves it. A route's catch-all parameter
/// (`{*path}`, which may hold `/`) is written `{path}` there, as OpenAPI spells every path
/// parameter.
pub fn openapi() -> serde_json::Value {
    let mut doc = api().split_for_parts().1;
    let paths = std::mem::take(&mut doc.paths.paths);
    doc.paths.paths = paths.into_iter().map(|(k, v)| (k.replace("{*", "{"), v)).collect();
    openapi::add_error_responses(&mut doc);
    let mut doc = serde_json::to_value(doc).unwrap_or_default();
    openapi::finish(&mut doc);
    doc
}

async fn not_found() -> Problem {
    Problem::new(Code::NotFound, "no such route")
}

async fn method_not_allowed() -> Problem {
    Problem::new(Code::MethodNotAllowed, "this route does not accept that method")
}

/// `400 invalid_request` for a URL holding `%00`: no id, name, path or filter of
/// tenantd's may hold a NUL, and PostgreSQL could not store one (SQLite would).
async fn refuse_nul_in_url(req: axum::extract::Request, next: axum::middleware::Next) -> axum::response::Response {
    let has_nul = |s: &str| {
        s.as_bytes()
            .windows(3)
            .any(|w| w[0] == b'%' && w[1] == b'0' && w[2] == b'0')
    };
    let uri = req.uri();
    if has_nul(uri.path()) || uri.query().is_some_and(has_nul) {
        return Problem::invalid("the URL holds %00 (NUL), which no name, id or filter may hold").into_response();
    }
    next.run(req).await
}

/// Whether `path` reaches a tenant's data: its records, blobs and cache, its usage events
/// and its leases.
fn reaches_tenant_data(path: &str) -> bool {
    path.starts_with("/v1/data/")
        || path.strip_prefix("/v1/tenants/").is_some_and(|rest| {
            let sub = rest.split_once('/').map_or("", |(_, sub)| sub);
            sub == "usage/events"
                || sub == "leases"
                || sub.starts_with("leases/")
                || sub == "exports"
                || sub.starts_with("exports/")
                || sub == "clone"
                || sub == "backups"
        })
}

/// Records every operator request that reaches a tenant's data as a `data.operator_access`
/// event of that tenant, before the access: if the event cannot be written, the request
/// is refused (`500`) and nothing is read or written.
async fn audit_operator_access(
    axum::extract::State(state): axum::extract::State<State>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let ctx = req
        .extensions()
        .get::<std::sync::Arc<tenantd_edge::RequestContext>>()
        .cloned();
    if let Some(ctx) = ctx.filter(|c| c.is_operator() && reaches_tenant_data(req.uri().path())) {
        if let Some(tenant) = &ctx.tenant {
            let detail = serde_json::json!({"method": req.method().as_str(), "path": req.uri().path()});
            if let Err(p) = crate::state::record_operator_access(&state, &tenant.id, &ctx.request_id, detail).await {
                return p.into_response();
            }
        }
    }
    next.run(req).await
}

fn panic_response(err: Box<dyn std::any::Any + Send + 'static>) -> axum::response::Response {
    let msg = err
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| err.downcast_ref::<&str>().copied())
        .unwrap_or("(no message)");
    tracing::error!(panic = msg, "handler panicked");
    Problem::internal().into_response()
}

/// The whole application: routes, body limit, panic guard, the edge layer, and outermost
/// the request metrics.
pub fn router(state: State) -> Router {
    router_with(state, Router::new())
}

/// [`router`] with extra routes behind the same layers (tests use it).
pub fn router_with(state: State, extra: Router<State>) -> Router {
    let (router, _) = api().split_for_parts();
    router
        .merge(extra)
        // The operator's web console: HTML, not part of the JSON API or its document.
        .merge(crate::console::router())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::extract::DefaultBodyLimit::max(state.cfg.max_body_bytes))
        .layer(axum::Extension(crate::extract::BodyLimit(state.cfg.max_body_bytes)))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            audit_operator_access,
        ))
        .layer(axum::middleware::from_fn(refuse_nul_in_url))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(panic_response))
        .layer(EdgeLayer::new(state.edge.clone()))
        .layer(axum::middleware::from_fn_with_state(
            state.http_metrics.clone(),
            crate::metrics::track,
        ))
        .with_state(state)
}
