//! The placement table: where each tenant's data lives; placing a tenant, locating its
//! data, and removing it.
use super::{DataStore, Placed};
use crate::location::Location;
use crate::DataError;
use serde::Serialize;
use serde_json::Value;
use sqlx::Row;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tenantd_core::{now_secs, Isolation, TenantId};

/// Where one tenant's data lives, serialized as `GET /v1/tenants/{id}/placement`
/// answers it (fields in alphabetical order).
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Placement {
    /// Where: `shared`, `schema:<name>`, `database:<host:port>/<name>`, `file:<path>`.
    pub location: String,
    /// The last (or running) move: phase, rows copied, target, error.
    #[serde(rename = "move")]
    pub progress: Option<Value>,
    /// `placed`, or `moving` while a tier move runs.
    pub state: String,
    /// The tenant.
    pub tenant_id: String,
    /// Its tier.
    pub tier: Isolation,
    /// Unix seconds.
    #[serde(serialize_with = "tenantd_core::ts::ser")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: i64,
}

fn parse_tier(s: &str) -> Result<Isolation, DataError> {
    Isolation::parse(s).ok_or_else(|| DataError::Invalid(format!("unknown tier '{s}' in the placement table")))
}

impl DataStore {
    /// The tenant's placement, if it has one.
    pub async fn placement(&self, tenant: &TenantId) -> Result<Option<Placement>, DataError> {
        let row = sqlx::query(&format!(
            "SELECT tier, location, state, progress, updated_at FROM {} WHERE tenant_id = $1",
            self.placements()
        ))
        .bind(tenant.as_str())
        .fetch_optional(&self.admin)
        .await?;
        let Some(r) = row else { return Ok(None) };
        let progress: Option<String> = r.try_get("progress")?;
        Ok(Some(Placement {
            tenant_id: tenant.to_string(),
            tier: parse_tier(&r.try_get::<String, _>("tier")?)?,
            location: r.try_get("location")?,
            state: r.try_get("state")?,
            progress: progress.map(|p| serde_json::from_str(&p)).transpose()?,
            updated_at: r.try_get("updated_at")?,
        }))
    }

    /// Places a tenant at a tier (creating its schema or database) unless it is placed
    /// already; returns its placement. Called when a tenant is provisioned, and on first
    /// use for tenants that predate the data plane.
    pub async fn place(&self, tenant: &TenantId, tier: Isolation) -> Result<Placement, DataError> {
        if let Some(p) = self.placement(tenant).await? {
            return Ok(p);
        }
        let name = self.location_for(tenant, tier).await?;
        self.open_location(&name, true).await?;
        sqlx::query(&format!(
            "INSERT INTO {} (tenant_id, tier, location, state, updated_at) VALUES ($1, $2, $3, 'placed', $4) \
             ON CONFLICT (tenant_id) DO NOTHING",
            self.placements()
        ))
        .bind(tenant.as_str())
        .bind(tier.as_str())
        .bind(&name)
        .bind(now_secs())
        .execute(&self.admin)
        .await?;
        self.placement(tenant)
            .await?
            .ok_or_else(|| DataError::Invalid("the placement vanished as it was written".into()))
    }

    /// Where the tenant's data is now, read from the placement table. A location that
    /// is gone by the time it is opened (a move switched and dropped it meanwhile) is
    /// looked up again.
    pub(super) async fn locate(
        &self,
        tenant: &TenantId,
        wanted: Option<Isolation>,
    ) -> Result<Arc<Location>, DataError> {
        let mut attempts = 0;
        let loc = loop {
            let p = match (self.placement(tenant).await?, wanted) {
                (Some(p), _) => p,
                (None, Some(tier)) => self.place(tenant, tier).await?,
                (None, None) => return Err(DataError::NotPlaced),
            };
            match self.open_location(&p.location, false).await {
                // Gone, or failing as it is dropped: unless the tenant is still there.
                Err(e @ (DataError::Moving | DataError::Db(_))) if attempts < 50 => {
                    attempts += 1;
                    let now = self.placement(tenant).await?;
                    if matches!(e, DataError::Db(_)) && now.is_some_and(|n| n.location == p.location) {
                        return Err(e);
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                other => break other?,
            }
        };
        self.placed.write().unwrap_or_else(|e| e.into_inner()).insert(
            *tenant,
            Placed {
                loc: loc.clone(),
                at: Instant::now(),
            },
        );
        Ok(loc)
    }

    /// Deletes all of a tenant's data and its placement (its schema or database is
    /// dropped). Waits for a running move to end first.
    pub async fn remove(&self, tenant: &TenantId) -> Result<(), DataError> {
        let Some(p) = self.placement(tenant).await? else {
            return Ok(());
        };
        if p.state == "moving" {
            return Err(DataError::Moving);
        }
        self.drop_copy(tenant, &p.location).await?;
        // The shared tables too, wherever it is placed: a move off the row tier leaves
        // its storage row there frozen, which would turn away a new tenant under the
        // same id. No tombstone is needed: the placement goes too.
        self.home.clear(tenant, false).await?;
        sqlx::query(&format!("DELETE FROM {} WHERE tenant_id = $1", self.placements()))
            .bind(tenant.as_str())
            .execute(&self.admin)
            .await?;
        self.placed.write().unwrap_or_else(|e| e.into_inner()).remove(tenant);
        Ok(())
    }
}
