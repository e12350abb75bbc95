//! Locations: which one a tenant gets at a tier, and preparing (creating and migrating),
//! opening, forgetting and dropping them.
use super::open::{owner_pool, refuse_unsafe_role, sqlite_pool};
use super::url::Url;
use super::{Backend, DataStore, SHARED, SHARED_SCHEMA};
use crate::location::{request_pool, Location, Lost};
use crate::schema::{ddl_lock, ident, migrate, CREATE_APP_ROLE};
use crate::{DataError, APP_ROLE};
use sqlx::Row;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tenantd_core::{Isolation, TenantId};

/// The location of a tenant's own SQLite file (its schema and database tiers there).
fn file_location(tenant: &TenantId) -> String {
    format!("file:tenants/{tenant}.db")
}

/// The location of a tenant's own schema on PostgreSQL.
fn schema_location(tenant: &TenantId) -> String {
    format!("schema:tenant_{}", tenant.as_str().replace('-', "_"))
}

/// A `database:<host>/<db>` location's server host and database; `None` for another
/// kind of location.
fn database_at(name: &str) -> Option<Result<(&str, &str), DataError>> {
    let rest = name.strip_prefix("database:")?;
    Some(
        rest.split_once('/')
            .ok_or_else(|| DataError::Invalid(format!("bad location '{name}'"))),
    )
}

impl DataStore {
    /// The location name a tenant gets at a tier (SQLite has no schemas: the schema and
    /// database tiers are both a file per tenant there).
    pub(super) async fn location_for(&self, tenant: &TenantId, tier: Isolation) -> Result<String, DataError> {
        Ok(match (tier, &self.backend) {
            (Isolation::Row, _) => SHARED.to_string(),
            (_, Backend::Sqlite { .. }) => file_location(tenant),
            (Isolation::Schema, Backend::Postgres { .. }) => schema_location(tenant),
            (Isolation::Database, Backend::Postgres { servers, .. }) => {
                // The server holding the fewest tenant databases.
                let rows = sqlx::query(&format!(
                    "SELECT location FROM {} WHERE location LIKE 'database:%'",
                    self.placements()
                ))
                .fetch_all(&self.admin)
                .await?;
                let mut counts: Vec<(usize, &str)> = Vec::with_capacity(servers.len());
                for s in servers {
                    let host = Url::parse(s)?.host;
                    let n = rows
                        .iter()
                        .filter_map(|r| r.try_get::<String, _>("location").ok())
                        .filter(|l| database_at(l).and_then(Result::ok).map(|(h, _)| h) == Some(host))
                        .count();
                    counts.push((n, host));
                }
                let host = counts.iter().min_by_key(|c| c.0).map(|c| c.1).unwrap_or_default();
                format!("database:{host}/{}", self.database_name(tenant)?)
            }
        })
    }

    /// Forgets what this node holds of a tenant another node removed: its cached
    /// placement, and the connections to its own schema, database or file, so that a new
    /// tenant under the same id is placed and prepared afresh here.
    pub async fn forget(&self, tenant: &TenantId) {
        self.placed.write().unwrap_or_else(|e| e.into_inner()).remove(tenant);
        let (file, schema) = (file_location(tenant), schema_location(tenant));
        // Its database, on whichever server: `database:{host}/{its name}`.
        let db = self.database_name(tenant).ok().map(|db| format!("/{db}"));
        let own = |n: &str| {
            n == file || n == schema || (n.starts_with("database:") && db.as_deref().is_some_and(|d| n.ends_with(d)))
        };
        let mut locations = self.locations.lock().await;
        let names: Vec<String> = locations.keys().filter(|n| own(n)).cloned().collect();
        for name in names {
            if let Some(l) = locations.remove(&name) {
                // A schema shares the row tier's pool.
                if !name.starts_with("schema:") {
                    l.pool.close().await;
                }
            }
        }
    }

    /// A tenant's database name: `td_<deployment>_<tenant>`, where `<deployment>` (8 hex
    /// digits) is derived from the catalog's server and database, so that deployments
    /// sharing a server (and tests running side by side) never share a tenant database.
    fn database_name(&self, tenant: &TenantId) -> Result<String, DataError> {
        let Backend::Postgres { owner, .. } = &self.backend else {
            return Err(DataError::Invalid("a database location needs PostgreSQL".into()));
        };
        let u = Url::parse(owner)?;
        let mut h: u32 = 0x811c_9dc5;
        for b in u.host.bytes().chain(*b"/").chain(u.db.bytes()) {
            h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
        }
        Ok(format!("td_{h:08x}_{}", tenant.as_str().replace('-', "_")))
    }

    /// The owner URL of the server holding `database:<host>/<db>`.
    fn server_of(&self, host: &str) -> Result<&str, DataError> {
        let Backend::Postgres { servers, .. } = &self.backend else {
            return Err(DataError::Invalid("a database location needs PostgreSQL".into()));
        };
        servers
            .iter()
            .find(|s| Url::parse(s).is_ok_and(|u| u.host == host))
            .map(String::as_str)
            .ok_or_else(|| {
                DataError::Invalid(format!(
                    "a tenant database is on {host}, which the configured data servers no longer list"
                ))
            })
    }

