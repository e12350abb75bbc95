//! [`Scope`]: the only way to one tenant's data, at its current location, across tier
//! moves. Its records, blobs and cache are in the sibling modules.
use super::DataStore;
use crate::location::Location;
use crate::DataError;
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tenantd_core::{Isolation, TenantId};

/// How long a node trusts its cached placement of a tenant.
const PLACEMENT_TTL: Duration = Duration::from_secs(1);
/// How long a write waits for a tier move's freeze to end.
const FREEZE_WAIT: Duration = Duration::from_secs(30);

impl DataStore {
    /// The tenant's data. `wanted` places a tenant that has no placement yet at that
    /// tier; with `None` such a tenant is [`DataError::NotPlaced`].
    #[tracing::instrument(level = "debug", skip_all, fields(tenant_id = %tenant))]
    pub async fn scope(&self, tenant: TenantId, wanted: Option<Isolation>) -> Result<Scope<'_>, DataError> {
        let cached = self
            .placed
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&tenant)
            .filter(|p| p.at.elapsed() < PLACEMENT_TTL)
            .map(|p| p.loc.clone());
        let loc = match cached {
            Some(l) => l,
            None => self.locate(&tenant, wanted).await?,
        };
        Ok(Scope {
            store: self,
            tenant,
            loc,
        })
    }
}

/// One tenant's data, wherever it lives. Each call goes to the tenant's current
/// location; a write that meets a tier move's freeze waits for the switch (up to 30 s)
/// and goes to the new location.
pub struct Scope<'a> {
    pub(super) store: &'a DataStore,
    pub(super) tenant: TenantId,
    pub(super) loc: Arc<Location>,
}

impl Scope<'_> {
    /// The tenant.
    pub fn tenant(&self) -> &TenantId {
        &self.tenant
    }

    /// Where its data is.
    pub fn location(&self) -> &str {
        &self.loc.name
    }

    /// Runs `op` at the tenant's location; on a freeze, again at its location after
    /// the move; on a database error, once more if the tenant has moved meanwhile.
    pub(super) async fn run<'f, T, F>(&self, op: F) -> Result<T, DataError>
    where
        F: Fn(Arc<Location>) -> BoxFuture<'f, Result<T, DataError>>,
    {
        let mut loc = self.loc.clone();
        let deadline = Instant::now() + FREEZE_WAIT;
        loop {
            match op(loc.clone()).await {
                Err(DataError::Moving) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    loc = self.store.locate(&self.tenant, None).await?;
                }
                Err(DataError::Db(e)) => {
                    let now = self.store.locate(&self.tenant, None).await?;
                    if now.name == loc.name {
                        return Err(DataError::Db(e));
                    }
                    loc = now;
                }
                other => return other,
            }
        }
    }

    /// Deletes all of the tenant's records, blobs and cache entries (a restore's first
    /// step); its storage level is 0 after.
    pub async fn clear(&self) -> Result<(), DataError> {
        let t = self.tenant;
        self.run(|l| async move { l.clear(&t, false).await }.boxed()).await
    }

    /// How many records and blobs the tenant has.
    pub async fn counts(&self) -> Result<(u64, u64), DataError> {
        let t = self.tenant;
        self.run(|l| async move { l.counts(&t).await }.boxed()).await
    }

    /// The tenant's storage level: bytes of records, blobs and cache entries.
    pub async fn used(&self) -> Result<u64, DataError> {
        let t = self.tenant;
        self.run(|l| async move { l.used(&t).await }.boxed()).await
    }
}
