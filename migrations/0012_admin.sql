-- compat: additive
-- The admin inspector (issue 16): server-side login sessions, and the indexes its pages read.

-- A browser's login to /admin: only the SHA-256 of the cookie's value is stored, so a copy of
-- the database cannot be replayed as a login. Logout deletes the row; expired rows are pruned.
CREATE TABLE admin_sessions (
    token_hash   BLOB PRIMARY KEY,
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX admin_sessions_by_expiry ON admin_sessions (expires_at);

-- /admin/sessions pages newest first by id (a UUIDv7: creation order) with a keyset cursor,
-- filtered by one of these columns through its own index (no OFFSET, no sort). Only the running
-- sessions (few at any time) are indexed by status: a turn adds and removes one small entry.
CREATE INDEX sessions_admin_by_org ON agent_sessions (organization_id, id);
CREATE INDEX sessions_admin_by_user ON agent_sessions (user_id, id) WHERE user_id IS NOT NULL;
CREATE INDEX sessions_admin_running ON agent_sessions (id) WHERE status = 'running';
CREATE INDEX sessions_admin_by_runner ON agent_sessions (runner, id);

-- The overview's runs finished in the last hour, by status.
CREATE INDEX runs_by_finish ON runs (finished_at, status) WHERE finished_at IS NOT NULL;
