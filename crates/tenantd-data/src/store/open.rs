//! Opening the data store (the row tier and the placement table prepared), and the
//! pools it connects with: the owner's, the app role's (refused if it could read across
//! tenants) and a file's.
use super::{with_user, Backend, DataOptions, DataStore, SHARED, SHARED_SCHEMA};
use crate::location::{request_pool, Location, Lost};
use crate::schema::{ident, migrate};
use crate::{DataError, APP_ROLE};
use sqlx::any::AnyPoolOptions;
use sqlx::{AnyPool, Row};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tenantd_core::redact_url;

/// `Unsafe` when the role `pool` connects as could read across tenants.
pub(super) async fn refuse_unsafe_role(pool: &AnyPool) -> Result<(), DataError> {
    let row = sqlx::query(
        "SELECT CAST(current_user AS text) AS name, r.rolsuper AS sup, r.rolbypassrls AS bypass, \
         (SELECT COUNT(*) FROM pg_class c WHERE c.relowner = r.oid) AS owned \
         FROM pg_roles r WHERE r.rolname = current_user",
    )
    .fetch_one(pool)
    .await?;
    let name: String = row.try_get("name")?;
    let owned: i64 = row.try_get("owned")?;
    let why = if row.try_get::<bool, _>("sup")? {
        Some("is a superuser")
    } else if row.try_get::<bool, _>("bypass")? {
        Some("can bypass row-level security")
    } else if owned > 0 {
        Some("owns tables, whose owner row-level security does not bind")
    } else {
        None
    };
    match why {
        Some(why) => Err(DataError::Unsafe(format!(
            "the data plane would connect to PostgreSQL as '{name}', which {why}: connect it as a role that owns nothing and cannot bypass row-level security ('{APP_ROLE}', which tenantd creates)"
        ))),
        None => Ok(()),
    }
}

/// One connection with the owner's credentials, for preparing and dropping locations.
pub(super) async fn owner_pool(url: &str) -> Result<AnyPool, sqlx::Error> {
    AnyPoolOptions::new().max_connections(1).connect(url).await
}

/// A file's pool; the file is created only when `create`.
pub(super) async fn sqlite_pool(path: &std::path::Path, create: bool) -> Result<AnyPool, DataError> {
    let mode = if create { "rwc" } else { "rw" };
    // No idle reaper for a file (see tenantd-store's SQLite pool: sqlx issue 3645).
    Ok(AnyPoolOptions::new()
        .max_connections(1)
        .idle_timeout(None)
        .max_lifetime(None)
        .connect(&format!("sqlite://{}?mode={mode}", path.display()))
        .await?)
}

impl DataStore {
    /// Opens the data store: prepares the row tier (tables, row-level security, the app
    /// role, on PostgreSQL) and the placement table. Refuses, on PostgreSQL, an app role
    /// that is a superuser, can bypass row-level security, or owns anything.
    pub async fn open(opts: DataOptions) -> Result<Self, DataError> {
        sqlx::any::install_default_drivers();
        let url = opts.url.as_str();
        if tenantd_core::is_postgres_url(url) {
            let owner = owner_pool(url).await?;
            let applied = migrate(&owner, Some(SHARED_SCHEMA), true).await?;
            sqlx::raw_sql(
                "CREATE TABLE IF NOT EXISTS tenant_data.placements (tenant_id text PRIMARY KEY, tier text NOT NULL, \
                 location text NOT NULL, state text NOT NULL, target text, progress text, updated_at bigint NOT NULL)",
            )
            .execute(&owner)
            .await?;
            owner.close().await;
            let app_url = match &opts.app_url {
                Some(u) => u.clone(),
                None => with_user(url, APP_ROLE)?,
            };
            let lost = Arc::<Lost>::default();
            let pool = request_pool(opts.pool_size, lost.clone()).connect(&app_url).await?;
            refuse_unsafe_role(&pool).await?;
            let admin = AnyPoolOptions::new().max_connections(8).connect(url).await?;
            let servers = if opts.servers.is_empty() {
                vec![url.to_string()]
            } else {
                opts.servers.clone()
            };
            return Ok(Self::new(
                Location {
                    name: SHARED.into(),
                    pool,
                    pg: true,
                    search_path: Some(ident(SHARED_SCHEMA)),
                    lost,
                },
                admin,
                Backend::Postgres {
                    owner: url.to_string(),
                    app: opts.app_url,
                    servers,
                },
                opts.move_grace,
                applied,
            ));
        }
        let Some(file) = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")) else {
            return Err(DataError::Invalid(format!(
                "'{}' is neither a postgres:// nor a sqlite:// URL",
                redact_url(url)
            )));
        };
        let file = PathBuf::from(file.split('?').next().unwrap_or(file));
        let pool = sqlite_pool(&file, true).await?;
        let applied = migrate(&pool, None, true).await?;
        sqlx::raw_sql(
            "CREATE TABLE IF NOT EXISTS placements (tenant_id TEXT PRIMARY KEY, tier TEXT NOT NULL, \
             location TEXT NOT NULL, state TEXT NOT NULL, target TEXT, progress TEXT, updated_at INTEGER NOT NULL)",
        )
        .execute(&pool)
        .await?;
        let dir = opts
            .dir
            .clone()
            .unwrap_or_else(|| file.parent().map(PathBuf::from).unwrap_or_default());
        Ok(Self::new(
            Location {
                name: SHARED.into(),
                pool: pool.clone(),
                pg: false,
                search_path: None,
                lost: Arc::default(),
            },
            pool,
            Backend::Sqlite { dir },
            opts.move_grace,
            applied,
        ))
    }

    fn new(home: Location, admin: AnyPool, backend: Backend, grace: Duration, home_applied: usize) -> Self {
        let home = Arc::new(home);
        let mut locations = HashMap::new();
        locations.insert(SHARED.to_string(), home.clone());
        Self {
            home,
            admin,
            backend,
            placed: RwLock::new(HashMap::new()),
            locations: tokio::sync::Mutex::new(locations),
            grace,
            home_applied: home_applied.into(),
            keys: None,
        }
    }
}
