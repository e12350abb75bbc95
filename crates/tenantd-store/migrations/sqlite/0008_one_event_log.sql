-- One event log. Quota events join the audit and security events in audit_events, and
-- every event gets its public id (evt_...) and its actor's type (operator, user, api_key,
-- system). tenant_events is folded in and dropped.
ALTER TABLE audit_events ADD COLUMN event_id TEXT;
ALTER TABLE audit_events ADD COLUMN actor_type TEXT NOT NULL DEFAULT 'system';
UPDATE audit_events SET actor_type = CASE
    WHEN actor = 'operator' THEN 'operator'
    WHEN actor LIKE 'usr!_%' ESCAPE '!' THEN 'user'
    WHEN actor LIKE 'key!_%' ESCAPE '!' THEN 'api_key'
    ELSE 'system' END;
INSERT INTO audit_events (at, tenant_id, actor_type, actor, action, detail, request_id)
    SELECT at, tenant_id, 'system', 'system', type, data, '' FROM tenant_events ORDER BY id;
UPDATE audit_events SET event_id = 'evt_' || lower(hex(randomblob(13))) WHERE event_id IS NULL;
CREATE UNIQUE INDEX audit_event_id ON audit_events(event_id);
DROP TABLE tenant_events;
