//! A location: one place tenant data lives (the row tier's shared tables, a tenant's
//! schema, a tenant's database), and every statement the data plane runs there.
//!
//! Every statement names the tenant, and on PostgreSQL runs in a transaction that sets
//! `tenantd.tenant_id` (for row-level security) and the `search_path` (for the tier).
//! Every write ends by adding its bytes to the tenant's `storage` row, which it holds
//! from that statement to the commit ([`Location::settle`]): that keeps the storage
//! level exact across nodes, and is how a tier move freezes writes (`frozen`).
//!
//! Here: transactions, the storage level and keyed writes; `pool`: the request pools;
//! `records`, `blobs` and `cache`: the statements of each.

mod blobs;
mod cache;
mod pool;
mod records;

// Serialized as the API answers them: times in RFC 3339, fields in alphabetical order
// (as the API has always written them).
pub use blobs::Blob;
pub use cache::{CacheEntry, CacheSelector};
pub use records::Record;

pub(crate) use pool::{request_pool, Lost};

use crate::{DataError, Written};
use pool::{connection_lost, LOST_RETRIES};
use sqlx::any::AnyRow;
use sqlx::{AnyPool, Row};
use std::collections::HashMap;
use std::sync::{Arc, LazyLock, RwLock};
use tenantd_core::TenantId;

type Tx = sqlx::Transaction<'static, sqlx::Any>;

