//! One tenant's page: what it is, its use, who and what acts for it, what happened to it,
//! and the operator's actions on it.
use super::sections::{self, fact};
use crate::billing::{daily_usage, inputs, invoice};
use crate::console::layout::{self, Chrome, Nav};
use crate::console::{failure, html_page, text, Page, Signed};
use crate::error::{ApiError, ApiResult};
use crate::state::State;
use axum::extract::{Path, RawQuery, State as S};
use http::StatusCode;
use maud::{html, Markup};
use tenantd_core::TenantStatus;
use tenantd_edge::TenantContext;
use tenantd_store::{chain_name, ArchiveKind, AuditFilter, PageRequest, Tenant};

/// Which action form an error belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Change the plan.
    Plan,
    /// Suspend or resume.
    Status,
    /// Start an export.
    Export,
}

/// What the page shows besides the tenant: a notice of what was just done, an action's
/// error (with the reason that was typed, kept), the chain's verification, an audit page.
#[derive(Debug, Default)]
pub struct View {
    /// `?done=`: what the last action did.
    pub done: Option<String>,
    /// The action form that failed, why, and the reason typed.
    pub failed: Option<(Action, String, String)>,
    /// `?verify=1`: check the audit chain.
    pub verify: bool,
    /// `?audit=`: an older page of the audit trail.
    pub audit_cursor: Option<String>,
}

#[derive(serde::Deserialize, Default)]
struct ShowQuery {
    done: Option<String>,
    verify: Option<String>,
    audit: Option<String>,
}

/// `GET /console/tenants/{id}`.
pub async fn show(S(state): S<State>, signed: Signed, Path(id): Path<String>, RawQuery(raw): RawQuery) -> Page {
    let q: ShowQuery = serde_urlencoded::from_str(raw.as_deref().unwrap_or("")).unwrap_or_default();
    let view = View {
        done: q.done,
        failed: None,
        verify: q.verify.is_some_and(|v| v == "1"),
        audit_cursor: q.audit.filter(|c| !c.is_empty()),
    };
    let ctx = signed.operator_for(&state, &id).await?;
    render(&state, &signed, &ctx, view, StatusCode::OK).await
}

/// Everything the page shows, read as the API reads it.
struct Data {
    tenant: Tenant,
    plans: Vec<tenantd_core::Plan>,
    usage: crate::routes::usage::Usage,
    days: Vec<crate::billing::DayUsage>,
    members: tenantd_store::Page<tenantd_store::Member>,
    keys: Vec<tenantd_store::ApiKey>,
    placement: Option<tenantd_data::Placement>,
    invoices: Vec<crate::billing::Invoice>,
    audit: tenantd_store::Page<tenantd_store::AuditEvent>,
    verified: Option<crate::event_log::Verification>,
    hooks: Vec<(tenantd_store::Webhook, Vec<tenantd_store::Delivery>)>,
    jobs: Vec<tenantd_jobs::Job>,
    exports: Vec<tenantd_store::Archive>,
}

fn first(limit: u32) -> PageRequest {
    PageRequest { limit, after: None }
}

async fn load(state: &State, ctx: &TenantContext, view: &View) -> ApiResult<Data> {
    let id = ctx.tenant_id();
    let now = tenantd_core::now_secs();
    let (y, m) = tenantd_core::ts::year_month(now);
    let (py, pm) = if m == 1 { (y - 1, 12) } else { (y, m - 1) };
    let mut invoices = Vec::new();
    for (year, month) in [(y, m), (py, pm)] {
        invoices.push(invoice(&inputs(&*state.catalog, id, year, month, now).await?));
    }
    // Write queued last-use times first, as the API's key list does.
    state.flush_key_usage().await;
    let audit_filter = AuditFilter {
        tenant_id: Some(id.to_string()),
        ..Default::default()
    };
    let audit_page = PageRequest {
        limit: 25,
        after: view.audit_cursor.clone(),
    };
    let mut hooks = Vec::new();
    for h in state.catalog.list_webhooks(Some(id), &first(20)).await?.items {
        let d = state.catalog.list_deliveries(&h.id, &first(10)).await?.items;
        hooks.push((h, d));
    }
    Ok(Data {
        tenant: state.catalog.get_tenant(id).await?,
        plans: state.catalog.list_plans().await?,
        usage: crate::routes::usage::usage_of(state, ctx).await?,
        days: daily_usage(&*state.catalog, id, 30, now).await?,
        members: state.catalog.list_members(id, &first(50)).await?,
        keys: state.catalog.list_keys(id, &first(200)).await?.items,
        placement: state.data.placement(id).await.map_err(ApiError::from)?,
        invoices,
        audit: state.catalog.list_audit(&audit_filter, &audit_page).await?,
        verified: match view.verify {
            true => Some(state.verify(chain_name(Some(id))).await?),
            false => None,
        },
        hooks,
        jobs: state
            .jobs
            .list(id, None, None, 20, None, tenantd_limits::now_ms())
            .await?,
        exports: state.catalog.list_archives(id, ArchiveKind::Export).await?,
    })
}

