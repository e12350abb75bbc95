//! The data store: where each tenant's data lives (the placement table), the
//! connections to every location, scopes that reach one tenant's data, tier moves and
//! per-tenant migrations.
use crate::copy::{Val, COPIED};
use crate::location::{request_pool, Blob, CacheEntry, CacheSelector, Location, Lost, Record};
use crate::schema::{ddl_lock, ident, migrate, CREATE_APP_ROLE};
use crate::{check_name, DataError, Written, APP_ROLE};
use futures_util::future::BoxFuture;
use futures_util::{FutureExt, StreamExt};
use serde::Serialize;
use serde_json::{json, Value};
use sqlx::any::AnyPoolOptions;
use sqlx::{AnyPool, Row};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tenantd_core::{now_secs, redact_url, Isolation, TenantId};

/// The row tier's location.
const SHARED: &str = "shared";
/// The row tier's schema on PostgreSQL.
const SHARED_SCHEMA: &str = "tenant_data";
/// How long a node trusts its cached placement of a tenant.
const PLACEMENT_TTL: Duration = Duration::from_secs(1);
/// How long a write waits for a tier move's freeze to end.
const FREEZE_WAIT: Duration = Duration::from_secs(30);

/// [`DataOptions::pool_size`]'s default.
pub const DEFAULT_POOL_SIZE: u32 = 16;

/// How to open the data store. Its `Debug` masks the URLs' passwords.
#[derive(Clone)]
pub struct DataOptions {
    /// `postgres://…` (the owner's credentials: it prepares schemas, databases and the
    /// app role) or `sqlite://…/tenant-data.db` (the row tier's file).
    pub url: String,
    /// PostgreSQL: how the data plane connects (a role owning nothing and unable to
    /// bypass row-level security); `None`: [`APP_ROLE`] on each server.
    pub app_url: Option<String>,
    /// PostgreSQL: the servers (owner URLs) that hold `database`-tier tenants; empty:
    /// `url`'s server.
    pub servers: Vec<String>,
    /// SQLite: the directory of per-tenant files; `None`: next to `url`'s file.
    pub dir: Option<PathBuf>,
    /// How long a moved tenant's old copy is kept after the switch, so that reads in
    /// flight (and nodes whose placement is a moment old) finish there.
    pub move_grace: Duration,
    /// PostgreSQL: connections of the row and schema tiers' pool (one per node). Keep it
    /// near twice the database server's cores: more only queue inside PostgreSQL.
    pub pool_size: u32,
}

impl std::fmt::Debug for DataOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redact = tenantd_core::redact_url;
        f.debug_struct("DataOptions")
            .field("url", &redact(&self.url))
            .field("app_url", &self.app_url.as_deref().map(redact))
            .field("servers", &self.servers.iter().map(|u| redact(u)).collect::<Vec<_>>())
            .field("dir", &self.dir)
            .field("move_grace", &self.move_grace)
            .field("pool_size", &self.pool_size)
            .finish()
    }
}

impl DataOptions {
    /// Options with the defaults for everything but the URL.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            app_url: None,
            servers: Vec::new(),
            dir: None,
            move_grace: Duration::from_secs(3),
            pool_size: DEFAULT_POOL_SIZE,
        }
    }
}

/// Where one tenant's data lives, serialized as `GET /v1/tenants/{id}/placement`
/// answers it (fields in alphabetical order).
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Placement {
    /// Where: `shared`, `schema:<name>`, `database:<host:port>/<name>`, `file:<path>`.
    pub location: String,
    /// The last (or running) move: phase, rows copied, target, error.
    #[serde(rename = "move")]
    pub progress: Option<Value>,
    /// `placed`, or `moving` while a tier move runs.
    pub state: String,
    /// The tenant.
    pub tenant_id: String,
    /// Its tier.
    pub tier: Isolation,
    /// Unix seconds.
    #[serde(serialize_with = "tenantd_core::ts::ser")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: i64,
}

/// The outcome of [`DataStore::migrate_all`].
#[derive(Debug, Default)]
pub struct MigrateReport {
    /// Locations looked at.
    pub locations: usize,
    /// Migrations applied, over all of them.
    pub applied: usize,
    /// Locations that failed, and why.
    pub failed: Vec<(String, String)>,
}

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
}

