//! tenantd's job queue: jobs of every tenant in the catalog's database, claimed fairly.
//!
//! A job is enqueued for a tenant on a queue ([`Jobs::enqueue`]), claimed by a worker under
//! a lease ([`Jobs::claim`]), and completed or failed by the lease's holder. A failure is
//! retried with exponential backoff and jitter until `max_attempts`, then the job is dead
//! and a `job.dead` event is written in the same transaction. A lease that runs out makes
//! the job claimable again. On PostgreSQL many workers on many nodes claim at once: rows
//! are taken with `SKIP LOCKED`, so no job is held by two workers.
//!
//! **Fairness.** Each tenant's jobs of one queue form a lane. A claim serves the lane with
//! the lowest pass that has a ready job and advances it by `1,000,000 / weight`, so
//! tenants are served round-robin, in proportion to their weights, however many jobs each
//! queued. A lane that comes back after being idle starts at the lowest pass of its
//! queue (it banks no credit while idle). Within a lane: highest priority first, then the
//! earliest `run_at`. A suspended tenant is skipped, and one at its running cap waits; the
//! cap is checked on the tenant's newest running count, so concurrent claimers never pass
//! it. docs/jobs.md has the whole model.
#![forbid(unsafe_code)]

mod claim;
mod finish;
mod model;
mod queue;
mod sql;
mod upkeep;
mod wake;

#[cfg(feature = "client")]
pub mod client;

pub use claim::ClaimRequest;
pub use model::{Claimed, Failed, Holder, Job, JobError, JobState, NewJob, Policy};
pub use queue::{Jobs, PLATFORM, SYSTEM_QUEUE_PREFIX};
pub use upkeep::{Upkept, JOB_SECONDS, KEEP_FINISHED_MS};
pub use wake::CHANNEL;

/// Result alias for the queue.
pub type Result<T, E = JobError> = std::result::Result<T, E>;
