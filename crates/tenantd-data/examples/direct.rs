//! The row tier's records without tenantd's HTTP API, for `bench/records.sh`, from
//! `CONCURRENCY` tasks for `SECONDS`, as the `tenantd_data` role under the same
//! row-level security. Prints operations per second.
//!
//! Two clients:
//! - `sqlx-get`, `sqlx-put`: straight over sqlx, as an application would write it: a
//!   `PgPool` with sqlx's defaults, and per operation a transaction that sets
//!   `tenantd.tenant_id` and the `search_path` with `set_config`, runs the statement
//!   tenantd runs, and commits (a write also adds its bytes to the tenant's storage row,
//!   as tenantd does).
//! - `get`, `put`: tenantd's own data crate in-process (its pool, its transactions), so
//!   that the HTTP API's own cost can be read off too.
//!
//! `get` reads record `ID` (as `GET …/records/{rid}`); `put` creates a new record each
//! time (as `POST …/records`; ids are new on every run). `POOL` is the pool's size
//! (tenantd's `data_pool_size`; default 16).
//!
//! `cargo run --release -p tenantd-data --example direct -- [sqlx-]get|[sqlx-]put URL TENANT COLLECTION ID CONCURRENCY SECONDS [POOL]`
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tenantd_core::{Isolation, TenantId};
use tenantd_data::{DataOptions, DataStore};

/// What the tasks run against.
enum Client {
    Sqlx(sqlx::PgPool),
    Crate(Box<DataStore>),
}

const SELECT: &str = "SELECT collection, id, CAST(doc AS text) AS doc, version, created_at, updated_at \
                      FROM records WHERE tenant_id = $1 AND collection = $2 AND id = $3";
const INSERT: &str = "INSERT INTO records (tenant_id, collection, id, doc, version, size_bytes, created_at, updated_at) \
                      VALUES ($1, $2, $3, CAST($4 AS jsonb), 1, $5, $6, $6) ON CONFLICT (tenant_id, collection, id) DO NOTHING \
                      RETURNING collection, id, CAST(doc AS text) AS doc, version, created_at, updated_at";
const SETTLE: &str = "UPDATE storage SET bytes = bytes + $2 WHERE tenant_id = $1 AND frozen = 0 RETURNING bytes";

/// A record as the application would read it.
#[derive(sqlx::FromRow)]
#[allow(dead_code)] // read, not used
struct Row {
    collection: String,
    id: String,
    doc: String,
    version: i64,
    created_at: i64,
    updated_at: i64,
}

impl Client {
    async fn get(&self, tenant: TenantId, collection: &str, id: &str) -> Result<(), Box<dyn std::error::Error>> {
        match self {
            Client::Crate(store) => {
                let r = store
                    .scope(tenant, Some(Isolation::Row))
                    .await?
                    .get_record(collection, id)
                    .await?;
                r.ok_or("the record is missing")?;
            }
            Client::Sqlx(pool) => {
                let mut tx = Self::begin(pool, tenant).await?;
                let row: Option<Row> = sqlx::query_as(SELECT)
                    .bind(tenant.as_str())
                    .bind(collection)
                    .bind(id)
                    .fetch_optional(&mut *tx)
                    .await?;
                tx.commit().await?;
                let row = row.ok_or("the record is missing")?;
                let _doc: serde_json::Value = serde_json::from_str(&row.doc)?;
            }
        }
        Ok(())
    }

    async fn put(
        &self,
        tenant: TenantId,
        collection: &str,
        id: &str,
        doc: &serde_json::Value,
    ) -> Result<(), Box<dyn std::error::Error>> {
        match self {
            Client::Crate(store) => {
                let scope = store.scope(tenant, Some(Isolation::Row)).await?;
                scope.put_record(collection, id, doc, None).await?;
            }
            Client::Sqlx(pool) => {
                let text = doc.to_string();
                let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs() as i64;
                let mut tx = Self::begin(pool, tenant).await?;
                let row: Option<Row> = sqlx::query_as(INSERT)
                    .bind(tenant.as_str())
                    .bind(collection)
                    .bind(id)
                    .bind(&text)
                    .bind(text.len() as i64)
                    .bind(now)
                    .fetch_optional(&mut *tx)
                    .await?;
                // Read back as the crate reads it.
                let row = row.ok_or("the record id was taken")?;
                let _doc: serde_json::Value = serde_json::from_str(&row.doc)?;
                let bytes: Option<i64> = sqlx::query_scalar(SETTLE)
                    .bind(tenant.as_str())
                    .bind(text.len() as i64)
                    .fetch_optional(&mut *tx)
                    .await?;
                bytes.ok_or("the tenant has no storage row yet")?;
                tx.commit().await?;
            }
        }
        Ok(())
    }

    /// A transaction with the tenant and the row tier's schema set for it.
    async fn begin(
        pool: &sqlx::PgPool,
        tenant: TenantId,
    ) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
        let mut tx = pool.begin().await?;
        sqlx::query("SELECT set_config('tenantd.tenant_id', $1, true), set_config('search_path', 'tenant_data', true)")
            .bind(tenant.as_str())
            .execute(&mut *tx)
            .await?;
        Ok(tx)
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (args, pool) = match args.as_slice() {
        [rest @ .., pool] if rest.len() == 7 => (rest, pool.parse()?),
        all => (all, tenantd_data::DEFAULT_POOL_SIZE),
    };
    let [mode, url, tenant, collection, id, concurrency, seconds] = args else {
        return Err("usage: direct [sqlx-]get|[sqlx-]put URL TENANT COLLECTION ID CONCURRENCY SECONDS [POOL]".into());
    };
    let (plain, op) = match mode.strip_prefix("sqlx-") {
        Some(op) => (true, op),
        None => (false, mode.as_str()),
    };
    let put = match op {
        "get" => false,
        "put" => true,
        _ => return Err("the mode is get, put, sqlx-get or sqlx-put".into()),
    };
    let client = Arc::new(if plain {
        let url = tenantd_data::with_user(url, tenantd_data::APP_ROLE)?;
        Client::Sqlx(
            sqlx::postgres::PgPoolOptions::new()
                .max_connections(pool)
                .connect(&url)
                .await?,
        )
    } else {
        let opts = DataOptions {
            pool_size: pool,
            ..DataOptions::new(url.as_str())
        };
        Client::Crate(Box::new(DataStore::open(opts).await?))
    });
    let doc = serde_json::json!({"customer": "c-17", "total": 120, "status": "open",
        "lines": [{"sku": "a", "qty": 2}, {"sku": "b", "qty": 1}]});
    let tenant = TenantId::parse(tenant)?;
    // New ids on every run, so that every put creates a record.
    let run = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos();
    let deadline = Instant::now() + Duration::from_secs(seconds.parse()?);
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for task in 0..concurrency.parse::<usize>()? {
        let (client, done, collection, id, doc, mode) = (
            client.clone(),
            done.clone(),
            collection.clone(),
            id.clone(),
            doc.clone(),
            mode.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < deadline {
                let r = if put {
                    n += 1;
                    client
                        .put(tenant, &collection, &format!("{mode}_{run}_{task}_{n}"), &doc)
                        .await
                } else {
                    client.get(tenant, &collection, &id).await
                };
                if let Err(e) = r {
                    panic!("{mode} failed: {e}");
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let started = Instant::now();
    for t in tasks {
        t.await?;
    }
    let n = done.load(Ordering::Relaxed) as f64;
    println!("{:.0}", n / started.elapsed().as_secs_f64());
    Ok(())
}
