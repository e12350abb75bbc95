//! The tables a location holds, as numbered migrations, and how they are applied.
//!
//! Every location (the row tier's shared schema, a tenant's own schema, a tenant's own
//! database) has the same tables, each led by `tenant_id`; on PostgreSQL each also has
//! row-level security on `tenantd.tenant_id` and grants to [`APP_ROLE`](crate::APP_ROLE)
//! only. A location records the migrations it has in `data_migrations`, in the same
//! transaction as the migration, so a crash leaves each location at a whole version.
use crate::DataError;
use tenantd_core::now_secs;

/// The data tables (the storage level last).
pub(crate) const TABLES: [&str; 5] = ["records", "blobs", "blob_chunks", "cache_entries", "storage"];

/// One migration: its version and its statements, with `{json}`, `{bytes}` and
/// `{without_rowid}` where the two databases differ ([`spelled`]).
pub(crate) struct Migration {
    pub version: i64,
    pub sql: &'static str,
}

/// All migrations, in order. Add new ones at the end; never change what one creates
/// once it has shipped (migration 1 was written once per database until it was folded
/// into one template, creating the same columns with the same affinities).
pub(crate) const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        sql: r#"
CREATE TABLE IF NOT EXISTS records (
    tenant_id text NOT NULL, collection text NOT NULL, id text NOT NULL,
    doc {json} NOT NULL, version bigint NOT NULL, size_bytes bigint NOT NULL,
    created_at bigint NOT NULL, updated_at bigint NOT NULL,
    PRIMARY KEY (tenant_id, collection, id)){without_rowid};
CREATE TABLE IF NOT EXISTS blobs (
    tenant_id text NOT NULL, path text NOT NULL, blob_id text NOT NULL,
    content_type text NOT NULL, size_bytes bigint NOT NULL, sha256 text NOT NULL,
    version bigint NOT NULL, created_at bigint NOT NULL, updated_at bigint NOT NULL,
    PRIMARY KEY (tenant_id, path)){without_rowid};
CREATE TABLE IF NOT EXISTS blob_chunks (
    tenant_id text NOT NULL, blob_id text NOT NULL, seq bigint NOT NULL,
    data {bytes} NOT NULL, created_at bigint NOT NULL,
    PRIMARY KEY (tenant_id, blob_id, seq));
CREATE TABLE IF NOT EXISTS cache_entries (
    tenant_id text NOT NULL, key text NOT NULL, value text NOT NULL, tags text NOT NULL,
    expires_at bigint, size_bytes bigint NOT NULL, version bigint NOT NULL,
    updated_at bigint NOT NULL,
    PRIMARY KEY (tenant_id, key)){without_rowid};
CREATE INDEX IF NOT EXISTS cache_entries_expiry ON cache_entries (tenant_id, expires_at);
CREATE TABLE IF NOT EXISTS storage (
    tenant_id text PRIMARY KEY, bytes bigint NOT NULL, frozen bigint NOT NULL);
"#,
    },
    // Finding uploads that were never committed: chunks by age, blobs by chunk id.
    Migration {
        version: 2,
        sql: "
CREATE INDEX IF NOT EXISTS blob_chunks_age ON blob_chunks (tenant_id, created_at);
CREATE INDEX IF NOT EXISTS blobs_blob_id ON blobs (tenant_id, blob_id);
",
    },
    // Encryption at rest: the data key version each value is sealed under (0: in the
    // clear, written before encryption; the `tenantd.reseal` job seals those).
    Migration {
        version: 3,
        sql: "
ALTER TABLE records ADD COLUMN key_version bigint NOT NULL DEFAULT 0;
ALTER TABLE blob_chunks ADD COLUMN key_version bigint NOT NULL DEFAULT 0;
ALTER TABLE cache_entries ADD COLUMN key_version bigint NOT NULL DEFAULT 0;
",
    },
];

/// A migration's statements for PostgreSQL (`pg`) or SQLite: documents are `jsonb` or
/// `TEXT`, bytes `bytea` or `BLOB`, and SQLite's keyed tables are `WITHOUT ROWID`.
/// (`bigint` and `text` have the integer and text affinities on SQLite.)
fn spelled(sql: &str, pg: bool) -> String {
    let pick = |postgres, sqlite| if pg { postgres } else { sqlite };
    sql.replace("{json}", pick("jsonb", "TEXT"))
        .replace("{bytes}", pick("bytea", "BLOB"))
        .replace("{without_rowid}", pick("", " WITHOUT ROWID"))
}

/// Creates [`APP_ROLE`](crate::APP_ROLE) on a server when it is missing (no password,
/// no privilege beyond logging in).
pub(crate) const CREATE_APP_ROLE: &str = r#"
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'tenantd_data') THEN
        CREATE ROLE tenantd_data LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
END $$;
"#;