/// One statement parameter.
#[derive(Clone, Copy)]
pub(crate) enum Arg<'a> {
    Text(&'a str),
    Int(i64),
    OptInt(Option<i64>),
    Bytes(&'a [u8]),
}

pub(crate) type Query<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>;

/// `q` with these parameters bound, in order.
pub(crate) fn bind<'q>(mut q: Query<'q>, args: impl IntoIterator<Item = Arg<'q>>) -> Query<'q> {
    for a in args {
        q = match a {
            Arg::Text(v) => q.bind(v),
            Arg::Int(v) => q.bind(v),
            Arg::OptInt(v) => q.bind(v),
            Arg::Bytes(v) => q.bind(v),
        };
    }
    q
}

/// A keyed write: the row written, and the row it replaced (its `size_bytes` and what
/// `lock` selected), if any.
struct Put {
    row: AnyRow,
    prior: Option<AnyRow>,
}

impl Put {
    /// How much the write changed the tenant's storage.
    fn delta(&self, size: i64) -> Result<i64, DataError> {
        match &self.prior {
            Some(p) => Ok(size - p.try_get::<i64, _>("size_bytes")?),
            None => Ok(size),
        }
    }
}

/// A place tenant data lives.
pub(crate) struct Location {
    /// As the placement table names it.
    pub name: String,
    pub pool: AnyPool,
    pub pg: bool,
    /// The quoted schema (PostgreSQL).
    pub search_path: Option<String>,
    /// When `pool` last lost a connection (shared with the pool's `before_acquire`).
    pub lost: Arc<Lost>,
}

/// `template` in PostgreSQL's (`pg`) or SQLite's spelling: `{record_cols}`,
/// `{blob_cols}` and `{cache_cols}` are the columns the row readers take, `{doc_in}` is
/// parameter `$4` as a document, `{lock}` locks the selected row, `{instr}` finds a
/// substring.
fn resolve(template: &str, pg: bool) -> String {
    let pick = |postgres, sqlite| if pg { postgres } else { sqlite };
    template
        .replace(
            "{record_cols}",
            "collection, id, {doc_out} AS doc, version, created_at, updated_at, key_version",
        )
        .replace(
            "{blob_cols}",
            "path, blob_id, content_type, size_bytes, sha256, version, created_at, updated_at",
        )
        .replace("{cache_cols}", "key, value, tags, expires_at, updated_at, key_version")
        .replace("{doc_in}", pick("CAST($4 AS jsonb)", "$4"))
        .replace("{doc_out}", pick("CAST(doc AS text)", "doc"))
        .replace("{lock}", pick("FOR UPDATE", ""))
        .replace("{instr}", pick("strpos", "instr"))
}

impl Location {
    /// A statement in this database's spelling ([`resolve`]). Each template is resolved
    /// once per process and database, not on every call.
    fn sql(&self, template: &'static str) -> &'static str {
        type Resolved = RwLock<HashMap<(usize, bool), &'static str>>;
        static RESOLVED: LazyLock<Resolved> = LazyLock::new(Resolved::default);
        // Keyed by where the template is: one entry per statement in this module and its submodules.
        let key = (template.as_ptr() as usize, self.pg);
        if let Some(s) = RESOLVED.read().unwrap_or_else(|e| e.into_inner()).get(&key) {
            return s;
        }
        let mut resolved = RESOLVED.write().unwrap_or_else(|e| e.into_inner());
        resolved
            .entry(key)
            .or_insert_with(|| Box::leak(resolve(template, self.pg).into_boxed_str()))
    }

    /// A transaction for `tenant`. On PostgreSQL its first statement sets the tenant
    /// and the tier's schema for this transaction only, sent with `BEGIN` in one round
    /// trip (as literals: a tenant id is only `a-z`, `0-9` and `-`, and a schema is
    /// tenantd's own name; quotes are doubled all the same).
    ///
    /// A connection the server had closed meanwhile (a restart, `pg_terminate_backend`,
    /// a proxy's idle timeout) fails here, before anything ran: the transaction is begun
    /// again, on a connection that works.
    pub async fn begin(&self, tenant: &TenantId) -> Result<Tx, DataError> {
        let mut retries = 0;
        loop {
            let begun = match &self.search_path {
                Some(path) => {
                    let lit = |v: &str| format!("'{}'", v.replace('\'', "''"));
                    let begin = format!(
                        "BEGIN; SELECT set_config('tenantd.tenant_id', {}, true), set_config('search_path', {}, true)",
                        lit(tenant.as_str()),
                        lit(path)
                    );
                    self.pool.begin_with(begin).await
                }
                None => self.pool.begin().await,
            };
            match begun {
                Err(e) if connection_lost(&e) => {
                    self.lost.mark();
                    if retries == LOST_RETRIES {
                        return Err(e.into());
                    }
                    retries += 1;
                }
                r => return Ok(r?),
            }
        }
    }

    /// Ends a write: adds `delta` to the tenant's storage level and commits. The
    /// tenant's `storage` row is locked only from here to the commit, so writes of one
    /// tenant overlap up to this point. Refused (and rolled back, so nothing is written):
    /// growth past `max` (`LevelReached`), and any write while a tier move has frozen
    /// the tenant here (`Moving`).
    async fn settle<T>(
        &self,
        mut tx: Tx,
        tenant: &TenantId,
        delta: i64,
        max: Option<u64>,
        value: T,
    ) -> Result<Written<T>, DataError> {
        let limit = max.filter(|_| delta > 0).map(|m| m.min(i64::MAX as u64) as i64);
        let sql = match limit {
            Some(_) => "UPDATE storage SET bytes = bytes + $2 WHERE tenant_id = $1 AND frozen = 0 AND bytes + $2 <= $3 RETURNING bytes",
            None => "UPDATE storage SET bytes = bytes + $2 WHERE tenant_id = $1 AND frozen = 0 RETURNING bytes",
        };
        for _ in 0..2 {
            let mut q = sqlx::query_scalar::<_, i64>(sql).bind(tenant.as_str()).bind(delta);
            if let Some(l) = limit {
                q = q.bind(l);
            }
            if let Some(after) = q.fetch_optional(&mut *tx).await? {
                tx.commit().await?;
                return Ok(Written {
                    value,
                    before: (after - delta).max(0) as u64,
                    after: after.max(0) as u64,
                });
            }
            // Frozen, full, or the tenant's first write here.
            let row = sqlx::query("SELECT bytes, frozen FROM storage WHERE tenant_id = $1")
                .bind(tenant.as_str())
                .fetch_optional(&mut *tx)
                .await?;
            match row {
                Some(r) if r.try_get::<i64, _>("frozen")? != 0 => return Err(DataError::Moving),
                Some(r) => {
                    return Err(DataError::LevelReached {
                        used: r.try_get::<i64, _>("bytes")?.max(0) as u64,
                        wanted: delta.max(0) as u64,
                    })
                }
                None => {
                    sqlx::query("INSERT INTO storage (tenant_id, bytes, frozen) VALUES ($1, 0, 0) ON CONFLICT (tenant_id) DO NOTHING")
                        .bind(tenant.as_str())
                        .execute(&mut *tx)
                        .await?;
                }
            }
        }
        Err(DataError::Db(sqlx::Error::RowNotFound))
    }

    /// The tenant's storage level here.
    pub async fn used(&self, tenant: &TenantId) -> Result<u64, DataError> {
        let mut tx = self.begin(tenant).await?;
        let n: Option<i64> = sqlx::query("SELECT bytes FROM storage WHERE tenant_id = $1")
            .bind(tenant.as_str())
            .fetch_optional(&mut *tx)
            .await?
            .map(|r| r.try_get("bytes"))
            .transpose()?;
        tx.commit().await?;
        Ok(n.unwrap_or(0).max(0) as u64)
    }

    /// Writes the row of one key so that its size delta is exact under concurrent
    /// writes: `insert` (`… ON CONFLICT … DO NOTHING RETURNING …`) when the key is free;
    /// otherwise `lock` (`SELECT size_bytes, … {lock}` on the key: the first `key` of
    /// `args`) and, if `accept` takes that row, `update` (`… RETURNING …`). `insert` and
    /// `update` take all of `args`. `None`: no `insert` and no row, or `accept` refused.
    /// The three are templates ([`resolve`]).
    #[allow(clippy::too_many_arguments)]
    async fn put_keyed(
        &self,
        tx: &mut Tx,
        insert: Option<&'static str>,
        lock: &'static str,
        update: &'static str,
        args: &[Arg<'_>],
        key: usize,
        accept: impl Fn(&AnyRow) -> bool,
    ) -> Result<Option<Put>, DataError> {
        let (insert, lock, update) = (insert.map(|i| self.sql(i)), self.sql(lock), self.sql(update));
        // A row deleted between the insert and the lock: insert again.
        for _ in 0..3 {
            if let Some(insert) = insert {
                if let Some(row) = bind(sqlx::query(insert), args.iter().copied())
                    .fetch_optional(&mut **tx)
                    .await?
                {
                    return Ok(Some(Put { row, prior: None }));
                }
            }
            let Some(prior) = bind(sqlx::query(lock), args[..key].iter().copied())
                .fetch_optional(&mut **tx)
                .await?
            else {
                if insert.is_none() {
                    return Ok(None);
                }
                continue;
            };
            if !accept(&prior) {
                return Ok(None);
            }
            let row = bind(sqlx::query(update), args.iter().copied())
                .fetch_one(&mut **tx)
                .await?;
            return Ok(Some(Put {
                row,
                prior: Some(prior),
            }));
        }
        Err(DataError::Db(sqlx::Error::RowNotFound))
    }
}
