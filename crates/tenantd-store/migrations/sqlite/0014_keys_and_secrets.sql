-- Per-tenant data keys (docs/protection.md): 32 random bytes each, stored only sealed
-- under the master key (AES-256-GCM, bound to the tenant and version), base64.
CREATE TABLE tenant_keys (
    tenant_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    wrapped TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, version)
);

-- Which master key wrapped the data keys: a public fingerprint, so a node started with
-- another key refuses to start instead of failing on every tenant.
CREATE TABLE master_key (
    id INTEGER PRIMARY KEY,
    fingerprint TEXT NOT NULL
);

-- Tenants' secrets: the value sealed under the tenant's data key `key_version`, bound
-- to the tenant and the secret's name; base64. Never stored or logged in the clear.
CREATE TABLE tenant_secrets (
    tenant_id TEXT NOT NULL,
    name TEXT NOT NULL,
    version BIGINT NOT NULL,
    key_version INTEGER NOT NULL,
    value TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, name)
);
