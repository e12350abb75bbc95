//! Crash points for the crash tests: `TENANTD_CRASH_AT=<name>` makes the process abort
//! at the point of that name, as `kill -9` would (no destructor runs, nothing is
//! flushed), so that a test can show that interrupted work finishes after a restart. The
//! variable is read once; without it a crash point costs one load. docs/testing.md lists
//! the points.
use std::sync::OnceLock;

/// Aborts the process if `TENANTD_CRASH_AT` names `point`.
pub fn point(point: &str) {
    static AT: OnceLock<Option<String>> = OnceLock::new();
    let at = AT.get_or_init(|| std::env::var("TENANTD_CRASH_AT").ok().filter(|v| !v.is_empty()));
    if at.as_deref() == Some(point) {
        eprintln!("tenantd: crash point {point} reached (TENANTD_CRASH_AT); aborting");
        std::process::abort();
    }
}
