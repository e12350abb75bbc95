//! The panels of a tenant's page, each drawn from what the API's own functions read.
use crate::billing::{DayUsage, Invoice};
use crate::console::layout::table;
use crate::console::{chart, text};
use crate::event_log::Verification;
use crate::routes::usage::Usage;
use maud::{html, Markup};
use tenantd_jobs::Job;
use tenantd_store::{ApiKey, Archive, AuditEvent, Delivery, Member, Webhook};

/// The quota table, each limit's use as a bar.
pub fn quotas(u: &Usage) -> Markup {
    html! {
        section.panel aria-labelledby="quotas-h" {
            h2 #quotas-h { "Quotas" }
            @if u.quotas.is_empty() {
                p.empty { "The plan sets no limits." }
            } @else {
                (table("Quotas", html! {
                    thead { tr {
                        th scope="col" { "Resource" } th scope="col" { "Window" } th.num scope="col" { "Used" }
                        th.num scope="col" { "Limit" } th scope="col" { "Use" } th scope="col" { "Enforcement" } th scope="col" { "Resets" }
                    } }
                    tbody {
                        @for q in &u.quotas {
                            tr {
                                td.mono { (q.resource) }
                                td { (q.window.as_str()) }
                                td.num { (text::amount(&q.resource, q.current)) }
                                td.num { @match q.limit { Some(l) => { (text::amount(&q.resource, l)) } None => { "—" } } }
                                td {
                                    (chart::bar(q.percentage))
                                    @if let Some(p) = q.percentage { span.hint { (format!("{p:.1}%")) } }
                                }
                                td { (q.enforcement.as_str()) }
                                td.nowrap { (q.reset_at.as_deref().and_then(|r| tenantd_core::ts::parse(r).ok()).map_or_else(|| "—".to_string(), text::datetime)) }
                            }
                        }
                    }
                }))
            }
        }
    }
}

/// The last 30 days of API calls and storage, as invoices count them.
pub fn usage(days: &[DayUsage]) -> Markup {
    let calls: Vec<(i64, u64)> = days.iter().map(|d| (d.day, d.api_calls)).collect();
    let storage: Vec<(i64, u64)> = days.iter().map(|d| (d.day, d.storage_bytes)).collect();
    html! {
        section.panel aria-labelledby="usage-h" {
            h2 #usage-h { "Usage, last 30 days" }
            p.hint { "From the daily counters and storage snapshots that invoices are computed from (UTC days)." }
            div.grid {
                div { (chart::daily("calls-chart", "API calls per day", "API calls", &calls, chart::Unit::Count)) }
                div { (chart::daily("storage-chart", "Storage at each day's end", "stored", &storage, chart::Unit::Bytes)) }
            }
        }
    }
}

/// The tenant's members (the first 50).
pub fn members(m: &[Member], more: bool) -> Markup {
    html! {
        section.panel aria-labelledby="members-h" {
            h2 #members-h { "Members" }
            @if m.is_empty() { p.empty { "No members." } } @else {
                (table("Members", html! {
                    thead { tr { th scope="col" { "Email" } th scope="col" { "Role" } th scope="col" { "Since" } } }
                    tbody { @for x in m { tr { td { (x.email) } td { (x.role) } td.nowrap { (text::date(x.created_at)) } } } }
                }))
                @if more { p.hint { "The first 50 are shown." } }
            }
        }
    }
}

/// The tenant's API keys (never their secrets), each with a way to revoke it.
pub fn keys(tenant: &str, k: &[ApiKey]) -> Markup {
    html! {
        section.panel aria-labelledby="keys-h" {
            h2 #keys-h { "API keys" }
            @if k.is_empty() { p.empty { "No keys." } } @else {
                (table("API keys", html! {
                    thead { tr {
                        th scope="col" { "Name" } th scope="col" { "Prefix" } th scope="col" { "Role" }
                        th scope="col" { "Last used" } th scope="col" { "State" } th scope="col" { span.vh { "Action" } }
                    } }
                    tbody {
                        @for key in k {
                            tr {
                                td { (key.name) }
                                td.mono { (key.prefix) "…" }
                                td { (key.role) }
                                td.nowrap { @match key.last_used_at { Some(t) => { (text::datetime(t)) } None => { "never" } } }
                                td {
                                    @if let Some(t) = key.revoked_at {
                                        span.badge.bad { "revoked" } " " span.hint { (text::date(t)) }
                                    } @else if key.expires_at.is_some_and(|e| e <= tenantd_core::now_secs()) {
                                        span.badge.neutral { "expired" }
                                    } @else {
                                        span.badge.ok { "active" }
                                    }
                                }
                                td {
                                    @if key.revoked_at.is_none() {
                                        a href=(format!("/console/tenants/{tenant}/keys/{}/revoke", key.id))
                                            aria-label=(format!("Revoke key {}", key.name)) { "Revoke…" }
                                    }
                                }
                            }
                        }
                    }
                }))
            }
        }
    }
}

