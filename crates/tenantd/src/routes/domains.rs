//! Custom domains: a tenant claims a host, proves control by serving a token at the
//! verification URL, and from then on requests with that `Host` resolve to it.
use crate::error::ApiResult;
use crate::extract::{Json, RawBody};
use crate::routes::openapi::{Items, TenantPath};
use crate::state::{AppState, State};
use axum::extract::{Path, State as S};
use http::StatusCode;
use tenantd_core::{now_secs, Code};
use tenantd_edge::{Change, Problem, TenantContext};
use tenantd_store::Domain;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// `POST /v1/tenants/{id}/domains` body.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddDomain {
    /// A DNS name such as `app.customer.com` (lower-cased): labels of `a-z 0-9 -`, the
    /// last starting with a letter, no port, scheme or trailing dot.
    #[schema(
        max_length = 253,
        pattern = "^([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\\.)+[A-Za-z]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$"
    )]
    host: String,
}

/// `POST …/domains/{host}/verify` body.
#[derive(Debug, Default, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyDomain {
    /// Operators only: mark verified without fetching the proof (audited).
    #[serde(default)]
    skip_check: bool,
}

/// `{id}/domains/{host}`.
#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct HostPath {
    /// A host the tenant claimed.
    host: String,
}

/// A claimed domain, with how to prove control of it.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct DomainView {
    #[serde(flatten)]
    domain: Domain,
    /// Whether it is verified (then requests with this `Host` are for the tenant).
    verified: bool,
    /// What to serve where.
    verification: Verification,
}

/// How to verify a domain: serve `body` at `url`.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Verification {
    /// Always `http`.
    method: &'static str,
    /// Where tenantd fetches the proof.
    url: String,
    /// What it must find there.
    body: String,
}

fn with_instructions(state: &State, d: &Domain) -> DomainView {
    DomainView {
        domain: d.clone(),
        verified: d.verified_at.is_some(),
        verification: Verification {
            method: "http",
            url: state.cfg.domain_verification_url.replace("{host}", &d.host),
            body: d.token.clone(),
        },
    }
}

/// The tenant's custom domains (`domains:read`).
#[utoipa::path(get, path = "/v1/tenants/{id}/domains", tag = "tenants", params(TenantPath), responses((status = 200, description = "The tenant's domains", body = Items<DomainView>)))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn list(S(state): S<State>, ctx: TenantContext) -> ApiResult<axum::Json<serde_json::Value>> {
    ctx.require("domains:read")?;
    let items: Vec<_> = state
        .catalog
        .list_domains(ctx.tenant_id())
        .await?
        .iter()
        .map(|d| with_instructions(&state, d))
        .collect();
    Ok(axum::Json(serde_json::json!({ "items": items })))
}

/// Claims a host (`domains:manage`); the answer says what to serve where to verify it.
#[utoipa::path(post, path = "/v1/tenants/{id}/domains", tag = "tenants", params(TenantPath), request_body = AddDomain, responses((status = 201, description = "The domain, with how to verify it", body = DomainView)))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn add(
    S(state): S<State>,
    ctx: TenantContext,
    Json(b): Json<AddDomain>,
) -> ApiResult<(StatusCode, axum::Json<DomainView>)> {
    ctx.require("domains:manage")?;
    let host = tenantd_core::ids::parse_host(&b.host)?;
    if let Some(base) = state.cfg.base_domain.as_deref() {
        if host == base || host.ends_with(&format!(".{base}")) {
            return Err(Problem::invalid(format!("hosts under {base} already name their tenant by subdomain")).into());
        }
    }
    let token = format!(
        "tenantd-verify={}",
        tenantd_edge::keys::generate()
            .secret
            .rsplit('_')
            .next()
            .unwrap_or_default()
    );
    let mut w = state.catalog.begin().await?;
    let d = state.catalog.add_domain(&mut w, ctx.tenant_id(), &host, &token).await?;
    w.commit_with(&AppState::event_of(
        &ctx,
        "domain.added",
        serde_json::json!({"host": host}),
    ))
    .await?;
    Ok((StatusCode::CREATED, axum::Json(with_instructions(&state, &d))))
}

