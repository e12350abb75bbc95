//! From the event log to delivery jobs. The log is the outbox: each chain has a cursor
//! (the last `seq` handed to the webhooks), and a dispatch takes a chain's cursor, makes a
//! `tenantd.webhook` job for every event past it and every endpoint whose types match,
//! and moves the cursor, in one transaction. So every event reaches every matching
//! endpoint's queue exactly once, whichever node dispatches it and whenever it crashes;
//! delivery is then at least once. A chain's `seq` follows commit order, so no event is
//! passed over by a cursor that moved on.
use crate::state::AppState;
use serde::{Deserialize, Serialize};
use tenantd_core::TenantId;
use tenantd_jobs::{Jobs, NewJob};
use tenantd_store::{AuditFilter, Webhook};

/// The queue deliveries are jobs on.
pub const QUEUE: &str = "tenantd.webhook";
/// Events a dispatch hands over per chain at a time.
const BATCH: u32 = 500;
/// A delivery job is tried this often at most; the endpoint's schedule ends it sooner.
const ATTEMPTS: u32 = 100;

/// A delivery job's payload: which endpoint, and either an event of a chain or a message
/// carried whole (a test).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Task {
    /// `wh_…`
    pub webhook_id: String,
    /// The event: its chain, `seq` and id (a chain begun again under a reused tenant id
    /// has other events at the same `seq`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<(String, i64, String)>,
    /// A message sent as it is (`webhook.test`): `{id, type, timestamp, data}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<serde_json::Value>,
}

/// Whether an endpoint with these types gets events of `kind` (`tenant.*` is a prefix; no
/// types is every type).
pub fn matches(types: &[String], kind: &str) -> bool {
    types.is_empty()
        || types.iter().any(|t| match t.strip_suffix('*') {
            Some(prefix) => kind.starts_with(prefix),
            None => t == kind,
        })
}

/// Whether `k` is an event type (`tenant.created`) or a prefix of types (`tenant.*`).
pub fn valid_type(k: &str) -> bool {
    !k.is_empty()
        && k.trim_end_matches(".*")
            .split('.')
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
}

/// The tenant whose lane a delivery of `chain`'s events runs in (the platform's for the
/// platform's chain), so that one tenant's endpoints never delay another's.
fn lane_tenant(chain: &str) -> TenantId {
    if chain.is_empty() {
        Jobs::platform()
    } else {
        TenantId::from_trusted_str(chain)
    }
}

impl AppState {
    /// Hands every event past its chain's cursor to the matching endpoints' queues; how
    /// many delivery jobs it made. Chains another node is dispatching are left to it.
    pub async fn dispatch_events(&self) -> Result<u64, tenantd_store::StoreError> {
        let mut made = 0;
        for (chain, mut cursor) in self.catalog.chains_to_dispatch(100).await? {
            let tenant = (!chain.is_empty()).then(|| TenantId::from_trusted_str(&chain));
            let hooks = self.catalog.webhooks_for(tenant.as_ref()).await?;
            loop {
                // Read before taking the cursor: on SQLite a unit of work holds the one
                // write lock, and a read from the pool inside it could wait for a
                // connection that waits for that lock.
                let events = self
                    .catalog
                    .chain_events(&chain, &AuditFilter::default(), cursor, BATCH)
                    .await?;
                let Some(last) = events.last().map(|e| e.seq) else {
                    break;
                };
                let mut w = self.catalog.begin().await?;
                match self.catalog.lock_cursor(&mut w, &chain).await? {
                    // Another node is handing this chain out.
                    None => break,
                    // It moved since: read again from where it is.
                    Some(now) if now != cursor => {
                        cursor = now;
                        continue;
                    }
                    Some(_) => {}
                }
                for e in &events {
                    // An endpoint gets the events from its creation on (replay sends older ones).
                    let to = hooks
                        .iter()
                        .filter(|h| e.at >= h.created_at && matches(&h.event_types, &e.kind));
                    for h in to {
                        let task = Task {
                            webhook_id: h.id.clone(),
                            event: Some((chain.clone(), e.seq, e.id.clone())),
                            message: None,
                        };
                        made += self.enqueue_delivery(&mut w, h, &chain, &task, &e.id).await?;
                    }
                }
                self.catalog.set_cursor(&mut w, &chain, last).await?;
                w.commit().await?;
                self.jobs.enqueued();
                cursor = last;
                if events.len() < BATCH as usize {
                    break;
                }
            }
        }
        Ok(made)
    }

    /// Makes one delivery job in `w`; `key` makes it once per endpoint (an event's id, or
    /// a replay's own).
    pub async fn enqueue_delivery(
        &self,
        w: &mut tenantd_store::Work,
        hook: &Webhook,
        chain: &str,
        task: &Task,
        key: &str,
    ) -> Result<u64, tenantd_store::StoreError> {
        let payload = serde_json::to_value(task).map_err(tenantd_store::StoreError::from)?;
        let mut job = NewJob::new(lane_tenant(chain), QUEUE, payload);
        job.max_attempts = ATTEMPTS;
        job.idempotency_key = Some(format!("{}:{key}", hook.id));
        let (_, new) = self
            .jobs
            .enqueue_in(w, &job, tenantd_limits::now_ms())
            .await
            .map_err(|e| tenantd_store::StoreError::Invalid(e.to_string()))?;
        Ok(u64::from(new))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_match_exactly_or_by_prefix_and_none_is_all() {
        let t = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(matches(&[], "tenant.created"));
        assert!(matches(&t(&["tenant.*"]), "tenant.suspended"));
        assert!(!matches(&t(&["tenant.*"]), "tenants.x"));
        assert!(matches(&t(&["key.revoked", "quota.*"]), "key.revoked"));
        assert!(!matches(&t(&["key.revoked"]), "key.created"));
        for ok in ["tenant.created", "tenant.*", "security.cross_tenant_attempt"] {
            assert!(valid_type(ok), "{ok}");
        }
        for bad in ["", "*", "Tenant.x", "tenant..x", "tenant.x*", "tenant.*.x"] {
            assert!(!valid_type(bad), "{bad}");
        }
    }
}
