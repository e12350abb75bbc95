//! The tenants: a searchable, filtered list in pages, and creating one.
use crate::console::layout::{self, Chrome, Nav};
use crate::console::{html_page, see_other, text, Page, Signed};
use crate::error::ApiError;
use crate::state::{Note, State};
use axum::body::Bytes;
use axum::extract::{RawQuery, State as S};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, StatusCode};
use maud::{html, Markup};
use tenantd_core::{Email, Plan, TenantId, TenantStatus};
use tenantd_store::{Created, TenantFilter};

/// Tenants a page shows.
const PER_PAGE: u32 = 25;

/// `GET /console/tenants` query: all optional, empty is absent.
#[derive(Debug, Default, serde::Deserialize, serde::Serialize)]
struct ListQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    plan: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    cursor: String,
}

/// `GET /console/tenants`: search (id or name), status and plan filters, pages of 25.
pub async fn list(S(state): S<State>, signed: Signed, RawQuery(raw): RawQuery) -> Response {
    let q: ListQuery = serde_urlencoded::from_str(raw.as_deref().unwrap_or("")).unwrap_or_default();
    let mut problems = Vec::new();
    let status = match q.status.as_str() {
        "" => None,
        s => TenantStatus::parse(s).or_else(|| {
            problems.push(format!("There is no status “{s}”; showing every status."));
            None
        }),
    };
    let filter = TenantFilter {
        status,
        plan: Some(q.plan.clone()).filter(|p| !p.is_empty()),
        search: Some(q.q.trim().to_string()).filter(|s| !s.is_empty()),
    };
    let page = tenantd_store::PageRequest {
        limit: PER_PAGE,
        after: Some(q.cursor.clone()).filter(|c| !c.is_empty()),
    };
    let (tenants, plans) = match (
        state.catalog.list_tenants(&filter, &page).await,
        state.catalog.list_plans().await,
    ) {
        (Ok(t), Ok(p)) => (t, p),
        (Err(e), _) | (_, Err(e)) => return crate::console::failure(ApiError::from(e), &signed),
    };
    let next = tenants.next_cursor.as_ref().map(|c| page_link(&q, c));
    let body = html! {
        h1 { "Tenants" }
        p.sub { "Every tenant but the deleted ones, unless you ask for those. " a href="/console/new" { "Create a tenant" } }
        @for p in &problems { (layout::error(p)) }
        (filters(&q, &plans))
        div.panel {
            @if tenants.items.is_empty() {
                p.empty { "No tenant matches." }
            } @else {
                (layout::table("Tenants", html! {
                    thead { tr {
                        th scope="col" { "Tenant" } th scope="col" { "Plan" } th scope="col" { "Status" } th scope="col" { "Created" }
                    } }
                    tbody {
                        @for t in &tenants.items {
                            tr {
                                td {
                                    a href=(format!("/console/tenants/{}", t.id)) { (t.name) }
                                    br; span.mono.hint { (t.id) }
                                }
                                td { (t.plan) }
                                td { (layout::status_badge(t.status)) }
                                td.nowrap { (text::date(t.created_at)) }
                            }
                        }
                    }
                }))
            }
            nav.pager aria-label="Pages" {
                @if !q.cursor.is_empty() {
                    a href=(page_link(&q, "")) { "First page" }
                }
                @if let Some(n) = &next { a href=(n) rel="next" { "Next page" } }
            }
        }
    };
    let chrome = Chrome {
        csrf: &signed.csrf,
        current: Nav::Tenants,
    };
    html_page(StatusCode::OK, layout::page("Tenants", Some(&chrome), body))
}

/// The list with `q`'s search and filters, from `cursor` (`""` for the first page).
fn page_link(q: &ListQuery, cursor: &str) -> String {
    let page = ListQuery {
        q: q.q.clone(),
        status: q.status.clone(),
        plan: q.plan.clone(),
        cursor: cursor.to_string(),
    };
    format!(
        "/console/tenants?{}",
        serde_urlencoded::to_string(&page).unwrap_or_default()
    )
}

