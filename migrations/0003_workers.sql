-- 0003: worker registry and the audit of runner-flag changes (SPEC §6, §7).
-- Timestamps are Unix milliseconds. Append-only.

CREATE TABLE workers (
    id                 TEXT PRIMARY KEY,
    name               TEXT NOT NULL UNIQUE,
    runtime            TEXT NOT NULL,
    version            TEXT NOT NULL,
    hostname           TEXT NOT NULL,
    capacity           INTEGER NOT NULL,
    status             TEXT NOT NULL CHECK (status IN ('active', 'draining')),
    embedded           INTEGER NOT NULL DEFAULT 0,
    registered_at      INTEGER NOT NULL,
    last_heartbeat_at  INTEGER NOT NULL
) STRICT;
CREATE INDEX workers_by_runtime ON workers (runtime, last_heartbeat_at);

CREATE TABLE flag_changes (
    id               INTEGER PRIMARY KEY,
    organization_id  TEXT NOT NULL REFERENCES organizations(id),
    old              TEXT,
    new              TEXT,
    actor            TEXT NOT NULL,
    reason           TEXT,
    forced           INTEGER NOT NULL DEFAULT 0,
    at               INTEGER NOT NULL
) STRICT;
CREATE INDEX flag_changes_by_org ON flag_changes (organization_id, at DESC);
