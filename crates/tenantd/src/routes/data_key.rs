//! A tenant's data key (docs/protection.md): its versions and how far its values are
//! sealed under the newest, and rotation (operators).
use crate::error::ApiResult;
use crate::routes::openapi::TenantPath;
use crate::sealing::DataKeyStatus;
use crate::state::State;
use axum::extract::State as S;
use http::StatusCode;
use tenantd_core::Code;
use tenantd_edge::{Problem, TenantContext};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// What a rotation started.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Rotated {
    /// The new version: values written from now on are sealed under it.
    version: i64,
    /// The `tenantd.reseal` job sealing the older values under it.
    job_id: String,
}

fn operator_only(ctx: &TenantContext, what: &str) -> Result<(), Problem> {
    if ctx.principal().is_operator() {
        Ok(())
    } else {
        Err(Problem::new(Code::Forbidden, format!("only operators may {what}")))
    }
}

/// The tenant's data key versions and how far its values are sealed under the newest
/// (operators).
#[utoipa::path(get, path = "/v1/tenants/{id}/data-key", tag = "protection", params(TenantPath), responses((status = 200, description = "Versions and progress", body = DataKeyStatus)))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn status(S(state): S<State>, ctx: TenantContext) -> ApiResult<axum::Json<DataKeyStatus>> {
    operator_only(&ctx, "read a tenant's data key status")?;
    Ok(axum::Json(state.data_key_status(ctx.tenant_id()).await?))
}

/// Starts the tenant's next data key version and seals its values under it in the
/// background (operators); progress at `GET …/data-key`.
#[utoipa::path(post, path = "/v1/tenants/{id}/data-key/rotate", tag = "protection", params(TenantPath), responses((status = 202, description = "Rotation started", body = Rotated)))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn rotate(S(state): S<State>, ctx: TenantContext) -> ApiResult<(StatusCode, axum::Json<Rotated>)> {
    operator_only(&ctx, "rotate a tenant's data key")?;
    let (version, job_id) = state.rotate_data_key(ctx.tenant_id()).await?;
    Ok((StatusCode::ACCEPTED, axum::Json(Rotated { version, job_id })))
}

pub fn router() -> OpenApiRouter<State> {
    OpenApiRouter::new().routes(routes!(status)).routes(routes!(rotate))
}
