//! Invoices for a tenant, and the operator's billing report of all tenants.
use crate::billing::{inputs, invoice, Invoice};
use crate::error::ApiResult;
use crate::routes::openapi::TenantPath;
use crate::state::State;
use axum::extract::{Path, State as S};
use axum::response::{IntoResponse, Response};
use http::{header, HeaderMap, HeaderValue};
use serde_json::json;
use tenantd_core::{now_secs, TenantStatus};
use tenantd_edge::{Ctx, Problem, TenantContext};
use tenantd_store::{PageRequest, TenantFilter};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// `{period}`: a month.
#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub struct PeriodPath {
    /// `YYYY-MM`, from 1970-01.
    #[param(pattern = "^(19[7-9][0-9]|[2-9][0-9]{3})-(0[1-9]|1[0-2])$")]
    period: String,
}

/// The operator's billing report.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct Report {
    /// `YYYY-MM`.
    period: String,
    /// Every tenant with something to bill.
    invoices: Vec<Invoice>,
}

fn month(raw: &str) -> Result<(i32, u8), Problem> {
    tenantd_core::ts::parse_year_month(raw)
        .ok_or_else(|| Problem::invalid(format!("period '{raw}' must be a month as YYYY-MM")))
}

/// A tenant's invoice for a month (`invoices:read`): the plan's price prorated over the
/// time on each plan, API calls above the included quota, storage above the plan. A month
/// still running is `open` (figures so far).
#[utoipa::path(get, path = "/v1/tenants/{id}/invoices/{period}", tag = "billing", params(TenantPath, PeriodPath), responses((status = 200, description = "The invoice; figures are decimal strings", body = Invoice)))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn tenant_invoice(
    S(state): S<State>,
    ctx: TenantContext,
    Path(p): Path<(String, String)>,
) -> ApiResult<axum::Json<Invoice>> {
    ctx.require("invoices:read")?;
    let (y, m) = month(&p.1)?;
    let i = inputs(&*state.catalog, ctx.tenant_id(), y, m, now_secs()).await?;
    Ok(axum::Json(invoice(&i)))
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// Every tenant's invoice for a month (operators): JSON, or CSV (one row per line, then
/// one `total` row per tenant) with `Accept: text/csv`. Deleted tenants are included
/// while their record is retained.
#[utoipa::path(get, path = "/v1/billing/{period}", tag = "billing", params(PeriodPath), responses((status = 200, description = "Every tenant's invoice; with `Accept: text/csv`, CSV with columns tenant_id,period,currency,description,quantity,unit_price,amount", content((Report = "application/json"), (String = "text/csv")))))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn report(
    S(state): S<State>,
    ctx: Ctx,
    headers: HeaderMap,
    Path(period): Path<String>,
) -> ApiResult<Response> {
    ctx.require_operator()?;
    let (y, m) = month(&period)?;
    let now = now_secs();
    let mut invoices = Vec::new();
    for status in [None, Some(TenantStatus::Deleted)] {
        let filter = TenantFilter {
            status,
            ..Default::default()
        };
        let mut page = PageRequest {
            limit: 1000,
            after: None,
        };
        loop {
            let p = state.catalog.list_tenants(&filter, &page).await?;
            for t in &p.items {
                invoices.push(invoice(&inputs(&*state.catalog, &t.id, y, m, now).await?));
            }
            match p.next_cursor {
                Some(c) => page.after = Some(c),
                None => break,
            }
        }
    }
    invoices.retain(|i| !i.lines.is_empty());
    invoices.sort_by_key(|i| i.tenant_id);
    let wants_csv = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.split(',').any(|t| t.trim().starts_with("text/csv")));
    if !wants_csv {
        return Ok(axum::Json(json!({"period": period, "invoices": invoices})).into_response());
    }
    let mut out = String::from("tenant_id,period,currency,description,quantity,unit_price,amount\n");
    for i in &invoices {
        let row = |d: &str, q: &str, u: &str, a: &str| {
            [i.tenant_id.as_str(), &i.period, &i.currency, d, q, u, a]
                .iter()
                .map(|f| csv_field(f))
                .collect::<Vec<_>>()
                .join(",")
        };
        for l in &i.lines {
            out.push_str(&row(&l.description, &l.quantity, &l.unit_price, &l.amount));
            out.push('\n');
        }
        out.push_str(&row("total", "", "", &i.total));
        out.push('\n');
    }
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/csv; charset=utf-8"),
        )],
        out,
    )
        .into_response())
}

/// This module's routes, with their OpenAPI descriptions.
pub fn router() -> OpenApiRouter<State> {
    OpenApiRouter::new()
        .routes(routes!(tenant_invoice))
        .routes(routes!(report))
}
