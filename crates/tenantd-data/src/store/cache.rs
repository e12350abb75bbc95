//! A scope's cache: JSON values by key, with expiry and tags.
use super::Scope;
use crate::location::{CacheEntry, CacheSelector};
use crate::store::Object;
use crate::{DataError, Written};
use futures_util::FutureExt;
use serde_json::Value;
use tenantd_core::now_secs;

impl Scope<'_> {
    /// Sets a cache entry, expiring after `ttl_seconds` if given.
    #[tracing::instrument(level = "debug", skip_all, fields(tenant_id = %self.tenant))]
    pub async fn put_cache(
        &self,
        key: &str,
        value: &Value,
        ttl_seconds: Option<u64>,
        tags: &[String],
        max: Option<u64>,
    ) -> Result<Written<CacheEntry>, DataError> {
        crate::check_depth(value)?;
        let text = serde_json::to_string(value)?;
        let expires = ttl_seconds.map(|s| now_secs().saturating_add(s.min(i64::MAX as u64 / 2) as i64));
        let size = (key.len() + text.len()) as i64;
        let (version, stored) = self.seal_json(Object::Cache(key), text).await?;
        let (t, stored) = (self.tenant, (stored.as_str(), size, version));
        let mut w = self
            .run(|l| async move { l.put_cache(&t, key, stored, expires, tags, max).await }.boxed())
            .await?;
        w.value.value = value.clone();
        w.value.key_version = 0;
        Ok(w)
    }

    /// A cache entry that has not expired.
    #[tracing::instrument(level = "debug", skip_all, fields(tenant_id = %self.tenant))]
    pub async fn get_cache(&self, key: &str) -> Result<Option<CacheEntry>, DataError> {
        let t = self.tenant;
        let Some(mut e) = self.run(|l| async move { l.get_cache(&t, key).await }.boxed()).await? else {
            return Ok(None);
        };
        let stored = std::mem::take(&mut e.value);
        e.value = self.open_json(Object::Cache(key), e.key_version, stored).await?;
        e.key_version = 0;
        Ok(Some(e))
    }

    /// Deletes cache entries by key, prefix or tag; returns how many.
    #[tracing::instrument(level = "debug", skip_all, fields(tenant_id = %self.tenant))]
    pub async fn delete_cache(&self, which: CacheSelector<'_>) -> Result<Written<u64>, DataError> {
        let t = self.tenant;
        self.run(|l| async move { l.delete_cache(&t, which).await }.boxed())
            .await
    }
}
