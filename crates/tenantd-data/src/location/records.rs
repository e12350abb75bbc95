//! Records at a location: JSON documents by collection and id.
use super::{Arg, Location};
use crate::{DataError, Written};
use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::Row;
use tenantd_core::{now_secs, TenantId};

/// One JSON record of a tenant's collection.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Record {
    /// Its collection.
    pub collection: String,
    /// Unix seconds.
    #[serde(serialize_with = "tenantd_core::ts::ser")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: i64,
    /// The document.
    #[serde(rename = "data")]
    pub doc: serde_json::Value,
    /// Its id within the collection.
    pub id: String,
    /// Unix seconds.
    #[serde(serialize_with = "tenantd_core::ts::ser")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: i64,
    /// 1 when created, one more on each write (the ETag).
    pub version: i64,
    /// The data key version `doc` is sealed under (0: stored in the clear); the scope
    /// opens it before anyone sees the record.
    #[serde(skip)]
    pub key_version: i64,
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
        key_version: row.try_get("key_version")?,
    })
}

impl Location {
    /// Creates or replaces a record (`doc` as stored, sealed under `key_version`;
    /// `size`: its length in the clear; `expected`: only at that version; `None`
    /// returned when it is missing or has changed).
    pub async fn write_record(
        &self,
        tenant: &TenantId,
        collection: &str,
        id: &str,
        (doc, size, key_version): (&str, i64, i64),
        expected: Option<i64>,
        max: Option<u64>,
    ) -> Result<Option<Written<Record>>, DataError> {
        let mut tx = self.begin(tenant).await?;
        let args = [
            Arg::Text(tenant.as_str()),
            Arg::Text(collection),
            Arg::Text(id),
            Arg::Text(doc),
            Arg::Int(size),
            Arg::Int(now_secs()),
            Arg::Int(key_version),
        ];
        let put = self
            .put_keyed(
                &mut tx,
                expected.is_none().then_some(
                    "INSERT INTO records (tenant_id, collection, id, doc, version, size_bytes, created_at, updated_at, key_version) \
                     VALUES ($1, $2, $3, {doc_in}, 1, $5, $6, $6, $7) \
                     ON CONFLICT (tenant_id, collection, id) DO NOTHING RETURNING {record_cols}",
                ),
                "SELECT size_bytes, version FROM records WHERE tenant_id = $1 AND collection = $2 AND id = $3 {lock}",
                "UPDATE records SET doc = {doc_in}, version = version + 1, size_bytes = $5, updated_at = $6, key_version = $7 \
                 WHERE tenant_id = $1 AND collection = $2 AND id = $3 RETURNING {record_cols}",
                &args,
                3,
                |prior| expected.is_none_or(|want| prior.try_get::<i64, _>("version").ok() == Some(want)),
            )
            .await?;
        let Some(put) = put else { return Ok(None) };
        let (delta, r) = (put.delta(size)?, record(&put.row)?);
        self.settle(tx, tenant, delta, max, r).await.map(Some)
    }

    /// A record.
    pub async fn get_record(&self, tenant: &TenantId, collection: &str, id: &str) -> Result<Option<Record>, DataError> {
        let mut tx = self.begin(tenant).await?;
        let row = sqlx::query(
            self.sql("SELECT {record_cols} FROM records WHERE tenant_id = $1 AND collection = $2 AND id = $3"),
        )
        .bind(tenant.as_str())
        .bind(collection)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        row.as_ref().map(record).transpose()
    }

    /// Up to `limit` records of a collection with ids after `after`, by id.
    pub async fn list_records(
        &self,
        tenant: &TenantId,
        collection: &str,
        after: &str,
        limit: u32,
    ) -> Result<Vec<Record>, DataError> {
        let mut tx = self.begin(tenant).await?;
        let rows = sqlx::query(self.sql(
            "SELECT {record_cols} FROM records WHERE tenant_id = $1 AND collection = $2 AND id > $3 ORDER BY id LIMIT $4",
        ))
        .bind(tenant.as_str())
        .bind(collection)
        .bind(after)
        .bind(i64::from(limit.clamp(1, 1000)))
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.iter().map(record).collect()
    }

    /// Up to `limit` records of every collection after `(collection, id)`, by both.
    pub async fn all_records(
        &self,
        tenant: &TenantId,
        after: (&str, &str),
        limit: u32,
    ) -> Result<Vec<Record>, DataError> {
        let mut tx = self.begin(tenant).await?;
        let rows = sqlx::query(self.sql(
            "SELECT {record_cols} FROM records WHERE tenant_id = $1 AND (collection, id) > ($2, $3) \
             ORDER BY collection, id LIMIT $4",
        ))
        .bind(tenant.as_str())
        .bind(after.0)
        .bind(after.1)
        .bind(i64::from(limit.clamp(1, 1000)))
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.iter().map(record).collect()
    }

    /// Writes a record exactly as given (a restore: its version and times kept; `doc`
    /// as stored, sealed under `key_version`, `size` its length in the clear).
    pub async fn restore_record(
        &self,
        tenant: &TenantId,
        r: &Record,
        (doc, size, key_version): (&str, i64, i64),
    ) -> Result<(), DataError> {
        let mut tx = self.begin(tenant).await?;
        sqlx::query(self.sql(
            "INSERT INTO records (tenant_id, collection, id, doc, version, size_bytes, created_at, updated_at, key_version) \
             VALUES ($1, $2, $3, {doc_in}, $5, $6, $7, $8, $9)",
        ))
        .bind(tenant.as_str())
        .bind(&r.collection)
        .bind(&r.id)
        .bind(doc)
        .bind(r.version)
        .bind(size)
        .bind(r.created_at)
        .bind(r.updated_at)
        .bind(key_version)
        .execute(&mut *tx)
        .await?;
        self.settle(tx, tenant, size, None, ()).await.map(drop)
    }

    /// Deletes a record; `false` when there is none.
    pub async fn delete_record(
        &self,
        tenant: &TenantId,
        collection: &str,
        id: &str,
    ) -> Result<Written<bool>, DataError> {
        let mut tx = self.begin(tenant).await?;
        let freed: Option<i64> = sqlx::query_scalar(
            "DELETE FROM records WHERE tenant_id = $1 AND collection = $2 AND id = $3 RETURNING size_bytes",
        )
        .bind(tenant.as_str())
        .bind(collection)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        self.settle(tx, tenant, -freed.unwrap_or(0), None, freed.is_some())
            .await
    }
}
