//! [`SqlCatalog`]: the catalog on SQLite or PostgreSQL. Both run the same portable SQL
//! (`$n` placeholders, `ON CONFLICT`, no backend-specific types) through sqlx's `Any`
//! driver; each backend has its own migrations folder.
use crate::*;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::migrate::Migrator;
use sqlx::{AnyPool, Executor, Row};
use tenantd_core::now_secs;

mod archives;
mod config;
mod domains;
mod events;
mod keys;
mod keys_vault;
mod members;
mod plans;
mod roles;
mod signing;
mod tenants;
mod usage;
mod webhooks;
mod workspaces;

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("migrations/postgres");

/// The catalog's schema version: its newest migration's number (the same on both
/// backends).
pub fn schema_version() -> i64 {
    POSTGRES_MIGRATIONS.iter().map(|m| m.version).max().unwrap_or(0)
}

/// The database behind a [`SqlCatalog`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Embedded SQLite file in WAL mode.
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

impl Backend {
    /// Picks the backend from a URL's scheme.
    pub fn from_url(url: &str) -> Result<Self> {
        if url.starts_with("sqlite:") {
            Ok(Self::Sqlite)
        } else if tenantd_core::is_postgres_url(url) {
            Ok(Self::Postgres)
        } else {
            Err(StoreError::Invalid(format!(
                "database url must start with sqlite:// or postgres:// (got '{}')",
                url.split(':').next().unwrap_or("")
            )))
        }
    }
}

/// The catalog on SQLite or PostgreSQL.
#[derive(Clone)]
pub struct SqlCatalog {
    pub(crate) pool: AnyPool,
    pub(crate) backend: Backend,
    url: String,
    /// Set from the catalog's `cursor_key` by [`Catalog::migrate`].
    cursors: std::sync::Arc<std::sync::OnceLock<crate::Cursors>>,
    /// How long a deleted tenant waits for its purge, in days.
    pub(crate) deleted_tenant_days: i64,
}

pub(crate) fn is_unique_violation(e: &StoreError) -> bool {
    matches!(e, StoreError::Db(sqlx::Error::Database(d)) if d.is_unique_violation())
}

pub(crate) fn json<T: serde::de::DeserializeOwned>(r: &AnyRow, col: &str) -> Result<T> {
    let s: String = r.try_get(col)?;
    Ok(serde_json::from_str(&s)?)
}

pub(crate) fn to_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("serialising a plain value cannot fail")
}

pub(crate) fn user_from(r: &AnyRow) -> Result<User> {
    Ok(User {
        id: r.try_get("id")?,
        email: r.try_get("email")?,
        created_at: r.try_get("created_at")?,
    })
}

use crate::work::Tx;

impl SqlCatalog {
    /// Deleted tenants wait `days` for their purge (default 30; 0: the next purge run).
    pub fn with_deleted_tenant_days(mut self, days: i64) -> Self {
        self.deleted_tenant_days = days.max(0);
        self
    }

