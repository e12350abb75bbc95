//! A scope's records: JSON documents by collection and id.
use super::Scope;
use crate::location::Record;
use crate::{check_name, DataError, Written};
use futures_util::FutureExt;
use serde_json::Value;

impl Scope<'_> {
    /// Creates or replaces a record; its version goes up by one. `max`: the storage
    /// level it may not grow past.
    pub async fn put_record(
        &self,
        collection: &str,
        id: &str,
        doc: &Value,
        max: Option<u64>,
    ) -> Result<Written<Record>, DataError> {
        self.write_record(collection, id, doc, None, max)
            .await?
            .ok_or(DataError::Db(sqlx::Error::RowNotFound))
    }

    /// Replaces a record's document if its version is still `expected`; `None` when
    /// the tenant has no such record or it has changed since.
    pub async fn update_record(
        &self,
        collection: &str,
        id: &str,
        doc: &Value,
        expected: i64,
        max: Option<u64>,
    ) -> Result<Option<Written<Record>>, DataError> {
        self.write_record(collection, id, doc, Some(expected), max).await
    }

    async fn write_record(
        &self,
        collection: &str,
        id: &str,
        doc: &Value,
        expected: Option<i64>,
        max: Option<u64>,
    ) -> Result<Option<Written<Record>>, DataError> {
        check_name("the collection", collection)?;
        check_name("the record id", id)?;
        crate::check_depth(doc)?;
        let text = serde_json::to_string(doc)?;
        let (t, text) = (self.tenant, text.as_str());
        self.run(|l| async move { l.write_record(&t, collection, id, text, expected, max).await }.boxed())
            .await
    }

    /// A record, if this tenant has it.
    pub async fn get_record(&self, collection: &str, id: &str) -> Result<Option<Record>, DataError> {
        check_name("the collection", collection)?;
        check_name("the record id", id)?;
        let t = self.tenant;
        self.run(|l| async move { l.get_record(&t, collection, id).await }.boxed())
            .await
    }

    /// Up to `limit` (1 to 1000) records of the collection with ids after `after`, by id.
    pub async fn list_records(
        &self,
        collection: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Record>, DataError> {
        check_name("the collection", collection)?;
        let t = self.tenant;
        let after = after.unwrap_or("");
        self.run(|l| async move { l.list_records(&t, collection, after, limit).await }.boxed())
            .await
    }

    /// Deletes a record; `false` if this tenant has no such record.
    pub async fn delete_record(&self, collection: &str, id: &str) -> Result<Written<bool>, DataError> {
        check_name("the collection", collection)?;
        check_name("the record id", id)?;
        let t = self.tenant;
        self.run(|l| async move { l.delete_record(&t, collection, id).await }.boxed())
            .await
    }
}
