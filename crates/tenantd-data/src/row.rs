//! The `row` tier: every tenant's records in one shared table, `tenant_id` leading its
//! primary key. [`RowStore::scope`] is the only way to reach them; on PostgreSQL
//! row-level security enforces the same scope inside the database.
use serde::Serialize;
use serde_json::Value;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Connection, Row};
use tenantd_core::{now_secs, TenantId};

/// The PostgreSQL role the data plane connects as: it owns nothing and cannot bypass
/// row-level security. tenantd creates it (without a password) when it is missing.
pub const APP_ROLE: &str = "tenantd_data";

/// Serialises concurrent preparations of one database (`pg_advisory_xact_lock`).
const PREPARE_LOCK: i64 = 0x7465_6e61_6e74_6401;

/// The row tier's schema on PostgreSQL, applied by the owner (idempotent).
const POSTGRES_SCHEMA: &str = r#"
CREATE SCHEMA IF NOT EXISTS tenant_data;
CREATE TABLE IF NOT EXISTS tenant_data.records (
    tenant_id  text   NOT NULL,
    collection text   NOT NULL,
    id         text   NOT NULL,
    doc        jsonb  NOT NULL,
    version    bigint NOT NULL,
    size_bytes bigint NOT NULL,
    created_at bigint NOT NULL,
    updated_at bigint NOT NULL,
    PRIMARY KEY (tenant_id, collection, id)
);
ALTER TABLE tenant_data.records ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenant_data.records FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenant_isolation ON tenant_data.records;
CREATE POLICY tenant_isolation ON tenant_data.records
    USING (tenant_id = current_setting('tenantd.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('tenantd.tenant_id', true));
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'tenantd_data') THEN
        CREATE ROLE tenantd_data LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
END $$;
GRANT USAGE ON SCHEMA tenant_data TO tenantd_data;
GRANT SELECT, INSERT, UPDATE, DELETE ON tenant_data.records TO tenantd_data;
"#;

/// The row tier's schema on SQLite (its own file next to the catalog).
const SQLITE_SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS records (
    tenant_id  TEXT    NOT NULL,
    collection TEXT    NOT NULL,
    id         TEXT    NOT NULL,
    doc        TEXT    NOT NULL,
    version    INTEGER NOT NULL,
    size_bytes INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, collection, id)
) WITHOUT ROWID;
"#;

/// Why the data plane failed.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The database role would let a query see other tenants' rows.
    #[error("{0}")]
    Unsafe(String),
    /// Input the data plane refuses.
    #[error("{0}")]
    Invalid(String),
    /// The database failed.
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    /// A stored document did not parse.
    #[error("corrupt stored document: {0}")]
    Corrupt(#[from] serde_json::Error),
}

/// One JSON record of a tenant's collection.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Record {
    /// Its collection.
    pub collection: String,
    /// Its id within the collection.
    pub id: String,
    /// The document.
    pub doc: Value,
    /// 1 when created, one more on each write (the ETag).
    pub version: i64,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub updated_at: i64,
}

/// The SQL that differs between the two databases.
struct Dialect {
    postgres: bool,
    table: &'static str,
    /// The bound document (`$4`) as the column stores it.
    doc_in: &'static str,
    /// The stored document as text.
    doc_out: &'static str,
}

const POSTGRES: Dialect = Dialect {
    postgres: true,
    table: "tenant_data.records",
    doc_in: "CAST($4 AS jsonb)",
    doc_out: "CAST(doc AS text)",
};

const SQLITE: Dialect = Dialect {
    postgres: false,
    table: "records",
    doc_in: "$4",
    doc_out: "doc",
};

/// The `row` tier's records.
pub struct RowStore {
    pool: AnyPool,
    dialect: &'static Dialect,
}

/// `url` with its user replaced by `user` (and no password): how tenantd reaches
/// PostgreSQL as [`APP_ROLE`] when no URL is given for it.
pub fn with_user(url: &str, user: &str) -> Result<String, DataError> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| DataError::Invalid(format!("'{url}' is not a database URL")))?;
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let host = match rest[..authority_end].rfind('@') {
        Some(at) => &rest[at + 1..],
        None => rest,
    };
    Ok(format!("{scheme}://{user}@{host}"))
}