/// The search and filter form (a `GET`: it changes nothing, so it carries no token).
fn filters(q: &ListQuery, plans: &[Plan]) -> Markup {
    let statuses = [
        ("", "Any but deleted"),
        ("active", "Active"),
        ("suspended", "Suspended"),
        ("deleted", "Deleted"),
    ];
    html! {
        form.inline.panel method="get" action="/console/tenants" role="search" {
            div.field {
                label for="q" { "Search" }
                input type="search" id="q" name="q" value=(q.q) placeholder="id or name" maxlength="200";
            }
            div.field {
                label for="status" { "Status" }
                select id="status" name="status" {
                    @for (v, label) in statuses {
                        option value=(v) selected[q.status == v] { (label) }
                    }
                }
            }
            div.field {
                label for="plan" { "Plan" }
                select id="plan" name="plan" {
                    option value="" selected[q.plan.is_empty()] { "Any plan" }
                    @for p in plans {
                        option value=(p.id) selected[q.plan == p.id.as_str()] { (p.name) " (" (p.id) ")" }
                    }
                }
            }
            div { button type="submit" { "Search" } }
        }
    }
}

/// The new-tenant form's fields.
#[derive(Debug, Default, serde::Deserialize)]
pub(crate) struct NewTenantForm {
    #[serde(default)]
    id: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    plan: String,
    #[serde(default)]
    owner_email: String,
    #[serde(default)]
    reason: String,
}

/// `GET /console/new`: the form.
pub async fn new_form(S(state): S<State>, signed: Signed) -> Response {
    form_page(&state, &signed, &NewTenantForm::default(), None, StatusCode::OK).await
}

async fn form_page(
    state: &State,
    signed: &Signed,
    f: &NewTenantForm,
    error: Option<&str>,
    status: StatusCode,
) -> Response {
    let plans = match state.catalog.list_plans().await {
        Ok(p) => p,
        Err(e) => return crate::console::failure(ApiError::from(e), signed),
    };
    let body = html! {
        h1 { "Create a tenant" }
        p.sub { "The owner gets the owner role; the event " code { "tenant.created" } " records who created it, and why." }
        @if let Some(e) = error { (layout::error(e)) }
        div.panel {
            form.stack method="post" action="/console/tenants" {
                (layout::csrf_field(&signed.csrf))
                (layout::text_field("id", "Tenant id", "id", &f.id, true,
                    Some("1–39 of a–z, 0–9 and -, not starting or ending with -")))
                (layout::text_field("name", "Name", "name", &f.name, false, Some("Shown in lists; the id when left empty")))
                div.field {
                    label for="plan" { "Plan" }
                    select id="plan" name="plan" required {
                        @for p in &plans {
                            option value=(p.id) selected[f.plan == p.id.as_str()] { (p.name) " (" (p.id) ")" }
                        }
                    }
                }
                div.field {
                    label for="owner_email" { "Owner's email" }
                    input type="email" id="owner_email" name="owner_email" value=(f.owner_email) required maxlength="254";
                }
                (layout::text_field("reason", "Reason", "reason", &f.reason, false, Some("Recorded in the audit trail")))
                div { button type="submit" { "Create tenant" } }
            }
        }
    };
    let chrome = Chrome {
        csrf: &signed.csrf,
        current: Nav::NewTenant,
    };
    html_page(status, layout::page("Create a tenant", Some(&chrome), body))
}

/// `POST /console/tenants`: creates the tenant as the operator (`tenant.created` with
/// `via: console` and the reason), then shows it. Bad input is the form again with what
/// was wrong, and nothing created.
pub async fn create(S(state): S<State>, signed: Signed, headers: HeaderMap, body: Bytes) -> Page {
    let f: NewTenantForm = signed.form(&state, &headers, &body)?;
    let reason = match super::optional_reason(Some(&f.reason)) {
        Ok(r) => r,
        Err(m) => return Ok(form_page(&state, &signed, &f, Some(&m), StatusCode::BAD_REQUEST).await),
    };
    let made = async {
        let id = TenantId::parse(f.id.trim())?;
        let owner = Email::parse(f.owner_email.trim())?;
        let name = Some(f.name.trim().to_string()).filter(|n| !n.is_empty());
        let new = crate::routes::tenants::new_tenant(id, name, f.plan.trim(), owner, None)?;
        let note = Note::console(reason.as_deref());
        Ok::<_, ApiError>(state.create_tenant(&new, "operator", &signed.request_id, note).await?)
    }
    .await;
    Ok(match made {
        Ok(Created::New(t)) => see_other(&format!("/console/tenants/{}?done=created", t.id)),
        Ok(Created::Existing(t)) => see_other(&format!("/console/tenants/{}", t.id)),
        Err(e) => match crate::console::form_error(e, &signed) {
            Ok((status, detail)) => form_page(&state, &signed, &f, Some(&detail), status).await,
            Err(page) => page.into_response(),
        },
    })
}
