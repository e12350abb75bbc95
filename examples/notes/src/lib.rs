//! A notes service that knows nothing about tenants' storage rules: tenantd's edge
//! pipeline, as a tower layer, decides who calls for which tenant, and the handlers take
//! the [`TenantContext`] it built. Each tenant's notes are kept apart by the tenant id
//! from that context, never from the request.
//!
//! The edge either reads the tenantd catalog this service shares with a tenantd server
//! (the same SQLite file or PostgreSQL database: decisions in microseconds), or asks a
//! remote tenantd to decide each request (`EdgeLayer::remote`: one round trip, no
//! catalog access). Either way keys, roles, plans and limits are tenantd's.
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tenantd_core::TenantId;
use tenantd_edge::{EdgeLayer, Problem, TenantContext};

/// A note.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Note {
    /// Its text.
    pub text: String,
    /// Who wrote it (a key or user id).
    #[serde(default)]
    pub author: String,
}

/// Every tenant's notes, by tenant.
#[derive(Default)]
pub struct Notes(Mutex<HashMap<TenantId, Vec<Note>>>);

/// The service's routes behind tenantd's edge: `GET /notes` (`records:read`),
/// `POST /notes` (`records:write`).
pub fn router(edge: EdgeLayer, notes: Arc<Notes>) -> Router {
    Router::new()
        .route("/notes", get(list).post(add))
        .with_state(notes)
        .layer(edge)
}

async fn list(ctx: TenantContext, State(notes): State<Arc<Notes>>) -> Result<Json<Vec<Note>>, Problem> {
    ctx.require("records:read")?;
    let all = notes.0.lock().unwrap_or_else(|e| e.into_inner());
    Ok(Json(all.get(ctx.tenant_id()).cloned().unwrap_or_default()))
}

async fn add(
    ctx: TenantContext,
    State(notes): State<Arc<Notes>>,
    Json(mut note): Json<Note>,
) -> Result<(StatusCode, Json<Note>), Problem> {
    ctx.require("records:write")?;
    note.author = ctx.principal().actor();
    notes
        .0
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(*ctx.tenant_id())
        .or_default()
        .push(note.clone());
    Ok((StatusCode::CREATED, Json(note)))
}
