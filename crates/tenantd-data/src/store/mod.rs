//! The data store: where each tenant's data lives (the placement table), the
//! connections to every location, scopes that reach one tenant's data, tier moves and
//! per-tenant migrations.
//!
//! - `options`: how to open it; `open`: opening it, and the pools it connects with;
//!   `url`: database URLs' parts.
//! - `placement`: the placement table; `locations`: which location a tenant gets, and
//!   preparing, opening and dropping locations.
//! - `scope`: the way to one tenant's data, with its `records`, `blobs` and `cache`.
//! - `moves`: online tier moves; `migrate`: per-location migrations.

mod blobs;
mod cache;
mod locations;
mod migrate;
mod moves;
mod open;
mod options;
mod placement;
mod records;
mod scope;
mod sealing;
mod url;

pub use migrate::MigrateReport;
pub use options::{DataOptions, DEFAULT_POOL_SIZE};
pub use placement::Placement;
pub use scope::Scope;
pub(crate) use sealing::sealed_tables;
pub(crate) use sealing::Object;
pub use sealing::{DataKeys, SealCount};
pub use url::with_user;

use crate::location::Location;
use sqlx::AnyPool;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tenantd_core::TenantId;

/// The row tier's location.
const SHARED: &str = "shared";
/// The row tier's schema on PostgreSQL.
const SHARED_SCHEMA: &str = "tenant_data";

enum Backend {
    Postgres {
        owner: String,
        app: Option<String>,
        servers: Vec<String>,
    },
    Sqlite {
        dir: PathBuf,
    },
}

#[derive(Clone)]
struct Placed {
    loc: Arc<Location>,
    at: Instant,
}

/// Tenant data at every tier.
pub struct DataStore {
    home: Arc<Location>,
    /// The owner's connections: the placement table, and on PostgreSQL the shared and
    /// per-tenant schemas' migrations.
    admin: AnyPool,
    backend: Backend,
    placed: RwLock<HashMap<TenantId, Placed>>,
    locations: tokio::sync::Mutex<HashMap<String, Arc<Location>>>,
    grace: Duration,
    /// Migrations `open` applied to the shared location, reported by the first
    /// `migrate_all`.
    home_applied: std::sync::atomic::AtomicUsize,
    /// Tenants' data keys: with none, values are stored in the clear.
    keys: Option<Arc<dyn DataKeys>>,
}

impl DataStore {
    /// Seals every record, blob chunk and cache value written from now on under its
    /// tenant's data key from `keys`, and opens them when read (docs/protection.md).
    pub fn with_keys(mut self, keys: Arc<dyn DataKeys>) -> Self {
        self.keys = Some(keys);
        self
    }

    /// Whether values are sealed.
    pub fn seals(&self) -> bool {
        self.keys.is_some()
    }

    /// The pools of every location open at this node, and the owner's.
    pub async fn pools(&self) -> Vec<AnyPool> {
        let mut all = vec![self.home.pool.clone()];
        // On SQLite the owner's pool is the shared location's.
        if matches!(self.backend, Backend::Postgres { .. }) {
            all.push(self.admin.clone());
        }
        for loc in self.locations.lock().await.values() {
            if !Arc::ptr_eq(loc, &self.home) {
                all.push(loc.pool.clone());
            }
        }
        all
    }
}

impl DataStore {
    fn placements(&self) -> &'static str {
        match self.backend {
            Backend::Postgres { .. } => "tenant_data.placements",
            Backend::Sqlite { .. } => "placements",
        }
    }
}

/// Compile-time: the futures servers hold across requests are `Send` (sqlx's `raw_sql`
/// on a transaction once made them not, for every caller).
#[allow(dead_code)]
fn _send_checks(s: &'static DataStore, t: &'static TenantId) {
    fn is_send<T: Send>(_: T) {}
    is_send(s.placement(t));
    is_send(s.prepare("x", true));
    is_send(s.open_location("x", false));
    is_send(s.locate(t, None));
}
