//! Delivering: every node runs `[webhooks] workers` delivery tasks, each claiming
//! `tenantd.webhook` jobs of every tenant, fairly (one tenant's endpoints never delay
//! another's). A delivery is a Standard Webhooks `POST`; a 2xx within the timeout is
//! delivered; `410` disables the endpoint; anything else is retried on the schedule (or
//! after the endpoint's `Retry-After`) until the schedule ends or the endpoint has failed
//! for `disable_after_seconds`, which disables it. Every attempt is in the delivery log.
use super::dispatch::{Task, QUEUE};
use super::{guard, sign};
use crate::state::{AppState, State};
use dashmap::DashMap;
use serde_json::json;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tenantd_core::{now_secs, TenantId};
use tenantd_jobs::{ClaimRequest, Claimed, Holder};
use tenantd_store::{AuditFilter, Delivery, NewEvent, Webhook};

/// Who claims deliveries.
const WORKER: &str = "tenantd-webhooks";
/// A delivery's lease beyond its timeout: a crashed node's deliveries are made again
/// this long after their timeout would have ended them.
const LEASE_MARGIN_MS: i64 = 5_000;
/// How long a delivery that its endpoint cannot take now waits.
const BUSY_MS: i64 = 500;
/// How long a worker waits for a place at a busy endpoint before giving the job back.
const PLACE_WAIT: Duration = Duration::from_millis(50);

/// How long the delivery log keeps an attempt.
pub const LOG_DAYS: i64 = 30;

/// What an attempt did.
enum Done {
    /// Nothing more to do (delivered, given up, or nothing to deliver).
    Finished,
    /// Try again after this long.
    Retry(Duration),
}

/// One request's outcome: the status (if any), why it failed (if it did), `Retry-After`.
struct Sent {
    status: Option<u16>,
    error: Option<String>,
    retry_after: Option<u64>,
}

/// Clients kept per host at most, before the cache starts over.
const MAX_CLIENTS: usize = 1000;

/// What a node's delivery tasks share: each endpoint's deliveries in flight, and an HTTP
/// client per host and checked addresses (so connections are kept alive and reused).
#[derive(Default)]
struct Shared {
    busy: DashMap<String, usize>,
    clients: DashMap<(String, Vec<SocketAddr>), reqwest::Client>,
}

/// Claimers per node: two, so that one claim's round trip to the database does not
/// hold up the next while deliveries flow.
const CLAIMERS: usize = 2;

/// Starts this node's delivery claimers: each claims as many deliveries as there are free
/// places among `[webhooks] workers`, and makes each in a task of its own (idle, each
/// asks the queue once a second, not once per worker).
pub fn delivery_workers(state: &State) -> Vec<tokio::task::JoinHandle<()>> {
    let shared: Arc<Shared> = Arc::default();
    let places = Arc::new(tokio::sync::Semaphore::new(state.cfg.webhooks.workers));
    (0..CLAIMERS.min(state.cfg.webhooks.workers))
        .map(|_| {
            let (state, shared, places) = (state.clone(), shared.clone(), places.clone());
            tokio::spawn(async move {
                loop {
                    let Ok(first) = places.clone().acquire_owned().await else {
                        return;
                    };
                    let free = 1 + places.available_permits();
                    let mut permits = vec![first];
                    for job in state.claim_deliveries(free as u32).await {
                        // Another claimer may have taken a place counted free: wait for one.
                        let permit = match permits.pop() {
                            Some(p) => p,
                            None => match places.clone().acquire_owned().await {
                                Ok(p) => p,
                                Err(_) => return,
                            },
                        };
                        let (state, shared) = (state.clone(), shared.clone());
                        tokio::spawn(async move {
                            state.deliver_claimed(job, &shared).await;
                            drop(permit);
                        });
                    }
                }
            })
        })
        .collect()
}

impl AppState {
    /// Deletes the delivery log's attempts older than [`LOG_DAYS`].
    pub async fn prune_delivery_log(&self) {
        if let Err(e) = self.catalog.prune_deliveries(now_secs() - LOG_DAYS * 86_400).await {
            tracing::warn!(error = %e, "could not prune the webhook delivery log; retrying next round");
        }
    }

    /// Claims up to `max` deliveries, waiting up to 10 s for one.
    async fn claim_deliveries(&self, max: u32) -> Vec<Claimed> {
        let queues = [QUEUE.to_string()];
        let req = ClaimRequest {
            queues: &queues,
            tenant: None,
            claimer: WORKER,
            max,
            lease_ms: self.cfg.webhooks.timeout_seconds as i64 * 1000 + LEASE_MARGIN_MS,
        };
        match self
            .jobs
            .claim_waiting(&req, Duration::from_secs(10), tenantd_limits::now_ms)
            .await
        {
            Ok(got) => got,
            Err(e) => {
                tracing::error!(error = %e, "could not claim webhook deliveries");
                tokio::time::sleep(Duration::from_secs(1)).await;
                Vec::new()
            }
        }
    }

