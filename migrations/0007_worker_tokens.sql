-- 0007: worker tokens, as `hearth workers token create | list | revoke` and the worker protocol
-- use them (SPEC §3, §9). The table came with 0001: id (`wtk_…`), name, the SHA-256 of the
-- secret as a UNIQUE BLOB (`token_hash`, stored the way `api_keys.secret_hash` is; UNIQUE gives
-- it its index), created_at, revoked_at. This adds what `api_keys` has and it lacked: the first
-- characters of the secret, to tell tokens apart in a list, and when it was last used
-- (refreshed at most once a minute). Timestamps are Unix milliseconds. Append-only.

ALTER TABLE worker_tokens ADD COLUMN prefix TEXT NOT NULL DEFAULT '';
ALTER TABLE worker_tokens ADD COLUMN last_used_at INTEGER;
