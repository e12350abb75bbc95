//! A worker for tenantd's job queue over HTTP (feature `client`), for workers in other
//! processes: it claims jobs with long polls, keeps each job's lease with heartbeats while
//! the handler runs, and completes or fails the job with what the handler answered.
//!
//! ```no_run
//! # async fn demo() -> Result<(), tenantd_jobs::client::ClientError> {
//! use tenantd_jobs::client::Worker;
//! let worker = Worker::new("http://127.0.0.1:8080", "tdk_…").queues(["mail"]);
//! worker
//!     .run(|job| async move {
//!         // Do the work, keyed by job.job_id so that a second run does no harm.
//!         Ok(serde_json::json!({"sent_to": job.payload["to"]}))
//!     })
//!     .await
//! # }
//! ```
//!
//! The credential is the operator key (a platform worker: every tenant's jobs) or a
//! tenant's API key or token whose role grants `jobs:work` (that tenant's jobs only).
use serde::Deserialize;
use serde_json::{json, Value};
use std::future::Future;
use std::time::Duration;

/// A job the worker holds.
#[derive(Debug, Clone, Deserialize)]
pub struct Task {
    /// `job_…`
    pub job_id: String,
    /// Its tenant.
    pub tenant_id: String,
    /// Its queue.
    pub queue: String,
    /// What to do.
    pub payload: Value,
    /// This run's number, from 1.
    pub attempt: u32,
    /// Report before this (RFC 3339); the worker's heartbeats move it on.
    pub lease_expires_at: String,
}

/// What went wrong talking to tenantd.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The request did not get an answer.
    #[error("tenantd could not be reached: {0}")]
    Http(#[from] reqwest::Error),
    /// tenantd refused it (its problem+json `code` and `detail`).
    #[error("tenantd answered {status} {code}: {detail}")]
    Api {
        /// The HTTP status.
        status: u16,
        /// The problem's `code`.
        code: String,
        /// The problem's `detail`.
        detail: String,
    },
}

/// A worker: where tenantd is, the credential, and what it claims.
#[derive(Clone)]
pub struct Worker {
    http: reqwest::Client,
    base: String,
    token: String,
    queues: Vec<String>,
    max: u32,
    lease_seconds: u32,
    wait_seconds: u32,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("base", &self.base)
            .field("token", &"[redacted]")
            .field("queues", &self.queues)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct Claimed {
    jobs: Vec<Task>,
}

impl Worker {
    /// A worker of tenantd at `base_url` (`http://host:port`) with `token`, claiming one
    /// job at a time from the queue `default`, leases of 30 s, long polls of 20 s.
    pub fn new(base_url: &str, token: &str) -> Self {
        Self {
            http: reqwest::Client::new(),
            base: base_url.trim_end_matches('/').to_string(),
            token: token.to_string(),
            queues: vec!["default".into()],
            max: 1,
            lease_seconds: 30,
            wait_seconds: 20,
        }
    }

    /// The queues to claim from.
    pub fn queues<I: IntoIterator<Item = S>, S: Into<String>>(mut self, queues: I) -> Self {
        self.queues = queues.into_iter().map(Into::into).collect();
        self
    }

    /// How long each claimed job is held between heartbeats (1–3600 s).
    pub fn lease_seconds(mut self, s: u32) -> Self {
        self.lease_seconds = s;
        self
    }

    /// How long a claim waits for work when there is none (0–30 s).
    pub fn wait_seconds(mut self, s: u32) -> Self {
        self.wait_seconds = s;
        self
    }

    async fn post(&self, path: &str, body: Value) -> Result<Option<Value>, ClientError> {
        let res = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await?;
        let status = res.status().as_u16();
        let text = res.text().await?;
        let value: Option<Value> = serde_json::from_str(&text).ok();
        if status >= 400 {
            let p = value.unwrap_or_default();
            return Err(ClientError::Api {
                status,
                code: p["code"].as_str().unwrap_or("unknown").to_string(),
                detail: p["detail"].as_str().unwrap_or(&text).to_string(),
            });
        }
        Ok(value)
    }

