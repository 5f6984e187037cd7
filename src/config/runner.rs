//! Settings of runner resolution: the runner pools, the percentage ramp and the kill switch.

use clap::Args;

use super::parse::parse_bool;
use crate::domain::resolver::{Ramp, ResolverRules};
use crate::domain::version::MinVersions;

/// Which runner pools exist and how new dispatches are spread over them.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Runners")]
pub struct RunnerConfig {
    /// Runner pools, comma-separated; the first is the default runner.
    #[arg(long, env = "HEARTH_RUNNERS", value_name = "LIST", default_value = "ts,go", value_parser = parse_runners)]
    pub runners: RunnerList,

    /// Percentage ramp of organizations to a runner, e.g. `go=10` (stable per organization).
    #[arg(long, env = "HEARTH_RUNNER_RAMP", value_name = "RUNNER=PERCENT[,…]")]
    pub runner_ramp: Option<String>,

    /// Runner flags and ramp: `on`, or `off` (the kill switch: everything goes to the default runner).
    #[arg(long, env = "HEARTH_RUNNER_FLAGS", value_name = "on|off", default_value = "on", value_parser = parse_bool,
          action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub runner_flags: bool,

    /// Minimum worker version per runtime, e.g. `go=0.5.0`: an older worker's registration is
    /// refused, and a runner flag is not set to that runtime without a healthy worker at it.
    #[arg(long, env = "HEARTH_RUNNER_MIN_VERSION", value_name = "RUNTIME=VERSION[,…]",
          default_value = "", value_parser = parse_min_versions)]
    pub runner_min_version: MinVersions,
}

fn parse_min_versions(s: &str) -> Result<MinVersions, String> {
    MinVersions::parse(s)
}

impl RunnerConfig {
    /// The resolver's rules, with the ramp validated against the runners.
    ///
    /// # Errors
    /// A message naming HEARTH_RUNNER_RAMP when the ramp is invalid.
    pub fn resolver_rules(&self) -> Result<ResolverRules, String> {
        let runners = self.runners.0.clone();
        let ramp = match &self.runner_ramp {
            Some(text) if !text.trim().is_empty() => Some(
                Ramp::parse(text, &runners)
                    .map_err(|e| format!("invalid HEARTH_RUNNER_RAMP (--runner-ramp): {e}"))?,
            ),
            _ => None,
        };
        Ok(ResolverRules { runners, ramp, flags_enabled: self.runner_flags })
    }
}

/// Runner pool names, in order; the first is the default runner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunnerList(pub Vec<String>);

fn parse_runners(s: &str) -> Result<RunnerList, String> {
    let names: Vec<String> =
        s.split(',').map(str::trim).filter(|n| !n.is_empty()).map(str::to_owned).collect();
    if names.is_empty() {
        return Err("name at least one runner, e.g. ts,go".into());
    }
    if let Some(bad) = names.iter().find(|n| {
        n.len() > 32
            || !n.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
    }) {
        return Err(format!("`{bad}` is not a runner name (lowercase letters, digits, - and _)"));
    }
    Ok(RunnerList(names))
}
