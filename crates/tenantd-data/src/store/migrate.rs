//! Per-location migrations: every location brought to the newest one.
use super::{DataStore, SHARED};
use crate::DataError;
use futures_util::StreamExt;
use sqlx::Row;

/// The outcome of [`DataStore::migrate_all`].
#[derive(Debug, Default)]
pub struct MigrateReport {
    /// Locations looked at.
    pub locations: usize,
    /// Migrations applied, over all of them.
    pub applied: usize,
    /// Locations that failed, and why.
    pub failed: Vec<(String, String)>,
}

impl DataStore {
    /// Brings every location (the shared one, and each tenant's schema or database) to
    /// the newest migration, `concurrency` at a time; `progress(done, total, location,
    /// outcome)` is called as each finishes. Running it again after a crash carries on
    /// where it stopped: each location records the migrations it has.
    pub async fn migrate_all(
        &self,
        concurrency: usize,
        progress: impl Fn(usize, usize, &str, &Result<usize, DataError>),
    ) -> Result<MigrateReport, DataError> {
        let rows = sqlx::query(&format!("SELECT DISTINCT location FROM {}", self.placements()))
            .fetch_all(&self.admin)
            .await?;
        let mut names = vec![SHARED.to_string()];
        for r in rows {
            let l: String = r.try_get("location")?;
            if !names.contains(&l) {
                names.push(l);
            }
        }
        let total = names.len();
        let mut report = MigrateReport {
            locations: total,
            ..Default::default()
        };
        let mut done = 0;
        let mut results = futures_util::stream::iter(names)
            .map(|name| async move {
                let opened = if name == SHARED {
                    self.home_applied.swap(0, std::sync::atomic::Ordering::Relaxed)
                } else {
                    0
                };
                let r = self.prepare(&name, true).await.map(|n| n + opened);
                (name, r)
            })
            .buffer_unordered(concurrency.max(1));
        while let Some((name, r)) = results.next().await {
            done += 1;
            progress(done, total, &name, &r);
            match r {
                Ok(n) => report.applied += n,
                Err(e) => report.failed.push((name, e.to_string())),
            }
        }
        Ok(report)
    }
}
