//! A unit of work: one catalog transaction in which a caller makes its changes and
//! appends the events that record them, so that both commit together or not at all.
//!
//! ```ignore
//! let mut w = catalog.begin().await?;
//! catalog.create_plan(&mut w, &plan).await?;
//! w.append(&event).await?;
//! w.commit().await?; // dropped without commit: nothing happened
//! ```
//!
//! On SQLite the transaction begins `IMMEDIATE`: it holds the write lock from its start,
//! so a unit of work may read before it writes (a deferred one would fail with "database
//! is locked" when another writer committed in between). Writers wait for each other
//! (the busy timeout), as they must on SQLite anyway.
use crate::{Backend, NewAuditEvent, Result};
use tenantd_core::now_secs;

/// The transaction of a unit of work.
pub(crate) type Tx = sqlx::Transaction<'static, sqlx::Any>;

/// One transaction's changes and events. Dropped without [`Work::commit`], it rolls back.
pub struct Work {
    pub(crate) tx: Tx,
}

impl std::fmt::Debug for Work {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Work")
    }
}

impl Work {
    /// Begins a unit of work on `pool`.
    pub(crate) async fn begin(pool: &sqlx::AnyPool, backend: Backend) -> Result<Self> {
        let tx = match backend {
            Backend::Sqlite => pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => pool.begin().await?,
        };
        Ok(Self { tx })
    }

    /// Appends an event, to commit with the changes of this unit of work; its id.
    pub async fn append(&mut self, ev: &NewAuditEvent) -> Result<i64> {
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO audit_events (at, tenant_id, actor, action, detail, request_id) VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        )
        .bind(now_secs())
        .bind(ev.tenant_id.as_deref())
        .bind(&ev.actor)
        .bind(&ev.action)
        .bind(serde_json::to_string(&ev.detail).unwrap_or_else(|_| "null".into()))
        .bind(&ev.request_id)
        .fetch_one(&mut *self.tx)
        .await?;
        Ok(id)
    }

    /// Commits every change and event of this unit of work.
    pub async fn commit(self) -> Result<()> {
        self.tx.commit().await?;
        Ok(())
    }

    /// Appends `ev` and commits: the common end of a unit of work with one event.
    pub async fn commit_with(mut self, ev: &NewAuditEvent) -> Result<()> {
        self.append(ev).await?;
        self.commit().await
    }
}
