//! Builds the MCP service of `serve` and `worker`: the servers, the assertion signing key.

use std::sync::Arc;
use std::time::Duration;

use super::ConfigError;
use crate::config::{McpConfig, McpServerConfig};
use crate::db::Db;
use crate::mcp::keys::{self, Signer};
use crate::mcp::{Mcp, McpSettings};

/// The MCP service for `servers`. Its signing key comes from HEARTH_MCP_SIGNING_KEY, else from
/// the database (`db`, created there when the node may write); `hearth worker` has no database
/// and signs only with the configured key.
///
/// # Errors
/// A bad key, no key where a server needs one, or a storage failure.
pub(super) async fn build(
    config: &McpConfig,
    servers: Vec<McpServerConfig>,
    db: Option<(&Db, bool)>,
) -> anyhow::Result<Arc<Mcp>> {
    let configured = config.mcp_signing_key.as_ref().map(|k| k.expose());
    let keys = match (configured, db) {
        (_, Some((db, may_write))) => match keys::load(db, configured, may_write).await {
            Ok(keys) => keys,
            // A replica started before the primary made its key: no server needs one, so it
            // need not wait for it (a server with user assertions does, and stops start-up).
            Err(keys::KeyError::NoneStored) if !servers.iter().any(|s| s.user_assertion) => Vec::new(),
            Err(e) => return Err(ConfigError(e.to_string()).into()),
        },
        (Some(pem), None) => vec![keys::SigningKey::from_pem(pem).map_err(|e| ConfigError(e.to_string()))?],
        (None, None) => Vec::new(),
    };
    let signer = Signer::new(keys, config.mcp_issuer.clone()).map(Arc::new);
    let settings = McpSettings {
        servers,
        refresh: Duration::from_secs(config.mcp_refresh_s),
        max_sessions: usize::try_from(config.mcp_max_sessions).unwrap_or(usize::MAX),
        idle: Duration::from_secs(config.mcp_session_idle_s),
    };
    Ok(Arc::new(Mcp::new(settings, signer).map_err(|e| ConfigError(e.to_string()))?))
}
