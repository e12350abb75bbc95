//! [`SqlCatalog`]: the catalog on SQLite or PostgreSQL. Both run the same portable SQL
//! (`$n` placeholders, `ON CONFLICT`, no backend-specific types) through sqlx's `Any`
//! driver; each backend has its own migrations folder.
use crate::*;
use base64::Engine;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::migrate::Migrator;
use sqlx::{AnyPool, Executor, Row};
use tenantd_core::plan::merge_limits;
use tenantd_core::tenant::{Transition, RETENTION_DAYS};
use tenantd_core::{now_secs, Role, TenantStatus};

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("migrations/postgres");

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
    pool: AnyPool,
    backend: Backend,
    url: String,
    /// Set from the catalog's `cursor_key` by [`Catalog::migrate`].
    cursors: std::sync::Arc<std::sync::OnceLock<crate::Cursors>>,
}

const TENANT_COLS: &str =
    "id, name, plan_id, status, status_reason, settings, limits, created_at, updated_at, deleted_at, purge_after";
const KEY_COLS: &str =
    "id, tenant_id, name, prefix, hash, role, expires_at, limits, created_at, revoked_at, last_used_at";

fn is_unique_violation(e: &StoreError) -> bool {
    matches!(e, StoreError::Db(sqlx::Error::Database(d)) if d.is_unique_violation())
}

fn json<T: serde::de::DeserializeOwned>(r: &AnyRow, col: &str) -> Result<T> {
    let s: String = r.try_get(col)?;
    Ok(serde_json::from_str(&s)?)
}

fn to_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("serialising a plain value cannot fail")
}

fn tenant_from(r: &AnyRow) -> Result<Tenant> {
    let status: String = r.try_get("status")?;
    Ok(Tenant {
        id: TenantId::from_trusted(r.try_get("id")?),
        name: r.try_get("name")?,
        plan: r.try_get("plan_id")?,
        status: TenantStatus::parse(&status).ok_or_else(|| StoreError::Invalid(format!("stored status '{status}'")))?,
        status_reason: r.try_get("status_reason")?,
        settings: json(r, "settings")?,
        limits: json(r, "limits")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
        deleted_at: r.try_get("deleted_at")?,
        purge_after: r.try_get("purge_after")?,
    })
}

fn plan_from(r: &AnyRow) -> Result<Plan> {
    let isolation: String = r.try_get("isolation")?;
    Ok(Plan {
        id: PlanId::parse(&r.try_get::<String, _>("id")?).map_err(|e| StoreError::Invalid(e.to_string()))?,
        name: r.try_get("name")?,
        price: r.try_get("price")?,
        currency: r.try_get("currency")?,
        limits: json(r, "limits")?,
        features: json(r, "features")?,
        isolation: serde_json::from_value(serde_json::Value::String(isolation))?,
        counter_failure: serde_json::from_value(serde_json::Value::String(r.try_get("counter_failure")?))?,
    })
}

fn key_from(r: &AnyRow) -> Result<ApiKey> {
    Ok(ApiKey {
        id: r.try_get("id")?,
        tenant_id: TenantId::from_trusted(r.try_get("tenant_id")?),
        name: r.try_get("name")?,
        prefix: r.try_get("prefix")?,
        hash: r.try_get("hash")?,
        role: r.try_get("role")?,
        expires_at: r.try_get("expires_at")?,
        limits: json(r, "limits")?,
        created_at: r.try_get("created_at")?,
        revoked_at: r.try_get("revoked_at")?,
        last_used_at: r.try_get("last_used_at")?,
    })
}

fn member_from(r: &AnyRow) -> Result<Member> {
    Ok(Member {
        user_id: r.try_get("user_id")?,
        email: r.try_get("email")?,
        role: r.try_get("role")?,
        created_at: r.try_get("created_at")?,
    })
}

fn user_from(r: &AnyRow) -> Result<User> {
    Ok(User {
        id: r.try_get("id")?,
        email: r.try_get("email")?,
        created_at: r.try_get("created_at")?,
    })
}

use crate::work::Tx;

