//! Logging: JSON lines (default) or text.
//!
//! In JSON every field of the spans a line is written in is a top-level member, the
//! innermost span's value winning (`tracing-flat-json`): a line written while serving a
//! request carries the request span's `request_id` and, once the edge knows it,
//! `tenant_id`, whichever crate wrote it (docs/observability.md).
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber; a second call (tests) is a no-op.
pub fn init(format: &str, filter: &str) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    use std::io::IsTerminal;
    let _ = if format == "text" {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .try_init()
    } else {
        tracing_subscriber::registry()
            .with(filter)
            .with(tracing_flat_json::FlatJsonLayer::new(std::io::stderr))
            .try_init()
            .map_err(Into::into)
    };
}
