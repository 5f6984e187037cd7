//! `hearth workers list | token create | token list | token revoke`. A new token's secret is
//! printed alone on the last stdout line.

use clap::Subcommand;

use super::{ConfigError, output};
use crate::admin::{WorkerView, worker_views};
use crate::auth::worker_tokens::{self as service, WorkerTokenError};
use crate::db::Db;
use crate::db::worker_tokens::{self, WorkerToken};

/// Subcommands of `hearth workers`.
#[derive(Debug, Subcommand)]
pub enum WorkersCommand {
    /// List registered workers: runtime, version, heartbeat age, health, runs in flight.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Manage worker tokens, the credentials of external workers.
    #[command(subcommand)]
    Token(TokenCommand),
}

/// Subcommands of `hearth workers token`.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Mint a worker token; its secret is printed once, alone on the last line of stdout.
    Create {
        /// A label for the token.
        #[arg(long, default_value = service::DEFAULT_NAME)]
        name: String,
    },
    /// List worker tokens (never their secrets).
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a worker token by id (`wtk_…`).
    Revoke {
        /// The token's id.
        token_id: String,
    },
}

fn user_error(e: WorkerTokenError) -> anyhow::Error {
    match e {
        WorkerTokenError::Db(e) => anyhow::Error::new(e),
        other => ConfigError(other.to_string()).into(),
    }
}

/// Runs a `workers` subcommand.
///
/// # Errors
/// On bad input (a [`ConfigError`]) or a storage failure.
pub async fn run(db: &Db, command: WorkersCommand) -> anyhow::Result<()> {
    match command {
        WorkersCommand::List { json } => list_workers(db, json).await,
        WorkersCommand::Token(TokenCommand::Create { name }) => {
            let (token, secret) = service::create_worker_token(db, &name).await.map_err(user_error)?;
            output::line(&format!("created worker token {} `{}`", token.id, token.name))?;
            output::line("the secret is shown only this once; give it to the worker as --token:")?;
            output::line(&secret)?;
            Ok(())
        }
        WorkersCommand::Token(TokenCommand::List { json }) => list_tokens(db, json).await,
        WorkersCommand::Token(TokenCommand::Revoke { token_id }) => {
            let token = service::revoke_worker_token(db, &token_id).await.map_err(user_error)?;
            output::line(&format!("revoked worker token {} `{}`", token.id, token.name))?;
            Ok(())
        }
    }
}

async fn list_workers(db: &Db, json: bool) -> anyhow::Result<()> {
    // Healthy as the flag guard counts it: active (not draining) with a fresh heartbeat.
    let views = worker_views(db, None).await?;
    if json {
        return output::json(&views);
    }
    let rows: Vec<Vec<String>> = views.iter().map(worker_row).collect();
    output::table(
        &[
            "ID",
            "NAME",
            "RUNTIME",
            "VERSION",
            "HOSTNAME",
            "CAPACITY",
            "STATUS",
            "EMBEDDED",
            "HEARTBEAT_AGE",
            "HEALTHY",
            "IN_FLIGHT",
        ],
        &rows,
    )?;
    Ok(())
}

fn worker_row(view: &WorkerView) -> Vec<String> {
    let w = &view.worker;
    vec![
        w.id.to_string(),
        w.name.clone(),
        w.runtime.clone(),
        w.version.clone(),
        w.hostname.clone(),
        w.capacity.to_string(),
        w.status.clone(),
        yes_no(w.embedded),
        format!("{}s", view.heartbeat_age_s),
        yes_no(view.healthy),
        w.in_flight.to_string(),
    ]
}

fn yes_no(value: bool) -> String {
    if value { "yes" } else { "no" }.to_owned()
}

async fn list_tokens(db: &Db, json: bool) -> anyhow::Result<()> {
    let tokens = db.read(worker_tokens::list_worker_tokens).await?;
    if json {
        return output::json(&tokens);
    }
    let rows: Vec<Vec<String>> = tokens.iter().map(token_row).collect();
    output::table(&["ID", "NAME", "PREFIX", "STATUS", "CREATED", "LAST_USED"], &rows)?;
    Ok(())
}

fn token_row(token: &WorkerToken) -> Vec<String> {
    vec![
        token.id.to_string(),
        token.name.clone(),
        format!("{}…", token.prefix),
        if token.revoked_at.is_some() { "revoked" } else { "active" }.to_owned(),
        output::timestamp(Some(token.created_at)),
        output::timestamp(token.last_used_at),
    ]
}
