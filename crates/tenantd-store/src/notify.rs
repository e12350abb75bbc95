//! Cache invalidation between tenantd nodes sharing a PostgreSQL catalog: a write on one
//! node is published with `pg_notify`, every node listens and drops what it cached. On
//! SQLite (one embedded node) there is nothing to tell.
use crate::{Backend, Catalog, Notify, Result, SqlCatalog};
use tokio::sync::mpsc;

/// The PostgreSQL channel invalidations travel on.
pub const CHANNEL: &str = "tenantd_cache";

/// What a node hears: a topic (`tenant:<id>`, `key:<id>`, `role:<tenant>/<name>`), or
/// `None` after the listening connection was lost and re-made, when anything may have
/// been missed and the whole cache must go.
pub type Invalidation = Option<String>;

#[async_trait::async_trait]
impl Notify for SqlCatalog {
    async fn publish(&self, topic: &str) -> Result<()> {
        if self.backend() == Backend::Postgres {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(CHANNEL)
                .bind(topic)
                .execute(self.pool())
                .await?;
        }
        Ok(())
    }

    async fn subscribe(&self) -> Result<Option<mpsc::Receiver<Invalidation>>> {
        if self.backend() != Backend::Postgres {
            return Ok(None);
        }
        let mut listener = sqlx::postgres::PgListener::connect(self.url()).await?;
        listener.listen(CHANNEL).await?;
        let (tx, rx) = mpsc::channel(1024);
        tokio::spawn(async move {
            loop {
                let msg = match listener.try_recv().await {
                    Ok(Some(n)) => Some(n.payload().to_string()),
                    // The connection dropped and was re-made: notifications may be lost.
                    Ok(None) => None,
                    Err(e) => {
                        tracing::warn!(error = %e, "cache invalidation listener failed; retrying");
                        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                        None
                    }
                };
                if tx.send(msg).await.is_err() {
                    return;
                }
            }
        });
        Ok(Some(rx))
    }
}
