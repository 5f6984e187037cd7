//! Settings of the HTTP listener: address, body limit and timeouts, connection cap, shutdown
//! grace and the metrics token.

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

    /// Address to listen on. The default `::` is dual-stack (IPv6 and IPv4); where IPv6 is
    /// disabled, hearth listens on 0.0.0.0 instead.
    #[arg(long, env = "HEARTH_HOST", default_value = "::")]
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

    /// Seconds a client has to send a request's headers once its connection opens or goes idle
    /// between requests; slower (or idle keep-alive) connections are closed (slowloris).
    #[arg(long, env = "HEARTH_HEADER_TIMEOUT_S", value_name = "SECONDS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub header_timeout_s: u64,

    /// Seconds a client has to send a whole request body; a slower body is refused with 408.
    #[arg(long, env = "HEARTH_BODY_TIMEOUT_S", value_name = "SECONDS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub body_timeout_s: u64,

    /// Most client connections open at once; further connections wait in the listen backlog
    /// until one closes. Open run streams count (each holds a connection).
    #[arg(long, env = "HEARTH_MAX_CONNECTIONS", value_name = "N", default_value_t = 4096,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,

    /// Bearer token required by `GET /metrics`; open when unset.
    #[arg(long, env = "HEARTH_METRICS_TOKEN", value_name = "TOKEN", hide_env_values = true)]
    pub metrics_token: Option<Secret>,
}