impl SqlCatalog {
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
    async fn lock_tenant(tx: &mut Tx, tenant: &TenantId) -> Result<()> {
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
    async fn below_level(tx: &mut Tx, tenant: &TenantId, what: Countable, max: Option<u64>) -> Result<()> {
        let Some(max) = max else {
            return Ok(());
        };
        let n = what.count_in(&mut **tx, tenant).await?;
        if n >= max {
            return Err(StoreError::LevelReached(n));
        }
        Ok(())
    }

    async fn ensure_user_in(tx: &mut sqlx::Transaction<'_, sqlx::Any>, email: &Email) -> Result<User> {
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

    async fn owner_count(tx: &mut Tx, tenant: &TenantId) -> Result<i64> {
        Ok(
            sqlx::query("SELECT COUNT(*) AS n FROM memberships WHERE tenant_id = $1 AND role = 'owner'")
                .bind(tenant.as_str())
                .fetch_one(&mut **tx)
                .await?
                .try_get("n")?,
        )
    }

    async fn current_role(tx: &mut Tx, tenant: &TenantId, user_id: &str) -> Result<String> {
        sqlx::query("SELECT role FROM memberships WHERE tenant_id = $1 AND user_id = $2")
            .bind(tenant.as_str())
            .bind(user_id)
            .fetch_optional(&mut **tx)
            .await?
            .map(|r| r.try_get("role"))
            .transpose()?
            .ok_or(StoreError::NotFound("member"))
    }

    async fn member_in(tx: &mut Tx, tenant: &TenantId, user_id: &str) -> Result<Member> {
        let r = sqlx::query("SELECT m.user_id, u.email, m.role, m.created_at FROM memberships m JOIN users u ON u.id = m.user_id WHERE m.tenant_id = $1 AND m.user_id = $2")
            .bind(tenant.as_str())
            .bind(user_id)
            .fetch_optional(&mut **tx)
            .await?
            .ok_or(StoreError::NotFound("member"))?;
        member_from(&r)
    }

    /// The stored tenant `new` names, as `create_tenant` answers a repeat of it:
    /// `Existing` when it is the same request, `Conflict` when it is another one.
    async fn repeat_of(tx: &mut Tx, new: &NewTenant) -> Result<Option<Created<Tenant>>> {
        let Some(existing) = Self::tenant_in(tx, &new.id).await? else {
            return Ok(None);
        };
        let same_owner: Option<String> = sqlx::query_scalar(
            "SELECT m.role FROM memberships m JOIN users u ON u.id = m.user_id WHERE m.tenant_id = $1 AND u.email = $2",
        )
        .bind(new.id.as_str())
        .bind(new.owner_email.as_str())
        .fetch_optional(&mut **tx)
        .await?;
        if existing.plan == new.plan.as_str() && existing.name == new.name && same_owner.as_deref() == Some("owner") {
            return Ok(Some(Created::Existing(existing)));
        }
        Err(StoreError::Conflict(format!(
            "tenant '{}' already exists with a different name, plan or owner",
            new.id
        )))
    }

    /// Inserts a new tenant's rows: the tenant, its first plan and its owner.
    async fn insert_tenant(tx: &mut sqlx::Transaction<'_, sqlx::Any>, new: &NewTenant) -> Result<()> {
        let now = now_secs();
        let inserted = sqlx::query("INSERT INTO tenants (id, name, plan_id, status, settings, limits, created_at, updated_at) VALUES ($1, $2, $3, 'active', $4, '[]', $5, $5)")
            .bind(new.id.as_str())
            .bind(&new.name)
            .bind(new.plan.as_str())
            .bind(to_json(&new.settings))
            .bind(now)
            .execute(&mut **tx)
            .await;
        match inserted {
            Err(sqlx::Error::Database(d)) if d.is_foreign_key_violation() => return Err(StoreError::NotFound("plan")),
            other => other?,
        };
        crate::usage::record_plan_in(tx, &new.id, now, new.plan.as_str()).await?;
        let user = Self::ensure_user_in(tx, &new.owner_email).await?;
        sqlx::query("INSERT INTO memberships (tenant_id, user_id, role, created_at) VALUES ($1, $2, 'owner', $3)")
            .bind(new.id.as_str())
            .bind(&user.id)
            .bind(now)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    async fn tenant_in(tx: &mut Tx, id: &TenantId) -> Result<Option<Tenant>> {
        sqlx::query(&format!("SELECT {TENANT_COLS} FROM tenants WHERE id = $1"))
            .bind(id.as_str())
            .fetch_optional(&mut **tx)
            .await?
            .map(|r| tenant_from(&r))
            .transpose()
    }

    async fn find_tenant(&self, id: &TenantId) -> Result<Option<Tenant>> {
        sqlx::query(&format!("SELECT {TENANT_COLS} FROM tenants WHERE id = $1"))
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await?
            .map(|r| tenant_from(&r))
            .transpose()
    }

    async fn workspace_members(
        conn: &mut sqlx::AnyConnection,
        tenant: &TenantId,
        ws: &str,
    ) -> Result<Vec<WorkspaceMember>> {
        let rows = sqlx::query("SELECT w.user_id, u.email, w.role FROM workspace_members w JOIN users u ON u.id = w.user_id WHERE w.tenant_id = $1 AND w.workspace_id = $2 ORDER BY w.user_id")
            .bind(tenant.as_str())
            .bind(ws)
            .fetch_all(&mut *conn)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(WorkspaceMember {
                    user_id: r.try_get("user_id")?,
                    email: r.try_get("email")?,
                    role: r.try_get("role")?,
                })
            })
            .collect()
    }

    /// A workspace with its members, read on `conn` (a unit of work's, to see its own
    /// changes).
    async fn workspace_in(conn: &mut sqlx::AnyConnection, tenant: &TenantId, id: &str) -> Result<Workspace> {
        let r = sqlx::query("SELECT id, name, created_at FROM workspaces WHERE tenant_id = $1 AND id = $2")
            .bind(tenant.as_str())
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?
            .ok_or(StoreError::NotFound("workspace"))?;
        Ok(Workspace {
            id: r.try_get("id")?,
            name: r.try_get("name")?,
            created_at: r.try_get("created_at")?,
            members: Self::workspace_members(conn, tenant, id).await?,
        })
    }

    /// A key by id, read on `conn`.
    async fn key_in(conn: &mut sqlx::AnyConnection, id: &str) -> Result<Option<ApiKey>> {
        sqlx::query(&format!("SELECT {KEY_COLS} FROM api_keys WHERE id = $1"))
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?
            .map(|r| key_from(&r))
            .transpose()
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
        self.load_cursors().await
    }

    fn cursors(&self) -> &crate::Cursors {
        self.cursors.get_or_init(crate::Cursors::random)
    }

    fn backend(&self) -> Backend {
        self.backend
    }

    async fn list_plans(&self) -> Result<Vec<Plan>> {
        let rows = sqlx::query("SELECT * FROM plans ORDER BY id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(plan_from).collect()
    }

    async fn get_plan(&self, id: &PlanId) -> Result<Plan> {
        let r = sqlx::query("SELECT * FROM plans WHERE id = $1")
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound("plan"))?;
        plan_from(&r)
    }

    async fn begin(&self) -> Result<Work> {
        Work::begin(&self.pool, self.backend).await
    }

    async fn create_plan(&self, w: &mut Work, p: &Plan) -> Result<()> {
        let now = now_secs();
        let r = sqlx::query("INSERT INTO plans (id, name, price, currency, limits, features, isolation, created_at, updated_at, counter_failure) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, $9)")
            .bind(p.id.as_str())
            .bind(&p.name)
            .bind(&p.price)
            .bind(&p.currency)
            .bind(to_json(&p.limits))
            .bind(to_json(&p.features))
            .bind(to_json(&p.isolation).trim_matches('"').to_string())
            .bind(now)
            .bind(p.counter_failure.as_str())
            .execute(&mut *w.tx)
            .await
            .map(|_| ())
            .map_err(StoreError::from);
        match r {
            Err(e) if is_unique_violation(&e) => Err(StoreError::Conflict(format!("plan '{}' already exists", p.id))),
            other => other,
        }
    }

    async fn update_plan(&self, w: &mut Work, p: &Plan) -> Result<()> {
        let n = sqlx::query("UPDATE plans SET name = $2, price = $3, currency = $4, limits = $5, features = $6, isolation = $7, updated_at = $8, counter_failure = $9 WHERE id = $1")
            .bind(p.id.as_str())
            .bind(&p.name)
            .bind(&p.price)
            .bind(&p.currency)
            .bind(to_json(&p.limits))
            .bind(to_json(&p.features))
            .bind(to_json(&p.isolation).trim_matches('"').to_string())
            .bind(now_secs())
            .bind(p.counter_failure.as_str())
            .execute(&mut *w.tx)
            .await?
            .rows_affected();
        if n == 0 {
            return Err(StoreError::NotFound("plan"));
        }
        Ok(())
    }

    async fn delete_plan(&self, w: &mut Work, id: &PlanId) -> Result<()> {
        let in_use = || {
            StoreError::Conflict(format!(
                "plan '{id}' is in use by tenants; move them to another plan first"
            ))
        };
        // A tenant put on the plan by another node after the check (PostgreSQL) holds
        // it by the tenants.plan_id foreign key instead.
        let used = sqlx::query("SELECT id FROM tenants WHERE plan_id = $1 LIMIT 1")
            .bind(id.as_str())
            .fetch_optional(&mut *w.tx)
            .await?
            .is_some();
        if used {
            return Err(in_use());
        }
        let n = match sqlx::query("DELETE FROM plans WHERE id = $1")
            .bind(id.as_str())
            .execute(&mut *w.tx)
            .await
        {
            Ok(done) => done.rows_affected(),
            Err(sqlx::Error::Database(d)) if d.is_foreign_key_violation() => return Err(in_use()),
            Err(e) => return Err(e.into()),
        };
        if n == 0 {
            return Err(StoreError::NotFound("plan"));
        }
        Ok(())
    }

    async fn create_tenant(&self, w: &mut Work, new: &NewTenant) -> Result<Created<Tenant>> {
        if let Some(repeat) = Self::repeat_of(&mut w.tx, new).await? {
            return Ok(repeat);
        }
        let plan_exists = sqlx::query("SELECT id FROM plans WHERE id = $1")
            .bind(new.plan.as_str())
            .fetch_optional(&mut *w.tx)
            .await?
            .is_some();
        if !plan_exists {
            return Err(StoreError::NotFound("plan"));
        }
        // In a savepoint: a concurrent identical request (on another PostgreSQL node) may
        // win the race, and this one then answers as a repeat would.
        let mut sp = sqlx::Acquire::begin(&mut w.tx).await?;
        match Self::insert_tenant(&mut sp, new).await {
            Ok(()) => sp.commit().await?,
            Err(e) if is_unique_violation(&e) => {
                sp.rollback().await?;
                if let Some(repeat) = Self::repeat_of(&mut w.tx, new).await? {
                    return Ok(repeat);
                }
                return Err(e);
            }
            Err(e) => return Err(e),
        }
        let t = Self::tenant_in(&mut w.tx, &new.id)
            .await?
            .ok_or(StoreError::NotFound("tenant"))?;
        Ok(Created::New(t))
    }

    async fn get_tenant(&self, id: &TenantId) -> Result<Tenant> {
        self.find_tenant(id).await?.ok_or(StoreError::NotFound("tenant"))
    }

    async fn list_tenants(&self, filter: &TenantFilter, page: &PageRequest) -> Result<Page<Tenant>> {
        let mut sql = format!("SELECT {TENANT_COLS} FROM tenants WHERE ");
        let mut args: Vec<String> = Vec::new();
        match filter.status {
            Some(s) => {
                args.push(s.as_str().to_string());
                sql.push_str("status = $1");
            }
            None => sql.push_str("status <> 'deleted'"),
        }
        if let Some(plan) = &filter.plan {
            args.push(plan.clone());
            sql.push_str(&format!(" AND plan_id = ${}", args.len()));
        }
        if let Some(c) = &page.after {
            args.push(self.cursors().open(c)?);
            sql.push_str(&format!(" AND id > ${}", args.len()));
        }
        sql.push_str(&format!(" ORDER BY id LIMIT {}", page.limit + 1));
        let mut q = sqlx::query(&sql);
        for a in &args {
            q = q.bind(a.as_str());
        }
        let rows = q.fetch_all(&self.pool).await?;
        let items = rows.iter().map(tenant_from).collect::<Result<Vec<_>>>()?;
        Ok(self.cursors().page(items, page.limit, |t| t.id.to_string()))
    }

    async fn update_tenant(&self, w: &mut Work, id: &TenantId, patch: &TenantPatch) -> Result<Tenant> {
        let tx = &mut w.tx;
        Self::lock_tenant(tx, id).await?;
        let r = sqlx::query(&format!("SELECT {TENANT_COLS} FROM tenants WHERE id = $1"))
            .bind(id.as_str())
            .fetch_one(&mut **tx)
            .await?;
        let mut t = tenant_from(&r)?;
        if t.status == TenantStatus::Deleted {
            return Err(StoreError::Conflict(
                "a deleted tenant cannot be changed; restore it first".into(),
            ));
        }
        if let Some(plan) = &patch.plan {
            let exists = sqlx::query("SELECT id FROM plans WHERE id = $1")
                .bind(plan.as_str())
                .fetch_optional(&mut **tx)
                .await?
                .is_some();
            if !exists {
                return Err(StoreError::NotFound("plan"));
            }
            if t.plan != plan.as_str() {
                crate::usage::record_plan_in(tx, id, now_secs(), plan.as_str()).await?;
            }
            t.plan = plan.to_string();
        }
        if let Some(name) = &patch.name {
            t.name = name.clone();
        }
        if let Some(s) = &patch.settings {
            t.settings = s.clone();
        }
        if let Some(l) = &patch.limits {
            t.limits = merge_limits(&t.limits, l);
        }
        sqlx::query("UPDATE tenants SET name = $2, plan_id = $3, settings = $4, limits = $5 WHERE id = $1")
            .bind(id.as_str())
            .bind(&t.name)
            .bind(&t.plan)
            .bind(to_json(&t.settings))
            .bind(to_json(&t.limits))
            .execute(&mut **tx)
            .await?;
        Self::tenant_in(tx, id).await?.ok_or(StoreError::NotFound("tenant"))
    }

    async fn transition_tenant(
        &self,
        w: &mut Work,
        id: &TenantId,
        tr: Transition,
        reason: Option<&str>,
    ) -> Result<Tenant> {
        let tx = &mut w.tx;
        Self::lock_tenant(tx, id).await?;
        let r =
            sqlx::query("SELECT status, status_reason, status_before_delete, purge_after FROM tenants WHERE id = $1")
                .bind(id.as_str())
                .fetch_one(&mut **tx)
                .await?;
        let status: String = r.try_get("status")?;
        let current =
            TenantStatus::parse(&status).ok_or_else(|| StoreError::Invalid(format!("stored status '{status}'")))?;
        let mut next = current.apply(tr)?;
        let now = now_secs();
        let mut reason: Option<String> = reason.map(str::to_string);
        let (mut deleted_at, mut purge_after, mut before) = (None, None, None::<String>);
        match tr {
            Transition::Delete => {
                reason = r.try_get("status_reason")?;
                deleted_at = Some(now);
                purge_after = Some(now + RETENTION_DAYS * 86_400);
                before = Some(current.as_str().to_string());
            }
            Transition::Restore => {
                let due: Option<i64> = r.try_get("purge_after")?;
                if let Some(due) = due.filter(|&d| d <= now) {
                    return Err(StoreError::Conflict(format!(
                        "the tenant's retention period ended at {}; it is being purged and cannot be restored",
                        tenantd_core::ts::format(due)
                    )));
                }
                // Come back as it was before deletion, suspension included.
                let prev: Option<String> = r.try_get("status_before_delete")?;
                if prev.as_deref() == Some("suspended") {
                    next = TenantStatus::Suspended;
                    reason = r.try_get("status_reason")?;
                }
            }
            Transition::Suspend | Transition::Resume => {}
        }
        sqlx::query("UPDATE tenants SET status = $2, status_reason = $3, status_before_delete = $4, deleted_at = $5, purge_after = $6 WHERE id = $1")
            .bind(id.as_str())
            .bind(next.as_str())
            .bind(reason)
            .bind(before)
            .bind(deleted_at)
            .bind(purge_after)
            .execute(&mut **tx)
            .await?;
        Self::tenant_in(tx, id).await?.ok_or(StoreError::NotFound("tenant"))
    }

    async fn purgeable_tenants(&self, now: i64, after: Option<&TenantId>, limit: u32) -> Result<Vec<TenantId>> {
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM tenants WHERE status = $1 AND purge_after <= $2 AND id > $3 ORDER BY id LIMIT $4",
        )
        .bind(TenantStatus::Deleted.as_str())
        .bind(now)
        .bind(after.map_or("", TenantId::as_str))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        ids.iter()
            .map(|id| TenantId::parse(id).map_err(|e| StoreError::Invalid(format!("stored tenant id '{id}': {e}"))))
            .collect()
    }

