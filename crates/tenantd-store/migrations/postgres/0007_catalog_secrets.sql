-- Secrets every node of a deployment shares: `cursor_key` signs page cursors.
CREATE TABLE catalog_secrets (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