    /// Migrates a location with the owner's credentials, creating it when missing if
    /// `create` (otherwise a missing one is `Moving`: its tenant has moved on); returns
    /// how many migrations it applied.
    pub(super) async fn prepare(&self, name: &str, create: bool) -> Result<usize, DataError> {
        if name == SHARED {
            return match &self.backend {
                Backend::Postgres { .. } => migrate(&self.admin, Some(SHARED_SCHEMA), true).await,
                Backend::Sqlite { .. } => migrate(&self.home.pool, None, true).await,
            };
        }
        if let Some(schema) = name.strip_prefix("schema:") {
            if !matches!(self.backend, Backend::Postgres { .. }) {
                return Err(DataError::Invalid("a schema location needs PostgreSQL".into()));
            }
            // The owner's pool on the catalog's database, where tenant schemas live.
            return migrate(&self.admin, Some(schema), create).await;
        }
        if let Some(at) = database_at(name) {
            let (host, db) = at?;
            let server = self.server_of(host)?;
            let conn = owner_pool(server).await?;
            let exists = sqlx::query("SELECT 1 AS x FROM pg_database WHERE datname = $1")
                .bind(db)
                .fetch_optional(&conn)
                .await?
                .is_some();
            if !exists && !create {
                return Err(DataError::Moving);
            }
            if !exists {
                let create = format!("CREATE DATABASE {}", ident(db));
                let created = sqlx::raw_sql(&create).execute(&conn).await;
                // Another node may have created it a moment ago.
                if let Err(e) = created {
                    let now = sqlx::query("SELECT 1 AS x FROM pg_database WHERE datname = $1")
                        .bind(db)
                        .fetch_optional(&conn)
                        .await?;
                    if now.is_none() {
                        return Err(e.into());
                    }
                }
            }
            let grant = format!(
                "{CREATE_APP_ROLE}\nGRANT CONNECT ON DATABASE {} TO {APP_ROLE};",
                ident(db)
            );
            sqlx::raw_sql(&grant).execute(&conn).await?;
            conn.close().await;
            let u = Url::parse(server)?;
            let conn = owner_pool(&u.with(u.user, db)).await?;
            let n = migrate(&conn, Some(SHARED_SCHEMA), create).await;
            conn.close().await;
            return n;
        }
        if name.starts_with("file:") {
            let path = self.file_of(name)?;
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| DataError::Invalid(format!("cannot create {}: {e}", parent.display())))?;
            }
            if !create && !path.exists() {
                return Err(DataError::Moving);
            }
            let pool = sqlite_pool(&path, create).await?;
            let n = migrate(&pool, None, create).await?;
            pool.close().await;
            return Ok(n);
        }
        Err(DataError::Invalid(format!("unknown location '{name}'")))
    }

    fn file_of(&self, name: &str) -> Result<PathBuf, DataError> {
        match (&self.backend, name.strip_prefix("file:")) {
            (Backend::Sqlite { dir }, Some(rel)) => Ok(dir.join(rel)),
            _ => Err(DataError::Invalid(format!("'{name}' is not a file location here"))),
        }
    }

    /// The app role's connections to a location (migrated to the newest version the
    /// first time this process opens it).
    pub(super) async fn open_location(&self, name: &str, create: bool) -> Result<Arc<Location>, DataError> {
        let mut locations = self.locations.lock().await;
        if let Some(l) = locations.get(name) {
            return Ok(l.clone());
        }
        self.prepare(name, create).await?;
        let loc = if let Some(schema) = name.strip_prefix("schema:") {
            Location {
                name: name.to_string(),
                pool: self.home.pool.clone(),
                pg: true,
                search_path: Some(ident(schema)),
                lost: self.home.lost.clone(),
            }
        } else if let Some(at) = database_at(name) {
            let (host, db) = at?;
            let server = Url::parse(self.server_of(host)?)?;
            let url = match &self.backend {
                Backend::Postgres { app: Some(app), .. } => server.with(Url::parse(app)?.user, db),
                _ => server.with(Some(APP_ROLE), db),
            };
            let lost = Arc::<Lost>::default();
            let pool = request_pool(4, lost.clone())
                .min_connections(0)
                .idle_timeout(Duration::from_secs(60))
                .connect(&url)
                .await?;
            refuse_unsafe_role(&pool).await?;
            Location {
                name: name.to_string(),
                pool,
                pg: true,
                search_path: Some(ident(SHARED_SCHEMA)),
                lost,
            }
        } else {
            Location {
                name: name.to_string(),
                pool: sqlite_pool(&self.file_of(name)?, false).await?,
                pg: false,
                search_path: None,
                lost: Arc::default(),
            }
        };
        let loc = Arc::new(loc);
        locations.insert(name.to_string(), loc.clone());
        Ok(loc)
    }

    /// Drops a tenant's copy at a location it no longer lives at.
    pub(super) async fn drop_copy(&self, tenant: &TenantId, name: &str) -> Result<(), DataError> {
        if name == SHARED {
            // The frozen storage row stays, turning away a node that still writes here.
            return self.home.clear(tenant, true).await;
        }
        let loc = self.locations.lock().await.remove(name);
        if let Some(schema) = name.strip_prefix("schema:") {
            let mut tx = self.admin.begin().await?;
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(ddl_lock(schema))
                .execute(&mut *tx)
                .await?;
            let drop = format!("DROP SCHEMA IF EXISTS {} CASCADE", ident(schema));
            sqlx::Executor::execute(&mut *tx, drop.as_str()).await?;
            tx.commit().await?;
            return Ok(());
        }
        if let Some(l) = loc {
            l.pool.close().await;
        }
        if let Some(at) = database_at(name) {
            let (host, db) = at?;
            let conn = owner_pool(self.server_of(host)?).await?;
            let drop = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", ident(db));
            sqlx::raw_sql(&drop).execute(&conn).await?;
            return Ok(());
        }
        let path = self.file_of(name)?;
        for suffix in ["", "-wal", "-shm"] {
            let p = PathBuf::from(format!("{}{suffix}", path.display()));
            match std::fs::remove_file(&p) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(DataError::Invalid(format!("cannot remove {}: {e}", p.display())))
                }
                _ => {}
            }
        }
        Ok(())
    }
}
