//! `hearth run TARGET --input TEXT [--json] [--url URL]`: one turn, printed, then exit.
//!
//! TARGET is anything a request's `model` may name (a model, an alias, `agent:NAME`). The answer
//! goes to stdout (`--json`: the run as `GET /v1/runs/{id}` shows it); the progress of tool
//! calls (`tool.started`, `tool.finished`) goes to stderr. Exit 0 when the run completed, 1 when
//! it failed (or could not start), 130 on Ctrl-C (the run is cancelled first).
//!
//! Without `--url` it uses the local database: the run is dispatched in this process and
//! executed by an embedded worker, with no HTTP server. With `--url` it drives a running hearth
//! over HTTP ([`remote`]), as a scheduled Fly Machine without the volume must. The API key
//! comes from `HEARTH_API_KEY` (or `--api-key @FILE`; a key's value on the command line is
//! refused, since other local users can read it in the process list).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser};
use serde_json::{Value, json};

use super::{ConfigError, Exit, output, roles, serve};
use crate::app::{App, AppParts, AppState};
use crate::auth::{KeyRef, Principal};
use crate::config::{
    AgentConfig, AuthConfig, HttpConfig, McpConfig, QueueConfig, RunnerConfig, Secret, ServeConfig,
    StorageConfig, UpstreamConfig,
};
use crate::db::Db;
use crate::http::openai::types::ChatCompletionRequest;
use crate::http::runs::run_json;
use crate::queue::OnBusy;
use crate::runner::Resolver;
use crate::turns::Offset;
use crate::{bootstrap, metrics, worker};

#[path = "run_remote.rs"]
mod remote;

/// Flags of `hearth run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// What to run: a model, an alias or `agent:NAME` (anything a request's "model" may name).
    #[arg(value_name = "TARGET")]
    pub target: String,
    /// The user message of the turn.
    #[arg(long, value_name = "TEXT")]
    pub input: String,
    /// Print the run as JSON (as `GET /v1/runs/{id}` shows it) instead of its answer.
    #[arg(long)]
    pub json: bool,
    /// Drive the hearth at this URL over HTTP instead of the local database (a scheduled
    /// Machine without the volume must).
    #[arg(long, env = "HEARTH_URL", value_name = "URL")]
    pub url: Option<String>,
    /// API key for --url: in the environment, or `@FILE` (a value on the command line is
    /// refused: it would show in the process list).
    #[arg(long, env = "HEARTH_API_KEY", value_name = "KEY", hide_env_values = true)]
    pub api_key: Option<Secret>,
    /// Migrations at start and the reader pool (local runs).
    #[command(flatten)]
    pub storage: StorageConfig,
    /// Runner pools (local runs).
    #[command(flatten)]
    pub runner: RunnerConfig,
    /// The embedded worker (local runs).
    #[command(flatten)]
    pub queue: QueueConfig,
    /// Limits and tools of the turn (local runs).
    #[command(flatten)]
    pub agent: AgentConfig,
    /// The catalog and the upstream providers (local runs).
    #[command(flatten)]
    pub upstream: UpstreamConfig,
    /// MCP tool servers (a local run offers their tools as `serve` does).
    #[command(flatten)]
    pub mcp: McpConfig,
}

/// Runs one turn and prints it.
///
/// # Errors
/// [`Exit`] with the exit code once the outcome is printed; bad settings; a turn that could
/// not start (unknown target, unreachable server).
pub async fn run(db_path: &Path, args: RunArgs) -> anyhow::Result<()> {
    let json = args.json;
    let (run, interrupted) = match args.url.clone() {
        Some(url) => {
            let key = args.api_key.clone().ok_or_else(|| {
                ConfigError("--url needs an API key: set HEARTH_API_KEY (or pass --api-key @FILE)".into())
            })?;
            remote::run(&url, &key, &args.target, &args.input).await?
        }
        None => local(db_path, args).await?,
    };
    finish(&run, json, interrupted)
}

/// Prints the outcome and turns it into the exit code.
fn finish(run: &Value, json: bool, interrupted: bool) -> anyhow::Result<()> {
    let status = run["status"].as_str().unwrap_or_default();
    if json {
        output::json(run)?;
    } else if status == "completed" {
        output::line(run["output"]["content"].as_str().unwrap_or_default())?;
    }
    if status != "completed" {
        let message = run["error"]["message"].as_str().unwrap_or("no error recorded");
        super::progress(&format!("run {} {status}: {message}", run["id"].as_str().unwrap_or("?")));
    }
    match (interrupted, status) {
        (true, _) => Err(Exit(130).into()),
        (false, "completed") => Ok(()),
        _ => Err(Exit(1).into()),
    }
}

/// The progress line of a tool event (its wire type and data), if it is one.
fn progress_of(kind: &str, data: &Value) -> Option<String> {
    let name = data["name"].as_str().unwrap_or("?");
    match kind {
        "tool.started" => Some(format!("[tool] {name} started")),
        "tool.finished" if data["is_error"] == true => Some(format!("[tool] {name} failed")),
        "tool.finished" => Some(format!("[tool] {name} finished")),
        _ => None,
    }
}

