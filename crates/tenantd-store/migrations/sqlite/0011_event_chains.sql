-- Hash chains over the event log (docs/events.md). Each tenant's events form one chain,
-- the platform's (tenant_id NULL) another; `chain` names it: the tenant's id, or '' for
-- the platform. A purged tenant's chain is closed under the name '<id>@<purge time>', so
-- that a new tenant under the same id starts a chain of its own. seq counts from 1 in each
-- chain; digest is the SHA-256 of the event's canonical content, hash the SHA-256 of
-- prev_hash and digest. Events written before this migration get theirs when the catalog
-- next opens (in the order they were written). redacted: a tombstone whose content was
-- lawfully removed (its digest and hash stay).
ALTER TABLE audit_events ADD COLUMN chain TEXT NOT NULL DEFAULT '';
ALTER TABLE audit_events ADD COLUMN seq BIGINT;
ALTER TABLE audit_events ADD COLUMN digest TEXT;
ALTER TABLE audit_events ADD COLUMN prev_hash TEXT;
ALTER TABLE audit_events ADD COLUMN hash TEXT;
ALTER TABLE audit_events ADD COLUMN redacted INTEGER NOT NULL DEFAULT 0;
UPDATE audit_events SET chain = COALESCE(tenant_id, '');
CREATE UNIQUE INDEX audit_chain_seq ON audit_events(chain, seq);

-- Each chain's head: appending an event locks its chain's row, so two writers on any
-- nodes never give out the same seq (no forks) and seq follows commit order (no gaps).
CREATE TABLE event_chains (
    chain TEXT PRIMARY KEY,
    seq BIGINT NOT NULL,
    hash TEXT NOT NULL
);

-- Signed chain heads: the Ed25519 signature (with the JWT signing key `kid`) of the
-- canonical JSON of {tenant_id, seq, hash, at, kid}.
CREATE TABLE audit_checkpoints (
    chain TEXT NOT NULL,
    seq BIGINT NOT NULL,
    hash TEXT NOT NULL,
    at BIGINT NOT NULL,
    kid TEXT NOT NULL,
    signature TEXT NOT NULL,
    PRIMARY KEY (chain, seq)
);
