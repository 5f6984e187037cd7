//! `hearth orgs create | list | show | set-runner | clear-runner`.

use clap::Subcommand;
use serde::Serialize;

use super::{ConfigError, output};
use crate::config::RunnerConfig;
use crate::db::{
    Db,
    flag_changes::FlagChange,
    organizations::{self, Organization},
};
use crate::orgs::{self as service, OrgError};
use crate::runner::{FlagError, FlagUpdate, OrgRunner, Resolver, RunnerSettings};

/// Subcommands of `hearth orgs`.
#[derive(Debug, Subcommand)]
pub enum OrgsCommand {
    /// Create an organization.
    Create {
        /// Unique short name: lowercase letters, digits and dashes.
        slug: String,
        /// Display name [default: the slug].
        #[arg(long)]
        name: Option<String>,
    },
    /// List organizations.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Set the organization's runner flag (`runner_default`); affects only new dispatches.
    /// Refused unless a healthy worker of that runtime (active, a heartbeat within 2 minutes, at
    /// or above HEARTH_RUNNER_MIN_VERSION) exists, or with --force (audited as forced). Give it
    /// the runner settings `serve` runs with.
    SetRunner {
        /// The organization's slug.
        slug: String,
        /// A runner named in HEARTH_RUNNERS.
        runner: String,
        /// Set it even without a healthy worker of that runtime at its minimum version.
        #[arg(long)]
        force: bool,
        /// Why (recorded in the audit).
        #[arg(long)]
        reason: Option<String>,
        /// The runner settings, as `serve` has them.
        #[command(flatten)]
        settings: RunnerConfig,
    },
    /// Clear the organization's runner flag (back to the ramp or the default runner).
    ClearRunner {
        /// The organization's slug.
        slug: String,
        /// Why (recorded in the audit).
        #[arg(long)]
        reason: Option<String>,
        /// The runner settings, as `serve` has them.
        #[command(flatten)]
        settings: RunnerConfig,
    },
    /// Show one organization: its runner flag, the runner a new dispatch would get now and why
    /// (decided with the runner settings given here: give it those `serve` runs with), and the
    /// latest flag changes.
    Show {
        /// The organization's slug.
        slug: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// How many of the latest flag changes to show.
        #[arg(long, value_name = "N", default_value_t = 5)]
        changes: u32,
        /// The runner settings, as `serve` has them.
        #[command(flatten)]
        settings: RunnerConfig,
    },
}

/// Runs an `orgs` subcommand.
///
/// # Errors
/// On bad input (a [`ConfigError`]) or a storage failure.
pub async fn run(db: &Db, command: OrgsCommand) -> anyhow::Result<()> {
    match command {
        OrgsCommand::Create { slug, name } => {
            let org = service::create_org(db, &slug, name.as_deref()).await.map_err(|e| match e {
                OrgError::Db(e) => anyhow::Error::new(e),
                other => ConfigError(other.to_string()).into(),
            })?;
            output::line(&format!("created organization {} ({})", org.slug, org.id))?;
        }
        OrgsCommand::List { json } => {
            let orgs = db.read(organizations::list_organizations).await?;
            if json {
                output::json(&orgs)?;
            } else {
                let rows: Vec<Vec<String>> = orgs.iter().map(row).collect();
                output::table(&["SLUG", "ID", "NAME", "RUNNER_DEFAULT", "CREATED"], &rows)?;
            }
        }
        OrgsCommand::SetRunner { slug, runner, force, reason, settings } => {
            let update =
                FlagUpdate { org_slug: slug, runner: Some(runner), force, actor: "cli".into(), reason };
            flag(db, &settings, update).await?;
        }
        OrgsCommand::ClearRunner { slug, reason, settings } => {
            let update =
                FlagUpdate { org_slug: slug, runner: None, force: false, actor: "cli".into(), reason };
            flag(db, &settings, update).await?;
        }
        OrgsCommand::Show { slug, json, changes, settings } => {
            let org = inspect(db, &runner_settings(&settings)?, &slug, changes).await?;
            if json {
                output::json(&ShowView { org, resolved_with: ResolvedWith::new(&settings) })?;
            } else {
                show(&org, &settings)?;
            }
        }
    }
    Ok(())
}