    /// Claims up to `max` jobs, waiting up to the long poll for one.
    pub async fn claim(&self) -> Result<Vec<Task>, ClientError> {
        let body = json!({"queues": self.queues, "max": self.max, "lease_seconds": self.lease_seconds,
            "wait_seconds": self.wait_seconds});
        let got = self.post("/v1/jobs/claim", body).await?.unwrap_or_default();
        Ok(serde_json::from_value::<Claimed>(got)
            .map(|c| c.jobs)
            .unwrap_or_default())
    }

    /// Extends a held job's lease, reporting its `progress` if given.
    pub async fn heartbeat(&self, job_id: &str, progress: Option<Value>) -> Result<(), ClientError> {
        let mut body = json!({"lease_seconds": self.lease_seconds});
        if let Some(p) = progress {
            body["progress"] = p;
        }
        self.post(&format!("/v1/jobs/{job_id}/heartbeat"), body).await.map(drop)
    }

    /// Completes a held job with its result.
    pub async fn complete(&self, job_id: &str, result: Value) -> Result<(), ClientError> {
        self.post(&format!("/v1/jobs/{job_id}/complete"), json!({"result": result}))
            .await
            .map(drop)
    }

    /// Fails a held job: tenantd retries it with backoff, or after `retry_in_seconds`.
    pub async fn fail(&self, job_id: &str, error: &str, retry_in_seconds: Option<u32>) -> Result<(), ClientError> {
        let mut body = json!({"error": error});
        if let Some(s) = retry_in_seconds {
            body["retry_in_seconds"] = json!(s);
        }
        self.post(&format!("/v1/jobs/{job_id}/fail"), body).await.map(drop)
    }

    /// Works one job: heartbeats every third of the lease while `handler` runs, then
    /// completes the job with its `Ok` or fails it with its `Err`. The handler's lines
    /// carry `job_id`, `queue` and `tenant_id`.
    #[tracing::instrument(name = "job", skip_all, fields(job_id = %task.job_id, queue = %task.queue, tenant_id = %task.tenant_id))]
    pub async fn work<F, Fut>(&self, task: Task, handler: &F) -> Result<(), ClientError>
    where
        F: Fn(Task) -> Fut,
        Fut: Future<Output = Result<Value, String>>,
    {
        let id = task.job_id.clone();
        let beats = {
            let (me, id) = (self.clone(), id.clone());
            let every = Duration::from_millis(u64::from(self.lease_seconds.max(1)) * 1000 / 3);
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(every).await;
                    if let Err(e) = me.heartbeat(&id, None).await {
                        tracing::warn!(job_id = %id, error = %e, "heartbeat failed");
                    }
                }
            })
        };
        let outcome = handler(task).await;
        beats.abort();
        match outcome {
            Ok(result) => self.complete(&id, result).await,
            Err(e) => self.fail(&id, &e, None).await,
        }
    }

    /// Claims and works jobs until `stop` resolves (finishing the job in hand).
    pub async fn run_until<F, Fut>(&self, stop: impl Future<Output = ()>, handler: F) -> Result<(), ClientError>
    where
        F: Fn(Task) -> Fut,
        Fut: Future<Output = Result<Value, String>>,
    {
        tokio::pin!(stop);
        loop {
            let tasks = tokio::select! {
                _ = &mut stop => return Ok(()),
                got = self.claim() => got?,
            };
            for task in tasks {
                self.work(task, &handler).await?;
            }
        }
    }

    /// Claims and works jobs for ever.
    pub async fn run<F, Fut>(&self, handler: F) -> Result<(), ClientError>
    where
        F: Fn(Task) -> Fut,
        Fut: Future<Output = Result<Value, String>>,
    {
        self.run_until(std::future::pending(), handler).await
    }
}
