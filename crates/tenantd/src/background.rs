//! The server's background work: writing keys' last use and metered usage, purging
//! deleted tenants past their retention, moving tenant data between tiers, refreshing the
//! OpenID JWKS, and recovering interrupted moves at start.
use crate::startup::load_jwks;
use crate::state::{AppState, State};
use std::sync::Arc;
use std::time::Duration;
use tenantd_core::TenantId;
use tenantd_store::NewEvent;

/// The server's periodic work, stopped when dropped: writing API keys' last use and
/// metered usage to the catalog, purging deleted tenants past their retention, and
/// refreshing the OpenID JWKS. A service embedding the
/// edge (see `examples/notes`) runs it too.
pub struct Background(Vec<tokio::task::JoinHandle<()>>);

impl Drop for Background {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

/// Runs `work` for `state` now and then every `period` (a late round delays the next ones
/// rather than bunching them up).
fn every<F, Fut>(state: &State, period: Duration, work: F) -> tokio::task::JoinHandle<()>
where
    F: Fn(State) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let state = state.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            work(state.clone()).await;
        }
    })
}

/// Starts the [`Background`] work for `state`.
pub fn background(state: &State) -> Background {
    let flusher = every(
        state,
        Duration::from_secs(state.cfg.key_usage_flush_seconds),
        |s| async move { s.flush_key_usage().await },
    );
    let security = every(state, Duration::from_secs(1), |s| async move {
        s.edge.flush_security().await
    });
    let usage_flusher = (state.cfg.usage_flush_ms > 0).then(|| {
        every(state, Duration::from_millis(state.cfg.usage_flush_ms), |s| async move {
            s.flush_usage().await
        })
    });
    let refresher = state.cfg.oidc.clone().filter(|o| o.jwks_url.is_some()).map(|o| {
        let state = state.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(600));
            tick.tick().await;
            loop {
                tick.tick().await;
                match (load_jwks(&o).await, state.edge.oidc()) {
                    (Ok(j), Some(v)) => v.set_jwks(j),
                    (Err(e), _) => tracing::warn!(error = %e, "could not refresh the OpenID JWKS; keeping the old one"),
                    _ => {}
                }
            }
        })
    });
    let purger = (state.cfg.purge_interval_seconds > 0).then(|| {
        every(
            state,
            Duration::from_secs(state.cfg.purge_interval_seconds),
            |s| async move {
                s.purge_due(tenantd_core::now_secs()).await;
            },
        )
    });
    // Tier moves a crash interrupted are undone, then started again.
    let recovery = {
        let state = state.clone();
        tokio::spawn(async move {
            match state.data.recover().await {
                Ok(moves) => {
                    for tenant in moves {
                        tracing::warn!(tenant_id = %tenant, "restarting an interrupted tier move");
                        state.move_data(tenant);
                    }
                }
                Err(e) => tracing::error!(error = %e, "could not look for interrupted tier moves"),
            }
        })
    };
    Background(
        [flusher, security, recovery]
            .into_iter()
            .chain(usage_flusher)
            .chain(purger)
            .chain(refresher)
            .collect(),
    )
}

