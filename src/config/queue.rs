//! Settings of the run queue: the embedded workers, leases, heartbeats and attempts.

use clap::Args;

use super::parse::parse_bool;

/// How runs are claimed and kept: the embedded worker pool and the lease discipline.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Queue and workers")]
pub struct QueueConfig {
    /// Runs the embedded worker (default runner, inside `serve`) executes at once; 0 runs no
    /// embedded worker. Turns mostly wait on the upstream model, so this is a concurrency limit,
    /// not a thread count.
    #[arg(long, env = "HEARTH_WORKERS", value_name = "N", default_value_t = 1024,
          value_parser = clap::value_parser!(u16).range(0..=65535))]
    pub workers: u16,

    /// Run no embedded workers (every run waits for an external worker).
    #[arg(long, env = "HEARTH_NO_EMBEDDED_WORKERS", value_name = "BOOL", default_value = "false",
          value_parser = parse_bool, num_args = 0..=1, default_missing_value = "true")]
    pub no_embedded_workers: bool,

    /// Seconds a claim is leased before a heartbeat must extend it.
    #[arg(long, env = "HEARTH_LEASE_S", value_name = "SECONDS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(5..=86_400))]
    pub lease_s: u64,

    /// Attempts a run gets: a run whose worker stopped while holding it is retried until then,
    /// and then fails with `max_attempts_exceeded`.
    #[arg(long, env = "HEARTH_MAX_ATTEMPTS", value_name = "N", default_value_t = 3,
          value_parser = clap::value_parser!(u32).range(1..=100))]
    pub max_attempts: u32,

    /// Seconds between worker heartbeats.
    #[arg(long, env = "HEARTH_HEARTBEAT_S", value_name = "SECONDS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=3_600))]
    pub heartbeat_s: u64,

    /// Seconds a chat turn waits for a worker to claim its run when no live worker serves the
    /// run's runner; then the run is cancelled and the turn answers 503. 0: no wait.
    #[arg(long, env = "HEARTH_NO_WORKER_WAIT_S", value_name = "SECONDS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(0..=3_600))]
    pub no_worker_wait_s: u64,
}
