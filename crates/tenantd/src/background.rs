//! The server's background work: writing keys' last use and metered usage, listing
//! deleted tenants due for purging, the job queue's upkeep, the platform worker
//! (`platform_jobs.rs`: purges and tier moves), the event chains' checkpoints, handing
//! events to webhooks and delivering them (`webhooks/`), and refreshing the OpenID JWKS.
use crate::startup::load_jwks;
use crate::state::{AppState, State};
use std::time::Duration;

/// The server's periodic work, stopped when dropped: writing API keys' last use and
/// metered usage to the catalog, purging deleted tenants past their retention, the job
/// queue's upkeep and the platform worker, and refreshing the OpenID JWKS. A service
/// embedding the edge (see `examples/notes`) runs it too.
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
                s.drop_expired_archives().await;
                s.apply_retention(tenantd_core::now_secs()).await;
                s.schedule_backups(tenantd_core::now_secs()).await;
            },
        )
    });
    let upkeep = every(state, Duration::from_secs(1), |s| async move { s.keep_up_jobs().await });
    let checkpoints = (state.cfg.audit_checkpoint_seconds > 0).then(|| {
        every(
            state,
            Duration::from_secs(state.cfg.audit_checkpoint_seconds),
            |s| async move {
                if let Err(e) = s.checkpoint_chains().await {
                    tracing::warn!(error = ?e, "could not sign the event chains' checkpoints; retrying next round");
                }
            },
        )
    });
    let worker = crate::platform_jobs::platform_worker(state);
    let dispatcher = every(state, Duration::from_millis(250), |s| async move {
        if let Err(e) = s.dispatch_events().await {
            tracing::warn!(error = %e, "could not hand events to the webhooks; retrying next round");
        }
    });
    let log_pruner = every(state, Duration::from_secs(3600), |s| async move {
        s.prune_delivery_log().await
    });
    Background(
        [flusher, security, upkeep, worker, dispatcher, log_pruner]
            .into_iter()
            .chain(crate::webhooks::deliver::delivery_workers(state))
            .chain(usage_flusher)
            .chain(purger)
            .chain(checkpoints)
            .chain(refresher)
            .collect(),
    )
}

impl AppState {
    /// One round of the job queue's upkeep (expired leases, metering, idle lanes, old
    /// jobs), and the queue's depth for `/metrics`; a failure is logged and retried next
    /// round.
    pub async fn keep_up_jobs(&self) {
        let now = tenantd_limits::now_ms();
        if let Err(e) = self.jobs.upkeep(now).await {
            tracing::warn!(error = %e, "the job queue's upkeep failed; retrying next round");
        }
        match self.jobs.depth().await {
            Ok(rows) => self.job_metrics.set_depth(&rows),
            Err(e) => tracing::warn!(error = %e, "could not count the queued jobs"),
        }
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
