//! The queue's types: a job, what enqueues one, what a claim hands out, and errors.
use serde::Serialize;
use tenantd_core::TenantId;

/// A job's state, as shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Waiting for its `run_at`.
    Scheduled,
    /// Ready to be claimed.
    Queued,
    /// Held by a worker under a lease.
    Running,
    /// Done.
    Succeeded,
    /// Failed, and waiting for its retry.
    Failed,
    /// Failed `max_attempts` times; it will not run again.
    Dead,
    /// Cancelled before it finished.
    Cancelled,
}

impl JobState {
    /// As stored, and as `?state=` filters it.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Scheduled => "scheduled",
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Dead => "dead",
            JobState::Cancelled => "cancelled",
        }
    }

    /// The state a `?state=` names.
    pub fn parse(s: &str) -> Option<Self> {
        [
            JobState::Scheduled,
            JobState::Queued,
            JobState::Running,
            JobState::Succeeded,
            JobState::Failed,
            JobState::Dead,
            JobState::Cancelled,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
    }

    /// Whether the job will not run again.
    pub fn is_final(self) -> bool {
        matches!(self, JobState::Succeeded | JobState::Dead | JobState::Cancelled)
    }
}

/// A job as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Job {
    /// `job_…`
    pub id: String,
    /// Its tenant.
    pub tenant_id: TenantId,
    /// Its queue.
    pub queue: String,
    /// What the worker gets.
    pub payload: serde_json::Value,
    /// Where it is.
    pub state: JobState,
    /// Higher runs first within the tenant.
    pub priority: i32,
    /// Not before (Unix ms): the first run, or the next retry.
    pub run_at: i64,
    /// Runs so far (a claim starts one).
    pub attempt: u32,
    /// Runs it may have.
    pub max_attempts: u32,
    /// Until when its worker holds it (Unix ms), while running.
    pub lease_expires_at: Option<i64>,
    /// What it answered, once succeeded.
    pub result: Option<serde_json::Value>,
    /// Its last failure.
    pub last_error: Option<String>,
    /// Milliseconds it has run, over every attempt.
    pub run_ms: i64,
    /// What its worker last reported of its progress (heartbeat).
    pub progress: Option<serde_json::Value>,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms, once final.
    pub finished_at: Option<i64>,
}

/// A job to enqueue.
#[derive(Debug, Clone)]
pub struct NewJob {
    /// Its tenant.
    pub tenant: TenantId,
    /// Its queue.
    pub queue: String,
    /// What the worker gets.
    pub payload: serde_json::Value,
    /// Not before (Unix ms); `None` is now.
    pub run_at: Option<i64>,
    /// Runs it may have (at least 1).
    pub max_attempts: u32,
    /// The same key for the same tenant answers the first job.
    pub idempotency_key: Option<String>,
    /// Higher runs first within the tenant.
    pub priority: i32,
}

impl NewJob {
    /// A job on `queue` with the defaults: now, 5 attempts, priority 0.
    pub fn new(tenant: TenantId, queue: &str, payload: serde_json::Value) -> Self {
        Self {
            tenant,
            queue: queue.to_string(),
            payload,
            run_at: None,
            max_attempts: 5,
            idempotency_key: None,
            priority: 0,
        }
    }
}

/// A job a worker claimed: it holds it until `lease_expires_at`, by `lease`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Claimed {
    /// The job.
    pub job_id: String,
    /// Its tenant.
    pub tenant_id: TenantId,
    /// Its queue.
    pub queue: String,
    /// What to do.
    pub payload: serde_json::Value,
    /// This run's number, from 1.
    pub attempt: u32,
    /// Unix ms.
    pub lease_expires_at: i64,
    /// How long it was ready before this claim (ms): since its `run_at`.
    #[serde(skip)]
    pub waited_ms: i64,
    /// Proves the holder: heartbeat, complete and fail name it.
    #[serde(skip)]
    pub lease: String,
}

/// Who may act on a running job: the holder of its lease, or (over HTTP, where a worker
/// need not keep the lease id) the principal that claimed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holder<'a> {
    /// The lease a claim handed out.
    Lease(&'a str),
    /// The claimer named at the claim (`operator`, `key_…`, `usr_…`).
    Claimer(&'a str),
}

impl Holder<'_> {
    pub(crate) fn column(self) -> &'static str {
        match self {
            Holder::Lease(_) => "lease_token",
            Holder::Claimer(_) => "claimed_by",
        }
    }

    pub(crate) fn value(&self) -> &str {
        match self {
            Holder::Lease(v) | Holder::Claimer(v) => v,
        }
    }
}

/// What a failure did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failed {
    /// It runs again at this time (Unix ms).
    Retry(i64),
    /// It was its last attempt: the job is dead (its `job.dead` event is written).
    Dead,
}

/// How a tenant is served: set from its plan. (A suspended tenant's jobs are held by its
/// status in the catalog, not by its policy.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Its share of claims against other tenants (at least 1): its plan's `job_weight`.
    pub weight: u32,
    /// The most of its jobs running at once: its plan's `jobs`/`concurrent` limit.
    pub max_running: Option<u64>,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            weight: 1,
            max_running: None,
        }
    }
}

/// What can go wrong in the queue.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// No such job (for this tenant).
    #[error("job not found")]
    NotFound,
    /// The caller does not hold the job's lease (it ran out and another worker has it, or
    /// the job finished or was cancelled).
    #[error("the job is not held by this lease: {0}")]
    NotHeld(String),
    /// Input the queue refuses.
    #[error("{0}")]
    Invalid(String),
    /// The change conflicts with the job's state (cancelling a finished job).
    #[error("{0}")]
    Conflict(String),
    /// The catalog failed.
    #[error(transparent)]
    Store(#[from] tenantd_store::StoreError),
    /// The database failed.
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    /// A stored payload did not parse.
    #[error("corrupt stored value: {0}")]
    Corrupt(#[from] serde_json::Error),
}