/// This month's invoice so far and last month's.
pub fn invoices(list: &[Invoice]) -> Markup {
    html! {
        section.panel aria-labelledby="invoices-h" {
            h2 #invoices-h { "Invoices" }
            @for i in list {
                h3 { (i.period) " " span class=(if i.status == "open" { "badge warn" } else { "badge neutral" }) { (i.status) } }
                @if i.lines.is_empty() { p.empty { "Nothing billed." } } @else {
                    (table(&format!("Invoice {}", i.period), html! {
                        thead { tr {
                            th scope="col" { "Line" } th.num scope="col" { "Quantity" } th.num scope="col" { "Unit price" } th.num scope="col" { "Amount" }
                        } }
                        tbody {
                            @for l in &i.lines {
                                tr { td { (l.description) } td.num { (l.quantity) } td.num { (l.unit_price) } td.num { (l.amount) } }
                            }
                            tr { th scope="row" colspan="3" { "Total (" (i.currency) ")" } td.num { strong { (i.total) } } }
                        }
                    }))
                }
            }
        }
    }
}

/// Who did what, newest first, with the reason given; and the chain's verification
/// when asked for (it reads every event of the tenant).
pub fn audit(tenant: &str, events: &[AuditEvent], next: Option<&str>, verified: Option<&Verification>) -> Markup {
    html! {
        section.panel #audit aria-labelledby="audit-h" {
            h2 #audit-h { "Audit trail" }
            div.verify {
                @match verified {
                    Some(v) if v.valid => {
                        span.badge.ok { "chain verified" }
                        span.hint {
                            (text::count(v.events.unwrap_or(0))) " events, every hash and the latest checkpoint check out"
                        }
                    }
                    Some(v) => {
                        span.badge.bad { "chain broken" }
                        span { "at seq " (v.first_bad_seq.unwrap_or(0)) ": " (v.reason.as_deref().unwrap_or("")) }
                    }
                    None => {
                        a.button.secondary href=(format!("/console/tenants/{tenant}?verify=1#audit")) { "Verify the chain" }
                        span.hint { "Reads every event of this tenant and checks its hash chain and signed checkpoint." }
                    }
                }
            }
            @if events.is_empty() { p.empty { "No events." } } @else {
                (table("Audit trail", html! {
                    thead { tr {
                        th scope="col" { "When" } th scope="col" { "Event" } th scope="col" { "By" } th scope="col" { "Reason and details" }
                    } }
                    tbody { @for e in events { (audit_row(e)) } }
                }))
            }
            @if let Some(n) = next {
                nav.pager aria-label="Audit pages" {
                    a href=(format!("/console/tenants/{tenant}?audit={}#audit", n)) rel="next" { "Older events" }
                }
            }
        }
    }
}

fn audit_row(e: &AuditEvent) -> Markup {
    let actor_type = e.actor["type"].as_str().unwrap_or("");
    let actor_id = e.actor["id"].as_str().unwrap_or("");
    let reason = e.data.get("reason").and_then(|r| r.as_str());
    let via = e.data.get("via").and_then(|v| v.as_str());
    let mut details = e.data.clone();
    if let Some(obj) = details.as_object_mut() {
        obj.remove("reason");
        obj.remove("via");
    }
    let details = match &details {
        serde_json::Value::Object(o) if o.is_empty() => String::new(),
        serde_json::Value::Null => String::new(),
        d => {
            let s = d.to_string();
            match s.char_indices().nth(160) {
                Some((cut, _)) => format!("{}…", &s[..cut]),
                None => s,
            }
        }
    };
    html! {
        tr {
            td.nowrap { (text::datetime(e.at)) }
            td.mono { (e.kind) @if e.count > 1 { " ×" (e.count) } }
            td {
                (actor_id) @if actor_type != actor_id && !actor_type.is_empty() { " " span.hint { "(" (actor_type) ")" } }
                @if let Some(v) = via { " " span.badge.neutral { "via " (v) } }
            }
            td {
                @if e.redacted { span.hint { "redacted" } }
                @if let Some(r) = reason { div { strong { "Reason: " } (r) } }
                @if !details.is_empty() { div.mono.hint { (details) } }
            }
        }
    }
}

