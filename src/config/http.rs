//! Settings of the HTTP listener: address, body limit, shutdown grace and the metrics token.

use std::net::IpAddr;

use clap::Args;

use super::Secret;
use super::parse::parse_size;

/// Where and how `serve` listens.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "HTTP")]
pub struct HttpConfig {
    /// TCP port to listen on.
    #[arg(long, env = "PORT", default_value_t = 8080)]
    pub port: u16,

    /// Address to listen on.
    #[arg(long, env = "HEARTH_HOST", default_value = "0.0.0.0")]
    pub host: IpAddr,

    /// Largest accepted request body, in bytes or with a unit (`512KiB`, `1MiB`, `2MB`);
    /// larger bodies get 413.
    #[arg(long, env = "HEARTH_MAX_BODY", value_name = "SIZE", default_value = "1MiB",
          value_parser = parse_size)]
    pub max_body: usize,

    /// Seconds that in-flight requests get to finish after SIGTERM/SIGINT before the server
    /// closes them.
    #[arg(long, env = "HEARTH_SHUTDOWN_GRACE_S", value_name = "SECONDS", default_value_t = 30)]
    pub shutdown_grace_s: u64,

    /// Bearer token required by `GET /metrics`; open when unset.
    #[arg(long, env = "HEARTH_METRICS_TOKEN", value_name = "TOKEN", hide_env_values = true)]
    pub metrics_token: Option<Secret>,
}
