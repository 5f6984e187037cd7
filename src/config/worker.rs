//! Settings of `hearth worker`: the server it serves, its token, its runner and concurrency,
//! plus the agent and upstream settings its turns run with.

use clap::Args;

use super::parse::{parse_bool, parse_http_url};
use super::{AgentConfig, McpConfig, Secret, UpstreamConfig};

/// `hearth worker`: an external worker of one runner, over the worker protocol.
#[derive(Debug, Clone, Args)]
pub struct WorkerConfig {
    /// The hearth server to serve, e.g. `http://hearth.internal:8080`.
    #[arg(long, env = "HEARTH_SERVER", value_name = "URL", value_parser = parse_http_url)]
    pub server: String,

    /// A worker token (`hearth workers token create`).
    #[arg(long, env = "HEARTH_WORKER_TOKEN", value_name = "TOKEN", hide_env_values = true)]
    pub token: Secret,

    /// The runner pool it serves (its runtime), one of the server's HEARTH_RUNNERS.
    #[arg(long, env = "HEARTH_WORKER_RUNNER", value_name = "NAME")]
    pub runner: String,

    /// Runs it executes at once.
    #[arg(long, env = "HEARTH_WORKER_CONCURRENCY", value_name = "N", default_value_t = 8,
          value_parser = clap::value_parser!(u16).range(1..=4096))]
    pub concurrency: u16,

    /// Its name, unique and stable across restarts (a restart under it gives back what it
    /// held) [default: HOSTNAME/RUNNER].
    #[arg(long, env = "HEARTH_WORKER_NAME", value_name = "NAME")]
    pub name: Option<String>,

    /// Exit after one run (ephemeral machines).
    #[arg(long, env = "HEARTH_WORKER_ONCE", value_name = "BOOL", default_value = "false", value_parser = parse_bool,
          action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub once: bool,

    /// The agent loop's settings.
    #[command(flatten)]
    pub agent: AgentConfig,

    /// The model providers its turns call.
    #[command(flatten)]
    pub upstream: UpstreamConfig,

    /// The MCP servers its turns call.
    #[command(flatten)]
    pub mcp: McpConfig,
}
