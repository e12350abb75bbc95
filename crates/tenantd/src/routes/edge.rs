//! The edge decision for services that embed tenantd's tower layer against this tenantd
//! (`tenantd_edge::EdgeLayer::remote`): the same pipeline as tenantd's own API and its
//! gateway, with the same counters and audit trail.
use crate::error::ApiResult;
use crate::extract::Json;
use crate::state::State;
use axum::extract::State as S;
use tenantd_edge::remote::{DecideRequest, DecideResponse};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Decides a request another service received: resolves its tenant, authenticates its
/// bearer, checks that they agree and (with `permission`) that the role grants it, and
/// admits `cost` api_calls. Answers `200` with `{"decision": "admitted", "context",
/// "headers"}` or `{"decision": "refused", "problem", "headers"}`; the asker renders the
/// refusal. This call itself needs no credential and counts nothing: the decision it asks
/// for is the caller's own.
#[utoipa::path(post, path = "/v1/edge/decide", tag = "edge", security(()), request_body = DecideRequest,
    responses((status = 200, description = "The decision: `admitted` with the request context and rate-limit headers, or `refused` with the problem+json body and its headers", body = DecideResponse)))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn decide(S(state): S<State>, Json(req): Json<DecideRequest>) -> ApiResult<axum::Json<DecideResponse>> {
    let info = req.info()?;
    let decided = state.edge.decide(&info, req.request_id.clone()).await;
    Ok(axum::Json(DecideResponse::of(decided, req.settings)))
}

/// This module's routes, with their OpenAPI descriptions.
pub fn router() -> OpenApiRouter<State> {
    OpenApiRouter::new().routes(routes!(decide))
}
