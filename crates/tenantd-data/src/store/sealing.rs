//! Encryption at rest (docs/protection.md): a scope seals each record's document, cache
//! value and blob chunk under the tenant's current data key before it is stored, and
//! opens it after it is read. The associated data binds the tenant and the object
//! (`record` `collection/id`, `cache` `key`, `blob` `blob_id/seq`), so a value copied into
//! another tenant's row, or another row, does not open. Keys, paths, ids, tags and
//! content types stay in the clear: they are how the data is found.
//!
//! A sealed document or cache value is stored as a JSON string of base64 (the column is
//! `jsonb` on PostgreSQL); a sealed chunk as its bytes. Each row's `key_version` says
//! which key sealed it (0: written in the clear before encryption); [`Scope::reseal`]
//! brings every row to the current version.
use super::Scope;
use crate::copy::{Table, Val, COPIED};
use crate::DataError;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use std::sync::Arc;
use tenantd_core::crypto::{CryptoError, TenantKeys};
use tenantd_core::TenantId;

/// Where a data store gets tenants' data keys (tenantd's keyring).
pub trait DataKeys: Send + Sync {
    /// The tenant's keys to seal with, its first one made if it has none.
    fn sealing<'a>(&'a self, tenant: &'a TenantId) -> BoxFuture<'a, Result<Arc<TenantKeys>, String>>;
    /// The tenant's keys, holding `version` if it still exists; `None`: it has no keys.
    fn opening<'a>(
        &'a self,
        tenant: &'a TenantId,
        version: i64,
    ) -> BoxFuture<'a, Result<Option<Arc<TenantKeys>>, String>>;
}

/// How a table's sealed column is found in a copied row: the value's column, the
/// `key_version` column, and the kind its associated data names.
struct SealedColumn {
    table: &'static str,
    value: usize,
    key_version: usize,
    kind: &'static str,
    json: bool,
}

const SEALED: [SealedColumn; 3] = [
    SealedColumn {
        table: "records",
        value: 2,
        key_version: 7,
        kind: RECORD,
        json: true,
    },
    SealedColumn {
        table: "blob_chunks",
        value: 2,
        key_version: 4,
        kind: BLOB,
        json: false,
    },
    SealedColumn {
        table: "cache_entries",
        value: 1,
        key_version: 7,
        kind: CACHE,
        json: true,
    },
];

/// The kinds of sealed values, as their associated data names them.
pub(crate) const RECORD: &str = "record";
pub(crate) const BLOB: &str = "blob";
pub(crate) const CACHE: &str = "cache";

fn crypto(tenant: &TenantId, e: impl std::fmt::Display) -> DataError {
    DataError::Sealed(format!("tenant {tenant}: {e}"))
}

/// How far the tenant's data is sealed under its current key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SealCount {
    /// Rows sealed under the current key.
    pub current: u64,
    /// Every row with a sealed value (records, blob chunks, cache entries).
    pub total: u64,
}