/// Each of the tenant's webhooks with its latest deliveries. Only the scheme and host of
/// an endpoint's URL are shown, in errors too: the rest may carry a token.
pub fn webhooks(hooks: &[(Webhook, Vec<Delivery>)]) -> Markup {
    html! {
        section.panel aria-labelledby="webhooks-h" {
            h2 #webhooks-h { "Webhook deliveries" }
            @if hooks.is_empty() { p.empty { "No webhooks." } }
            @for (h, deliveries) in hooks {
                h3 {
                    span.mono { (url_host(&h.url)) } " "
                    @if h.enabled { span.badge.ok { "enabled" } } @else { span.badge.bad { "disabled" } }
                }
                @if let Some(r) = &h.disabled_reason { p.hint { (r) } }
                @if deliveries.is_empty() { p.empty { "No deliveries yet." } } @else {
                    (table(&format!("Deliveries to {}", url_host(&h.url)), html! {
                        thead { tr {
                            th scope="col" { "When" } th scope="col" { "Event" } th.num scope="col" { "Attempt" }
                            th.num scope="col" { "Status" } th.num scope="col" { "Time" } th scope="col" { "Error" }
                        } }
                        tbody {
                            @for d in deliveries {
                                tr {
                                    td.nowrap { (text::datetime(d.at)) }
                                    td.mono { (d.event_type) }
                                    td.num { (d.attempt) }
                                    td.num { @match d.status_code { Some(c) => { (c) } None => { "—" } } }
                                    td.num { (d.duration_ms) " ms" }
                                    td { (d.error.as_deref().unwrap_or_default()) }
                                }
                            }
                        }
                    }))
                }
            }
        }
    }
}

/// `https://hooks.example.com/...?token=…` → `https://hooks.example.com`: the
/// endpoint's origin, never its path or query (which may hold a token).
fn url_host(url: &str) -> String {
    crate::webhooks::guard::parse(url).map_or_else(|_| "(not a URL)".to_string(), |u| u.origin().ascii_serialization())
}

/// The tenant's latest jobs (never their payloads: they are the tenant's data).
pub fn jobs(list: &[Job]) -> Markup {
    html! {
        section.panel aria-labelledby="jobs-h" {
            h2 #jobs-h { "Jobs" }
            @if list.is_empty() { p.empty { "No jobs." } } @else {
                (table("Jobs", html! {
                    thead { tr {
                        th scope="col" { "Job" } th scope="col" { "Queue" } th scope="col" { "State" }
                        th.num scope="col" { "Attempts" } th scope="col" { "Created" } th scope="col" { "Last error" }
                    } }
                    tbody {
                        @for j in list {
                            tr {
                                td.mono { (j.id) }
                                td.mono { (j.queue) }
                                td { span.badge.neutral { (j.state.as_str()) } }
                                td.num { (j.attempt) " / " (j.max_attempts) }
                                td.nowrap { (text::datetime(j.created_at.div_euclid(1000))) }
                                td { (j.last_error.as_deref().unwrap_or("")) }
                            }
                        }
                    }
                }))
            }
        }
    }
}

/// The tenant's exports (kept 7 days).
pub fn exports(list: &[Archive]) -> Markup {
    html! {
        section.panel aria-labelledby="exports-h" {
            h2 #exports-h { "Exports" }
            @if list.is_empty() { p.empty { "No exports." } } @else {
                (table("Exports", html! {
                    thead { tr {
                        th scope="col" { "Export" } th scope="col" { "State" } th.num scope="col" { "Progress" }
                        th.num scope="col" { "Size" } th scope="col" { "Started" }
                    } }
                    tbody {
                        @for a in list {
                            tr {
                                td.mono { (a.id) }
                                td { span.badge.neutral { (a.state) } }
                                td.num { (a.done) " / " (a.total) }
                                td.num { @match a.size_bytes { Some(s) => { (text::bytes(s)) } None => { "—" } } }
                                td.nowrap { (text::datetime(a.created_at)) }
                            }
                        }
                    }
                }))
            }
        }
    }
}

/// A line of facts: `label` and its value.
pub fn fact(label: &str, value: Markup) -> Markup {
    html! { dt { (label) } dd { (value) } }
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_endpoints_url_shows_only_its_host() {
        assert_eq!(
            super::url_host("https://hooks.example.com/in?token=s3cret"),
            "https://hooks.example.com"
        );
        assert_eq!(super::url_host("http://10.0.0.1:8080/x#y"), "http://10.0.0.1:8080");
        assert_eq!(super::url_host("http://user:pw@10.0.0.1/x"), "(not a URL)");
    }
}
