//! `hearth keys create | list | revoke`. A new secret is printed alone on the last stdout line.

use clap::Subcommand;

use super::{ConfigError, output};
use crate::auth::keys::{self as service, KeyError};
use crate::db::api_keys::{self, ApiKey};
use crate::db::{Db, now_ms};

/// Subcommands of `hearth keys`.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Mint an API key; its secret is printed once, alone on the last line of stdout.
    Create {
        /// The organization (slug) the key acts for.
        #[arg(long)]
        org: String,
        /// A label for the key.
        #[arg(long)]
        name: String,
        /// Days until the key expires [default: never].
        #[arg(long, value_name = "DAYS", value_parser = clap::value_parser!(u32).range(1..=36500))]
        expires_in_days: Option<u32>,
    },
    /// List API keys (never their secrets).
    List {
        /// Only keys of this organization (slug).
        #[arg(long)]
        org: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Revoke an API key by id (`key_…`).
    Revoke {
        /// The key's id.
        key_id: String,
    },
}

fn user_error(e: KeyError) -> anyhow::Error {
    match e {
        KeyError::Db(e) => anyhow::Error::new(e),
        other => ConfigError(other.to_string()).into(),
    }
}

/// Runs a `keys` subcommand.
///
/// # Errors
/// On bad input (a [`ConfigError`]) or a storage failure.
pub async fn run(db: &Db, command: KeysCommand) -> anyhow::Result<()> {
    match command {
        KeysCommand::Create { org, name, expires_in_days } => {
            let expires = expires_in_days.map(|d| now_ms() + i64::from(d) * 86_400_000);
            let (key, secret) = service::create_key(db, &org, &name, expires).await.map_err(user_error)?;
            output::line(&format!("created API key {} `{}` for organization {org}", key.id, key.name))?;
            output::line("the secret is shown only this once; store it now:")?;
            output::line(&secret)?;
        }
        KeysCommand::List { org, json } => list(db, org, json).await?,
        KeysCommand::Revoke { key_id } => {
            let revocation = service::revoke_key(db, &key_id).await.map_err(user_error)?;
            let key = revocation.key;
            if revocation.already_revoked {
                return Err(
                    ConfigError(format!("API key {} `{}` is already revoked", key.id, key.name)).into()
                );
            }
            output::line(&format!("revoked API key {} `{}`", key.id, key.name))?;
        }
    }
    Ok(())
}

async fn list(db: &Db, org: Option<String>, json: bool) -> anyhow::Result<()> {
    let org_id = match org {
        Some(slug) => Some(
            crate::orgs::find_org(db, &slug)
                .await?
                .ok_or_else(|| ConfigError(format!("no organization with slug `{slug}`")))?
                .id,
        ),
        None => None,
    };
    let keys = db.read(move |conn| api_keys::list_api_keys(conn, org_id.as_ref())).await?;
    if json {
        return output::json(&keys);
    }
    let rows: Vec<Vec<String>> = keys.iter().map(row).collect();
    output::table(&["ID", "ORG", "NAME", "PREFIX", "STATUS", "CREATED", "LAST_USED"], &rows)?;
    Ok(())
}

fn row(key: &ApiKey) -> Vec<String> {
    let status = if key.revoked_at.is_some() {
        "revoked"
    } else if key.expires_at.is_some_and(|at| at <= now_ms()) {
        "expired"
    } else {
        "active"
    };
    vec![
        key.id.to_string(),
        key.organization_id.to_string(),
        key.name.clone(),
        format!("{}…", key.prefix),
        status.to_owned(),
        output::timestamp(Some(key.created_at)),
        output::timestamp(key.last_used_at),
    ]
}
