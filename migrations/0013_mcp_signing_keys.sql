-- compat: additive
-- The Ed25519 keys hearth signs MCP user assertions with, when HEARTH_MCP_SIGNING_KEY is unset:
-- generated on the primary's first start and stored here, so LiteFS replicas (and restarts) sign
-- with the same key that GET /.well-known/jwks.json publishes. Rows are never updated except to
-- retire them, which keeps the table ready for rotation (the newest live key signs; every live
-- key is published).
CREATE TABLE mcp_signing_keys (
    kid         TEXT PRIMARY KEY,            -- RFC 7638 JWK thumbprint of the public key
    private_key BLOB NOT NULL,               -- PKCS#8 DER of the Ed25519 private key
    created_at  INTEGER NOT NULL,
    retired_at  INTEGER
) STRICT;