    async fn purge_tenant(&self, w: &mut Work, id: &TenantId, now: i64) -> Result<u64> {
        let tx = &mut w.tx;
        Self::lock_tenant(tx, id).await?;
        let r = sqlx::query("SELECT status, purge_after FROM tenants WHERE id = $1")
            .bind(id.as_str())
            .fetch_one(&mut **tx)
            .await?;
        let (status, due): (String, Option<i64>) = (r.try_get("status")?, r.try_get("purge_after")?);
        if status != TenantStatus::Deleted.as_str() {
            return Err(StoreError::Conflict(format!("the tenant is {status}, not deleted")));
        }
        if due.is_none_or(|due| due > now) {
            return Err(StoreError::Conflict(
                "the tenant's retention period has not ended".into(),
            ));
        }
        let users: Vec<String> = sqlx::query_scalar("SELECT user_id FROM memberships WHERE tenant_id = $1")
            .bind(id.as_str())
            .fetch_all(&mut **tx)
            .await?;
        // Security events (a cross-tenant attempt filed under the caller's tenant) stay in
        // the operator's trail, under no tenant.
        sqlx::query("UPDATE audit_events SET tenant_id = NULL WHERE tenant_id = $1 AND action LIKE 'security.%'")
            .bind(id.as_str())
            .execute(&mut **tx)
            .await?;
        let mut rows = 0;
        // Children before their parents; the tenant's row last.
        for table in [
            "workspace_members",
            "workspaces",
            "memberships",
            "roles",
            "api_keys",
            "domains",
            "usage_counters",
            "usage_idempotency",
            "tenant_events",
            "plan_history",
            "audit_events",
        ] {
            rows += sqlx::query(&format!("DELETE FROM {table} WHERE tenant_id = $1"))
                .bind(id.as_str())
                .execute(&mut **tx)
                .await?
                .rows_affected();
        }
        rows += sqlx::query("DELETE FROM tenants WHERE id = $1")
            .bind(id.as_str())
            .execute(&mut **tx)
            .await?
            .rows_affected();
        for user in users {
            rows += sqlx::query(
                "DELETE FROM users WHERE id = $1 \
                 AND NOT EXISTS (SELECT 1 FROM memberships WHERE user_id = $1) \
                 AND NOT EXISTS (SELECT 1 FROM workspace_members WHERE user_id = $1)",
            )
            .bind(&user)
            .execute(&mut **tx)
            .await?
            .rows_affected();
        }
        Ok(rows)
    }

