-- Repeats of a security event within 60 s fold into the first one's count.
ALTER TABLE audit_events ADD COLUMN count BIGINT NOT NULL DEFAULT 1;