/// A URL's parts: `scheme`, `user[:password]`, `host[:port]`, database, `?query`.
struct Url<'a> {
    scheme: &'a str,
    user: Option<&'a str>,
    host: &'a str,
    db: &'a str,
    query: &'a str,
}

impl<'a> Url<'a> {
    fn parse(url: &'a str) -> Result<Self, DataError> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| DataError::Invalid(format!("'{}' is not a database URL", redact_url(url))))?;
        let (rest, query) = match rest.find('?') {
            Some(q) => (&rest[..q], &rest[q..]),
            None => (rest, ""),
        };
        let (authority, db) = rest.split_once('/').unwrap_or((rest, ""));
        let (user, host) = match authority.rfind('@') {
            Some(at) => (Some(&authority[..at]), &authority[at + 1..]),
            None => (None, authority),
        };
        Ok(Url {
            scheme,
            user,
            host,
            db,
            query,
        })
    }

    fn with(&self, user: Option<&str>, db: &str) -> String {
        let user = user.map(|u| format!("{u}@")).unwrap_or_default();
        format!("{}://{user}{}/{db}{}", self.scheme, self.host, self.query)
    }
}

/// The location of a tenant's own SQLite file (its schema and database tiers there).
fn file_location(tenant: &TenantId) -> String {
    format!("file:tenants/{tenant}.db")
}

/// The location of a tenant's own schema on PostgreSQL.
fn schema_location(tenant: &TenantId) -> String {
    format!("schema:tenant_{}", tenant.as_str().replace('-', "_"))
}

/// `url` with its user replaced by `user` (and no password): how tenantd reaches
/// PostgreSQL as [`APP_ROLE`] when no URL is given for it.
pub fn with_user(url: &str, user: &str) -> Result<String, DataError> {
    let u = Url::parse(url)?;
    Ok(u.with(Some(user), u.db))
}

