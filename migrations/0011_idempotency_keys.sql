-- compat: additive
-- 0011: Idempotency-Key on POST /v1/runs and POST /v1/chat/completions (issue 18), so a client's
-- automatic retries never start a turn twice. One row per key a caller used: `scope` is the
-- SHA-256 of who used it (organization, credential, user), `request_hash` the SHA-256 of what
-- was asked (a reused key with another request is refused), `run_id` the run it started.
-- Kept 24 hours (pruned by `serve`). Timestamps are Unix milliseconds. Additive.

CREATE TABLE idempotency_keys (
    scope BLOB NOT NULL,
    key TEXT NOT NULL,
    request_hash BLOB NOT NULL,
    run_id TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (scope, key)
) WITHOUT ROWID;

CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);
