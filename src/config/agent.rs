//! Settings of an agent turn: its step budget, tool timeouts and the test tools.

use clap::Args;

use super::parse::parse_bool;

/// Limits and tools of the agent loop.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Agent turns")]
pub struct AgentConfig {
    /// Model calls an agent turn may make before it fails.
    #[arg(long, env = "HEARTH_MAX_STEPS", value_name = "N", default_value_t = 8,
          value_parser = clap::value_parser!(u32).range(1..=100))]
    pub max_steps: u32,

    /// Longest a server-side tool call may take, in seconds.
    #[arg(long, env = "HEARTH_TOOL_TIMEOUT_S", value_name = "SECONDS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..=3_600))]
    pub tool_timeout_s: u64,

    /// Offer the test-only `test__*` tools (echo, sleep, fail, loop) to every run. For tests and
    /// demos only.
    #[arg(long, env = "HEARTH_TEST_TOOLS", value_name = "BOOL", default_value = "false", value_parser = parse_bool,
          action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub test_tools: bool,
}
