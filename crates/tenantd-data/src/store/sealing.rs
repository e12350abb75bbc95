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
use std::borrow::Cow;
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

/// A sealed value's object, as its associated data names it: a record's document
/// (`record`, `collection/id`), a blob's chunk (`blob`, `blob_id/seq`) or a cache value
/// (`cache`, its key). The one place these names are made.
#[derive(Clone, Copy)]
pub(crate) enum Object<'a> {
    Record(&'a str, &'a str),
    Chunk(&'a str, i64),
    Cache(&'a str),
}

impl Object<'_> {
    fn kind(&self) -> &'static str {
        match self {
            Self::Record(..) => "record",
            Self::Chunk(..) => "blob",
            Self::Cache(_) => "cache",
        }
    }

    fn name(&self) -> String {
        match self {
            Self::Record(collection, id) => format!("{collection}/{id}"),
            Self::Chunk(blob_id, seq) => format!("{blob_id}/{seq}"),
            Self::Cache(key) => (*key).to_string(),
        }
    }

    /// The object of a copied row of `table` with key `key`.
    fn of_row<'k>(table: &str, key: &'k [Val]) -> Option<Object<'k>> {
        match (table, key) {
            ("records", [Val::Text(c), Val::Text(id)]) => Some(Object::Record(c, id)),
            ("blob_chunks", [Val::Text(b), Val::Int(seq)]) => Some(Object::Chunk(b, *seq)),
            ("cache_entries", [Val::Text(k)]) => Some(Object::Cache(k)),
            _ => None,
        }
    }
}

/// The sealed tables and the column each seals (the rest is in [`COPIED`]).
const SEALED: [(&str, &str); 3] = [("records", "doc"), ("blob_chunks", "data"), ("cache_entries", "value")];

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
    /// Seals `plain` as the tenant's `object`: the key version and the bytes to store
    /// (`plain` itself, version 0, when the store has no keys).
    pub(crate) async fn seal<'p>(
        &self,
        object: Object<'_>,
        plain: &'p [u8],
    ) -> Result<(i64, Cow<'p, [u8]>), DataError> {
        let Some(keys) = &self.store.keys else {
            return Ok((0, Cow::Borrowed(plain)));
        };
        let k = keys.sealing(&self.tenant).await.map_err(|e| crypto(&self.tenant, e))?;
        let (v, sealed) = k
            .seal(object.kind(), &object.name(), plain)
            .map_err(|e| crypto(&self.tenant, e))?;
        Ok((v, Cow::Owned(sealed)))
    }

    /// Opens what [`Scope::seal`] stored under `version` (0: it is in the clear).
    pub(crate) async fn open(&self, object: Object<'_>, version: i64, stored: Vec<u8>) -> Result<Vec<u8>, DataError> {
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
        k.open(version, object.kind(), &object.name(), &stored)
            .map_err(|e| crypto(&self.tenant, e))
    }

    /// Seals a JSON text: the key version and the JSON text to store (a JSON string of
    /// base64 when sealed).
    pub(crate) async fn seal_json(&self, object: Object<'_>, json: String) -> Result<(i64, String), DataError> {
        let (v, sealed) = match self.seal(object, json.as_bytes()).await? {
            (0, _) => (0, None),
            (v, sealed) => (v, Some(STANDARD.encode(sealed))),
        };
        match sealed {
            Some(b64) => Ok((v, serde_json::to_string(&b64)?)),
            None => Ok((0, json)),
        }
    }

    /// Opens a JSON value [`Scope::seal_json`] stored under `version`.
    pub(crate) async fn open_json(
        &self,
        object: Object<'_>,
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
        let plain = self.open(object, version, bytes).await?;
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
        for (name, column) in SEALED {
            let table = COPIED
                .iter()
                .find(|t| t.name == name)
                .expect("every sealed table is copied");
            let value = table.column(column);
            let mut after: Option<Vec<Val>> = None;
            loop {
                let (t, a) = (self.tenant, after.as_deref());
                let page = self.run(|l| async move { l.page(&t, table, a).await }.boxed()).await?;
                for row in &page {
                    examined += 1;
                    if self.reseal_row(table, value, row, k.current()).await? {
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

    /// Seals one row (its column `value` sealed) again under `current` if it is under
    /// another version; whether it did.
    async fn reseal_row(&self, table: &Table, value: usize, row: &[Val], current: i64) -> Result<bool, DataError> {
        let Val::Int(old) = row[table.column("key_version")] else {
            return Err(crypto(&self.tenant, "a row without a key version"));
        };
        if old == current {
            return Ok(false);
        }
        let key = table.key_of(row);
        let object = Object::of_row(table.name, &key).ok_or_else(|| crypto(&self.tenant, "not a sealed table"))?;
        let new = match &row[value] {
            Val::Text(text) => {
                let plain = self.open_json(object, old, serde_json::from_str(text)?).await?;
                Val::Text(self.seal_json(object, serde_json::to_string(&plain)?).await?.1)
            }
            Val::Bytes(b) => {
                let plain = self.open(object, old, b.clone()).await?;
                Val::Bytes(self.seal(object, &plain).await?.1.into_owned())
            }
            _ => return Err(crypto(&self.tenant, "a sealed column of an unexpected type")),
        };
        let t = self.tenant;
        let (key, new, at) = (&key, &new, (value, table.version_of(row)));
        self.run(|l| async move { l.reseal_row(&t, table, key, (old, current), at, new).await }.boxed())
            .await
    }
}

/// The sealed tables' names, for counting.
pub(crate) fn sealed_tables() -> impl Iterator<Item = &'static str> {
    SEALED.iter().map(|(t, _)| *t)
}
