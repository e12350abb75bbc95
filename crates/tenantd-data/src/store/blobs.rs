//! A scope's blobs: uploads staged in chunks and committed at a path, read back a chunk
//! at a time.
use super::Scope;
use crate::location::Blob;
use crate::store::Object;
use crate::{DataError, Written};
use futures_util::FutureExt;
use std::time::Duration;
use tenantd_core::now_secs;

impl Scope<'_> {
    /// Stores chunk `seq` of an upload (`blob_id` from [`new_blob_id`](crate::new_blob_id)).
    #[tracing::instrument(level = "debug", skip_all, fields(tenant_id = %self.tenant))]
    pub async fn stage_chunk(&self, blob_id: &str, seq: i64, data: &[u8]) -> Result<(), DataError> {
        let (version, stored) = self.seal(Object::Chunk(blob_id, seq), data).await?;
        self.loc
            .stage_chunk(&self.tenant, blob_id, seq, (&stored, version))
            .await
    }

    /// Drops an upload's staged chunks.
    #[tracing::instrument(level = "debug", skip_all, fields(tenant_id = %self.tenant))]
    pub async fn discard_chunks(&self, blob_id: &str) -> Result<(), DataError> {
        self.loc.discard_chunks(&self.tenant, blob_id).await
    }

    /// Makes an upload (its `chunks` chunks staged by this scope) the blob at its path.
    #[tracing::instrument(level = "debug", skip_all, fields(tenant_id = %self.tenant))]
    pub async fn commit_blob(&self, blob: &Blob, chunks: i64, max: Option<u64>) -> Result<Written<Blob>, DataError> {
        let t = self.tenant;
        let staged = &self.loc;
        self.run(|l| {
            async move {
                if l.name != staged.name {
                    // The tenant moved during the upload: the chunks go along from the
                    // old copy (kept for the grace period) before the commit.
                    for seq in 0..chunks {
                        let (data, version) = staged.chunk(&t, &blob.blob_id, seq).await?.ok_or_else(|| {
                            DataError::Invalid(
                                "the tenant's data moved to another tier during the upload; upload it again".into(),
                            )
                        })?;
                        l.stage_chunk(&t, &blob.blob_id, seq, (&data, version)).await?;
                    }
                }
                l.commit_blob(&t, blob, chunks, max).await
            }
            .boxed()
        })
        .await
    }

    /// Deletes the chunks of this tenant's uploads that were never committed and are
    /// older than `age` (an upload still running that long is refused at its commit);
    /// returns how many chunks.
    #[tracing::instrument(level = "debug", skip_all, fields(tenant_id = %self.tenant))]
    pub async fn sweep_abandoned_uploads(&self, age: Duration) -> Result<u64, DataError> {
        let t = self.tenant;
        let before = now_secs().saturating_sub(age.as_secs().min(i64::MAX as u64) as i64);
        self.run(|l| async move { l.sweep_abandoned_uploads(&t, before).await }.boxed())
            .await
    }

    /// A blob's description.
    #[tracing::instrument(level = "debug", skip_all, fields(tenant_id = %self.tenant))]
    pub async fn get_blob(&self, path: &str) -> Result<Option<Blob>, DataError> {
        let t = self.tenant;
        self.run(|l| async move { l.get_blob(&t, path).await }.boxed()).await
    }

    /// Chunk `seq` of a blob's content (from [`Scope::get_blob`]); `None` past its end.
    #[tracing::instrument(level = "debug", skip_all, fields(tenant_id = %self.tenant))]
    pub async fn chunk(&self, blob: &Blob, seq: i64) -> Result<Option<Vec<u8>>, DataError> {
        let t = self.tenant;
        let Some((stored, version)) = self
            .run(|l| async move { l.chunk(&t, &blob.blob_id, seq).await }.boxed())
            .await?
        else {
            return Ok(None);
        };
        self.open(Object::Chunk(&blob.blob_id, seq), version, stored)
            .await
            .map(Some)
    }

    /// Up to `limit` blobs whose path starts with `prefix`, after `after`, by path.
    #[tracing::instrument(level = "debug", skip_all, fields(tenant_id = %self.tenant))]
    pub async fn list_blobs(&self, prefix: &str, after: Option<&str>, limit: u32) -> Result<Vec<Blob>, DataError> {
        let t = self.tenant;
        let after = after.unwrap_or("");
        self.run(|l| async move { l.list_blobs(&t, prefix, after, limit).await }.boxed())
            .await
    }

    /// Deletes a blob; `false` if this tenant has none at that path.
    #[tracing::instrument(level = "debug", skip_all, fields(tenant_id = %self.tenant))]
    pub async fn delete_blob(&self, path: &str) -> Result<Written<bool>, DataError> {
        let t = self.tenant;
        self.run(|l| async move { l.delete_blob(&t, path).await }.boxed()).await
    }
}
