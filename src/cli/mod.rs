//! The command line: `hearth serve | migrate | worker | run | check | orgs | keys | workers`, each setting a flag with an
//! env var.

mod check;
mod client;
mod keys;
mod mcp;
mod migrate;
mod orgs;
mod output;
mod roles;
mod run;
mod serve;
mod worker;
mod workers;

use std::path::Path;

use clap::{Parser, Subcommand};

use crate::config::{GlobalConfig, ServeConfig, WorkerConfig};
use crate::db::migrate::SchemaState;
use crate::db::{Db, migrate as schema};

/// hearth — a single-binary agent runtime: an OpenAI-compatible chat API whose every turn is a
/// durable run, stored in one SQLite file.
#[derive(Debug, Parser)]
#[command(name = "hearth", version, propagate_version = true, max_term_width = 100)]
pub struct Cli {
    /// Settings shared by every subcommand.
    #[command(flatten)]
    pub global: GlobalConfig,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the API (creating, migrating and bootstrapping the database on first run).
    Serve(Box<ServeConfig>),
    /// Apply pending database migrations and exit.
    Migrate(migrate::MigrateArgs),
    /// Manage organizations.
    #[command(subcommand)]
    Orgs(orgs::OrgsCommand),
    /// Manage API keys (secrets are shown once, alone on the last stdout line).
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Run one turn and print it (the answer to stdout, tool progress to stderr); exit 0 when
    /// the run completed, 1 when it failed, 130 on Ctrl-C. With --url, through a running hearth.
    Run(Box<run::RunArgs>),
    /// Check a deployed hearth end to end through its API: mint a temporary key (admin API),
    /// drive a chat turn whole and streamed, read the run, its events and its session back,
    /// revoke the key; one line per step, exit 0 when all passed, 1 otherwise.
    Check(Box<check::CheckArgs>),
    /// Run as an external worker of one runner, over the worker protocol (SIGTERM drains).
    Worker(Box<WorkerConfig>),
    /// List workers and manage worker tokens (a new token's secret is shown once, alone on the
    /// last stdout line).
    #[command(subcommand)]
    Workers(workers::WorkersCommand),
}

/// A problem with the given settings: exit code 2, and the message names the setting.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// The command ended with this exit code, its outcome already printed (`hearth run`).
#[derive(Debug, thiserror::Error)]
#[error("exit code {0}")]
pub struct Exit(pub u8);

/// Ctrl-C (SIGINT), listened for from its creation on: a signal that arrives between two
/// waits is kept for the next (`tokio::signal::ctrl_c()` made anew in a loop would lose it).
pub(crate) struct Interrupt(tokio::signal::unix::Signal);

impl Interrupt {
    /// Starts listening.
    ///
    /// # Errors
    /// When the signal handler cannot be installed.
    pub(crate) fn listen() -> std::io::Result<Self> {
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()).map(Self)
    }

    /// The next Ctrl-C.
    pub(crate) async fn recv(&mut self) {
        let _ = self.0.recv().await;
    }
}

/// A progress line on stderr (not through the logger: it is the command's own output).
pub(crate) fn progress(text: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr().lock(), "{text}");
}

/// Runs the parsed command.
///
/// # Errors
/// A [`ConfigError`] for bad settings; anything else for runtime failures.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    if let Some(url) = cli.global.ignored_database_url() {
        // Only the scheme: the URL may carry a password.
        tracing::warn!(
            database_url.scheme = url.scheme().unwrap_or_default(),
            "DATABASE_URL is ignored: it is {}, not sqlite:PATH, and HEARTH_DB (--db) names the database",
            url.kind()
        );
    }
    let db_path = cli.global.db_path().map_err(ConfigError)?;
    match cli.command {
        Command::Serve(config) => serve::run(&db_path, *config).await,
        Command::Migrate(args) => migrate::run(&db_path, &args),
        Command::Orgs(command) => orgs::run(&open_migrated(&db_path)?, command).await,
        Command::Keys(command) => keys::run(&open_migrated(&db_path)?, command).await,
        Command::Workers(command) => workers::run(&open_migrated(&db_path)?, command).await,
        Command::Worker(config) => worker::run(*config).await,
        Command::Run(args) => run::run(&db_path, *args).await,
        Command::Check(args) => check::run(*args).await,
    }
}

/// Opens an existing, fully migrated database for an administrative command.
fn open_migrated(path: &Path) -> anyhow::Result<Db> {
    if !path.exists() {
        return Err(ConfigError(format!(
            "no database at {} (HEARTH_DB): start `hearth serve` or run `hearth migrate` first",
            path.display()
        ))
        .into());
    }
    let db = Db::open(path, 2)?;
    let conn = rusqlite::Connection::open(path)?;
    match schema::state(&conn)? {
        SchemaState::Current => Ok(db),
        SchemaState::Readable { found, latest } => {
            tracing::warn!(
                found,
                latest,
                "the database was migrated by a newer hearth (additive migrations only)"
            );
            Ok(db)
        }
        SchemaState::Behind { applied, latest } => Err(ConfigError(format!(
            "the database at {} has {applied} of {latest} migrations applied: run `hearth migrate`",
            path.display()
        ))
        .into()),
        SchemaState::Ahead { found, latest } => {
            Err(ConfigError(format!("{}: {}", path.display(), schema::too_new(found, latest))).into())
        }
    }
}
