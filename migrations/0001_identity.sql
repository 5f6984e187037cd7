-- 0001: organizations, users and credentials (SPEC §2, §3).
-- Timestamps are Unix milliseconds (INTEGER). JSON columns are TEXT holding JSON.
-- Append-only: never edit this file once released; add 0002_….sql instead.

CREATE TABLE organizations (
    id          TEXT PRIMARY KEY,
    slug        TEXT NOT NULL UNIQUE,
    name        TEXT NOT NULL,
    features    TEXT NOT NULL DEFAULT '{}',
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
) STRICT;

-- A user's id is their JWT `sub`, as given; the same `sub` may exist in two organizations.
CREATE TABLE users (
    id               TEXT NOT NULL,
    organization_id  TEXT NOT NULL REFERENCES organizations(id),
    first_seen_at    INTEGER NOT NULL,
    last_seen_at     INTEGER NOT NULL,
    PRIMARY KEY (organization_id, id)
) STRICT;

-- Only the SHA-256 of a key's secret is stored; `prefix` (the first characters) lets a person
-- recognise a key in a list without the secret.
CREATE TABLE api_keys (
    id               TEXT PRIMARY KEY,
    organization_id  TEXT NOT NULL REFERENCES organizations(id),
    name             TEXT NOT NULL,
    secret_hash      BLOB NOT NULL UNIQUE,
    prefix           TEXT NOT NULL,
    created_at       INTEGER NOT NULL,
    last_used_at     INTEGER,
    expires_at       INTEGER,
    revoked_at       INTEGER
) STRICT;
CREATE INDEX api_keys_by_org ON api_keys (organization_id, created_at);

-- Admin tokens (the inspector and the admin API) and worker tokens are credentials of their
-- own kinds, distinct from API keys (SPEC §3); hashes only.
CREATE TABLE admin_tokens (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    token_hash   BLOB NOT NULL UNIQUE,
    created_at   INTEGER NOT NULL,
    revoked_at   INTEGER
) STRICT;

CREATE TABLE worker_tokens (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    token_hash   BLOB NOT NULL UNIQUE,
    created_at   INTEGER NOT NULL,
    revoked_at   INTEGER
) STRICT;

