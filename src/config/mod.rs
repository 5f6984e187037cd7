//! Typed settings: every one a clap flag with an environment variable, validated at start.
//!
//! One file per concern, each a small `*Config` struct that [`ServeConfig`] flattens, so the
//! flags keep their names and `serve --help` lists them in groups. This module builds plain
//! values (and the resolver's rules, from `domain`) only: the services turn them into what they
//! need (e.g. `llm::ProviderSettings::from_config`).
//!
//! Secrets are [`Secret`]s, whose `Debug` prints `***`, so a settings dump never leaks them.

mod agent;
mod auth;
mod global;
mod http;
mod mcp;
mod mcp_servers;
mod parse;
mod queue;
mod runner;
pub mod secret;
mod storage;
mod upstream;
mod worker;

use clap::Args;

pub use agent::AgentConfig;
pub use auth::{AuthConfig, MIN_SECRET};
pub use global::{GlobalConfig, LogFormat};
pub use http::HttpConfig;
pub use mcp::{McpConfig, McpHeader, McpServerConfig, PemKey, parse_mcp_servers};
pub use parse::parse_size;
pub use queue::QueueConfig;
pub use runner::{RunnerConfig, RunnerList};
pub use secret::Secret;
pub use storage::StorageConfig;
pub use upstream::UpstreamConfig;
pub use worker::WorkerConfig;

/// Settings of `hearth serve`, grouped by concern.
#[derive(Debug, Clone, Args)]
pub struct ServeConfig {
    /// The listener: address, body limit, shutdown grace, metrics token.
    #[command(flatten)]
    pub http: HttpConfig,
    /// Keys, tokens, user JWTs and rate limits.
    #[command(flatten)]
    pub auth: AuthConfig,
    /// Migrations at start, LiteFS, the reader pool.
    #[command(flatten)]
    pub storage: StorageConfig,
    /// Runner pools, ramp and kill switch.
    #[command(flatten)]
    pub runner: RunnerConfig,
    /// The embedded workers, leases, heartbeats, attempts.
    #[command(flatten)]
    pub queue: QueueConfig,
    /// Limits and tools of an agent turn.
    #[command(flatten)]
    pub agent: AgentConfig,
    /// The catalog, the default model and the upstream providers.
    #[command(flatten)]
    pub upstream: UpstreamConfig,
    /// MCP servers and the MCP client's limits.
    #[command(flatten)]
    pub mcp: McpConfig,
}