/// `Unsafe` when the role `pool` connects as could read across tenants.
async fn refuse_unsafe_role(pool: &AnyPool) -> Result<(), DataError> {
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

/// A `database:<host>/<db>` location's server host and database; `None` for another
/// kind of location.
fn database_at(name: &str) -> Option<Result<(&str, &str), DataError>> {
    let rest = name.strip_prefix("database:")?;
    Some(
        rest.split_once('/')
            .ok_or_else(|| DataError::Invalid(format!("bad location '{name}'"))),
    )
}

fn parse_tier(s: &str) -> Result<Isolation, DataError> {
    Isolation::parse(s).ok_or_else(|| DataError::Invalid(format!("unknown tier '{s}' in the placement table")))
}

/// One connection with the owner's credentials, for preparing and dropping locations.
async fn owner_pool(url: &str) -> Result<AnyPool, sqlx::Error> {
    AnyPoolOptions::new().max_connections(1).connect(url).await
}

/// A file's pool; the file is created only when `create`.
async fn sqlite_pool(path: &std::path::Path, create: bool) -> Result<AnyPool, DataError> {
    let mode = if create { "rwc" } else { "rw" };
    Ok(AnyPoolOptions::new()
        .max_connections(1)
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
        }
    }

    fn placements(&self) -> &'static str {
        match self.backend {
            Backend::Postgres { .. } => "tenant_data.placements",
            Backend::Sqlite { .. } => "placements",
        }
    }

    /// The tenant's placement, if it has one.
    pub async fn placement(&self, tenant: &TenantId) -> Result<Option<Placement>, DataError> {
        let row = sqlx::query(&format!(
            "SELECT tier, location, state, progress, updated_at FROM {} WHERE tenant_id = $1",
            self.placements()
        ))
        .bind(tenant.as_str())
        .fetch_optional(&self.admin)
        .await?;
        let Some(r) = row else { return Ok(None) };
        let progress: Option<String> = r.try_get("progress")?;
        Ok(Some(Placement {
            tenant_id: tenant.to_string(),
            tier: parse_tier(&r.try_get::<String, _>("tier")?)?,
            location: r.try_get("location")?,
            state: r.try_get("state")?,
            progress: progress.map(|p| serde_json::from_str(&p)).transpose()?,
            updated_at: r.try_get("updated_at")?,
        }))
    }

    async fn set_progress(&self, tenant: &TenantId, progress: &Value) {
        let r = sqlx::query(&format!(
            "UPDATE {} SET progress = $2, updated_at = $3 WHERE tenant_id = $1",
            self.placements()
        ))
        .bind(tenant.as_str())
        .bind(progress.to_string())
        .bind(now_secs())
        .execute(&self.admin)
        .await;
        if let Err(e) = r {
            tracing::warn!(tenant = %tenant, error = %e, "tier move progress not recorded");
        }
    }

    /// The location name a tenant gets at a tier (SQLite has no schemas: the schema and
    /// database tiers are both a file per tenant there).
    async fn location_for(&self, tenant: &TenantId, tier: Isolation) -> Result<String, DataError> {
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

    /// Deletes all of a tenant's data and its placement (its schema or database is
    /// dropped). Waits for a running move to end first.
    pub async fn remove(&self, tenant: &TenantId) -> Result<(), DataError> {
        let Some(p) = self.placement(tenant).await? else {
            return Ok(());
        };
        if p.state == "moving" {
            return Err(DataError::Moving);
        }
        self.drop_copy(tenant, &p.location).await?;
        // The shared tables too, wherever it is placed: a move off the row tier leaves
        // its storage row there frozen, which would turn away a new tenant under the
        // same id. No tombstone is needed: the placement goes too.
        self.home.clear(tenant, false).await?;
        sqlx::query(&format!("DELETE FROM {} WHERE tenant_id = $1", self.placements()))
            .bind(tenant.as_str())
            .execute(&self.admin)
            .await?;
        self.placed.write().unwrap_or_else(|e| e.into_inner()).remove(tenant);
        Ok(())
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
    async fn prepare(&self, name: &str, create: bool) -> Result<usize, DataError> {
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
    async fn open_location(&self, name: &str, create: bool) -> Result<Arc<Location>, DataError> {
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

    /// Places a tenant at a tier (creating its schema or database) unless it is placed
    /// already; returns its placement. Called when a tenant is provisioned, and on first
    /// use for tenants that predate the data plane.
    pub async fn place(&self, tenant: &TenantId, tier: Isolation) -> Result<Placement, DataError> {
        if let Some(p) = self.placement(tenant).await? {
            return Ok(p);
        }
        let name = self.location_for(tenant, tier).await?;
        self.open_location(&name, true).await?;
        sqlx::query(&format!(
            "INSERT INTO {} (tenant_id, tier, location, state, updated_at) VALUES ($1, $2, $3, 'placed', $4) \
             ON CONFLICT (tenant_id) DO NOTHING",
            self.placements()
        ))
        .bind(tenant.as_str())
        .bind(tier.as_str())
        .bind(&name)
        .bind(now_secs())
        .execute(&self.admin)
        .await?;
        self.placement(tenant)
            .await?
            .ok_or_else(|| DataError::Invalid("the placement vanished as it was written".into()))
    }

    /// Where the tenant's data is now, read from the placement table. A location that
    /// is gone by the time it is opened (a move switched and dropped it meanwhile) is
    /// looked up again.
    async fn locate(&self, tenant: &TenantId, wanted: Option<Isolation>) -> Result<Arc<Location>, DataError> {
        let mut attempts = 0;
        let loc = loop {
            let p = match (self.placement(tenant).await?, wanted) {
                (Some(p), _) => p,
                (None, Some(tier)) => self.place(tenant, tier).await?,
                (None, None) => return Err(DataError::NotPlaced),
            };
            match self.open_location(&p.location, false).await {
                // Gone, or failing as it is dropped: unless the tenant is still there.
                Err(e @ (DataError::Moving | DataError::Db(_))) if attempts < 50 => {
                    attempts += 1;
                    let now = self.placement(tenant).await?;
                    if matches!(e, DataError::Db(_)) && now.is_some_and(|n| n.location == p.location) {
                        return Err(e);
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                other => break other?,
            }
        };
        self.placed.write().unwrap_or_else(|e| e.into_inner()).insert(
            *tenant,
            Placed {
                loc: loc.clone(),
                at: Instant::now(),
            },
        );
        Ok(loc)
    }

    /// The tenant's data. `wanted` places a tenant that has no placement yet at that
    /// tier; with `None` such a tenant is [`DataError::NotPlaced`].
    pub async fn scope(&self, tenant: TenantId, wanted: Option<Isolation>) -> Result<Scope<'_>, DataError> {
        let cached = self
            .placed
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&tenant)
            .filter(|p| p.at.elapsed() < PLACEMENT_TTL)
            .map(|p| p.loc.clone());
        let loc = match cached {
            Some(l) => l,
            None => self.locate(&tenant, wanted).await?,
        };
        Ok(Scope {
            store: self,
            tenant,
            loc,
        })
    }

    /// Moves a tenant's data to another tier, online: copies it while it is written,
    /// freezes its writes briefly (they wait, then go to the new place), brings the
    /// copy up to date, verifies counts and checksums of every table, switches the
    /// placement, and drops the old copy after the grace period. Reads keep working
    /// throughout. Progress is in the placement's `move`. A tenant with no placement
    /// yet is simply placed at `to`.
    pub async fn move_tenant(&self, tenant: TenantId, to: Isolation) -> Result<Placement, DataError> {
        let Some(from) = self.placement(&tenant).await? else {
            return self.place(&tenant, to).await;
        };
        if from.tier == to && from.state == "placed" {
            return Ok(from);
        }
        let target = self.location_for(&tenant, to).await?;
        let claimed = sqlx::query(&format!(
            "UPDATE {} SET state = 'moving', target = $2, progress = $3, updated_at = $4 \
             WHERE tenant_id = $1 AND state = 'placed'",
            self.placements()
        ))
        .bind(tenant.as_str())
        .bind(&target)
        .bind(json!({"phase": "starting", "from": from.location, "to": target, "started_at": tenantd_core::ts::format(now_secs())}).to_string())
        .bind(now_secs())
        .execute(&self.admin)
        .await?
        .rows_affected();
        if claimed == 0 {
            return Err(DataError::Invalid(format!(
                "a tier move of '{tenant}' is already under way"
            )));
        }
        if target == from.location {
            // SQLite's schema and database tiers are the same file.
            let progress = json!({"phase": "done", "from": from.location, "to": target});
            return self.finish_move(&tenant, to, &target, progress, None).await;
        }
        match self.copy_over(&tenant, &from.location, &target).await {
            Ok(progress) => {
                let p = self
                    .finish_move(&tenant, to, &target, progress.clone(), Some(&from.location))
                    .await?;
                self.end_move(&tenant, Some(&from.location), progress).await?;
                Ok(Placement {
                    state: "placed".into(),
                    ..p
                })
            }
            Err(e) => {
                tracing::error!(tenant = %tenant, error = %e, "tier move failed; the tenant stays where it was");
                if let Ok(src) = self.open_location(&from.location, false).await {
                    if let Err(e) = src.set_frozen(&tenant, false).await {
                        tracing::error!(tenant = %tenant, error = %e, "a failed move could not thaw the tenant's writes");
                    }
                }
                if let Err(e) = self.drop_copy(&tenant, &target).await {
                    tracing::warn!(tenant = %tenant, error = %e, "a failed move's partial copy was not dropped");
                }
                let failed = json!({"phase": "failed", "from": from.location, "to": target, "error": e.to_string()});
                self.settle_placement(&tenant, &failed).await?;
                Err(e)
            }
        }
    }

    /// Copies, freezes, syncs and verifies; returns the progress to record.
    async fn copy_over(&self, tenant: &TenantId, from: &str, to: &str) -> Result<Value, DataError> {
        let src = self.open_location(from, false).await?;
        let dst = self.open_location(to, true).await?;
        dst.clear(tenant, false).await?;
        let mut total = 0u64;
        for t in &COPIED {
            total += src.versions(tenant, t).await?.len() as u64;
        }
        let started = tenantd_core::ts::format(now_secs());
        let mut progress = json!({"phase": "copying", "from": from, "to": to, "started_at": started,
            "rows_copied": 0, "rows_total": total});
        self.set_progress(tenant, &progress).await;
        let mut copied = 0u64;
        for t in &COPIED {
            let mut after: Option<Vec<Val>> = None;
            loop {
                let page = src.page(tenant, t, after.as_deref()).await?;
                dst.upsert(tenant, t, &page).await?;
                copied += page.len() as u64;
                progress["rows_copied"] = json!(copied);
                self.set_progress(tenant, &progress).await;
                if page.len() < t.batch() {
                    break;
                }
                after = page.last().map(|r| t.key_of(r));
            }
        }
        // Writes wait from here until the switch.
        progress["phase"] = json!("frozen");
        self.set_progress(tenant, &progress).await;
        let frozen_at = Instant::now();
        let bytes = src.set_frozen(tenant, true).await?;
        for t in &COPIED {
            let (sv, dv) = (src.versions(tenant, t).await?, dst.versions(tenant, t).await?);
            let changed: Vec<&Vec<Val>> = sv
                .iter()
                .filter(|(k, v)| dv.get(*k) != Some(v))
                .map(|(k, _)| k)
                .collect();
            let gone: Vec<&Vec<Val>> = dv.keys().filter(|k| !sv.contains_key(*k)).collect();
            for keys in changed.chunks(t.batch()) {
                dst.upsert(tenant, t, &src.rows(tenant, t, keys).await?).await?;
            }
            dst.delete_keys(tenant, t, &gone).await?;
        }
        progress["phase"] = json!("verifying");
        self.set_progress(tenant, &progress).await;
        let mut verified = serde_json::Map::new();
        for t in &COPIED {
            let (a, b) = (src.checksum(tenant, t).await?, dst.checksum(tenant, t).await?);
            if a != b {
                return Err(DataError::Invalid(format!(
                    "the copy of {} does not match: {} rows ({}) at the source, {} rows ({}) in the copy",
                    t.name, a.0, a.1, b.0, b.1
                )));
            }
            verified.insert(t.name.to_string(), json!({"rows": a.0, "sha256": a.1}));
        }
        dst.set_storage(tenant, bytes).await?;
        progress["phase"] = json!("switched");
        progress["verified"] = Value::Object(verified);
        progress["frozen_ms"] = json!(frozen_at.elapsed().as_millis() as u64);
        progress["storage_bytes"] = json!(bytes);
        Ok(progress)
    }

    /// Switches the placement to the new location. `dropping`: the old copy (at that
    /// location) is still to be dropped, and until it is no other move may start (so
    /// that the drop can never touch a place the tenant has moved back to).
    async fn finish_move(
        &self,
        tenant: &TenantId,
        tier: Isolation,
        location: &str,
        progress: Value,
        dropping: Option<&str>,
    ) -> Result<Placement, DataError> {
        sqlx::query(&format!(
            "UPDATE {} SET tier = $2, location = $3, state = $4, target = $5, progress = $6, updated_at = $7 \
             WHERE tenant_id = $1",
            self.placements()
        ))
        .bind(tenant.as_str())
        .bind(tier.as_str())
        .bind(location)
        .bind(if dropping.is_some() { "dropping" } else { "placed" })
        .bind(dropping)
        .bind(progress.to_string())
        .bind(now_secs())
        .execute(&self.admin)
        .await?;
        self.placed.write().unwrap_or_else(|e| e.into_inner()).remove(tenant);
        self.locate(tenant, None).await?;
        self.placement(tenant)
            .await?
            .ok_or_else(|| DataError::Invalid("the placement vanished during the move".into()))
    }

    /// Drops the old copy of a switched move, after the grace period, and ends the move.
    async fn end_move(&self, tenant: &TenantId, old: Option<&str>, mut progress: Value) -> Result<(), DataError> {
        tokio::time::sleep(self.grace).await;
        if let Some(old) = old {
            if let Err(e) = self.drop_copy(tenant, old).await {
                tracing::error!(tenant = %tenant, location = %old, error = %e, "the old copy of a moved tenant was not dropped");
            }
        }
        progress["phase"] = json!("done");
        self.settle_placement(tenant, &progress).await
    }

    /// Marks the tenant's placement as settled where it is (no move under way), with
    /// `progress` as its last move's.
    async fn settle_placement(&self, tenant: &TenantId, progress: &Value) -> Result<(), DataError> {
        sqlx::query(&format!(
            "UPDATE {} SET state = 'placed', target = NULL, progress = $2, updated_at = $3 WHERE tenant_id = $1",
            self.placements()
        ))
        .bind(tenant.as_str())
        .bind(progress.to_string())
        .bind(now_secs())
        .execute(&self.admin)
        .await?;
        Ok(())
    }

    /// Drops a tenant's copy at a location it no longer lives at.
    async fn drop_copy(&self, tenant: &TenantId, name: &str) -> Result<(), DataError> {
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

    /// After a crash: moves that were under way are undone (their tenants thawed where
    /// they were, the partial copies dropped); returns those tenants, so that the caller
    /// can move them again to their plan's tier. Moves that had switched get their old
    /// copy dropped.
    pub async fn recover(&self) -> Result<Vec<TenantId>, DataError> {
        let rows = sqlx::query(&format!(
            "SELECT tenant_id, location, state, target, progress FROM {} WHERE state <> 'placed'",
            self.placements()
        ))
        .fetch_all(&self.admin)
        .await?;
        let mut out = Vec::new();
        for r in rows {
            let id: String = r.try_get("tenant_id")?;
            let tenant = TenantId::parse(&id).map_err(|e| DataError::Invalid(e.to_string()))?;
            let location: String = r.try_get("location")?;
            let target: Option<String> = r.try_get("target")?;
            if r.try_get::<String, _>("state")? == "dropping" {
                let progress: Option<String> = r.try_get("progress")?;
                let progress = progress
                    .and_then(|p| serde_json::from_str(&p).ok())
                    .unwrap_or(json!({}));
                self.end_move(&tenant, target.as_deref(), progress).await?;
                continue;
            }
            self.open_location(&location, false)
                .await?
                .set_frozen(&tenant, false)
                .await?;
            if let Some(t) = target.filter(|t| *t != location) {
                if let Err(e) = self.drop_copy(&tenant, &t).await {
                    tracing::warn!(tenant = %tenant, error = %e, "an interrupted move's partial copy was not dropped");
                }
                out.push(tenant);
            }
            self.settle_placement(&tenant, &json!({"phase": "interrupted", "from": location}))
                .await?;
        }
        Ok(out)
    }

    /// Brings every location (the shared one, and each tenant's schema or database) to
    /// the newest migration, `concurrency` at a time; `progress(done, total, location,
    /// outcome)` is called as each finishes. Running it again after a crash carries on
    /// where it stopped: each location records the migrations it has.
    pub async fn migrate_all(
        &self,
        concurrency: usize,
        progress: impl Fn(usize, usize, &str, &Result<usize, DataError>),
    ) -> Result<MigrateReport, DataError> {
        let rows = sqlx::query(&format!("SELECT DISTINCT location FROM {}", self.placements()))
            .fetch_all(&self.admin)
            .await?;
        let mut names = vec![SHARED.to_string()];
        for r in rows {
            let l: String = r.try_get("location")?;
            if !names.contains(&l) {
                names.push(l);
            }
        }
        let total = names.len();
        let mut report = MigrateReport {
            locations: total,
            ..Default::default()
        };
        let mut done = 0;
        let mut results = futures_util::stream::iter(names)
            .map(|name| async move {
                let opened = if name == SHARED {
                    self.home_applied.swap(0, std::sync::atomic::Ordering::Relaxed)
                } else {
                    0
                };
                let r = self.prepare(&name, true).await.map(|n| n + opened);
                (name, r)
            })
            .buffer_unordered(concurrency.max(1));
        while let Some((name, r)) = results.next().await {
            done += 1;
            progress(done, total, &name, &r);
            match r {
                Ok(n) => report.applied += n,
                Err(e) => report.failed.push((name, e.to_string())),
            }
        }
        Ok(report)
    }
}

/// One tenant's data, wherever it lives. Each call goes to the tenant's current
/// location; a write that meets a tier move's freeze waits for the switch (up to 30 s)
/// and goes to the new location.
pub struct Scope<'a> {
    store: &'a DataStore,
    tenant: TenantId,
    loc: Arc<Location>,
}

impl Scope<'_> {
    /// The tenant.
    pub fn tenant(&self) -> &TenantId {
        &self.tenant
    }

    /// Where its data is.
    pub fn location(&self) -> &str {
        &self.loc.name
    }

    /// Runs `op` at the tenant's location; on a freeze, again at its location after
    /// the move; on a database error, once more if the tenant has moved meanwhile.
    async fn run<'f, T, F>(&self, op: F) -> Result<T, DataError>
    where
        F: Fn(Arc<Location>) -> BoxFuture<'f, Result<T, DataError>>,
    {
        let mut loc = self.loc.clone();
        let deadline = Instant::now() + FREEZE_WAIT;
        loop {
            match op(loc.clone()).await {
                Err(DataError::Moving) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    loc = self.store.locate(&self.tenant, None).await?;
                }
                Err(DataError::Db(e)) => {
                    let now = self.store.locate(&self.tenant, None).await?;
                    if now.name == loc.name {
                        return Err(DataError::Db(e));
                    }
                    loc = now;
                }
                other => return other,
            }
        }
    }

    /// Creates or replaces a record; its version goes up by one. `max`: the storage
    /// level it may not grow past.
    pub async fn put_record(
        &self,
        collection: &str,
        id: &str,
        doc: &Value,
        max: Option<u64>,
    ) -> Result<Written<Record>, DataError> {
        self.write_record(collection, id, doc, None, max)
            .await?
            .ok_or(DataError::Db(sqlx::Error::RowNotFound))
    }

    /// Replaces a record's document if its version is still `expected`; `None` when
    /// the tenant has no such record or it has changed since.
    pub async fn update_record(
        &self,
        collection: &str,
        id: &str,
        doc: &Value,
        expected: i64,
        max: Option<u64>,
    ) -> Result<Option<Written<Record>>, DataError> {
        self.write_record(collection, id, doc, Some(expected), max).await
    }

    async fn write_record(
        &self,
        collection: &str,
        id: &str,
        doc: &Value,
        expected: Option<i64>,
        max: Option<u64>,
    ) -> Result<Option<Written<Record>>, DataError> {
        check_name("the collection", collection)?;
        check_name("the record id", id)?;
        crate::check_depth(doc)?;
        let text = serde_json::to_string(doc)?;
        let (t, text) = (self.tenant, text.as_str());
        self.run(|l| async move { l.write_record(&t, collection, id, text, expected, max).await }.boxed())
            .await
    }

    /// A record, if this tenant has it.
    pub async fn get_record(&self, collection: &str, id: &str) -> Result<Option<Record>, DataError> {
        check_name("the collection", collection)?;
        check_name("the record id", id)?;
        let t = self.tenant;
        self.run(|l| async move { l.get_record(&t, collection, id).await }.boxed())
            .await
    }

    /// Up to `limit` (1 to 1000) records of the collection with ids after `after`, by id.
    pub async fn list_records(
        &self,
        collection: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Record>, DataError> {
        check_name("the collection", collection)?;
        let t = self.tenant;
        let after = after.unwrap_or("");
        self.run(|l| async move { l.list_records(&t, collection, after, limit).await }.boxed())
            .await
    }

    /// Deletes a record; `false` if this tenant has no such record.
    pub async fn delete_record(&self, collection: &str, id: &str) -> Result<Written<bool>, DataError> {
        check_name("the collection", collection)?;
        check_name("the record id", id)?;
        let t = self.tenant;
        self.run(|l| async move { l.delete_record(&t, collection, id).await }.boxed())
            .await
    }

    /// The tenant's storage level: bytes of records, blobs and cache entries.
    pub async fn used(&self) -> Result<u64, DataError> {
        let t = self.tenant;
        self.run(|l| async move { l.used(&t).await }.boxed()).await
    }

    /// Stores chunk `seq` of an upload (`blob_id` from [`new_blob_id`](crate::new_blob_id)).
    pub async fn stage_chunk(&self, blob_id: &str, seq: i64, data: &[u8]) -> Result<(), DataError> {
        self.loc.stage_chunk(&self.tenant, blob_id, seq, data).await
    }

    /// Drops an upload's staged chunks.
    pub async fn discard_chunks(&self, blob_id: &str) -> Result<(), DataError> {
        self.loc.discard_chunks(&self.tenant, blob_id).await
    }

    /// Makes an upload (its `chunks` chunks staged by this scope) the blob at its path.
    pub async fn commit_blob(&self, blob: &Blob, chunks: i64, max: Option<u64>) -> Result<Written<Blob>, DataError> {
        let t = self.tenant;
        let staged = &self.loc;
        self.run(|l| {
            async move {
                if l.name != staged.name {
                    // The tenant moved during the upload: the chunks go along from the
                    // old copy (kept for the grace period) before the commit.
                    for seq in 0..chunks {
                        let data = staged.chunk(&t, &blob.blob_id, seq).await?.ok_or_else(|| {
                            DataError::Invalid(
                                "the tenant's data moved to another tier during the upload; upload it again".into(),
                            )
                        })?;
                        l.stage_chunk(&t, &blob.blob_id, seq, &data).await?;
                    }
                }
                l.commit_blob(&t, blob, chunks, max).await
            }
            .boxed()
        })
        .await
    }

    /// Deletes the chunks of this tenant's uploads that were never committed and are
    /// older than `age` (an upload still running that long is refused at its commit);
    /// returns how many chunks.
    pub async fn sweep_abandoned_uploads(&self, age: Duration) -> Result<u64, DataError> {
        let t = self.tenant;
        let before = now_secs().saturating_sub(age.as_secs().min(i64::MAX as u64) as i64);
        self.run(|l| async move { l.sweep_abandoned_uploads(&t, before).await }.boxed())
            .await
    }

    /// A blob's description.
    pub async fn get_blob(&self, path: &str) -> Result<Option<Blob>, DataError> {
        let t = self.tenant;
        self.run(|l| async move { l.get_blob(&t, path).await }.boxed()).await
    }

    /// Chunk `seq` of a blob's content (from [`Scope::get_blob`]); `None` past its end.
    pub async fn chunk(&self, blob: &Blob, seq: i64) -> Result<Option<Vec<u8>>, DataError> {
        let t = self.tenant;
        self.run(|l| async move { l.chunk(&t, &blob.blob_id, seq).await }.boxed())
            .await
    }

    /// Up to `limit` blobs whose path starts with `prefix`, after `after`, by path.
    pub async fn list_blobs(&self, prefix: &str, after: Option<&str>, limit: u32) -> Result<Vec<Blob>, DataError> {
        let t = self.tenant;
        let after = after.unwrap_or("");
        self.run(|l| async move { l.list_blobs(&t, prefix, after, limit).await }.boxed())
            .await
    }

    /// Deletes a blob; `false` if this tenant has none at that path.
    pub async fn delete_blob(&self, path: &str) -> Result<Written<bool>, DataError> {
        let t = self.tenant;
        self.run(|l| async move { l.delete_blob(&t, path).await }.boxed()).await
    }

    /// Sets a cache entry, expiring after `ttl_seconds` if given.
    pub async fn put_cache(
        &self,
        key: &str,
        value: &Value,
        ttl_seconds: Option<u64>,
        tags: &[String],
        max: Option<u64>,
    ) -> Result<Written<CacheEntry>, DataError> {
        crate::check_depth(value)?;
        let text = serde_json::to_string(value)?;
        let expires = ttl_seconds.map(|s| now_secs().saturating_add(s.min(i64::MAX as u64 / 2) as i64));
        let (t, text) = (self.tenant, text.as_str());
        self.run(|l| async move { l.put_cache(&t, key, text, expires, tags, max).await }.boxed())
            .await
    }

    /// A cache entry that has not expired.
    pub async fn get_cache(&self, key: &str) -> Result<Option<CacheEntry>, DataError> {
        let t = self.tenant;
        self.run(|l| async move { l.get_cache(&t, key).await }.boxed()).await
    }

    /// Deletes cache entries by key, prefix or tag; returns how many.
    pub async fn delete_cache(&self, which: CacheSelector<'_>) -> Result<Written<u64>, DataError> {
        let t = self.tenant;
        self.run(|l| async move { l.delete_cache(&t, which).await }.boxed())
            .await
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_app_role_replaces_the_urls_user_and_password() {
        assert_eq!(
            with_user("postgres://postgres:secret@db:5432/app?sslmode=disable", "r").unwrap(),
            "postgres://r@db:5432/app?sslmode=disable"
        );
        assert_eq!(
            with_user("postgres://127.0.0.1:5432/test", "r").unwrap(),
            "postgres://r@127.0.0.1:5432/test"
        );
        assert!(with_user("not a url", "r").is_err());
        let u = Url::parse("postgres://a:b@h:1/db?x=1").unwrap();
        assert_eq!(u.with(u.user, "other"), "postgres://a:b@h:1/other?x=1");
    }
}
