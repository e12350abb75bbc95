-- Tenants' exports and backups (docs/protection.md): a .tar.gz built by a job, stored in
-- chunks of up to 1 MiB. An export's chunks are the archive itself (deleted once
-- expires_at passes); a backup's are each sealed under the tenant's data key
-- key_version, bound to the backup and the chunk's place.
CREATE TABLE archives (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    state TEXT NOT NULL,
    done BIGINT NOT NULL,
    total BIGINT NOT NULL,
    size_bytes BIGINT,
    sha256 TEXT,
    chunks BIGINT,
    key_version BIGINT,
    schema_version BIGINT NOT NULL,
    counts TEXT,
    error TEXT,
    job_id TEXT,
    created_at BIGINT NOT NULL,
    finished_at BIGINT,
    expires_at BIGINT
);
CREATE INDEX archives_by_tenant ON archives (tenant_id, kind, created_at);

CREATE TABLE archive_chunks (
    archive_id TEXT NOT NULL,
    tenant_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (archive_id, seq)
);

-- Scheduled backups per plan: every this many hours (0: none), keeping the newest
-- backup_keep of them.
ALTER TABLE plans ADD COLUMN backup_every_hours INTEGER NOT NULL DEFAULT 0;
ALTER TABLE plans ADD COLUMN backup_keep INTEGER NOT NULL DEFAULT 7;