/// Settings of the listener and of authentication, which a local run does not use, at their
/// defaults (or environment), to build the app.
#[derive(Debug, Parser)]
struct Unused {
    #[command(flatten)]
    http: HttpConfig,
    #[command(flatten)]
    auth: AuthConfig,
}

/// One turn through this process: migrate, dispatch, execute on an embedded worker, follow.
async fn local(db_path: &Path, args: RunArgs) -> anyhow::Result<(Value, bool)> {
    let unused = Unused::try_parse_from(["hearth"]).map_err(|e| ConfigError(e.to_string()))?;
    let config = ServeConfig {
        http: unused.http,
        auth: unused.auth,
        storage: args.storage,
        runner: args.runner,
        queue: args.queue,
        agent: args.agent,
        upstream: args.upstream,
        mcp: args.mcp,
    };
    let rules = config.runner.resolver_rules().map_err(ConfigError)?;
    let mcp_servers = config.mcp.servers().map_err(ConfigError)?;
    let models = serve::build_models(&config.upstream, &mcp_servers)?;
    let metrics = metrics::install().map_err(|e| anyhow::anyhow!("metrics recorder: {e}"))?;
    let db = Db::open(db_path, config.storage.db_readers)?;
    roles::prepare_schema(db_path, config.storage.auto_migrate)?;
    // The `default` organization only: no credentials are minted (nor printed) for a local run.
    let default_org = bootstrap::ensure(&db, true, true).await?.default_org;
    let mcp = super::mcp::build(&config.mcp, mcp_servers, Some((&db, true))).await?;
    let embedded = (!config.queue.no_embedded_workers && config.queue.workers > 0)
        .then(|| (rules.default_runner().to_owned(), usize::from(config.queue.workers)));
    let state = App::build(AppParts {
        config,
        db,
        metrics,
        default_org: default_org.clone(),
        static_key: None,
        resolver: Resolver::new(rules),
        jwt: None,
        models,
        mcp,
    });
    state.mcp().start(state.tasks(), state.shutdown());
    // A worker of its own (`HOST/run-PID`): `HOST/embedded` would give back the runs of a
    // `serve` running on the same database and host.
    let mut worker_id = None;
    if let Some((runner, capacity)) = embedded {
        let name = format!("{}/run-{}", worker::embedded::hostname(), std::process::id());
        worker_id = Some(
            worker::embedded::start(worker::embedded::Embedded {
                name,
                queue: Arc::clone(state.queue()),
                executor: Arc::clone(state.executor()),
                runner,
                capacity,
                heartbeat: Duration::from_secs(state.config().queue.heartbeat_s),
                shutdown: state.shutdown().clone(),
                tasks: state.tasks().clone(),
            })
            .await?,
        );
    }
    let principal = Principal { org: default_org, key: KeyRef::Static, user: None };
    let outcome = turn(&state, &principal, &args.target, &args.input).await;
    if let Some(id) = worker_id {
        // Gone for good: `hearth workers list` shows it draining, not as a lost worker.
        if let Err(e) = state.db().write(move |conn| crate::db::workers::mark_draining(conn, &id)).await {
            tracing::warn!(error = %e, "could not mark this run's worker draining");
        }
    }
    state.shutdown().cancel();
    state.tasks().close();
    if tokio::time::timeout(Duration::from_secs(10), state.tasks().wait()).await.is_err() {
        tracing::warn!("background tasks did not stop within 10 s");
    }
    outcome
}

async fn turn(
    state: &AppState,
    principal: &Principal,
    target: &str,
    text: &str,
) -> anyhow::Result<(Value, bool)> {
    let request: ChatCompletionRequest =
        serde_json::from_value(json!({"model": target, "messages": [{"role": "user", "content": text}]}))?;
    let mut input =
        request.into_input(state.turns().default_model()).map_err(|e| anyhow::anyhow!(e.to_string()))?;
    input.stream = true;
    let turns = state.turns();
    // Listening before the run starts: a Ctrl-C at any moment after is seen.
    let mut interrupt = super::Interrupt::listen()?;
    let run = turns.start_run(principal, input, None, OnBusy::default()).await?;
    let mut follower = turns.follow(&run, Offset::After(0)).await?;
    let interrupted = loop {
        tokio::select! {
            event = follower.next() => match event? {
                Some(event) => {
                    let data = serde_json::to_value(&event.data).unwrap_or_default();
                    if let Some(line) = progress_of(event.kind().as_str(), &data) {
                        super::progress(&line);
                    }
                }
                None => break false,
            },
            _ = interrupt.recv() => {
                super::progress(&format!("interrupted: cancelling run {}", run.id));
                turns.cancel_run(principal, run.id.as_str()).await?;
                break true;
            }
        }
    };
    let run = turns.wait_run(principal, run.id.as_str(), Duration::from_secs(10)).await?;
    Ok((run_json(&run), interrupted))
}
