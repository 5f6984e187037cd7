//! Settings of the MCP tools: the servers file or inline JSON (`MCP_CONFIG_PATH` /
//! `MCP_CONFIG_JSON`), the assertion signing key, and the client's limits.
//!
//! The servers' list is parsed here into plain values ([`McpServerConfig`]), checked field by
//! field so that a mistake stops start-up with a message naming the server and the field
//! (`mcp_servers.rs`); `mcp::` turns them into clients.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use clap::Args;

pub use super::mcp_servers::{McpHeader, McpServerConfig, parse_mcp_servers};

/// MCP servers and the MCP client's limits.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "MCP tools")]
pub struct McpConfig {
    /// MCP servers file, `{"mcpServers": {"NAME": {"url": …, "headers": {…}, "user_assertion":
    /// false, "timeout_ms": …, "allowed_tools": […], "default": true}}}`; `${VAR}` in a header is
    /// replaced by that environment variable.
    #[arg(long, env = "MCP_CONFIG_PATH", value_name = "PATH", conflicts_with = "mcp_config_json")]
    pub mcp_config_path: Option<PathBuf>,

    /// The same MCP servers JSON, inline.
    #[arg(long, env = "MCP_CONFIG_JSON", value_name = "JSON", hide_env_values = true)]
    pub mcp_config_json: Option<String>,

    /// Ed25519 private key (PKCS#8 PEM) that signs the user assertions sent to MCP servers with
    /// `user_assertion: true`, or `@PATH` to read it from a file [default: generated on first run
    /// and stored in the database].
    #[arg(long, env = "HEARTH_MCP_SIGNING_KEY", value_name = "PEM", hide_env_values = true)]
    pub mcp_signing_key: Option<PemKey>,

    /// `iss` of the user assertions hearth signs.
    #[arg(long, env = "HEARTH_MCP_ISSUER", value_name = "TEXT", default_value = "hearth")]
    pub mcp_issuer: String,

    /// Seconds between two tool listings of each MCP server (besides `notifications/tools/list_changed`);
    /// also the longest wait between two tries at a server that is down.
    #[arg(long, env = "HEARTH_MCP_REFRESH_S", value_name = "SECONDS", default_value_t = 300,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub mcp_refresh_s: u64,

    /// Most MCP client sessions open at once (one per server and user); the least recently used
    /// is closed past it.
    #[arg(long, env = "HEARTH_MCP_MAX_SESSIONS", value_name = "N", default_value_t = 1_024,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub mcp_max_sessions: u32,

    /// Seconds an MCP client session may sit unused before it is closed.
    #[arg(long, env = "HEARTH_MCP_SESSION_IDLE_S", value_name = "SECONDS", default_value_t = 300,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub mcp_session_idle_s: u64,
}

impl McpConfig {
    /// The configured servers (none when neither MCP_CONFIG_PATH nor MCP_CONFIG_JSON is set).
    ///
    /// # Errors
    /// A message naming the setting, the server and the field that is wrong.
    pub fn servers(&self) -> Result<Vec<McpServerConfig>, String> {
        let env = |name: &str| std::env::var(name).ok();
        if let Some(path) = &self.mcp_config_path {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("MCP_CONFIG_PATH: cannot read {}: {e}", path.display()))?;
            return parse_mcp_servers(&text, &env)
                .map_err(|e| format!("MCP_CONFIG_PATH ({}): {e}", path.display()));
        }
        match &self.mcp_config_json {
            Some(text) => parse_mcp_servers(text, &env).map_err(|e| format!("MCP_CONFIG_JSON: {e}")),
            None => Ok(Vec::new()),
        }
    }
}

/// A PEM private key setting; its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct PemKey(String);

impl PemKey {
    /// The PEM text; use only to load the key, never to log.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for PemKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PemKey(***)")
    }
}

impl FromStr for PemKey {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(path) = s.strip_prefix('@') {
            let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?;
            return text.parse();
        }
        // An environment variable often carries the PEM with `\n` escapes instead of newlines.
        let text = s.trim().replace("\\n", "\n");
        if text.starts_with("-----BEGIN PRIVATE KEY-----") && text.ends_with("-----END PRIVATE KEY-----") {
            Ok(Self(text))
        } else {
            Err("expected an Ed25519 private key in PKCS#8 PEM (-----BEGIN PRIVATE KEY----- …), e.g. from \
                 `openssl genpkey -algorithm ed25519`"
                .into())
        }
    }
}
