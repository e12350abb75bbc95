//! `tenantd-example-notes`: the notes service on `NOTES_LISTEN` (default 127.0.0.1:8090),
//! reading the tenantd catalog at `TENANTD_DATABASE_URL` (default the embedded SQLite of
//! a tenantd started in this directory).
use std::sync::Arc;
use tenantd::config::{Config, FileConfig, ServeArgs};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = ServeArgs {
        database_url: std::env::var("TENANTD_DATABASE_URL").ok(),
        ..Default::default()
    };
    let cfg = Config::merge(&args, FileConfig::default(), std::env::var("TENANTD_ADMIN_KEY").ok())?;
    tenantd::telemetry::init("text", "info");
    let state = tenantd::app::prepare(cfg).await?;
    // Writes metered usage and keys' last use to the catalog while the service runs.
    let background = tenantd::app::background(&state);
    let addr = std::env::var("NOTES_LISTEN").unwrap_or_else(|_| "127.0.0.1:8090".into());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    tracing::info!(%addr, "notes serving");
    let app = tenantd_example_notes::router(state.edge.clone(), Arc::default());
    axum::serve(listener, app)
        .with_graceful_shutdown(tenantd::app::shutdown_signal())
        .await?;
    drop(background);
    state.flush_usage().await;
    state.flush_key_usage().await;
    Ok(())
}
