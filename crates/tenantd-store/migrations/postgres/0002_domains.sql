-- Custom domains: a host that, once verified, names its tenant.
CREATE TABLE domains (
    host TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants(id),
    token TEXT NOT NULL,
    verified_at BIGINT,
    created_at BIGINT NOT NULL
);
CREATE INDEX domains_tenant ON domains(tenant_id, host);