/// The page of `ctx`'s tenant with `view`, answered with `status`.
pub async fn render(state: &State, signed: &Signed, ctx: &TenantContext, view: View, status: StatusCode) -> Page {
    let d = match load(state, ctx, &view).await {
        Ok(d) => d,
        Err(e) => return Ok(failure(e, signed)),
    };
    let t = &d.tenant;
    let body = html! {
        h1 { (t.name) " " (layout::status_badge(t.status)) }
        p.sub { span.mono { (t.id) } " · plan " strong { (t.plan) } " · created " (text::date(t.created_at)) }
        @if let Some(msg) = view.done.as_deref().and_then(done_message) { (layout::notice(msg)) }
        @if t.status == TenantStatus::Suspended {
            (layout::error(&format!("Suspended: {}", t.status_reason.as_deref().unwrap_or("no reason recorded"))))
        }
        div.grid {
            section.panel aria-labelledby="overview-h" {
                h2 #overview-h { "Overview" }
                dl.facts {
                    (fact("Id", html! { span.mono { (t.id) } }))
                    (fact("Name", html! { (t.name) }))
                    (fact("Plan", html! { (t.plan) }))
                    (fact("Status", layout::status_badge(t.status)))
                    (fact("Created", html! { (text::datetime(t.created_at)) }))
                    (fact("Members", html! { (text::count(d.members.items.len() as u64)) @if d.members.next_cursor.is_some() { "+" } }))
                    (placement(&d.placement, ctx.tenant().isolation))
                }
            }
            (actions(signed, t, &d.plans, &view))
        }
        (sections::quotas(&d.usage))
        (sections::usage(&d.days))
        (sections::members(&d.members.items, d.members.next_cursor.is_some()))
        (sections::keys(t.id.as_str(), &d.keys))
        (sections::invoices(&d.invoices))
        (sections::audit(t.id.as_str(), &d.audit.items, d.audit.next_cursor.as_deref(), d.verified.as_ref()))
        (sections::webhooks(&d.hooks))
        (sections::jobs(&d.jobs))
        (sections::exports(&d.exports))
    };
    let chrome = Chrome {
        csrf: &signed.csrf,
        current: Nav::None,
    };
    Ok(html_page(status, layout::page(&t.name, Some(&chrome), body)))
}

fn done_message(done: &str) -> Option<&'static str> {
    Some(match done {
        "created" => "The tenant was created.",
        "plan" => "The plan was changed. A plan at another isolation tier moves the tenant's data there, online.",
        "suspended" => "The tenant was suspended: its API keys and users now get 403 tenant_suspended.",
        "resumed" => "The tenant was resumed.",
        "revoked" => "The key was revoked: it answers 401 from now on.",
        "export" => "The export was started; it is listed under Exports, and kept 7 days once built.",
        _ => return None,
    })
}

fn placement(p: &Option<tenantd_data::Placement>, plan_tier: tenantd_core::Isolation) -> Markup {
    match p {
        Some(p) => html! {
            (fact("Data tier", html! { (p.tier.as_str()) }))
            (fact("Placement", html! { span.mono { (p.location) } " " span.badge.neutral { (p.state) } }))
        },
        None => html! {
            (fact("Data tier", html! { (plan_tier.as_str()) }))
            (fact("Placement", html! { span.hint { "not placed yet (no data stored)" } }))
        },
    }
}

/// The operator's actions: change the plan, suspend or resume, start an export. Each
/// form carries the session's CSRF token and a reason for the audit trail.
fn actions(signed: &Signed, t: &Tenant, plans: &[tenantd_core::Plan], view: &View) -> Markup {
    let failed = |a: Action| view.failed.as_ref().filter(|(f, _, _)| *f == a);
    let typed = |a: Action| failed(a).map_or("", |(_, _, r)| r.as_str());
    let base = format!("/console/tenants/{}", t.id);
    html! {
        section.panel aria-labelledby="actions-h" {
            h2 #actions-h { "Actions" }
            @if t.status == TenantStatus::Deleted {
                p.empty { "A deleted tenant cannot be changed; restore it through the API first." }
            } @else {
                div.actions {
                    form.stack method="post" action=(format!("{base}/plan")) aria-labelledby="plan-h" {
                        h3 #plan-h { "Change the plan" }
                        (layout::csrf_field(&signed.csrf))
                        @if let Some((_, e, _)) = failed(Action::Plan) { (layout::error(e)) }
                        div.field {
                            label for="plan" { "Plan" }
                            select id="plan" name="plan" {
                                @for p in plans {
                                    option value=(p.id) selected[p.id == t.plan] { (p.name) " (" (p.id) ")" }
                                }
                            }
                        }
                        (layout::text_field("plan-reason", "Reason for the change", "reason", typed(Action::Plan), false, None))
                        div { button type="submit" { "Change plan" } }
                    }
                    @let suspended = t.status == TenantStatus::Suspended;
                    @let (verb, what) = if suspended { ("resume", "Resume the tenant") } else { ("suspend", "Suspend the tenant") };
                    form.stack method="post" action=(format!("{base}/{verb}")) aria-labelledby="status-h" {
                        h3 #status-h { (what) }
                        @if !suspended { p.hint { "Its API keys and users get 403 tenant_suspended; owners can still read it." } }
                        (layout::csrf_field(&signed.csrf))
                        @if let Some((_, e, _)) = failed(Action::Status) { (layout::error(e)) }
                        (layout::text_field("status-reason", &format!("Reason to {verb}"), "reason", typed(Action::Status), true,
                            Some("Required; recorded in the audit trail")))
                        div {
                            @if suspended {
                                button type="submit" { "Resume tenant" }
                            } @else {
                                button.danger type="submit" { "Suspend tenant" }
                            }
                        }
                    }
                    form.stack method="post" action=(format!("{base}/export")) aria-labelledby="export-h" {
                        h3 #export-h { "Export its data" }
                        p.hint { "A .tar.gz of everything the tenant holds, kept 7 days." }
                        (layout::csrf_field(&signed.csrf))
                        @if let Some((_, e, _)) = failed(Action::Export) { (layout::error(e)) }
                        (layout::text_field("export-reason", "Reason for the export", "reason", typed(Action::Export), false, None))
                        div { button.secondary type="submit" { "Start an export" } }
                    }
                }
            }
        }
    }
}
