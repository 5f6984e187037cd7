-- 0005: the per-user session listing index covers only sessions that have a user.
-- Sessions started with a service key alone (no user) never appear in a per-user listing, so
-- indexing them cost an index insert and an update per turn for nothing.

DROP INDEX sessions_by_user;
CREATE INDEX sessions_by_user ON agent_sessions (organization_id, user_id, updated_at DESC)
    WHERE user_id IS NOT NULL;
