//! tenantd's job queue: jobs of every tenant in the catalog's database, claimed fairly.
//!
//! A job is enqueued for a tenant ([`Jobs::enqueue`]), claimed by a worker under a lease
//! ([`Jobs::claim`]), and completed or failed by the lease's holder. A failure is retried
//! with exponential backoff and jitter until `max_attempts`, then the job is dead and a
//! `job.dead` event is written in the same transaction. A lease that runs out makes the
//! job claimable again. On PostgreSQL many workers on many nodes claim at once: rows are
//! taken with `FOR UPDATE SKIP LOCKED`, so no job is held by two workers.
//!
//! **Fairness.** Each tenant with work has a pass in the rotation; a claim takes the
//! tenant with the lowest pass and advances it by `1,000,000 / weight`, so tenants are
//! served round-robin, in proportion to their weights, however many jobs each queued. A
//! tenant that had no work joins at the lowest pass of those that do (it banks no credit
//! while idle). Within a tenant: highest priority first, then the earliest `run_at`.
//! A held tenant (suspended) is skipped, and one at its `max_running` waits.
#![forbid(unsafe_code)]

mod model;
mod queue;

pub use model::{Claimed, Failed, Holder, Job, JobError, JobState, NewJob, Policy};
pub use queue::Jobs;

/// Result alias for the queue.
pub type Result<T, E = JobError> = std::result::Result<T, E>;
