//! What the tenant page's forms post to. Each calls the function the API's handler calls,
//! as the operator, with the reason typed and `via: "console"` in its event. Bad input,
//! or a change the tenant's state refuses, is the page again with the error by its form
//! and nothing changed; success is a `303` back to the page with a notice.
use super::tenant::{render, Action, View};
use crate::console::layout::{self, Chrome, Nav};
use crate::console::{failure, form_error, html_page, see_other, text, Page, Signed};
use crate::error::ApiError;
use crate::routes::archives::start_export;
use crate::routes::keys::revoke_key;
use crate::routes::tenants;
use crate::state::{Note, State};
use axum::body::Bytes;
use axum::extract::{Path, State as S};
use http::{HeaderMap, StatusCode};
use maud::html;
use tenantd_core::PlanId;
use tenantd_edge::TenantContext;
use tenantd_store::TenantPatch;

/// An action's form: a reason, and for a plan change the plan.
#[derive(Debug, Default, serde::Deserialize)]
pub struct ActionForm {
    #[serde(default)]
    reason: String,
    #[serde(default)]
    plan: String,
}

/// The outcome of an action on `ctx`'s tenant: a `303` to its page with `done`, the
/// page again with the error by `action`'s form (`4xx`), or the error page (`5xx`).
async fn answer(
    state: &State,
    signed: &Signed,
    ctx: &TenantContext,
    action: Action,
    typed: &str,
    result: Result<(), ApiError>,
    done: &str,
) -> Page {
    match result {
        Ok(()) => Ok(see_other(&format!("/console/tenants/{}?done={done}", ctx.tenant_id()))),
        Err(e) => {
            let (status, detail) = form_error(e, signed)?;
            let view = View {
                failed: Some((action, detail, typed.to_string())),
                ..View::default()
            };
            render(state, signed, ctx, view, status).await
        }
    }
}

/// The form's reason, when one was typed, checked.
fn reason(f: &ActionForm) -> Result<Option<String>, ApiError> {
    super::optional_reason(Some(&f.reason)).map_err(|m| tenantd_edge::Problem::invalid(m).into())
}

/// `POST /console/tenants/{id}/plan`: the API's plan change (`tenant.updated`).
pub async fn plan(S(state): S<State>, signed: Signed, Path(id): Path<String>, headers: HeaderMap, body: Bytes) -> Page {
    let f: ActionForm = signed.form(&state, &headers, &body)?;
    let ctx = signed.operator_for(&state, &id).await?;
    let result = async {
        let reason = reason(&f)?;
        let plan = PlanId::parse(f.plan.trim())?;
        if plan == ctx.tenant().plan {
            return Err(tenantd_edge::Problem::invalid(format!("the tenant is already on plan {plan}")).into());
        }
        let patch = TenantPatch {
            plan: Some(plan),
            ..Default::default()
        };
        let note = Note::console(reason.as_deref());
        tenants::update(&state, &ctx, &patch, note).await.map(|_| ())
    }
    .await;
    answer(&state, &signed, &ctx, Action::Plan, &f.reason, result, "plan").await
}

