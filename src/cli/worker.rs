//! `hearth worker`: the same binary as an external worker of one runner (worker/remote.rs).

use std::sync::Arc;
use std::time::Duration;

use super::ConfigError;
use super::serve::build_models;
use crate::agent::tools::Toolbox;
use crate::config::WorkerConfig;
use crate::worker::remote::{self, RemoteSettings};

/// Runs the worker until it has drained (SIGTERM), or after one run with `--once`.
///
/// # Errors
/// Bad settings (naming them), or a registration the server refused.
pub async fn run(config: WorkerConfig) -> anyhow::Result<()> {
    let mcp_servers = config.mcp.servers().map_err(ConfigError)?;
    let models = Arc::new(build_models(&config.upstream, &mcp_servers)?);
    let mcp = super::mcp::build(&config.mcp, mcp_servers, None).await?;
    let toolbox = Arc::new(Toolbox::new(config.agent.test_tools, Some(Arc::clone(&mcp))));
    if config.runner.trim().is_empty() {
        return Err(ConfigError("--runner (HEARTH_WORKER_RUNNER) must name a runner".into()).into());
    }
    let name = config
        .name
        .clone()
        .unwrap_or_else(|| format!("{}/{}", crate::worker::embedded::hostname(), config.runner));
    let settings = RemoteSettings {
        server: config.server.clone(),
        token: config.token.expose().to_owned(),
        runner: config.runner.clone(),
        name,
        concurrency: usize::from(config.concurrency),
        once: config.once,
        tool_timeout: Duration::from_secs(config.agent.tool_timeout_s),
    };
    let (tasks, stop) = (tokio_util::task::TaskTracker::new(), tokio_util::sync::CancellationToken::new());
    mcp.start(&tasks, &stop);
    let outcome = remote::run(settings, models, toolbox).await;
    stop.cancel();
    tasks.close();
    tasks.wait().await;
    outcome
}