async fn flag(db: &Db, settings: &RunnerConfig, update: FlagUpdate) -> anyhow::Result<()> {
    let slug = update.org_slug.clone();
    // Built first, so that settings `serve` would refuse stop the command before any change.
    let runner = runner_settings(settings)?;
    let change = runner.set_flag(db, update).await.map_err(|e| match e {
        FlagError::Db(e) => anyhow::Error::new(e),
        other => ConfigError(other.to_string()).into(),
    })?;
    let show = |r: &Option<String>| r.clone().unwrap_or_else(|| "(none)".into());
    let forced = if change.forced { " (forced)" } else { "" };
    output::line(&format!("{slug}: runner_default {} -> {}{forced}", show(&change.old), show(&change.new)))?;
    // What the change means for new dispatches under these settings: a kill switch or a ramp
    // may make it differ from the flag.
    let org = inspect(db, &runner, &slug, 0).await?;
    output::line(&format!("new dispatches go to: {} ({})", org.effective_runner, org.runner_reason))?;
    Ok(())
}

/// The runner settings built from `settings` as `serve` builds its own (an invalid ramp is
/// refused, naming HEARTH_RUNNER_RAMP): the same service `serve`'s admin pages and API use.
fn runner_settings(settings: &RunnerConfig) -> anyhow::Result<RunnerSettings> {
    Ok(RunnerSettings {
        resolver: Resolver::new(settings.resolver_rules().map_err(ConfigError)?),
        runners: settings.runners.0.clone(),
        min_versions: settings.runner_min_version.clone(),
    })
}

/// Inspects `slug` under `runner`.
async fn inspect(db: &Db, runner: &RunnerSettings, slug: &str, changes: u32) -> anyhow::Result<OrgRunner> {
    runner
        .inspect(db, slug, changes)
        .await?
        .ok_or_else(|| ConfigError(format!("no organization with slug `{slug}`")).into())
}

/// `orgs show --json`: the organization's fields, its runner and history, and the settings the
/// effective runner was decided with.
#[derive(Serialize)]
struct ShowView {
    #[serde(flatten)]
    org: OrgRunner,
    resolved_with: ResolvedWith,
}

/// The runner settings a decision was made with (this command's, which should be `serve`'s).
#[derive(Serialize)]
struct ResolvedWith {
    runners: Vec<String>,
    runner_ramp: Option<String>,
    runner_flags: bool,
}

impl ResolvedWith {
    fn new(settings: &RunnerConfig) -> Self {
        let ramp = settings.runner_ramp.clone().filter(|r| !r.trim().is_empty());
        Self { runners: settings.runners.0.clone(), runner_ramp: ramp, runner_flags: settings.runner_flags }
    }

    fn describe(&self) -> String {
        format!(
            "HEARTH_RUNNERS={} HEARTH_RUNNER_RAMP={} HEARTH_RUNNER_FLAGS={}",
            self.runners.join(","),
            self.runner_ramp.as_deref().unwrap_or("(none)"),
            if self.runner_flags { "on" } else { "off" }
        )
    }
}

fn show(org: &OrgRunner, settings: &RunnerConfig) -> anyhow::Result<()> {
    output::table(&["SLUG", "ID", "NAME", "RUNNER_DEFAULT", "CREATED"], &[row(&org.organization)])?;
    match &org.features_not_json {
        Some(text) => output::line(&format!("features: not JSON, as stored: {text}"))?,
        None => output::line(&format!("features: {}", org.organization.features))?,
    }
    let flag = org.runner_default.as_ref().map_or_else(|| "none".to_owned(), flag_text);
    output::line(&format!("runner flag: {flag}"))?;
    output::line(&format!("effective runner: {} ({})", org.effective_runner, org.runner_reason))?;
    output::line(&format!(
        "  decided as a new dispatch would be, with {}",
        ResolvedWith::new(settings).describe()
    ))?;
    if org.flag_changes.is_empty() {
        output::line("flag changes: none")?;
        return Ok(());
    }
    output::line("flag changes (newest first):")?;
    let rows: Vec<Vec<String>> = org.flag_changes.iter().map(change_row).collect();
    output::table(&["AT", "OLD", "NEW", "ACTOR", "FORCED", "REASON"], &rows)?;
    Ok(())
}

fn change_row(change: &FlagChange) -> Vec<String> {
    let runner = |r: &Option<String>| r.clone().unwrap_or_else(|| "-".into());
    vec![
        output::timestamp(Some(change.at)),
        runner(&change.old),
        runner(&change.new),
        change.actor.clone(),
        if change.forced { "yes" } else { "no" }.to_owned(),
        change.reason.clone().unwrap_or_else(|| "-".into()),
    ]
}

/// A stored flag value: a runner name as is, anything else as its JSON text.
fn flag_text(value: &serde_json::Value) -> String {
    value.as_str().map_or_else(|| value.to_string(), str::to_owned)
}

fn row(org: &Organization) -> Vec<String> {
    let runner =
        org.features.get("runner_default").filter(|v| !v.is_null()).map_or_else(|| "-".into(), flag_text);
    vec![
        org.slug.clone(),
        org.id.to_string(),
        org.name.clone(),
        runner,
        output::timestamp(Some(org.created_at)),
    ]
}