fn record(row: &AnyRow) -> Result<Record, DataError> {
    let doc: String = row.try_get("doc")?;
    Ok(Record {
        collection: row.try_get("collection")?,
        id: row.try_get("id")?,
        doc: serde_json::from_str(&doc)?,
        version: row.try_get("version")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

impl RowStore {
    /// Opens the row tier.
    ///
    /// - `postgres://…`: prepares the schema, its row-level security and the
    ///   [`APP_ROLE`] role with `url`'s (owning) credentials, then connects as `app_url`,
    ///   or as [`APP_ROLE`] on `url`'s server when `app_url` is `None`. Refuses a role
    ///   that is a superuser, can bypass row-level security, or owns anything.
    /// - `sqlite://…`: the file is created when missing.
    pub async fn open(url: &str, app_url: Option<&str>) -> Result<Self, DataError> {
        sqlx::any::install_default_drivers();
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let mut owner = sqlx::AnyConnection::connect(url).await?;
            let mut tx = owner.begin().await?;
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(PREPARE_LOCK)
                .execute(&mut *tx)
                .await?;
            sqlx::raw_sql(POSTGRES_SCHEMA).execute(&mut *tx).await?;
            tx.commit().await?;
            let app_url = match app_url {
                Some(u) => u.to_string(),
                None => with_user(url, APP_ROLE)?,
            };
            let pool = AnyPoolOptions::new().max_connections(16).connect(&app_url).await?;
            let store = Self {
                pool,
                dialect: &POSTGRES,
            };
            store.refuse_unsafe_role().await?;
            return Ok(store);
        }
        if !url.starts_with("sqlite:") {
            return Err(DataError::Invalid(format!(
                "'{url}' is neither a postgres:// nor a sqlite:// URL"
            )));
        }
        let sep = if url.contains('?') { '&' } else { '?' };
        let pool = AnyPoolOptions::new()
            .max_connections(1)
            .connect(&format!("{url}{sep}mode=rwc"))
            .await?;
        sqlx::raw_sql(SQLITE_SCHEMA).execute(&pool).await?;
        Ok(Self { pool, dialect: &SQLITE })
    }

    /// `Unsafe` when the role the store connects as could read across tenants.
    async fn refuse_unsafe_role(&self) -> Result<(), DataError> {
        let row = sqlx::query(
            "SELECT CAST(current_user AS text) AS name, r.rolsuper AS sup, r.rolbypassrls AS bypass, \
             (SELECT COUNT(*) FROM pg_class c WHERE c.relowner = r.oid) AS owned \
             FROM pg_roles r WHERE r.rolname = current_user",
        )
        .fetch_one(&self.pool)
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

    /// The tenant's records: the only way to reach them.
    pub fn scope(&self, tenant: TenantId) -> Scope<'_> {
        Scope { store: self, tenant }
    }
}

/// One tenant's records. Every statement names the tenant, and on PostgreSQL runs in a
/// transaction that sets `tenantd.tenant_id` for row-level security.
pub struct Scope<'a> {
    store: &'a RowStore,
    tenant: TenantId,
}

fn check_name(what: &str, v: &str) -> Result<(), DataError> {
    let ok = (1..=128).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(DataError::Invalid(format!(
            "{what} must be 1 to 128 letters, digits, '_', '-' or '.'"
        )))
    }
}

