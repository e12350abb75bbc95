//! What a tier move needs of a location: a tenant's rows of each table, a page at a
//! time, written elsewhere; their keys and versions, to bring a copy up to date; their
//! count and checksum, to verify it; and the freeze on the tenant's writes.
use crate::location::{bind, Arg, Location};
use crate::DataError;
use sqlx::any::AnyRow;
use sqlx::Row;
use std::collections::BTreeMap;
use tenantd_core::TenantId;

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Text,
    Int,
    OptInt,
    Json,
    Bytes,
}

/// A table a move copies: its key columns come first in `cols` (after `tenant_id`).
pub(crate) struct Table {
    pub name: &'static str,
    keys: usize,
    cols: &'static [(&'static str, Kind)],
    /// The column that changes on every write (none: rows never change).
    version: Option<&'static str>,
    /// Rows per page.
    batch: u32,
}

use Kind::*;

/// Every table with tenant data, in the order a move copies them.
pub(crate) const COPIED: [Table; 4] = [
    Table {
        name: "records",
        keys: 2,
        cols: &[
            ("collection", Text),
            ("id", Text),
            ("doc", Json),
            ("version", Int),
            ("size_bytes", Int),
            ("created_at", Int),
            ("updated_at", Int),
            ("key_version", Int),
        ],
        version: Some("version"),
        batch: 500,
    },
    Table {
        name: "blob_chunks",
        keys: 2,
        cols: &[
            ("blob_id", Text),
            ("seq", Int),
            ("data", Bytes),
            ("created_at", Int),
            ("key_version", Int),
        ],
        version: None,
        batch: 16,
    },
    Table {
        name: "blobs",
        keys: 1,
        cols: &[
            ("path", Text),
            ("blob_id", Text),
            ("content_type", Text),
            ("size_bytes", Int),
            ("sha256", Text),
            ("version", Int),
            ("created_at", Int),
            ("updated_at", Int),
        ],
        version: Some("version"),
        batch: 500,
    },
    Table {
        name: "cache_entries",
        keys: 1,
        cols: &[
            ("key", Text),
            ("value", Text),
            ("tags", Text),
            ("expires_at", OptInt),
            ("size_bytes", Int),
            ("version", Int),
            ("updated_at", Int),
            ("key_version", Int),
        ],
        version: Some("version"),
        batch: 500,
    },
];

/// One column's value.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Val {
    Null,
    Int(i64),
    Text(String),
    Bytes(Vec<u8>),
}

type Tx = sqlx::Transaction<'static, sqlx::Any>;

impl Table {
    /// Rows per page.
    pub(crate) fn batch(&self) -> usize {
        self.batch as usize
    }

    /// Where column `name` is in a row.
    pub(crate) fn column(&self, name: &str) -> usize {
        self.cols
            .iter()
            .position(|c| c.0 == name)
            .unwrap_or_else(|| panic!("{} has no column {name}", self.name))
    }

    /// A row's version, if the table's rows change.
    pub(crate) fn version_of(&self, row: &[Val]) -> Option<i64> {
        let at = self.cols.iter().position(|c| Some(c.0) == self.version)?;
        match row[at] {
            Val::Int(v) => Some(v),
            _ => None,
        }
    }

    /// A row's key.
    pub(crate) fn key_of(&self, row: &[Val]) -> Vec<Val> {
        row[..self.keys].to_vec()
    }

