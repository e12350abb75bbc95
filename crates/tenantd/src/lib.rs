//! The tenantd server: configuration, startup, the HTTP API (axum) behind the edge
//! layer, and the operator CLI.
#![forbid(unsafe_code)]

pub mod archive;
pub mod background;
pub mod billing;
pub mod cli;
pub mod cli_archives;
pub mod cli_audit;
pub mod cli_keys;
pub mod cli_settings;
pub mod config;
pub mod conn;
pub mod console;
pub mod directory;
pub mod error;
pub mod event_log;
pub mod extract;
pub mod gateway;
pub mod grants;
pub mod keyring;
pub mod levels;
pub mod metrics;
pub mod platform_jobs;
pub mod retention;
pub mod retention_policy;
pub mod routes;
pub mod schemas;
pub mod sealing;
pub mod serve;
pub mod startup;
pub mod state;
pub mod telemetry;
pub mod webhooks;
