//! `hearth orgs create | list | show`.

use clap::Subcommand;

use super::{ConfigError, output};
use crate::db::{
    Db,
    organizations::{self, Organization},
};
use crate::orgs::{self as service, OrgError};
use crate::runner::{FlagError, FlagUpdate, set_runner_flag};

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
    /// Refused unless a healthy worker of that runner exists, or with --force (audited).
    SetRunner {
        /// The organization's slug.
        slug: String,
        /// A runner named in HEARTH_RUNNERS.
        runner: String,
        /// Set it even without a healthy worker of that runner.
        #[arg(long)]
        force: bool,
        /// Why (recorded in the audit).
        #[arg(long)]
        reason: Option<String>,
        /// Runner pools, as `serve` has them.
        #[arg(long, env = "HEARTH_RUNNERS", value_name = "LIST", default_value = "ts,go")]
        runners: String,
    },
    /// Clear the organization's runner flag (back to the ramp or the default runner).
    ClearRunner {
        /// The organization's slug.
        slug: String,
        /// Why (recorded in the audit).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Show one organization.
    Show {
        /// The organization's slug.
        slug: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
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
        OrgsCommand::SetRunner { slug, runner, force, reason, runners } => {
            let known: Vec<String> =
                runners.split(',').map(|r| r.trim().to_owned()).filter(|r| !r.is_empty()).collect();
            flag(
                db,
                &known,
                FlagUpdate { org_slug: slug, runner: Some(runner), force, actor: "cli".into(), reason },
            )
            .await?;
        }
        OrgsCommand::ClearRunner { slug, reason } => {
            flag(
                db,
                &[],
                FlagUpdate { org_slug: slug, runner: None, force: false, actor: "cli".into(), reason },
            )
            .await?;
        }
        OrgsCommand::Show { slug, json } => {
            let org = service::find_org(db, &slug)
                .await?
                .ok_or_else(|| ConfigError(format!("no organization with slug `{slug}`")))?;
            if json {
                output::json(&org)?;
            } else {
                output::table(&["SLUG", "ID", "NAME", "RUNNER_DEFAULT", "CREATED"], &[row(&org)])?;
                output::line(&format!("features: {}", org.features))?;
            }
        }
    }
    Ok(())
}

async fn flag(db: &Db, known: &[String], update: FlagUpdate) -> anyhow::Result<()> {
    let slug = update.org_slug.clone();
    let change = set_runner_flag(db, known, update).await.map_err(|e| match e {
        FlagError::Db(e) => anyhow::Error::new(e),
        other => ConfigError(other.to_string()).into(),
    })?;
    let show = |r: &Option<String>| r.clone().unwrap_or_else(|| "(none)".into());
    let forced = if change.forced { " (forced)" } else { "" };
    output::line(&format!("{slug}: runner_default {} -> {}{forced}", show(&change.old), show(&change.new)))?;
    Ok(())
}

fn row(org: &Organization) -> Vec<String> {
    let runner = org.features.get("runner_default").and_then(|v| v.as_str()).unwrap_or("-");
    vec![
        org.slug.clone(),
        org.id.to_string(),
        org.name.clone(),
        runner.to_owned(),
        output::timestamp(Some(org.created_at)),
    ]
}
