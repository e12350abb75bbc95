-- Quotas, metering and billing.
ALTER TABLE plans ADD COLUMN counter_failure TEXT NOT NULL DEFAULT 'fail_open_local';

-- Usage per tenant (scope '') or API key (scope 'key_…'), resource, window and period
-- (the UTC start of the hour/day/week/month, Unix seconds; 0 for 'total' levels).
-- Tenant-scope 'day' rows are the daily rollups. Values only grow, by delta upserts,
-- so several nodes may flush into the same row.
CREATE TABLE usage_counters (
    tenant_id TEXT NOT NULL,
    scope TEXT NOT NULL,
    resource TEXT NOT NULL,
    win TEXT NOT NULL,
    period_start BIGINT NOT NULL,
    value BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, scope, resource, win, period_start)
);

-- Idempotency keys of usage events already counted.
CREATE TABLE usage_idempotency (
    tenant_id TEXT NOT NULL,
    idem_key TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, idem_key)
);

-- Tenant events (quota.warning, quota.exceeded, …), delivered by webhook later.
CREATE TABLE tenant_events (
    id BIGSERIAL PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    type TEXT NOT NULL,
    data TEXT NOT NULL,
    at BIGINT NOT NULL
);
CREATE INDEX tenant_events_tenant ON tenant_events(tenant_id, id);

-- Which plan a tenant was on since when, for prorated invoices.
CREATE TABLE plan_history (
    tenant_id TEXT NOT NULL,
    at BIGINT NOT NULL,
    plan_id TEXT NOT NULL,
    PRIMARY KEY (tenant_id, at, plan_id)
);
INSERT INTO plan_history (tenant_id, at, plan_id) SELECT id, created_at, plan_id FROM tenants;