    async fn ensure_user(&self, email: &Email) -> Result<User> {
        let mut tx = self.pool.begin().await?;
        let u = Self::ensure_user_in(&mut tx, email).await?;
        tx.commit().await?;
        Ok(u)
    }

    async fn get_user(&self, id: &str) -> Result<User> {
        let r = sqlx::query("SELECT id, email, created_at FROM users WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound("user"))?;
        user_from(&r)
    }

    async fn find_user_by_email(&self, email: &Email) -> Result<Option<User>> {
        sqlx::query("SELECT id, email, created_at FROM users WHERE email = $1")
            .bind(email.as_str())
            .fetch_optional(&self.pool)
            .await?
            .map(|r| user_from(&r))
            .transpose()
    }

    async fn user_memberships(&self, user_id: &str) -> Result<Vec<(TenantId, String)>> {
        let rows = sqlx::query("SELECT m.tenant_id, m.role FROM memberships m JOIN tenants t ON t.id = m.tenant_id WHERE m.user_id = $1 AND t.status <> 'deleted' ORDER BY m.tenant_id")
            .bind(user_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((TenantId::from_trusted(r.try_get("tenant_id")?), r.try_get("role")?)))
            .collect()
    }

    async fn member_role(&self, tenant: &TenantId, user_id: &str) -> Result<Option<String>> {
        Ok(
            sqlx::query("SELECT role FROM memberships WHERE tenant_id = $1 AND user_id = $2")
                .bind(tenant.as_str())
                .bind(user_id)
                .fetch_optional(&self.pool)
                .await?
                .map(|r| r.try_get("role"))
                .transpose()?,
        )
    }

    async fn list_members(&self, tenant: &TenantId, page: &PageRequest) -> Result<Page<Member>> {
        let after = page
            .after
            .as_deref()
            .map(|c| self.cursors().open(c))
            .transpose()?
            .unwrap_or_default();
        let rows = sqlx::query(&format!("SELECT m.user_id, u.email, m.role, m.created_at FROM memberships m JOIN users u ON u.id = m.user_id WHERE m.tenant_id = $1 AND m.user_id > $2 ORDER BY m.user_id LIMIT {}", page.limit + 1))
            .bind(tenant.as_str())
            .bind(after)
            .fetch_all(&self.pool)
            .await?;
        let items = rows.iter().map(member_from).collect::<Result<Vec<_>>>()?;
        Ok(self.cursors().page(items, page.limit, |m| m.user_id.clone()))
    }

    async fn add_member_within(
        &self,
        w: &mut Work,
        tenant: &TenantId,
        email: &Email,
        role: &str,
        max: Option<u64>,
    ) -> Result<Member> {
        let tx = &mut w.tx;
        Self::lock_tenant(tx, tenant).await?;
        Self::below_level(tx, tenant, Countable::Members, max).await?;
        let user = Self::ensure_user_in(tx, email).await?;
        let r = sqlx::query("INSERT INTO memberships (tenant_id, user_id, role, created_at) VALUES ($1, $2, $3, $4)")
            .bind(tenant.as_str())
            .bind(&user.id)
            .bind(role)
            .bind(now_secs())
            .execute(&mut **tx)
            .await
            .map_err(StoreError::from);
        match r {
            Err(e) if is_unique_violation(&e) => {
                return Err(StoreError::Conflict(format!("{email} is already a member")))
            }
            other => other?,
        };
        let m = Self::member_in(tx, tenant, &user.id).await?;
        Ok(m)
    }

    async fn set_member_role(&self, w: &mut Work, tenant: &TenantId, user_id: &str, role: &str) -> Result<Member> {
        let tx = &mut w.tx;
        Self::lock_tenant(tx, tenant).await?;
        let current = Self::current_role(tx, tenant, user_id).await?;
        if current == "owner" && role != "owner" && Self::owner_count(tx, tenant).await? <= 1 {
            return Err(StoreError::LastOwner);
        }
        sqlx::query("UPDATE memberships SET role = $3 WHERE tenant_id = $1 AND user_id = $2")
            .bind(tenant.as_str())
            .bind(user_id)
            .bind(role)
            .execute(&mut **tx)
            .await?;
        let m = Self::member_in(tx, tenant, user_id).await?;
        Ok(m)
    }

    async fn remove_member(&self, w: &mut Work, tenant: &TenantId, user_id: &str) -> Result<()> {
        let tx = &mut w.tx;
        Self::lock_tenant(tx, tenant).await?;
        let current = Self::current_role(tx, tenant, user_id).await?;
        if current == "owner" && Self::owner_count(tx, tenant).await? <= 1 {
            return Err(StoreError::LastOwner);
        }
        for sql in [
            "DELETE FROM workspace_members WHERE tenant_id = $1 AND user_id = $2",
            "DELETE FROM memberships WHERE tenant_id = $1 AND user_id = $2",
        ] {
            sqlx::query(sql)
                .bind(tenant.as_str())
                .bind(user_id)
                .execute(&mut **tx)
                .await?;
        }
        Ok(())
    }

    async fn list_roles(&self, tenant: &TenantId) -> Result<Vec<Role>> {
        let rows = sqlx::query("SELECT name, permissions FROM roles WHERE tenant_id = $1 ORDER BY name")
            .bind(tenant.as_str())
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok(Role::custom(r.try_get("name")?, json(r, "permissions")?)))
            .collect()
    }

