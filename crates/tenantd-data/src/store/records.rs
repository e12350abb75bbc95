//! A scope's records: JSON documents by collection and id.
use super::Scope;
use crate::location::Record;
use crate::store::Object;
use crate::{check_name, DataError, Written};
use futures_util::FutureExt;
use serde_json::Value;

impl Scope<'_> {
    /// Creates or replaces a record; its version goes up by one. `max`: the storage
    /// level it may not grow past.
    #[tracing::instrument(level = "debug", skip_all, fields(tenant_id = %self.tenant))]
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
    #[tracing::instrument(level = "debug", skip_all, fields(tenant_id = %self.tenant))]
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
        let size = text.len() as i64;
        let (version, stored) = self.seal_json(Object::Record(collection, id), text).await?;
        let (t, stored) = (self.tenant, (stored.as_str(), size, version));
        let written = self
            .run(|l| async move { l.write_record(&t, collection, id, stored, expected, max).await }.boxed())
            .await?;
        let Some(mut w) = written else { return Ok(None) };
        w.value.doc = doc.clone();
        w.value.key_version = 0;
        Ok(Some(w))
    }

    /// A record as read, opened.
    async fn opened(&self, mut r: Record) -> Result<Record, DataError> {
        let doc = std::mem::take(&mut r.doc);
        r.doc = self
            .open_json(Object::Record(&r.collection, &r.id), r.key_version, doc)
            .await?;
        r.key_version = 0;
        Ok(r)
    }

    /// A record, if this tenant has it.
    #[tracing::instrument(level = "debug", skip_all, fields(tenant_id = %self.tenant))]
    pub async fn get_record(&self, collection: &str, id: &str) -> Result<Option<Record>, DataError> {
        check_name("the collection", collection)?;
        check_name("the record id", id)?;
        let t = self.tenant;
        match self
            .run(|l| async move { l.get_record(&t, collection, id).await }.boxed())
            .await?
        {
            Some(r) => self.opened(r).await.map(Some),
            None => Ok(None),
        }
    }

    /// Up to `limit` (1 to 1000) records of the collection with ids after `after`, by id.
    #[tracing::instrument(level = "debug", skip_all, fields(tenant_id = %self.tenant))]
    pub async fn list_records(
        &self,
        collection: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Record>, DataError> {
        check_name("the collection", collection)?;
        let t = self.tenant;
        let after = after.unwrap_or("");
        let stored = self
            .run(|l| async move { l.list_records(&t, collection, after, limit).await }.boxed())
            .await?;
        let mut out = Vec::with_capacity(stored.len());
        for r in stored {
            out.push(self.opened(r).await?);
        }
        Ok(out)
    }

    /// Up to `limit` (1 to 1000) records of every collection after `(collection, id)`, by
    /// collection and id (an export's walk).
    #[tracing::instrument(level = "debug", skip_all, fields(tenant_id = %self.tenant))]
    pub async fn all_records(&self, after: Option<(&str, &str)>, limit: u32) -> Result<Vec<Record>, DataError> {
        let t = self.tenant;
        let after = after.unwrap_or(("", ""));
        let stored = self
            .run(|l| async move { l.all_records(&t, after, limit).await }.boxed())
            .await?;
        let mut out = Vec::with_capacity(stored.len());
        for r in stored {
            out.push(self.opened(r).await?);
        }
        Ok(out)
    }

    /// Writes a record as a backup holds it: its id, version and times kept. The tenant
    /// must not have it ([`Scope::clear`] first).
    #[tracing::instrument(level = "debug", skip_all, fields(tenant_id = %self.tenant))]
    pub async fn restore_record(&self, r: &Record) -> Result<(), DataError> {
        check_name("the collection", &r.collection)?;
        check_name("the record id", &r.id)?;
        crate::check_depth(&r.doc)?;
        let text = serde_json::to_string(&r.doc)?;
        let size = text.len() as i64;
        let (version, stored) = self.seal_json(Object::Record(&r.collection, &r.id), text).await?;
        let (t, stored) = (self.tenant, (stored.as_str(), size, version));
        self.run(|l| async move { l.restore_record(&t, r, stored).await }.boxed())
            .await
    }

    /// Deletes a record; `false` if this tenant has no such record.
    #[tracing::instrument(level = "debug", skip_all, fields(tenant_id = %self.tenant))]
    pub async fn delete_record(&self, collection: &str, id: &str) -> Result<Written<bool>, DataError> {
        check_name("the collection", collection)?;
        check_name("the record id", id)?;
        let t = self.tenant;
        self.run(|l| async move { l.delete_record(&t, collection, id).await }.boxed())
            .await
    }
}
