//! The console's pages and the actions their forms post to.
pub mod actions;
pub mod login;
mod sections;
pub mod tenant;
pub mod tenants;

/// A reason typed in a form: `None` when left empty, else 1–200 characters, not only
/// spaces (the rule the API holds a suspension's reason to).
pub(crate) fn optional_reason(raw: Option<&str>) -> Result<Option<String>, String> {
    match raw.map(str::trim) {
        None | Some("") => Ok(None),
        Some(r) => tenantd_core::text::display_name("reason", r).map(Some),
    }
}