/// Fetches the proof from the verification URL and, when it matches, verifies the host
/// (`domains:manage`). Operators may pass `{"skip_check": true}`.
#[utoipa::path(post, path = "/v1/tenants/{id}/domains/{host}/verify", tag = "tenants", params(TenantPath, HostPath), request_body(content = Option<VerifyDomain>, description = "Optional"), responses((status = 200, description = "The verified domain", body = DomainView)))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn verify(
    S(state): S<State>,
    ctx: TenantContext,
    Path(p): Path<HostPath>,
    RawBody(body): RawBody,
) -> ApiResult<axum::Json<DomainView>> {
    ctx.require("domains:manage")?;
    let b: VerifyDomain = crate::extract::optional_json(&body)?;
    let d = state
        .catalog
        .get_domain(ctx.tenant_id(), &p.host.to_ascii_lowercase())
        .await?;
    if d.verified_at.is_none() {
        if b.skip_check {
            ctx.request().require_operator()?;
        } else {
            let url = state.cfg.domain_verification_url.replace("{host}", &d.host);
            let served = fetch_proof(&url).await.map_err(|e| {
                // The cause stays in the log: echoing it would let a tenant probe networks.
                tracing::info!(error = %e, %url, "domain verification fetch failed");
                Problem::new(Code::Conflict, format!("verification failed: could not fetch {url}"))
            })?;
            if served.trim() != d.token {
                return Err(Problem::new(
                    Code::Conflict,
                    format!("verification failed: {url} does not serve this domain's token"),
                )
                .into());
            }
        }
    }
    let mut w = state.catalog.begin().await?;
    let d = state
        .catalog
        .verify_domain(&mut w, ctx.tenant_id(), &d.host, now_secs())
        .await?;
    let detail = serde_json::json!({"host": d.host, "skip_check": b.skip_check});
    w.commit_with(&AppState::event_of(&ctx, "domain.verified", detail))
        .await?;
    state.changed(Change::Domain(&d.host)).await;
    Ok(axum::Json(with_instructions(&state, &d)))
}

async fn fetch_proof(url: &str) -> Result<String, String> {
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(5))
        .redirect(reqwest::redirect::Policy::limited(3))
        .build()
        .map_err(|e| e.to_string())?;
    let resp = client
        .get(url)
        .send()
        .await
        .map_err(|e| format!("cannot fetch {url}: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!("{url} answered {}", resp.status()));
    }
    let bytes = resp.bytes().await.map_err(|e| e.to_string())?;
    Ok(String::from_utf8_lossy(&bytes[..bytes.len().min(4096)]).to_string())
}

/// Releases a host (`domains:manage`).
#[utoipa::path(delete, path = "/v1/tenants/{id}/domains/{host}", tag = "tenants", params(TenantPath, HostPath), responses((status = 204, description = "Released")))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn delete(S(state): S<State>, ctx: TenantContext, Path(p): Path<HostPath>) -> ApiResult<StatusCode> {
    ctx.require("domains:manage")?;
    let host = p.host.to_ascii_lowercase();
    let mut w = state.catalog.begin().await?;
    state.catalog.delete_domain(&mut w, ctx.tenant_id(), &host).await?;
    w.commit_with(&AppState::event_of(
        &ctx,
        "domain.removed",
        serde_json::json!({"host": host}),
    ))
    .await?;
    state.changed(Change::Domain(&host)).await;
    Ok(StatusCode::NO_CONTENT)
}

/// This module's routes, with their OpenAPI descriptions.
pub fn router() -> OpenApiRouter<State> {
    OpenApiRouter::new()
        .routes(routes!(list, add))
        .routes(routes!(verify))
        .routes(routes!(delete))
}
