-- Webhooks (docs/events.md): endpoints that get a tenant's events (tenant_id set) or every
-- tenant's and the platform's (tenant_id NULL, the operator's). event_types: a JSON list
-- of types or prefixes (`tenant.*`), empty for all. secret: `whsec_` + base64 of 32
-- random bytes; after a rotation the previous one keeps signing beside it until
-- previous_until (Unix seconds). failing_since: the first failure of the current streak.
CREATE TABLE webhooks (
    id TEXT PRIMARY KEY,
    tenant_id TEXT,
    url TEXT NOT NULL,
    event_types TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    secret TEXT NOT NULL,
    previous_secret TEXT,
    previous_until BIGINT,
    enabled INTEGER NOT NULL DEFAULT 1,
    disabled_reason TEXT,
    failing_since BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX webhooks_tenant ON webhooks(tenant_id);

-- Every delivery attempt: when, what came back, when the next one is due.
CREATE TABLE webhook_deliveries (
    id BIGSERIAL PRIMARY KEY,
    webhook_id TEXT NOT NULL,
    tenant_id TEXT,
    event_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    at BIGINT NOT NULL,
    status_code INTEGER,
    duration_ms BIGINT NOT NULL,
    error TEXT,
    next_attempt_at BIGINT
);
CREATE INDEX webhook_deliveries_webhook ON webhook_deliveries(webhook_id, id);
CREATE INDEX webhook_deliveries_tenant ON webhook_deliveries(tenant_id);

-- How far each event chain has been handed to the webhooks: its events up to seq have
-- their delivery jobs.
CREATE TABLE webhook_cursors (
    chain TEXT PRIMARY KEY,
    seq BIGINT NOT NULL
);
