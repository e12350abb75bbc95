-- The job queue (tenantd-jobs). A job is 'queued' (a future run_at shows as scheduled),
-- 'running' under a lease, 'failed' (waiting for its retry at run_at), or finished:
-- 'succeeded', 'dead' (out of attempts) or 'cancelled'. Times are Unix milliseconds.
CREATE TABLE jobs (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    queue TEXT NOT NULL,
    payload TEXT NOT NULL,
    state TEXT NOT NULL,
    priority INTEGER NOT NULL DEFAULT 0,
    run_at BIGINT NOT NULL,
    attempt INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL,
    lease_expires_at BIGINT,
    lease_token TEXT,
    claimed_by TEXT,
    started_at BIGINT,
    idempotency_key TEXT,
    result TEXT,
    last_error TEXT,
    run_ms BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    finished_at BIGINT
);
CREATE UNIQUE INDEX jobs_idempotency ON jobs(tenant_id, idempotency_key);
CREATE INDEX jobs_ready ON jobs(tenant_id, state, queue, priority, run_at);

-- Each tenant's place in the fair rotation: claims take the tenant with the lowest pass
-- and advance it by 1,000,000 / weight. held: its jobs are not claimed (suspended).
-- max_running: its plan's jobs/concurrent limit, if any.
CREATE TABLE job_tenants (
    tenant_id TEXT PRIMARY KEY,
    pass BIGINT NOT NULL DEFAULT 0,
    weight BIGINT NOT NULL DEFAULT 1,
    max_running BIGINT,
    held INTEGER NOT NULL DEFAULT 0
);