    /// The key columns: `k1, k2`.
    fn key_list(&self) -> String {
        self.cols[..self.keys]
            .iter()
            .map(|c| c.0)
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn select(&self, pg: bool) -> String {
        self.cols
            .iter()
            .map(|(c, k)| match k {
                Json if pg => format!("CAST({c} AS text) AS {c}"),
                _ => c.to_string(),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// `(k1, k2)` and `($n, $n+1)`.
    fn key_tuple(&self, first: usize) -> (String, String) {
        let params = (0..self.keys)
            .map(|i| format!("${}", first + i))
            .collect::<Vec<_>>()
            .join(", ");
        (format!("({})", self.key_list()), format!("({params})"))
    }

    fn read(&self, row: &AnyRow) -> Result<Vec<Val>, DataError> {
        self.cols
            .iter()
            .map(|(c, k)| {
                Ok(match k {
                    Text | Json => Val::Text(row.try_get(*c)?),
                    Int => Val::Int(row.try_get(*c)?),
                    OptInt => row.try_get::<Option<i64>, _>(*c)?.map_or(Val::Null, Val::Int),
                    Bytes => Val::Bytes(row.try_get(*c)?),
                })
            })
            .collect()
    }
}

impl Val {
    /// As a statement parameter.
    fn arg(&self) -> Arg<'_> {
        match self {
            Val::Null => Arg::OptInt(None),
            Val::Int(i) => Arg::Int(*i),
            Val::Text(s) => Arg::Text(s),
            Val::Bytes(b) => Arg::Bytes(b),
        }
    }
}

impl Location {
    /// Up to a page of the tenant's rows of `table` after the key `after`, by key.
    pub(crate) async fn page(
        &self,
        tenant: &TenantId,
        table: &Table,
        after: Option<&[Val]>,
    ) -> Result<Vec<Vec<Val>>, DataError> {
        let (cols, params) = table.key_tuple(2);
        let order = table.key_list();
        let cond = if after.is_some() {
            format!("AND {cols} > {params}")
        } else {
            String::new()
        };
        let sql = format!(
            "SELECT {} FROM {} WHERE tenant_id = $1 {cond} ORDER BY {order} LIMIT {}",
            table.select(self.pg),
            table.name,
            table.batch
        );
        let mut tx = self.begin(tenant).await?;
        let q = bind(
            sqlx::query(&sql).bind(tenant.as_str()),
            after.unwrap_or(&[]).iter().map(Val::arg),
        );
        let rows = q.fetch_all(&mut *tx).await?;
        tx.commit().await?;
        rows.iter().map(|r| table.read(r)).collect()
    }

    /// Writes rows (as [`Location::page`] read them), replacing any with the same key.
    pub(crate) async fn upsert(&self, tenant: &TenantId, table: &Table, rows: &[Vec<Val>]) -> Result<(), DataError> {
        if rows.is_empty() {
            return Ok(());
        }
        let names = table.cols.iter().map(|c| c.0).collect::<Vec<_>>();
        let values = table
            .cols
            .iter()
            .enumerate()
            .map(|(i, (_, k))| match k {
                Json if self.pg => format!("CAST(${} AS jsonb)", i + 2),
                _ => format!("${}", i + 2),
            })
            .collect::<Vec<_>>();
        let sets = names[table.keys..]
            .iter()
            .map(|c| format!("{c} = excluded.{c}"))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "INSERT INTO {t} (tenant_id, {names}) VALUES ($1, {values}) ON CONFLICT (tenant_id, {keys}) DO UPDATE SET {sets}",
            t = table.name,
            names = names.join(", "),
            values = values.join(", "),
            keys = table.key_list(),
        );
        let mut tx = self.begin(tenant).await?;
        for row in rows {
            let q = bind(sqlx::query(&sql).bind(tenant.as_str()), row.iter().map(Val::arg));
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Every key of the tenant's rows of `table`, with its version (0 for rows that
    /// never change).
    pub(crate) async fn versions(
        &self,
        tenant: &TenantId,
        table: &Table,
    ) -> Result<BTreeMap<Vec<Val>, i64>, DataError> {
        let sql = format!(
            "SELECT {}, {} AS v FROM {} WHERE tenant_id = $1",
            table.key_list(),
            table.version.unwrap_or("0"),
            table.name
        );
        let mut tx = self.begin(tenant).await?;
        let rows = sqlx::query(&sql).bind(tenant.as_str()).fetch_all(&mut *tx).await?;
        tx.commit().await?;
        let key_only = Table {
            cols: &table.cols[..table.keys],
            ..*table
        };
        rows.iter()
            .map(|r| Ok((key_only.read(r)?, r.try_get::<i64, _>("v")?)))
            .collect()
    }

    /// The tenant's rows of `table` with these keys.
    pub(crate) async fn rows(
        &self,
        tenant: &TenantId,
        table: &Table,
        keys: &[&Vec<Val>],
    ) -> Result<Vec<Vec<Val>>, DataError> {
        let (cols, params) = table.key_tuple(2);
        let sql = format!(
            "SELECT {} FROM {} WHERE tenant_id = $1 AND {cols} = {params}",
            table.select(self.pg),
            table.name
        );
        let mut tx = self.begin(tenant).await?;
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            let q = bind(sqlx::query(&sql).bind(tenant.as_str()), key.iter().map(Val::arg));
            if let Some(r) = q.fetch_optional(&mut *tx).await? {
                out.push(table.read(&r)?);
            }
        }
        tx.commit().await?;
        Ok(out)
    }

    /// Deletes the tenant's rows of `table` with these keys.
    pub(crate) async fn delete_keys(
        &self,
        tenant: &TenantId,
        table: &Table,
        keys: &[&Vec<Val>],
    ) -> Result<(), DataError> {
        let (cols, params) = table.key_tuple(2);
        let sql = format!("DELETE FROM {} WHERE tenant_id = $1 AND {cols} = {params}", table.name);
        let mut tx = self.begin(tenant).await?;
        for key in keys {
            let q = bind(sqlx::query(&sql).bind(tenant.as_str()), key.iter().map(Val::arg));
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Replaces a row's sealed value (column `value` of the table's columns) with `new`,
    /// sealed under `keys.1`, if it is still sealed under `keys.0` and still at `version`
    /// (a write meanwhile wins); whether it did.
    pub(crate) async fn reseal_row(
        &self,
        tenant: &TenantId,
        table: &Table,
        key: &[Val],
        (old, current): (i64, i64),
        (value, version): (usize, Option<i64>),
        new: &Val,
    ) -> Result<bool, DataError> {
        let (col, kind) = table.cols[value];
        let (cols, params) = table.key_tuple(4);
        let value_in = match kind {
            Json if self.pg => "CAST($2 AS jsonb)",
            _ => "$2",
        };
        let n = 4 + table.keys;
        let guard = match (table.version, version) {
            (Some(c), Some(_)) => format!(" AND {c} = ${}", n + 1),
            _ => String::new(),
        };
        let sql = format!(
            "UPDATE {} SET {col} = {value_in}, key_version = $3 WHERE tenant_id = $1 AND {cols} = {params} \
             AND key_version = ${n}{guard}",
            table.name
        );
        let mut args = vec![new.arg(), Arg::Int(current)];
        args.extend(key.iter().map(Val::arg));
        args.push(Arg::Int(old));
        if !guard.is_empty() {
            args.push(Arg::Int(version.unwrap_or_default()));
        }
        let mut tx = self.begin(tenant).await?;
        let done = bind(sqlx::query(&sql).bind(tenant.as_str()), args)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(done > 0)
    }

    /// How many of the tenant's rows in the sealed tables are under key `current`, and
    /// how many there are.
    pub(crate) async fn seal_count(&self, tenant: &TenantId, current: i64) -> Result<crate::SealCount, DataError> {
        let mut tx = self.begin(tenant).await?;
        let mut count = crate::SealCount::default();
        for t in crate::store::sealed_tables() {
            let row = sqlx::query(&format!(
                "SELECT CAST(COUNT(*) AS bigint) AS total, \
                 CAST(COALESCE(SUM(CASE WHEN key_version = $2 THEN 1 ELSE 0 END), 0) AS bigint) AS current \
                 FROM {t} WHERE tenant_id = $1"
            ))
            .bind(tenant.as_str())
            .bind(current)
            .fetch_one(&mut *tx)
            .await?;
            count.total += row.try_get::<i64, _>("total")? as u64;
            count.current += row.try_get::<i64, _>("current")? as u64;
        }
        tx.commit().await?;
        Ok(count)
    }

    /// How many rows the tenant has in `table`, and a SHA-256 over all of them in key
    /// order.
    pub(crate) async fn checksum(&self, tenant: &TenantId, table: &Table) -> Result<(u64, String), DataError> {
        let mut hash = ring::digest::Context::new(&ring::digest::SHA256);
        let mut n = 0u64;
        let mut after: Option<Vec<Val>> = None;
        loop {
            let page = self.page(tenant, table, after.as_deref()).await?;
            for row in &page {
                for v in row {
                    match v {
                        Val::Null => hash.update(&[0]),
                        Val::Int(i) => {
                            hash.update(&[1]);
                            hash.update(&i.to_le_bytes());
                        }
                        Val::Text(s) => {
                            hash.update(&[2]);
                            hash.update(&(s.len() as u64).to_le_bytes());
                            hash.update(s.as_bytes());
                        }
                        Val::Bytes(b) => {
                            hash.update(&[3]);
                            hash.update(&(b.len() as u64).to_le_bytes());
                            hash.update(b);
                        }
                    }
                }
                n += 1;
            }
            if page.len() < table.batch() {
                break;
            }
            after = page.last().map(|r| table.key_of(r));
        }
        Ok((n, hex::encode(hash.finish())))
    }

    /// Freezes (or thaws) the tenant's writes here; returns its storage level. A write
    /// holding the tenant's storage row finishes first.
    pub(crate) async fn set_frozen(&self, tenant: &TenantId, frozen: bool) -> Result<i64, DataError> {
        let mut tx = self.begin(tenant).await?;
        let row = sqlx::query(
            "INSERT INTO storage (tenant_id, bytes, frozen) VALUES ($1, 0, $2) \
             ON CONFLICT (tenant_id) DO UPDATE SET frozen = excluded.frozen RETURNING bytes",
        )
        .bind(tenant.as_str())
        .bind(i64::from(frozen))
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(row.try_get("bytes")?)
    }

    /// How many records and blobs the tenant has here.
    pub(crate) async fn counts(&self, tenant: &TenantId) -> Result<(u64, u64), DataError> {
        let mut tx = self.begin(tenant).await?;
        let mut n = [0u64; 2];
        for (i, t) in ["records", "blobs"].iter().enumerate() {
            let c: i64 = sqlx::query_scalar(&format!(
                "SELECT CAST(COUNT(*) AS bigint) FROM {t} WHERE tenant_id = $1"
            ))
            .bind(tenant.as_str())
            .fetch_one(&mut *tx)
            .await?;
            n[i] = c.max(0) as u64;
        }
        tx.commit().await?;
        Ok((n[0], n[1]))
    }

    /// Sets the tenant's storage level here (a move's copy), unfrozen.
    pub(crate) async fn set_storage(&self, tenant: &TenantId, bytes: i64) -> Result<(), DataError> {
        let mut tx = self.begin(tenant).await?;
        Self::store_level(&mut tx, tenant, bytes, false).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Writes the tenant's storage row: `bytes`, and whether its writes are frozen.
    async fn store_level(tx: &mut Tx, tenant: &TenantId, bytes: i64, frozen: bool) -> Result<(), DataError> {
        sqlx::query(
            "INSERT INTO storage (tenant_id, bytes, frozen) VALUES ($1, $2, $3) \
             ON CONFLICT (tenant_id) DO UPDATE SET bytes = excluded.bytes, frozen = excluded.frozen",
        )
        .bind(tenant.as_str())
        .bind(bytes)
        .bind(i64::from(frozen))
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// Deletes all of the tenant's data here. Its storage row stays, `frozen` when
    /// `keep_frozen` (so that a node still sending writes here is turned away).
    pub(crate) async fn clear(&self, tenant: &TenantId, keep_frozen: bool) -> Result<(), DataError> {
        let mut tx: Tx = self.begin(tenant).await?;
        for t in &COPIED {
            sqlx::query(&format!("DELETE FROM {} WHERE tenant_id = $1", t.name))
                .bind(tenant.as_str())
                .execute(&mut *tx)
                .await?;
        }
        Self::store_level(&mut tx, tenant, 0, keep_frozen).await?;
        tx.commit().await?;
        Ok(())
    }
}
