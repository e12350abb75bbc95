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
use crate::{chain, Backend, NewEvent, Result};
use sqlx::Row;
use tenantd_core::ids::new_id;
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

    /// Appends an event, to commit with the changes of this unit of work; its sequence
    /// number in the log.
    pub async fn append(&mut self, ev: &NewEvent) -> Result<i64> {
        append_in(&mut self.tx, ev).await
    }

    /// The transaction itself, for the crates built on the catalog (the job queue) to run
    /// their own statements in it.
    pub fn tx(&mut self) -> &mut sqlx::Transaction<'static, sqlx::Any> {
        &mut self.tx
    }

    /// Commits every change and event of this unit of work.
    pub async fn commit(self) -> Result<()> {
        self.tx.commit().await?;
        Ok(())
    }

    /// Appends `ev` and commits: the common end of a unit of work with one event.
    pub async fn commit_with(mut self, ev: &NewEvent) -> Result<()> {
        self.append(ev).await?;
        self.commit().await
    }
}

/// Makes `chain`'s head row (seq 0, the genesis hash) unless it has one.
pub(crate) async fn start_chain(tx: &mut sqlx::Transaction<'_, sqlx::Any>, chain: &str) -> Result<()> {
    sqlx::query("INSERT INTO event_chains (chain, seq, hash) VALUES ($1, 0, $2) ON CONFLICT (chain) DO NOTHING")
        .bind(chain)
        .bind(chain::GENESIS)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Writes `ev` to the event log in `tx`: the one place every event is written. The event
/// takes the next `seq` of its chain (its tenant's, or the platform's) and links to the
/// chain's head: the head's row stays locked until `tx` ends, so writers of one chain on
/// any node take turns, and `seq` follows the order they commit in (docs/events.md).
pub(crate) async fn append_in(tx: &mut sqlx::Transaction<'_, sqlx::Any>, ev: &NewEvent) -> Result<i64> {
    let chain = ev.tenant_id.clone().unwrap_or_default();
    let (seq, prev) = loop {
        // The new seq and the head's hash before it, the row locked by the update.
        let head = sqlx::query("UPDATE event_chains SET seq = seq + 1 WHERE chain = $1 RETURNING seq, hash")
            .bind(&chain)
            .fetch_optional(&mut **tx)
            .await?;
        if let Some(h) = head {
            break (h.try_get::<i64, _>("seq")?, h.try_get::<String, _>("hash")?);
        }
        start_chain(tx, &chain).await?;
    };
    let at = now_secs();
    let content = chain::Content {
        id: new_id("evt"),
        seq,
        kind: ev.kind.clone(),
        tenant_id: ev.tenant_id.clone(),
        actor: serde_json::json!({"type": ev.actor.kind.as_str(), "id": ev.actor.id}),
        request_id: ev.request_id.clone(),
        at: tenantd_core::ts::format(at),
        data: ev.data.clone(),
    };
    let digest = content.digest();
    let hash = chain::link(&prev, &digest);
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO audit_events (event_id, at, tenant_id, actor_type, actor, action, detail, request_id, chain, seq, digest, prev_hash, hash) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) RETURNING id",
    )
    .bind(&content.id)
    .bind(at)
    .bind(ev.tenant_id.as_deref())
    .bind(ev.actor.kind.as_str())
    .bind(&ev.actor.id)
    .bind(&ev.kind)
    .bind(ev.data.to_string())
    .bind(&ev.request_id)
    .bind(&chain)
    .bind(seq)
    .bind(&digest)
    .bind(&prev)
    .bind(&hash)
    .fetch_one(&mut **tx)
    .await?;
    sqlx::query("UPDATE event_chains SET hash = $2 WHERE chain = $1")
        .bind(&chain)
        .bind(&hash)
        .execute(&mut **tx)
        .await?;
    Ok(id)
}