    /// Makes a claimed delivery, or gives it back when its endpoint is busy. Its lines
    /// carry the job and the tenant.
    #[tracing::instrument(name = "webhook", skip_all, fields(job_id = %job.job_id, tenant_id = %job.tenant_id))]
    async fn deliver_claimed(&self, job: Claimed, shared: &Shared) {
        let busy = &shared.busy;
        let by = Holder::Lease(&job.lease);
        let now_ms = tenantd_limits::now_ms;
        let Ok(task) = serde_json::from_value::<Task>(job.payload.clone()) else {
            let _ = self.jobs.complete(&job.job_id, by, None, now_ms()).await;
            return;
        };
        // A hanging endpoint holds at most `per_endpoint` of this node's workers. A busy
        // one that is merely fast frees a place within a few milliseconds: wait that long
        // before giving the job back.
        if !self.take_place(busy, &task.webhook_id).await {
            let _ = self.jobs.postpone(&job.job_id, by, BUSY_MS, now_ms()).await;
            return;
        }
        let done = self.deliver(&job, &task, shared).await;
        busy.alter(&task.webhook_id, |_, n| n.saturating_sub(1));
        let reported = match done {
            Ok(Done::Finished) => self.jobs.complete(&job.job_id, by, None, now_ms()).await.map(drop),
            Ok(Done::Retry(after)) => {
                let ms = after.as_millis().min(i64::MAX as u128) as i64;
                self.jobs
                    .fail(&job.job_id, by, "delivery failed", Some(ms), now_ms())
                    .await
                    .map(drop)
            }
            Err(e) => {
                tracing::error!(job_id = %job.job_id, error = %e, "a webhook delivery could not be made; it will be retried");
                self.jobs
                    .fail(&job.job_id, by, &e, Some(5_000), now_ms())
                    .await
                    .map(drop)
            }
        };
        if let Err(e) = reported {
            tracing::warn!(job_id = %job.job_id, error = %e, "a webhook delivery's end was not recorded; it may be made again");
        }
    }