    /// Connects to `url` (`sqlite://path` or `postgres://…`); the SQLite file and its
    /// folder are created when missing. Does not migrate: call [`Catalog::migrate`].
    pub async fn connect(url: &str) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let backend = Backend::from_url(url)?;
        let (url, max) = match backend {
            Backend::Sqlite => {
                let path = url.trim_start_matches("sqlite://").trim_start_matches("sqlite:");
                let path = path.split('?').next().unwrap_or(path);
                if let Some(dir) = std::path::Path::new(path).parent() {
                    if !dir.as_os_str().is_empty() {
                        std::fs::create_dir_all(dir).map_err(|e| {
                            StoreError::Invalid(format!("cannot create data directory {}: {e}", dir.display()))
                        })?;
                    }
                }
                let sep = if url.contains('?') { '&' } else { '?' };
                let url = if url.contains("mode=") {
                    url.to_string()
                } else {
                    format!("{url}{sep}mode=rwc")
                };
                (url, 8)
            }
            Backend::Postgres => (url.to_string(), 16),
        };
        let mut opts = AnyPoolOptions::new()
            .max_connections(max)
            .acquire_timeout(std::time::Duration::from_secs(10));
        if backend == Backend::Sqlite {
            // No reaper for a local file's connections: sqlx 0.8's idle-connection
            // maintenance can spin forever on a miscounted idle queue (sqlx issue 3645),
            // and closing idle connections to a file gains nothing.
            opts = opts.idle_timeout(None).max_lifetime(None);
            opts = opts.after_connect(|conn, _| {
                Box::pin(async move {
                    conn.execute("PRAGMA journal_mode = WAL").await?;
                    // Every commit reaches the disk before it is acknowledged: what the
                    // catalog answered for (usage events above all) survives a power cut,
                    // not only a crash of the process.
                    conn.execute("PRAGMA synchronous = FULL").await?;
                    conn.execute("PRAGMA foreign_keys = ON").await?;
                    conn.execute("PRAGMA busy_timeout = 10000").await?;
                    Ok(())
                })
            });
        }
        let pool = opts.connect(&url).await?;
        Ok(Self {
            pool,
            backend,
            url,
            cursors: Default::default(),
            deleted_tenant_days: tenantd_core::tenant::RETENTION_DAYS,
        })
    }

    /// The catalog's cursor key: made once by whichever node comes first, then read.
    async fn load_cursors(&self) -> Result<()> {
        let fresh = hex_of(&rand::random::<[u8; 32]>());
        sqlx::query("INSERT INTO catalog_secrets (name, value) VALUES ('cursor_key', $1) ON CONFLICT DO NOTHING")
            .bind(&fresh)
            .execute(&self.pool)
            .await?;
        let key: String = sqlx::query_scalar("SELECT value FROM catalog_secrets WHERE name = 'cursor_key'")
            .fetch_one(&self.pool)
            .await?;
        let _ = self.cursors.set(crate::Cursors::new(key.as_bytes()));
        Ok(())
    }

    /// The underlying pool (for tests and benches).
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// The URL it was opened with.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Takes the tenant row's write lock for the rest of the transaction, so that rules
    /// spanning rows (the last-owner rule) cannot race; `NotFound` if there is no tenant.
    pub(super) async fn lock_tenant(tx: &mut Tx, tenant: &TenantId) -> Result<()> {
        let n = sqlx::query("UPDATE tenants SET updated_at = $2 WHERE id = $1")
            .bind(tenant.as_str())
            .bind(now_secs())
            .execute(&mut **tx)
            .await?
            .rows_affected();
        if n == 0 {
            return Err(StoreError::NotFound("tenant"));
        }
        Ok(())
    }

    /// `LevelReached` unless the tenant has fewer than `max` of `what` (call after
    /// [`Self::lock_tenant`], which serialises the tenant's writers on every node).
    pub(super) async fn below_level(tx: &mut Tx, tenant: &TenantId, what: Countable, max: Option<u64>) -> Result<()> {
        let Some(max) = max else {
            return Ok(());
        };
        let n = what.count_in(&mut **tx, tenant).await?;
        if n >= max {
            return Err(StoreError::LevelReached(n));
        }
        Ok(())
    }

    pub(super) async fn ensure_user_in(tx: &mut sqlx::Transaction<'_, sqlx::Any>, email: &Email) -> Result<User> {
        sqlx::query("INSERT INTO users (id, email, created_at) VALUES ($1, $2, $3) ON CONFLICT (email) DO NOTHING")
            .bind(new_id("usr"))
            .bind(email.as_str())
            .bind(now_secs())
            .execute(&mut **tx)
            .await?;
        let r = sqlx::query("SELECT id, email, created_at FROM users WHERE email = $1")
            .bind(email.as_str())
            .fetch_one(&mut **tx)
            .await?;
        user_from(&r)
    }
}

#[async_trait::async_trait]
impl Catalog for SqlCatalog {
    async fn migrate(&self) -> Result<()> {
        match self.backend {
            Backend::Sqlite => SQLITE_MIGRATIONS.run(&self.pool).await?,
            Backend::Postgres => POSTGRES_MIGRATIONS.run(&self.pool).await?,
        }
        let n: i64 = sqlx::query("SELECT COUNT(*) AS n FROM plans")
            .fetch_one(&self.pool)
            .await?
            .try_get("n")?;
        if n == 0 {
            let mut w = self.begin().await?;
            let mut first = true;
            for p in Plan::builtins() {
                match self.create_plan(&mut w, &p).await {
                    Err(StoreError::Conflict(_)) => {
                        // Another node seeded them first.
                        first = false;
                        break;
                    }
                    other => other?,
                }
            }
            if first {
                w.commit().await?;
            }
        }
        events::link_unlinked(self).await?;
        self.load_cursors().await
    }

    fn cursors(&self) -> &crate::Cursors {
        self.cursors.get_or_init(crate::Cursors::random)
    }

    fn backend(&self) -> Backend {
        self.backend
    }

    fn pool_use(&self) -> crate::PoolUse {
        crate::PoolUse::of(&self.pool)
    }

    async fn begin(&self) -> Result<Work> {
        Work::begin(&self.pool, self.backend).await
    }
}

/// Lower-case hex of `bytes`.
fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
