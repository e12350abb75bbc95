//! Health, metrics and tenantd's public signing keys.
use crate::state::State;
use axum::extract::State as S;
use axum::Json;
use tenantd_edge::Problem;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

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
#[tracing::instrument(level = "debug", skip_all)]
pub async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

/// This document: the OpenAPI 3.1 description of every endpoint, generated from the router.
#[utoipa::path(get, path = "/openapi.json", tag = "system", security(()), responses((status = 200, description = "OpenAPI document", body = Object)))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn openapi_json() -> Json<serde_json::Value> {
    static DOC: std::sync::OnceLock<serde_json::Value> = std::sync::OnceLock::new();
    Json(DOC.get_or_init(super::openapi).clone())
}

/// The metrics' text with its content type.
type MetricsText = ([(http::HeaderName, &'static str); 1], String);

/// Prometheus metrics (text exposition format).
#[utoipa::path(get, path = "/metrics", tag = "system", security(()), responses((status = 200, description = "Prometheus text exposition format", content_type = "text/plain", body = String)))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn metrics(S(state): S<State>) -> Result<MetricsText, Problem> {
    let text = crate::metrics::render(&state).await.map_err(|e| {
        tracing::error!(error = %e, "could not render the metrics");
        Problem::internal()
    })?;
    Ok(([(http::header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text))
}

/// tenantd's public keys, so apps verify its JWTs offline.
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "system", security(()), responses((status = 200, description = "A JWKS with the Ed25519 keys", body = Jwks)))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn jwks(S(state): S<State>) -> Json<serde_json::Value> {
    Json(state.edge.signer().jwks())
}

/// This module's routes, with their OpenAPI descriptions.
pub fn router() -> OpenApiRouter<State> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(openapi_json))
        .routes(routes!(metrics))
        .routes(routes!(jwks))
}