/// `name` as a quoted PostgreSQL identifier.
pub(crate) fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Row-level security and the app role's grants on every table of `schema`.
fn secure(schema: &str) -> String {
    let mut sql = format!("GRANT USAGE ON SCHEMA {} TO tenantd_data;\n", ident(schema));
    for t in TABLES {
        sql.push_str(&format!(
            "ALTER TABLE {t} ENABLE ROW LEVEL SECURITY;
ALTER TABLE {t} FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenant_isolation ON {t};
CREATE POLICY tenant_isolation ON {t}
    USING (tenant_id = current_setting('tenantd.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('tenantd.tenant_id', true));
GRANT SELECT, INSERT, UPDATE, DELETE ON {t} TO tenantd_data;
"
        ));
    }
    sql
}

/// The advisory lock of one schema's DDL (its migrations, and its drop): a location
/// must not be checked, migrated or created again while it is being dropped. Stable
/// across processes and builds (FNV-1a of the name).
pub(crate) fn ddl_lock(schema: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in schema.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    h as i64
}

/// Brings a location up to the newest migration, with the owner's connection: on
/// PostgreSQL in `schema`, on SQLite in the file. A missing schema is created only when
/// `create`; otherwise it is `Moving` (the tenant's data has moved on, and a request that
/// came late must not bring the old place back). Returns how many migrations it applied.
/// Safe to run from several processes at once.
pub(crate) fn migrate<'a>(
    pool: &'a sqlx::AnyPool,
    schema: Option<&'a str>,
    create: bool,
) -> futures_util::future::BoxFuture<'a, Result<usize, DataError>> {
    // Boxed: the compiler cannot otherwise prove the future `Send` for every caller.
    Box::pin(migrate_in(pool, schema, create))
}

/// Whether the location is there and at the newest version, checked while no drop or
/// migration runs.
async fn up_to_date(pool: &sqlx::AnyPool, schema: Option<&str>, create: bool) -> Result<bool, DataError> {
    let mut tx = pool.begin().await?;
    let table = match schema {
        Some(s) => {
            sqlx::query("SELECT pg_advisory_xact_lock_shared($1)")
                .bind(ddl_lock(s))
                .execute(&mut *tx)
                .await?;
            if !schema_exists(&mut tx, s).await? {
                return if create { Ok(false) } else { Err(DataError::Moving) };
            }
            format!("{}.data_migrations", ident(s))
        }
        None => "data_migrations".to_string(),
    };
    let present = match schema {
        Some(_) => "SELECT CAST(COUNT(*) AS bigint) FROM pg_class WHERE oid = to_regclass($1)",
        None => "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = $1",
    };
    let mut current = false;
    if sqlx::query_scalar::<_, i64>(present)
        .bind(&table)
        .fetch_one(&mut *tx)
        .await?
        > 0
    {
        let newest = MIGRATIONS.last().map_or(0, |m| m.version);
        let have: Option<i64> = sqlx::query_scalar(&format!("SELECT MAX(version) FROM {table}"))
            .fetch_one(&mut *tx)
            .await?;
        current = have.unwrap_or(0) >= newest;
    }
    tx.commit().await?;
    Ok(current)
}

/// Whether schema `s` exists.
async fn schema_exists(tx: &mut sqlx::Transaction<'static, sqlx::Any>, s: &str) -> Result<bool, DataError> {
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM pg_namespace WHERE nspname = $1")
        .bind(s)
        .fetch_one(&mut **tx)
        .await?;
    Ok(n > 0)
}

async fn migrate_in(pool: &sqlx::AnyPool, schema: Option<&str>, create: bool) -> Result<usize, DataError> {
    // Up to date already (the common case): no DDL.
    if up_to_date(pool, schema, create).await? {
        return Ok(0);
    }
    let mut tx = pool.begin().await?;
    if let Some(s) = schema {
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(ddl_lock(s))
            .execute(&mut *tx)
            .await?;
        if !create && !schema_exists(&mut tx, s).await? {
            return Err(DataError::Moving);
        }
        let ddl = format!("{CREATE_APP_ROLE}\nCREATE SCHEMA IF NOT EXISTS {};", ident(s));
        sqlx::Executor::execute(&mut *tx, ddl.as_str()).await?;
        sqlx::query("SELECT set_config('search_path', $1, true)")
            .bind(ident(s))
            .execute(&mut *tx)
            .await?;
    }
    sqlx::Executor::execute(
        &mut *tx,
        "CREATE TABLE IF NOT EXISTS data_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)",
    )
    .await?;
    let have: Vec<i64> = sqlx::query_scalar("SELECT version FROM data_migrations")
        .fetch_all(&mut *tx)
        .await?;
    let pending: Vec<&Migration> = MIGRATIONS.iter().filter(|m| !have.contains(&m.version)).collect();
    let mut applied = 0;
    for m in pending {
        let sql = spelled(m.sql, schema.is_some());
        sqlx::Executor::execute(&mut *tx, sql.as_str()).await?;
        sqlx::query("INSERT INTO data_migrations (version, applied_at) VALUES ($1, $2)")
            .bind(m.version)
            .bind(now_secs())
            .execute(&mut *tx)
            .await?;
        applied += 1;
    }
    if let Some(s) = schema {
        if applied > 0 {
            let sql = secure(s);
            sqlx::Executor::execute(&mut *tx, sql.as_str()).await?;
        }
    }
    tx.commit().await?;
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(ident("tenant_acme"), "\"tenant_acme\"");
        assert_eq!(ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(ddl_lock("tenant_data"), ddl_lock("tenant_data"));
        assert_ne!(ddl_lock("tenant_a"), ddl_lock("tenant_b"));
        assert!(secure("s").contains("FORCE ROW LEVEL SECURITY"));
    }

    #[test]
    fn migrations_are_spelled_for_each_database() {
        let (pg, lite) = (spelled(MIGRATIONS[0].sql, true), spelled(MIGRATIONS[0].sql, false));
        assert!(pg.contains("doc jsonb") && pg.contains("data bytea") && !pg.contains("ROWID"));
        assert!(lite.contains("doc TEXT") && lite.contains("data BLOB"));
        assert_eq!(lite.matches("WITHOUT ROWID").count(), 3);
        assert!(!pg.contains('{') && !lite.contains('{'), "every placeholder is filled");
    }
}
