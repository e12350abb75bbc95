//! The page around every console page, and the small pieces pages share: the CSRF
//! field, notices, badges, form fields, tables that scroll on narrow screens.
use crate::console::assets;
use maud::{html, Markup, DOCTYPE};
use tenantd_core::TenantStatus;

/// What the header shows to a signed-in operator.
pub struct Chrome<'a> {
    /// The session's CSRF token, for the sign-out form.
    pub csrf: &'a str,
    /// Which main link is the current page.
    pub current: Nav,
}

/// The main links.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    /// The tenants list.
    Tenants,
    /// The new-tenant form.
    NewTenant,
    /// Any other page.
    None,
}

/// A whole page: `title`, the header for a signed-in operator (`None` on the sign-in
/// page), and `body`.
pub fn page(title: &str, chrome: Option<&Chrome<'_>>, body: Markup) -> Markup {
    let current = |n: Nav| chrome.is_some_and(|c| c.current == n).then_some("page");
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · tenantd console" }
                link rel="stylesheet" href=(assets::css_href());
                link rel="icon" href="data:,";
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    div.wrap {
                        a.brand href="/console/tenants" { "tenantd " span { "console" } }
                        @if let Some(c) = chrome {
                            nav aria-label="Main" {
                                a href="/console/tenants" aria-current=[current(Nav::Tenants)] { "Tenants" }
                                a href="/console/new" aria-current=[current(Nav::NewTenant)] { "New tenant" }
                            }
                            form method="post" action="/console/logout" {
                                (csrf_field(c.csrf))
                                button type="submit" { "Sign out" }
                            }
                        }
                    }
                }
                main id="main" class="wrap" { (body) }
                footer.wrap { "tenantd " (env!("CARGO_PKG_VERSION")) " · operator console" }
            }
        }
    }
}

/// The hidden field every console form carries.
pub fn csrf_field(token: &str) -> Markup {
    html! { input type="hidden" name=(crate::console::csrf::FIELD) value=(token); }
}

/// A success notice (announced politely to screen readers).
pub fn notice(text: &str) -> Markup {
    html! { p.notice role="status" { (text) } }
}

/// An error box (announced at once).
pub fn error(text: &str) -> Markup {
    html! { div.error role="alert" { (text) } }
}

/// The tenant's status as a coloured word.
pub fn status_badge(s: TenantStatus) -> Markup {
    html! { span class=(format!("badge {}", s.as_str())) { (s.as_str()) } }
}

/// A labelled text input; `hint` is tied to it with `aria-describedby`.
pub fn text_field(id: &str, label: &str, name: &str, value: &str, required: bool, hint: Option<&str>) -> Markup {
    let hint_id = format!("{id}-hint");
    html! {
        div.field {
            label for=(id) { (label) @if !required { " " span.hint { "(optional)" } } }
            input type="text" id=(id) name=(name) value=(value) required[required] maxlength="200"
                aria-describedby=[hint.map(|_| hint_id.as_str())];
            @if let Some(h) = hint { span.hint id=(hint_id) { (h) } }
        }
    }
}

/// A table in a box that scrolls sideways on narrow screens (reachable by keyboard).
pub fn table(label: &str, content: Markup) -> Markup {
    html! {
        div.table-wrap role="region" aria-label=(label) tabindex="0" { table { (content) } }
    }
}
