//! `tenantd-example-notes`: the notes service on `NOTES_LISTEN` (default 127.0.0.1:8090),
//! logging at `NOTES_LOG` (default `info`: a line per request).
//!
//! With `TENANTD_URL` (`http://host:port`) it asks that tenantd to decide each request.
//! Without it, it reads the tenantd catalog at `TENANTD_DATABASE_URL` (default the
//! embedded SQLite of a tenantd started in this directory) and decides in process.
use std::sync::Arc;
use tenantd::config::{Config, FileConfig, ServeArgs};
use tenantd_edge::{EdgeLayer, RemoteEdge};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let log = std::env::var("NOTES_LOG").unwrap_or_else(|_| "info".into());
    tenantd::telemetry::init("text", &log);
    let addr = std::env::var("NOTES_LISTEN").unwrap_or_else(|_| "127.0.0.1:8090".into());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    if let Ok(url) = std::env::var("TENANTD_URL") {
        tracing::info!(%addr, tenantd = %url, "notes serving, decided by a remote tenantd");
        let app = tenantd_example_notes::router(EdgeLayer::remote(RemoteEdge::new(&url)?), Arc::default());
        axum::serve(listener, app)
            .with_graceful_shutdown(tenantd::serve::shutdown_signal())
            .await?;
        return Ok(());
    }
    let args = ServeArgs {
        database_url: std::env::var("TENANTD_DATABASE_URL")
            .ok()
            .map(tenantd_core::secret::SecretUrl::new),
        // The catalog's master key (the server's `TENANTD_MASTER_KEY` or key file).
        master_key_file: std::env::var("TENANTD_MASTER_KEY_FILE").ok().map(Into::into),
        ..Default::default()
    };
    let cfg =
        Config::merge(&args, FileConfig::default(), std::env::var("TENANTD_ADMIN_KEY").ok())?.with_env_master_key();
    let state = tenantd::startup::prepare(cfg).await?;
    // Writes metered usage and keys' last use to the catalog while the service runs.
    let background = tenantd::background::background(&state);
    tracing::info!(%addr, "notes serving on tenantd's catalog");
    let app = tenantd_example_notes::router(EdgeLayer::new(state.edge.clone()), Arc::default());
    axum::serve(listener, app)
        .with_graceful_shutdown(tenantd::serve::shutdown_signal())
        .await?;
    drop(background);
    state.flush_usage().await;
    state.flush_key_usage().await;
    Ok(())
}