impl Scope<'_> {
    /// Seals `plain` as the tenant's `kind`/`name`: the key version and the bytes to
    /// store (in the clear, version 0, when the store has no keys).
    pub(crate) async fn seal(&self, kind: &str, name: &str, plain: Vec<u8>) -> Result<(i64, Vec<u8>), DataError> {
        let Some(keys) = &self.store.keys else {
            return Ok((0, plain));
        };
        let k = keys.sealing(&self.tenant).await.map_err(|e| crypto(&self.tenant, e))?;
        k.seal(kind, name, &plain).map_err(|e| crypto(&self.tenant, e))
    }

    /// Opens what [`Scope::seal`] stored under `version`.
    pub(crate) async fn open(
        &self,
        kind: &str,
        name: &str,
        version: i64,
        stored: Vec<u8>,
    ) -> Result<Vec<u8>, DataError> {
        if version == 0 {
            return Ok(stored);
        }
        let Some(keys) = &self.store.keys else {
            return Err(crypto(
                &self.tenant,
                "the value is encrypted, and this data store has no keys",
            ));
        };
        let k = keys
            .opening(&self.tenant, version)
            .await
            .map_err(|e| crypto(&self.tenant, e))?
            .ok_or_else(|| crypto(&self.tenant, CryptoError::NoKey(version)))?;
        k.open(version, kind, name, &stored)
            .map_err(|e| crypto(&self.tenant, e))
    }

    /// Seals a JSON text: the key version and the JSON text to store.
    pub(crate) async fn seal_json(&self, kind: &str, name: &str, json: String) -> Result<(i64, String), DataError> {
        let (v, bytes) = self.seal(kind, name, json.into_bytes()).await?;
        if v == 0 {
            // In the clear: the bytes are the JSON text.
            return Ok((0, String::from_utf8(bytes).expect("the JSON text it was")));
        }
        Ok((v, serde_json::to_string(&STANDARD.encode(bytes))?))
    }

    /// Opens a JSON value [`Scope::seal_json`] stored under `version`.
    pub(crate) async fn open_json(
        &self,
        kind: &str,
        name: &str,
        version: i64,
        stored: serde_json::Value,
    ) -> Result<serde_json::Value, DataError> {
        if version == 0 {
            return Ok(stored);
        }
        let bytes = match stored.as_str().map(|s| STANDARD.decode(s)) {
            Some(Ok(b)) => b,
            _ => return Err(crypto(&self.tenant, CryptoError::Open)),
        };
        let plain = self.open(kind, name, version, bytes).await?;
        Ok(serde_json::from_slice(&plain)?)
    }

    /// How many of the tenant's sealed rows are under key `current`, of all of them.
    pub async fn seal_count(&self, current: i64) -> Result<SealCount, DataError> {
        let t = self.tenant;
        self.run(|l| async move { l.seal_count(&t, current).await }.boxed())
            .await
    }

    /// Seals every row of the tenant not yet under its current key (written in the clear,
    /// or under an older key) again under it, a page at a time; `progress` hears the rows
    /// examined and the total after each page. Returns how many rows it sealed again. A
    /// row written meanwhile is left as the write made it.
    pub async fn reseal(&self, mut progress: impl FnMut(u64, u64) + Send) -> Result<u64, DataError> {
        let Some(keys) = &self.store.keys else {
            return Ok(0);
        };
        let k = keys.sealing(&self.tenant).await.map_err(|e| crypto(&self.tenant, e))?;
        let total = self.seal_count(k.current()).await?.total;
        let (mut examined, mut resealed) = (0u64, 0u64);
        for col in &SEALED {
            let table = COPIED
                .iter()
                .find(|t| t.name == col.table)
                .expect("every sealed table is copied");
            let mut after: Option<Vec<Val>> = None;
            loop {
                let t = self.tenant;
                let a = after.clone();
                let page = self
                    .run(|l| {
                        let a = a.clone();
                        async move { l.page(&t, table, a.as_deref()).await }.boxed()
                    })
                    .await?;
                for row in &page {
                    examined += 1;
                    if self.reseal_row(table, col, row, k.current()).await? {
                        resealed += 1;
                    }
                }
                progress(examined.min(total), total);
                if page.len() < table.batch() {
                    break;
                }
                after = page.last().map(|r| table.key_of(r));
            }
        }
        Ok(resealed)
    }

    /// Seals one row again under `current` if it is under another version; whether it
    /// did.
    async fn reseal_row(
        &self,
        table: &Table,
        col: &SealedColumn,
        row: &[Val],
        current: i64,
    ) -> Result<bool, DataError> {
        let Val::Int(old) = row[col.key_version] else {
            return Err(crypto(&self.tenant, "a row without a key version"));
        };
        if old == current {
            return Ok(false);
        }
        let key = table.key_of(row);
        let name = aad_name(&key);
        let new = match &row[col.value] {
            Val::Text(text) if col.json => {
                let stored: serde_json::Value = serde_json::from_str(text)?;
                let plain = self.open_json(col.kind, &name, old, stored).await?;
                Val::Text(self.seal_json(col.kind, &name, serde_json::to_string(&plain)?).await?.1)
            }
            Val::Bytes(b) if !col.json => {
                let plain = self.open(col.kind, &name, old, b.clone()).await?;
                Val::Bytes(self.seal(col.kind, &name, plain).await?.1)
            }
            _ => return Err(crypto(&self.tenant, "a sealed column of an unexpected type")),
        };
        let t = self.tenant;
        let (key, new, at) = (&key, &new, (col.value, table.version_of(row)));
        self.run(|l| async move { l.reseal_row(&t, table, key, (old, current), at, new).await }.boxed())
            .await
    }
}

/// The name a row's associated data gives it: its key columns joined by `/`
/// (`orders/1`, `blb_…/0`, a cache key).
pub(crate) fn aad_name(key: &[Val]) -> String {
    key.iter()
        .map(|v| match v {
            Val::Text(s) => s.clone(),
            Val::Int(i) => i.to_string(),
            Val::Null | Val::Bytes(_) => String::new(),
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// The sealed tables' names, for counting.
pub(crate) fn sealed_tables() -> impl Iterator<Item = &'static str> {
    SEALED.iter().map(|c| c.table)
}
