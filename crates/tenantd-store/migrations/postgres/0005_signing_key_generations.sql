-- Signing keys get a generation: the newest signs, all verify. Two nodes starting on a
-- new catalog race to add generation 1 (the unique index lets one win, and both load
-- it), so the first key no longer needs a fixed kid ("initial"): every kid is random.
ALTER TABLE signing_keys ADD COLUMN generation BIGINT;
UPDATE signing_keys SET generation = (
    SELECT COUNT(*) FROM signing_keys s
    WHERE s.created_at < signing_keys.created_at
       OR (s.created_at = signing_keys.created_at AND s.kid <= signing_keys.kid)
);
CREATE UNIQUE INDEX signing_key_generation ON signing_keys(generation);