impl AppState {
    /// Moves a tenant's data, in the background, to the tier of the plan it is on
    /// (progress at `GET /v1/tenants/{id}/placement`). If the plan changes again
    /// meanwhile, or a move is already running, it follows up until the placement
    /// matches the plan.
    pub fn move_data(self: &Arc<Self>, tenant: TenantId) {
        let state = self.clone();
        tokio::spawn(async move {
            for _ in 0..10 {
                let tier = match state.plan_tier(&tenant).await {
                    Ok(t) => t,
                    Err(e) => {
                        tracing::error!(tenant_id = %tenant, error = %e, "tenant data not moved: its plan could not be read");
                        return;
                    }
                };
                match state.data.placement(&tenant).await {
                    Ok(Some(p)) if p.state != "placed" => {
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        continue;
                    }
                    Ok(Some(p)) if p.tier != tier => {}
                    // Placed at the plan's tier, or never used (placed on first use).
                    Ok(_) => return,
                    Err(e) => tracing::error!(tenant_id = %tenant, error = %e, "could not read a placement"),
                }
                match state.data.move_tenant(tenant, tier).await {
                    Ok(p) => tracing::info!(tenant_id = %tenant, location = %p.location, "tenant data moved"),
                    Err(e) => {
                        tracing::error!(tenant_id = %tenant, error = %e, "tenant data not moved; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        });
    }

    /// Purges every deleted tenant whose retention ended by `now` (Unix seconds), 100 at
    /// a time by id: first its data (records, blobs, cache; a schema or database is
    /// dropped), then every catalog row of it, then its data once more (what a request
    /// placed meanwhile), then what this node and the others cached of it (placement,
    /// connections, counters, keys, roles); an operator-wide audit event `tenant.purged`
    /// records each. A tenant whose data is being moved, or whose purge fails, is logged
    /// and left for the next round (once its retention has ended it can no longer be
    /// restored, so nothing can bring it back meanwhile). Answers the tenants purged.
    pub async fn purge_due(&self, now: i64) -> Vec<TenantId> {
        const BATCH: u32 = 100;
        let mut purged = Vec::new();
        let mut after = None;
        loop {
            let due = match self.catalog.purgeable_tenants(now, after.as_ref(), BATCH).await {
                Ok(due) => due,
                Err(e) => {
                    tracing::error!(error = %e, "could not list the deleted tenants due for purging");
                    return purged;
                }
            };
            for tenant in &due {
                if self.purge(tenant, now).await {
                    purged.push(*tenant);
                    tracing::info!(tenant_id = %tenant, purged = purged.len(), "purged a deleted tenant");
                }
            }
            match due.last() {
                Some(last) if due.len() == BATCH as usize => after = Some(*last),
                _ => return purged,
            }
        }
    }

    /// Purges one deleted tenant past its retention ([`AppState::purge_due`]); `false`
    /// when it was left for the next round or another node purged it.
    async fn purge(&self, tenant: &TenantId, now: i64) -> bool {
        if let Err(e) = self.data.remove(tenant).await {
            tracing::warn!(tenant_id = %tenant, error = %e, "a deleted tenant's data was not purged; retrying next round");
            return false;
        }
        let purged = async {
            let mut w = self.catalog.begin().await?;
            let rows = self.catalog.purge_tenant(&mut w, tenant, now).await?;
            let detail = serde_json::json!({"tenant_id": tenant.as_str(), "catalog_rows": rows});
            w.commit_with(&NewEvent::new(None, "system", "tenant.purged", detail, ""))
                .await?;
            Ok::<_, tenantd_store::StoreError>(rows)
        };
        match purged.await {
            Ok(_) => {}
            // Another node purged it meanwhile.
            Err(tenantd_store::StoreError::NotFound(_)) => return false,
            Err(e) => {
                tracing::warn!(tenant_id = %tenant, error = %e, "a deleted tenant's catalog rows were not purged; retrying next round");
                return false;
            }
        };
        // Data an operator's request placed between the two steps (the tenant is unknown
        // from here on, so nothing can place it again).
        if let Err(e) = self.data.remove(tenant).await {
            tracing::error!(tenant_id = %tenant, error = %e, "data written to a tenant while it was purged was not removed");
        }
        self.storage_levels.remove(tenant);
        self.changed(tenantd_edge::Change::Purged(tenant.as_str())).await;
        true
    }

    /// The isolation tier of the tenant's plan.
    async fn plan_tier(&self, tenant: &TenantId) -> Result<tenantd_core::Isolation, String> {
        let t = self.catalog.get_tenant(tenant).await.map_err(|e| e.to_string())?;
        Ok(self
            .catalog
            .get_plan(&t.plan)
            .await
            .map_err(|e| e.to_string())?
            .isolation)
    }

    /// Writes metered usage to the catalog; a failure is logged and retried next time.
    pub async fn flush_usage(&self) {
        if let Err(e) = self.limiter.flush().await {
            tracing::warn!(error = %e, "could not write usage; will retry");
        }
        self.flush_storage_levels().await;
    }

    /// Writes API keys' queued `last_used_at` values.
    pub async fn flush_key_usage(&self) {
        let used = self.edge.cache().take_used();
        if !used.is_empty() {
            if let Err(e) = self.catalog.touch_keys(&used).await {
                tracing::warn!(error = %e, keys = used.len(), "could not write last_used_at");
            }
        }
    }
}
