-- 0002: sessions, messages, runs and their durable event logs (SPEC §2, §6).
-- Timestamps are Unix milliseconds; JSON columns are TEXT. Append-only.

CREATE TABLE agent_sessions (
    id                TEXT PRIMARY KEY,
    organization_id   TEXT NOT NULL REFERENCES organizations(id),
    user_id           TEXT,
    status            TEXT NOT NULL,
    runner            TEXT,
    resolved_profile  TEXT NOT NULL DEFAULT '{}',
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL
) STRICT;
CREATE INDEX sessions_by_org ON agent_sessions (organization_id, updated_at DESC);
CREATE INDEX sessions_by_user ON agent_sessions (organization_id, user_id, updated_at DESC);

CREATE TABLE messages (
    session_id    TEXT NOT NULL REFERENCES agent_sessions(id) ON DELETE CASCADE,
    seq           INTEGER NOT NULL,
    role          TEXT NOT NULL,
    content       TEXT,
    tool_calls    TEXT,
    tool_call_id  TEXT,
    run_id        TEXT,
    created_at    INTEGER NOT NULL,
    PRIMARY KEY (session_id, seq)
) STRICT, WITHOUT ROWID;

-- The queue. The implicit rowid is the dispatch order: claims take the lowest rowid first, so
-- runs of one session run in the order they were dispatched (FIFO per session).
CREATE TABLE runs (
    id                TEXT PRIMARY KEY,
    session_id        TEXT NOT NULL REFERENCES agent_sessions(id) ON DELETE CASCADE,
    organization_id   TEXT NOT NULL REFERENCES organizations(id),
    user_id           TEXT,
    status            TEXT NOT NULL CHECK (status IN
                        ('queued', 'claimed', 'running', 'completed', 'failed', 'cancelled')),
    runner            TEXT NOT NULL,
    resolved_profile  TEXT NOT NULL,
    claimed_by        TEXT,
    attempt           INTEGER NOT NULL DEFAULT 1,
    lease_expires_at  INTEGER,
    cancel_requested  INTEGER NOT NULL DEFAULT 0,
    input             TEXT NOT NULL,
    output            TEXT,
    usage             TEXT,
    error             TEXT,
    created_at        INTEGER NOT NULL,
    claimed_at        INTEGER,
    started_at        INTEGER,
    finished_at       INTEGER,
    updated_at        INTEGER NOT NULL
) STRICT;
CREATE INDEX runs_queued ON runs (runner) WHERE status = 'queued';
CREATE INDEX runs_by_session ON runs (session_id, status);
CREATE INDEX runs_by_worker ON runs (claimed_by) WHERE status IN ('claimed', 'running');
CREATE INDEX runs_by_lease ON runs (lease_expires_at) WHERE status IN ('claimed', 'running');
CREATE INDEX runs_failed ON runs (finished_at DESC) WHERE status = 'failed';

CREATE TABLE run_events (
    run_id      TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    seq         INTEGER NOT NULL,
    type        TEXT NOT NULL,
    data        TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (run_id, seq)
) STRICT, WITHOUT ROWID;

