//! `hearth orgs create | list | show`.

use clap::Subcommand;

use super::{ConfigError, output};
use crate::db::{
    Db,
    organizations::{self, Organization},
};
use crate::orgs::{self as service, OrgError};

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