impl Scope<'_> {
    /// The tenant.
    pub fn tenant(&self) -> &TenantId {
        &self.tenant
    }

    /// A transaction for this tenant (with `tenantd.tenant_id` set on PostgreSQL).
    async fn begin(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>, DataError> {
        let mut tx = self.store.pool.begin().await?;
        if self.store.dialect.postgres {
            sqlx::query("SELECT set_config('tenantd.tenant_id', $1, true)")
                .bind(self.tenant.as_str())
                .execute(&mut *tx)
                .await?;
        }
        Ok(tx)
    }

    /// Runs a write of `doc` (`$1`..`$6`: tenant, collection, id, document, its size, now;
    /// `$7`: `expected` when given) that returns the record as written.
    async fn write(
        &self,
        statement: &str,
        collection: &str,
        id: &str,
        doc: &Value,
        expected: Option<i64>,
    ) -> Result<Option<Record>, DataError> {
        check_name("the collection", collection)?;
        check_name("the record id", id)?;
        let d = self.store.dialect;
        let text = serde_json::to_string(doc)?;
        let sql = format!(
            "{} RETURNING collection, id, {} AS doc, version, created_at, updated_at",
            statement.replace("{t}", d.table).replace("{doc_in}", d.doc_in),
            d.doc_out
        );
        let mut tx = self.begin().await?;
        let mut q = sqlx::query(&sql)
            .bind(self.tenant.as_str())
            .bind(collection)
            .bind(id)
            .bind(&text)
            .bind(text.len() as i64)
            .bind(now_secs());
        if let Some(v) = expected {
            q = q.bind(v);
        }
        let row = q.fetch_optional(&mut *tx).await?;
        let r = row.as_ref().map(record).transpose()?;
        tx.commit().await?;
        Ok(r)
    }

    /// Creates or replaces the record; its version goes up by one.
    pub async fn put(&self, collection: &str, id: &str, doc: &Value) -> Result<Record, DataError> {
        self.write(
            "INSERT INTO {t} (tenant_id, collection, id, doc, version, size_bytes, created_at, updated_at) \
             VALUES ($1, $2, $3, {doc_in}, 1, $5, $6, $6) \
             ON CONFLICT (tenant_id, collection, id) DO UPDATE SET doc = excluded.doc, \
             version = {t}.version + 1, size_bytes = excluded.size_bytes, updated_at = excluded.updated_at",
            collection,
            id,
            doc,
            None,
        )
        .await?
        // An upsert always returns its row.
        .ok_or(DataError::Db(sqlx::Error::RowNotFound))
    }

    /// Replaces the record's document if its version is still `expected`; `None` when
    /// the tenant has no such record or it has changed since.
    pub async fn update(
        &self,
        collection: &str,
        id: &str,
        doc: &Value,
        expected: i64,
    ) -> Result<Option<Record>, DataError> {
        self.write(
            "UPDATE {t} SET doc = {doc_in}, version = version + 1, size_bytes = $5, updated_at = $6 \
             WHERE tenant_id = $1 AND collection = $2 AND id = $3 AND version = $7",
            collection,
            id,
            doc,
            Some(expected),
        )
        .await
    }

    /// The record, if this tenant has it.
    pub async fn get(&self, collection: &str, id: &str) -> Result<Option<Record>, DataError> {
        let d = self.store.dialect;
        let mut tx = self.begin().await?;
        let row = sqlx::query(&format!(
            "SELECT collection, id, {doc_out} AS doc, version, created_at, updated_at FROM {t} \
             WHERE tenant_id = $1 AND collection = $2 AND id = $3",
            t = d.table,
            doc_out = d.doc_out,
        ))
        .bind(self.tenant.as_str())
        .bind(collection)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        row.as_ref().map(record).transpose()
    }

    /// Up to `limit` records of the collection with ids after `after`, by id.
    pub async fn list(&self, collection: &str, after: Option<&str>, limit: u32) -> Result<Vec<Record>, DataError> {
        let d = self.store.dialect;
        let mut tx = self.begin().await?;
        let rows = sqlx::query(&format!(
            "SELECT collection, id, {doc_out} AS doc, version, created_at, updated_at FROM {t} \
             WHERE tenant_id = $1 AND collection = $2 AND id > $3 ORDER BY id LIMIT {limit}",
            t = d.table,
            doc_out = d.doc_out,
            limit = limit.clamp(1, 1000),
        ))
        .bind(self.tenant.as_str())
        .bind(collection)
        .bind(after.unwrap_or(""))
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.iter().map(record).collect()
    }

    /// Deletes the record; `false` if this tenant has no such record.
    pub async fn delete(&self, collection: &str, id: &str) -> Result<bool, DataError> {
        let mut tx = self.begin().await?;
        let n = sqlx::query(&format!(
            "DELETE FROM {} WHERE tenant_id = $1 AND collection = $2 AND id = $3",
            self.store.dialect.table
        ))
        .bind(self.tenant.as_str())
        .bind(collection)
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(n > 0)
    }
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
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("x", "orders").is_ok());
        assert!(check_name("x", "a.b-c_1").is_ok());
        for bad in ["", "a b", "a/b", "é", &"x".repeat(129)] {
            assert!(check_name("x", bad).is_err(), "{bad}");
        }
    }
}