    async fn get_role(&self, tenant: &TenantId, name: &str) -> Result<Option<Role>> {
        sqlx::query("SELECT name, permissions FROM roles WHERE tenant_id = $1 AND name = $2")
            .bind(tenant.as_str())
            .bind(name)
            .fetch_optional(&self.pool)
            .await?
            .map(|r| Ok(Role::custom(r.try_get("name")?, json(&r, "permissions")?)))
            .transpose()
    }

    async fn create_role(&self, w: &mut Work, tenant: &TenantId, role: &Role) -> Result<()> {
        let r = sqlx::query("INSERT INTO roles (tenant_id, name, permissions, created_at) VALUES ($1, $2, $3, $4)")
            .bind(tenant.as_str())
            .bind(&role.name)
            .bind(to_json(&role.allow))
            .bind(now_secs())
            .execute(&mut *w.tx)
            .await
            .map(|_| ())
            .map_err(StoreError::from);
        match r {
            Err(e) if is_unique_violation(&e) => {
                Err(StoreError::Conflict(format!("role '{}' already exists", role.name)))
            }
            other => other,
        }
    }

    async fn delete_role(&self, w: &mut Work, tenant: &TenantId, name: &str) -> Result<()> {
        let tx = &mut w.tx;
        Self::lock_tenant(tx, tenant).await?;
        for (sql, what) in [
            (
                "SELECT user_id FROM memberships WHERE tenant_id = $1 AND role = $2 LIMIT 1",
                "members",
            ),
            (
                "SELECT id FROM api_keys WHERE tenant_id = $1 AND role = $2 AND revoked_at IS NULL LIMIT 1",
                "API keys",
            ),
            (
                "SELECT user_id FROM workspace_members WHERE tenant_id = $1 AND role = $2 LIMIT 1",
                "workspace members",
            ),
        ] {
            if sqlx::query(sql)
                .bind(tenant.as_str())
                .bind(name)
                .fetch_optional(&mut **tx)
                .await?
                .is_some()
            {
                return Err(StoreError::Conflict(format!("role '{name}' is still held by {what}")));
            }
        }
        let n = sqlx::query("DELETE FROM roles WHERE tenant_id = $1 AND name = $2")
            .bind(tenant.as_str())
            .bind(name)
            .execute(&mut **tx)
            .await?
            .rows_affected();
        if n == 0 {
            return Err(StoreError::NotFound("role"));
        }
        Ok(())
    }