    /// Takes one of the endpoint's `per_endpoint` places on this node, waiting up to
    /// [`PLACE_WAIT`] for one; whether it got one.
    async fn take_place(&self, busy: &DashMap<String, usize>, webhook_id: &str) -> bool {
        let deadline = Instant::now() + PLACE_WAIT;
        loop {
            {
                let mut n = busy.entry(webhook_id.to_string()).or_default();
                if *n < self.cfg.webhooks.per_endpoint {
                    *n += 1;
                    return true;
                }
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Makes one attempt of a delivery job.
    async fn deliver(&self, job: &Claimed, task: &Task, shared: &Shared) -> Result<Done, String> {
        let Some(hook) = self
            .catalog
            .webhook_by_id(&task.webhook_id)
            .await
            .map_err(|e| e.to_string())?
        else {
            return Ok(Done::Finished);
        };
        if !hook.enabled {
            return Ok(Done::Finished);
        }
        let (msg_id, kind, at, body) = match (&task.event, &task.message) {
            (Some((chain, seq, id)), _) => {
                let got = self
                    .catalog
                    .chain_events(chain, &AuditFilter::default(), seq - 1, 1)
                    .await
                    .map_err(|e| e.to_string())?;
                // Purged since (its content is gone), or a chain begun again under a
                // reused tenant id: nothing to deliver.
                let Some(e) = got.into_iter().find(|e| e.seq == *seq && e.id == *id && !e.redacted) else {
                    return Ok(Done::Finished);
                };
                let body = json!({"type": e.kind, "timestamp": tenantd_core::ts::format(e.at), "data": e});
                (e.id.clone(), e.kind.clone(), e.at, body)
            }
            (None, Some(m)) => (
                m["id"].as_str().unwrap_or_default().to_string(),
                m["type"].as_str().unwrap_or("webhook.test").to_string(),
                now_secs(),
                json!({"type": m["type"], "timestamp": m["timestamp"], "data": m["data"]}),
            ),
            (None, None) => return Ok(Done::Finished),
        };
        let body = serde_json::to_vec(&body).map_err(|e| e.to_string())?;
        let started = Instant::now();
        let sent = self.send(&hook, &msg_id, &body, shared).await;
        let duration_ms = started.elapsed().as_millis() as u64;
        tracing::debug!(webhook_id = %hook.id, event_id = %msg_id, attempt = job.attempt, status = sent.status, error = sent.error.as_deref(), duration_ms, "webhook delivery attempted");
        let now = now_secs();
        let schedule = &self.cfg.webhooks.retry_schedule_seconds;
        let attempt = job.attempt.max(1);
        let delivered = sent.error.is_none();
        let gone = sent.status == Some(410);
        let failing_for = hook.failing_since.map_or(0, |since| now - since);
        let stale = !delivered && failing_for >= self.cfg.webhooks.disable_after_seconds as i64;
        let retry = (!delivered && !gone && !stale)
            .then(|| schedule.get(attempt as usize - 1))
            .flatten()
            .map(|wait| {
                let base = sent.retry_after.map_or(*wait, |r| r.min(86_400)) as f64;
                Duration::from_secs_f64(base * (0.8 + rand::random::<f64>() * 0.4))
            });
        let record = Delivery {
            row: 0,
            event_id: msg_id,
            event_type: kind,
            attempt,
            at: now,
            status_code: sent.status,
            duration_ms,
            error: sent.error.clone(),
            next_attempt_at: retry.map(|r| now + r.as_secs() as i64),
        };
        let mut w = self.catalog.begin().await.map_err(|e| e.to_string())?;
        self.catalog
            .record_delivery(&mut w, &hook, &record)
            .await
            .map_err(|e| e.to_string())?;
        let reason = if gone {
            Some("the endpoint answered 410 Gone".to_string())
        } else if stale {
            Some(format!("its deliveries failed for {} s", failing_for))
        } else {
            None
        };
        if let Some(reason) = &reason {
            if self
                .catalog
                .disable_webhook(&mut w, &hook.id, reason)
                .await
                .map_err(|e| e.to_string())?
            {
                let tenant = hook.tenant_id.as_deref().map(TenantId::from_trusted_str);
                let data = json!({"webhook_id": hook.id, "reason": reason});
                w.append(&NewEvent::new(tenant.as_ref(), "system", "webhook.disabled", data, ""))
                    .await
                    .map_err(|e| e.to_string())?;
            }
        }
        w.commit().await.map_err(|e| e.to_string())?;
        let outcome = match (delivered, &reason, retry) {
            (true, _, _) => "delivered",
            (false, Some(_), _) => "disabled",
            (false, None, Some(_)) => "failed",
            (false, None, None) => "given_up",
        };
        self.webhook_metrics
            .delivered(outcome, delivered.then(|| (now - at).max(0)));
        Ok(match retry {
            Some(after) => Done::Retry(after),
            None => Done::Finished,
        })
    }

    /// Posts `body` to the endpoint, signed with its secrets, connecting only to addresses
    /// the guard allows.
    async fn send(&self, hook: &Webhook, msg_id: &str, body: &[u8], shared: &Shared) -> Sent {
        let fail = |error: String| Sent {
            status: None,
            error: Some(error),
            retry_after: None,
        };
        let settings = &self.cfg.webhooks;
        let url = match guard::parse(&hook.url) {
            Ok(u) => u,
            Err(e) => return fail(e),
        };
        let addrs = match guard::resolve(&url, settings.allow_private_networks).await {
            Ok(a) => a,
            Err(e) => return fail(e),
        };
        let timestamp = now_secs();
        let signature = match sign::signature_header(&hook.secrets.signing(timestamp), msg_id, timestamp, body) {
            Ok(s) => s,
            Err(e) => return fail(e),
        };
        let host = url.host_str().unwrap_or_default().to_string();
        let key = (host, addrs);
        let client = match shared.clients.get(&key) {
            Some(c) => c.clone(),
            None => {
                let built = reqwest::Client::builder()
                    .resolve_to_addrs(&key.0, &key.1)
                    .redirect(reqwest::redirect::Policy::none())
                    .timeout(Duration::from_secs(settings.timeout_seconds))
                    .user_agent("tenantd-webhooks")
                    .build();
                match built {
                    Ok(c) => {
                        if shared.clients.len() >= MAX_CLIENTS {
                            shared.clients.clear();
                        }
                        shared.clients.insert(key, c.clone());
                        c
                    }
                    Err(e) => return fail(format!("no HTTP client: {e}")),
                }
            }
        };
        let res = client
            .post(url)
            .header("content-type", "application/json")
            .header("webhook-id", msg_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body.to_vec())
            .send()
            .await;
        match res {
            Ok(r) => {
                let status = r.status().as_u16();
                let retry_after = r
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok());
                let error = (!r.status().is_success()).then(|| format!("the endpoint answered {status}"));
                Sent {
                    status: Some(status),
                    error,
                    retry_after,
                }
            }
            Err(e) if e.is_timeout() => fail(format!("no answer within {} s", settings.timeout_seconds)),
            // Without the URL: a token in its query would otherwise be stored and shown
            // with every failed delivery.
            Err(e) => fail(format!("the endpoint could not be reached: {}", e.without_url())),
        }
    }
}
