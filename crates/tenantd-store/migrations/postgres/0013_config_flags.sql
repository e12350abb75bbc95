-- Tenant configuration (docs/config.md). Each key has a JSON Schema (2020-12) and an
-- optional default; `version` rises with every change of either.
CREATE TABLE config_schemas (
    key TEXT PRIMARY KEY,
    schema TEXT NOT NULL,
    default_value TEXT,
    version BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- Every version of a key in a plan's layer (plan_id set) or a tenant's (tenant_id set;
-- the other is ''). value NULL: that version removed the layer's value.
CREATE TABLE config_values (
    tenant_id TEXT NOT NULL,
    plan_id TEXT NOT NULL,
    key TEXT NOT NULL,
    version BIGINT NOT NULL,
    value TEXT,
    actor TEXT NOT NULL,
    at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, plan_id, key, version)
);
CREATE INDEX config_values_key ON config_values(key);

-- Feature flags: their definition as JSON (type, default, enabled, plans, tenants,
-- rollout).
CREATE TABLE flags (
    key TEXT PRIMARY KEY,
    definition TEXT NOT NULL,
    version BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
