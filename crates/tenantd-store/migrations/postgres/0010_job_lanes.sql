-- The job queue's second layout (docs/jobs.md). Fairness moves from one rotation entry per
-- tenant to one lane per tenant and queue: a claim takes the lane of the lowest pass that
-- has a ready job and advances it by 1,000,000 / the tenant's weight. A lane exists while
-- its queue may have work for its tenant: the queue's upkeep deletes lanes with no waiting
-- job, and an enqueue into a missing lane creates it at the lowest pass of its queue's
-- lanes (an idle tenant banks no credit). The old rotation's passes carry over.
CREATE TABLE job_lanes (
    tenant_id TEXT NOT NULL,
    queue TEXT NOT NULL,
    pass BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, queue)
);
-- No index on pass: a claim's pass update then stays a heap-only (HOT) update.
INSERT INTO job_lanes (tenant_id, queue, pass)
    SELECT DISTINCT j.tenant_id, j.queue, COALESCE(t.pass, 0) FROM jobs j LEFT JOIN job_tenants t ON t.tenant_id = j.tenant_id
    WHERE j.state IN ('queued', 'failed', 'running');

-- Per tenant: its weight (its plan's job_weight), its running cap (its plan's
-- jobs/concurrent limit), and, while it has a cap, how many of its jobs run now: a claim
-- under a cap adds one in the same statement, on the row's newest version, so concurrent
-- claimers never pass the cap; the job is marked `counted` and its end takes the one
-- back. A held (suspended) tenant is read from the tenants table instead.
ALTER TABLE job_tenants DROP COLUMN pass;
ALTER TABLE job_tenants DROP COLUMN held;
ALTER TABLE job_tenants ADD COLUMN running BIGINT NOT NULL DEFAULT 0;
-- Run time already metered but short of a whole job second.
ALTER TABLE job_tenants ADD COLUMN unbilled_ms BIGINT NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN counted INTEGER NOT NULL DEFAULT 0;
UPDATE jobs SET counted = 1 WHERE state = 'running' AND tenant_id IN (SELECT tenant_id FROM job_tenants WHERE max_running IS NOT NULL);
UPDATE job_tenants SET running = (SELECT COUNT(*) FROM jobs j WHERE j.tenant_id = job_tenants.tenant_id AND j.counted = 1);

-- metered_ms: how much of run_ms is already counted as job_seconds usage.
-- progress: what the worker last reported (heartbeat).
ALTER TABLE jobs ADD COLUMN metered_ms BIGINT NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN progress TEXT;
DROP INDEX jobs_ready;
DROP INDEX jobs_idempotency;
CREATE UNIQUE INDEX jobs_idempotency ON jobs(tenant_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX jobs_waiting ON jobs(tenant_id, queue, priority DESC, run_at, id) WHERE state IN ('queued', 'failed');
CREATE INDEX jobs_leased ON jobs(lease_expires_at) WHERE state = 'running';
CREATE INDEX jobs_unmetered ON jobs(tenant_id) WHERE run_ms > metered_ms;
CREATE INDEX jobs_tenant ON jobs(tenant_id, id);
CREATE INDEX jobs_finished ON jobs(finished_at) WHERE finished_at IS NOT NULL;

-- A plan's share of job claims against other plans' tenants (at least 1).
ALTER TABLE plans ADD COLUMN job_weight INTEGER NOT NULL DEFAULT 1;