/// `POST /console/tenants/{id}/suspend` (`SUSPEND`) and `…/resume`: the API's
/// suspension and resumption (`tenant.suspended`, `tenant.resumed`). The console asks a
/// reason for both.
pub async fn status_change<const SUSPEND: bool>(
    S(state): S<State>,
    signed: Signed,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Page {
    let f: ActionForm = signed.form(&state, &headers, &body)?;
    let ctx = signed.operator_for(&state, &id).await?;
    let result = async {
        let reason = reason(&f)?
            .ok_or_else(|| tenantd_edge::Problem::invalid("a reason is required: it is recorded in the audit trail"))?;
        let note = Note::console(Some(&reason));
        match SUSPEND {
            true => tenants::suspend_with(&state, &ctx, note).await.map(|_| ()),
            false => tenants::resume_with(&state, &ctx, note).await.map(|_| ()),
        }
    }
    .await;
    let done = if SUSPEND { "suspended" } else { "resumed" };
    answer(&state, &signed, &ctx, Action::Status, &f.reason, result, done).await
}

/// `POST /console/tenants/{id}/export`: the API's export. Like the API's, it is recorded
/// first as the operator's access to the tenant's data (`data.operator_access`, here
/// with the reason); `export.created` follows when the export is built.
pub async fn export(
    S(state): S<State>,
    signed: Signed,
    Path(id): Path<String>,
    uri: http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Page {
    let f: ActionForm = signed.form(&state, &headers, &body)?;
    let ctx = signed.operator_for(&state, &id).await?;
    let result = async {
        let reason = reason(&f)?;
        let note = Note::console(reason.as_deref());
        let detail = note.added_to(serde_json::json!({"method": "POST", "path": uri.path(), "action": "export"}));
        crate::state::record_operator_access(&state, ctx.tenant_id(), &signed.request_id, detail).await?;
        start_export(&state, &ctx).await.map(|_| ())
    }
    .await;
    answer(&state, &signed, &ctx, Action::Export, &f.reason, result, "export").await
}

/// `GET /console/tenants/{id}/keys/{key_id}/revoke`: what revoking the key means, and
/// the form that does it.
pub async fn revoke_form(S(state): S<State>, signed: Signed, Path((id, key_id)): Path<(String, String)>) -> Page {
    let ctx = signed.operator_for(&state, &id).await?;
    revoke_page(&state, &signed, &ctx, &key_id, None, "", StatusCode::OK).await
}

async fn revoke_page(
    state: &State,
    signed: &Signed,
    ctx: &TenantContext,
    key_id: &str,
    error: Option<&str>,
    typed: &str,
    status: StatusCode,
) -> Page {
    let key = match crate::routes::keys::tenant_key(state, ctx, key_id).await {
        Ok(k) => k,
        Err(e) => return Ok(failure(e, signed)),
    };
    let back = format!("/console/tenants/{}", ctx.tenant_id());
    let body = html! {
        p { a href=(back) { "← " (ctx.tenant_id()) } }
        h1 { "Revoke key “" (key.name) "”" }
        @if let Some(e) = error { (layout::error(e)) }
        div.panel {
            dl.facts {
                dt { "Key" } dd.mono { (key.id) }
                dt { "Prefix" } dd.mono { (key.prefix) "…" }
                dt { "Role" } dd { (key.role) }
                dt { "Created" } dd { (text::datetime(key.created_at)) }
            }
        }
        @if key.revoked_at.is_some() {
            p { "This key is already revoked." }
        } @else {
            div.panel {
                p { "The key stops working at once: every request with it answers 401. This cannot be undone." }
                form.stack method="post" action=(format!("{back}/keys/{}/revoke", key.id)) {
                    (layout::csrf_field(&signed.csrf))
                    (layout::text_field("reason", "Reason", "reason", typed, false, Some("Recorded in the audit trail")))
                    div { button.danger type="submit" { "Revoke key" } " " a.button.secondary href=(back) { "Cancel" } }
                }
            }
        }
    };
    let chrome = Chrome {
        csrf: &signed.csrf,
        current: Nav::None,
    };
    Ok(html_page(status, layout::page("Revoke a key", Some(&chrome), body)))
}

/// `POST /console/tenants/{id}/keys/{key_id}/revoke`: the API's revocation
/// (`key.revoked`).
pub async fn revoke(
    S(state): S<State>,
    signed: Signed,
    Path((id, key_id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Page {
    let f: ActionForm = signed.form(&state, &headers, &body)?;
    let ctx = signed.operator_for(&state, &id).await?;
    let result = async {
        let reason = reason(&f)?;
        let note = Note::console(reason.as_deref());
        revoke_key(&state, &ctx, &key_id, note).await
    }
    .await;
    match result {
        Ok(()) => Ok(see_other(&format!("/console/tenants/{}?done=revoked", ctx.tenant_id()))),
        Err(e) => {
            let (status, detail) = form_error(e, &signed)?;
            revoke_page(&state, &signed, &ctx, &key_id, Some(&detail), &f.reason, status).await
        }
    }
}