    async fn list_workspaces(&self, tenant: &TenantId) -> Result<Vec<Workspace>> {
        let rows = sqlx::query("SELECT id, name, created_at FROM workspaces WHERE tenant_id = $1 ORDER BY id")
            .bind(tenant.as_str())
            .fetch_all(&self.pool)
            .await?;
        let mut conn = self.pool.acquire().await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let id: String = r.try_get("id")?;
            let members = Self::workspace_members(&mut conn, tenant, &id).await?;
            out.push(Workspace {
                id,
                name: r.try_get("name")?,
                created_at: r.try_get("created_at")?,
                members,
            });
        }
        Ok(out)
    }

    async fn get_workspace(&self, tenant: &TenantId, id: &str) -> Result<Workspace> {
        Self::workspace_in(&mut *self.pool.acquire().await?, tenant, id).await
    }

    async fn create_workspace(&self, w: &mut Work, tenant: &TenantId, id: &str, name: &str) -> Result<Workspace> {
        let r = sqlx::query("INSERT INTO workspaces (tenant_id, id, name, created_at) VALUES ($1, $2, $3, $4)")
            .bind(tenant.as_str())
            .bind(id)
            .bind(name)
            .bind(now_secs())
            .execute(&mut *w.tx)
            .await
            .map_err(StoreError::from);
        match r {
            Err(e) if is_unique_violation(&e) => {
                return Err(StoreError::Conflict(format!("workspace '{id}' already exists")))
            }
            other => other?,
        };
        Self::workspace_in(&mut w.tx, tenant, id).await
    }

    async fn rename_workspace(&self, w: &mut Work, tenant: &TenantId, id: &str, name: &str) -> Result<Workspace> {
        let n = sqlx::query("UPDATE workspaces SET name = $3 WHERE tenant_id = $1 AND id = $2")
            .bind(tenant.as_str())
            .bind(id)
            .bind(name)
            .execute(&mut *w.tx)
            .await?
            .rows_affected();
        if n == 0 {
            return Err(StoreError::NotFound("workspace"));
        }
        Self::workspace_in(&mut w.tx, tenant, id).await
    }

    async fn delete_workspace(&self, w: &mut Work, tenant: &TenantId, id: &str) -> Result<()> {
        let tx = &mut w.tx;
        sqlx::query("DELETE FROM workspace_members WHERE tenant_id = $1 AND workspace_id = $2")
            .bind(tenant.as_str())
            .bind(id)
            .execute(&mut **tx)
            .await?;
        let n = sqlx::query("DELETE FROM workspaces WHERE tenant_id = $1 AND id = $2")
            .bind(tenant.as_str())
            .bind(id)
            .execute(&mut **tx)
            .await?
            .rows_affected();
        if n == 0 {
            return Err(StoreError::NotFound("workspace"));
        }
        Ok(())
    }

    async fn add_workspace_member(
        &self,
        w: &mut Work,
        tenant: &TenantId,
        ws: &str,
        email: &Email,
        role: &str,
    ) -> Result<WorkspaceMember> {
        Self::workspace_in(&mut w.tx, tenant, ws).await?;
        // Someone who is not a member of the tenant is no one here: add them first.
        let user = sqlx::query("SELECT u.id, u.email, u.created_at FROM users u JOIN memberships m ON m.user_id = u.id WHERE m.tenant_id = $1 AND u.email = $2")
            .bind(tenant.as_str())
            .bind(email.as_str())
            .fetch_optional(&mut *w.tx)
            .await?
            .map(|r| user_from(&r))
            .transpose()?
            .ok_or(StoreError::NotFound("tenant member"))?;
        sqlx::query("INSERT INTO workspace_members (tenant_id, workspace_id, user_id, role, created_at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tenant_id, workspace_id, user_id) DO UPDATE SET role = excluded.role")
            .bind(tenant.as_str())
            .bind(ws)
            .bind(&user.id)
            .bind(role)
            .bind(now_secs())
            .execute(&mut *w.tx)
            .await?;
        Ok(WorkspaceMember {
            user_id: user.id,
            email: user.email,
            role: role.to_string(),
        })
    }

    async fn workspace_role(&self, tenant: &TenantId, ws: &str, user_id: &str) -> Result<Option<String>> {
        Ok(sqlx::query(
            "SELECT role FROM workspace_members WHERE tenant_id = $1 AND workspace_id = $2 AND user_id = $3",
        )
        .bind(tenant.as_str())
        .bind(ws)
        .bind(user_id)
        .fetch_optional(&self.pool)
        .await?
        .map(|r| r.try_get("role"))
        .transpose()?)
    }

    async fn create_key_within(&self, w: &mut Work, k: &ApiKey, max: Option<u64>) -> Result<()> {
        let tx = &mut w.tx;
        if max.is_some() {
            Self::lock_tenant(tx, &k.tenant_id).await?;
            Self::below_level(tx, &k.tenant_id, Countable::ActiveKeys, max).await?;
        }
        sqlx::query(&format!(
            "INSERT INTO api_keys ({KEY_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
        ))
        .bind(&k.id)
        .bind(k.tenant_id.as_str())
        .bind(&k.name)
        .bind(&k.prefix)
        .bind(&k.hash)
        .bind(&k.role)
        .bind(k.expires_at)
        .bind(to_json(&k.limits))
        .bind(k.created_at)
        .bind(k.revoked_at)
        .bind(k.last_used_at)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    async fn get_key(&self, id: &str) -> Result<Option<ApiKey>> {
        Self::key_in(&mut *self.pool.acquire().await?, id).await
    }

    async fn list_keys(&self, tenant: &TenantId, page: &PageRequest) -> Result<Page<ApiKey>> {
        let after = page
            .after
            .as_deref()
            .map(|c| self.cursors().open(c))
            .transpose()?
            .unwrap_or_default();
        let rows = sqlx::query(&format!(
            "SELECT {KEY_COLS} FROM api_keys WHERE tenant_id = $1 AND id > $2 ORDER BY id LIMIT {}",
            page.limit + 1
        ))
        .bind(tenant.as_str())
        .bind(after)
        .fetch_all(&self.pool)
        .await?;
        let items = rows.iter().map(key_from).collect::<Result<Vec<_>>>()?;
        Ok(self.cursors().page(items, page.limit, |k| k.id.clone()))
    }

    async fn revoke_key(&self, w: &mut Work, tenant: &TenantId, id: &str, at: i64) -> Result<ApiKey> {
        sqlx::query("UPDATE api_keys SET revoked_at = $3 WHERE tenant_id = $1 AND id = $2 AND revoked_at IS NULL")
            .bind(tenant.as_str())
            .bind(id)
            .bind(at)
            .execute(&mut *w.tx)
            .await?;
        match Self::key_in(&mut w.tx, id).await? {
            Some(k) if k.tenant_id == *tenant => Ok(k),
            _ => Err(StoreError::NotFound("api key")),
        }
    }

    async fn rotate_key(
        &self,
        w: &mut Work,
        tenant: &TenantId,
        id: &str,
        prefix: &str,
        hash_hex: &str,
    ) -> Result<ApiKey> {
        let key = match Self::key_in(&mut w.tx, id).await? {
            Some(k) if k.tenant_id == *tenant => k,
            _ => return Err(StoreError::NotFound("api key")),
        };
        if key.revoked_at.is_some() {
            return Err(StoreError::Conflict(
                "a revoked key cannot be rotated; create a new one".into(),
            ));
        }
        sqlx::query(
            "UPDATE api_keys SET prefix = $3, hash = $4 WHERE tenant_id = $1 AND id = $2 AND revoked_at IS NULL",
        )
        .bind(tenant.as_str())
        .bind(id)
        .bind(prefix)
        .bind(hash_hex)
        .execute(&mut *w.tx)
        .await?;
        Self::key_in(&mut w.tx, id)
            .await?
            .ok_or(StoreError::NotFound("api key"))
    }

    async fn touch_keys(&self, used: &[(String, i64)]) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        for (id, at) in used {
            sqlx::query(
                "UPDATE api_keys SET last_used_at = $2 WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < $2)",
            )
            .bind(id)
            .bind(*at)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn record_audit(&self, ev: &NewAuditEvent) -> Result<i64> {
        let mut w = self.begin().await?;
        let id = w.append(ev).await?;
        w.commit().await?;
        Ok(id)
    }

    async fn add_audit_counts(&self, repeats: &[(i64, u64)]) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        for (id, n) in repeats {
            sqlx::query("UPDATE audit_events SET count = count + $1 WHERE id = $2")
                .bind(i64::try_from(*n).unwrap_or(i64::MAX / 2))
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn list_audit(&self, f: &AuditFilter, page: &PageRequest) -> Result<Page<AuditEvent>> {
        let mut sql = String::from(
            "SELECT id, at, tenant_id, actor, action, detail, request_id, count FROM audit_events WHERE 1 = 1",
        );
        // Placeholders are numbered in the order their values are pushed.
        let mut binds: Vec<Bind> = Vec::new();
        let mut cond = |sql: &mut String, col: &str, op: &str, v: Bind| {
            binds.push(v);
            sql.push_str(&format!(" AND {col} {op} ${}", binds.len()));
        };
        for (col, v) in [("tenant_id", &f.tenant_id), ("action", &f.action), ("actor", &f.actor)] {
            if let Some(v) = v {
                cond(&mut sql, col, "=", Bind::Text(v.clone()));
            }
        }
        if let Some(s) = f.since {
            cond(&mut sql, "at", ">=", Bind::Int(s));
        }
        if let Some(u) = f.until {
            cond(&mut sql, "at", "<", Bind::Int(u));
        }
        if let Some(c) = &page.after {
            let id: i64 = self
                .cursors()
                .open(c)?
                .parse()
                .map_err(|_| StoreError::Invalid("cursor is not one this server issued".into()))?;
            cond(&mut sql, "id", "<", Bind::Int(id));
        }
        sql.push_str(&format!(" ORDER BY id DESC LIMIT {}", page.limit + 1));
        let mut q = sqlx::query(&sql);
        for b in binds {
            q = match b {
                Bind::Text(s) => q.bind(s),
                Bind::Int(i) => q.bind(i),
            };
        }
        let rows = q.fetch_all(&self.pool).await?;
        let items = rows
            .iter()
            .map(|r| {
                Ok(AuditEvent {
                    id: r.try_get("id")?,
                    at: r.try_get("at")?,
                    tenant_id: r.try_get("tenant_id")?,
                    actor: r.try_get("actor")?,
                    action: r.try_get("action")?,
                    detail: json(r, "detail")?,
                    request_id: r.try_get("request_id")?,
                    count: r.try_get::<i64, _>("count")?.max(1) as u64,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(self.cursors().page(items, page.limit, |e| e.id.to_string()))
    }

    async fn signing_keys(&self) -> Result<Vec<SigningKeyRecord>> {
        let rows = sqlx::query(
            "SELECT kid, private_key, public_x, created_at, generation FROM signing_keys ORDER BY generation",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let pk: String = r.try_get("private_key")?;
                Ok(SigningKeyRecord {
                    kid: r.try_get("kid")?,
                    private_pkcs8: base64::engine::general_purpose::STANDARD
                        .decode(pk)
                        .map_err(|_| StoreError::Invalid("stored signing key is not base64".into()))?,
                    public_x: r.try_get("public_x")?,
                    created_at: r.try_get("created_at")?,
                    generation: r.try_get("generation")?,
                })
            })
            .collect()
    }

    async fn add_signing_key(&self, k: &SigningKeyRecord) -> Result<()> {
        // A kid or a generation already taken (another node added it first) adds nothing.
        sqlx::query("INSERT INTO signing_keys (kid, private_key, public_x, created_at, generation) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING")
            .bind(&k.kid)
            .bind(base64::engine::general_purpose::STANDARD.encode(&k.private_pkcs8))
            .bind(&k.public_x)
            .bind(k.created_at)
            .bind(k.generation)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn load_counters(&self, tenant: &TenantId, since: i64) -> Result<Vec<CounterRow>> {
        self.load_counters_sql(tenant, since).await
    }

    async fn counters_in(
        &self,
        tenant: &TenantId,
        window: tenantd_core::Window,
        from: i64,
        to: i64,
    ) -> Result<Vec<CounterRow>> {
        self.counters_in_sql(tenant, window, from, to).await
    }

    async fn add_counters(&self, deltas: &[CounterRow]) -> Result<()> {
        self.add_counters_sql(deltas).await
    }

    async fn begin_usage(&self, tenant: &TenantId, keys: &[String]) -> Result<Box<dyn crate::UsageWrite>> {
        self.begin_usage_sql(tenant, keys).await
    }

    async fn record_event(&self, tenant: &TenantId, kind: &str, data: &serde_json::Value) -> Result<()> {
        self.record_event_sql(tenant, kind, data).await
    }

    async fn list_events(&self, tenant: &TenantId, page: &PageRequest) -> Result<Page<TenantEvent>> {
        self.list_events_sql(tenant, page).await
    }

    async fn plan_history(&self, tenant: &TenantId) -> Result<Vec<(i64, String)>> {
        self.plan_history_sql(tenant).await
    }

    async fn record_plan(&self, tenant: &TenantId, at: i64, plan: &str) -> Result<()> {
        self.record_plan_sql(tenant, at, plan).await
    }

    async fn set_levels(&self, levels: &[CounterRow]) -> Result<()> {
        self.set_levels_sql(levels).await
    }

    async fn count(&self, tenant: &TenantId, what: Countable) -> Result<u64> {
        what.count_in(&self.pool, tenant).await
    }

    async fn add_domain(&self, w: &mut Work, tenant: &TenantId, host: &str, token: &str) -> Result<crate::Domain> {
        crate::domains::add(w, tenant, host, token).await
    }

    async fn get_domain(&self, tenant: &TenantId, host: &str) -> Result<crate::Domain> {
        crate::domains::get(&mut *self.pool.acquire().await?, tenant, host).await
    }

    async fn list_domains(&self, tenant: &TenantId) -> Result<Vec<crate::Domain>> {
        self.list_domains_sql(tenant).await
    }

    async fn verify_domain(&self, w: &mut Work, tenant: &TenantId, host: &str, at: i64) -> Result<crate::Domain> {
        crate::domains::verify(w, tenant, host, at).await
    }

    async fn delete_domain(&self, w: &mut Work, tenant: &TenantId, host: &str) -> Result<()> {
        crate::domains::delete(w, tenant, host).await
    }

    async fn verified_domains(&self) -> Result<Vec<(String, TenantId)>> {
        self.verified_domains_sql().await
    }

    async fn publish(&self, topic: &str) -> Result<()> {
        self.publish_topic(topic).await
    }

    async fn subscribe(&self) -> Result<Option<tokio::sync::mpsc::Receiver<crate::notify::Invalidation>>> {
        self.subscribe_topics().await
    }

    async fn operator_key_hash(&self) -> Result<Option<String>> {
        Ok(sqlx::query("SELECT hash FROM operator_keys WHERE id = 'operator'")
            .fetch_optional(&self.pool)
            .await?
            .map(|r| r.try_get("hash"))
            .transpose()?)
    }

    async fn clear_operator_key_hash(&self) -> Result<bool> {
        let n = sqlx::query("DELETE FROM operator_keys WHERE id = 'operator'")
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(n > 0)
    }

    async fn set_operator_key_hash(&self, hash_hex: &str) -> Result<bool> {
        let n = sqlx::query(
            "INSERT INTO operator_keys (id, hash, created_at) VALUES ('operator', $1, $2) ON CONFLICT (id) DO NOTHING",
        )
        .bind(hash_hex)
        .bind(now_secs())
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n == 1)
    }
}

/// A text or integer bind value, for queries built from optional filters.
enum Bind {
    Text(String),
    Int(i64),
}

/// Lower-case hex of `bytes`.
fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
