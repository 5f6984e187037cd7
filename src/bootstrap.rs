//! First run: the `default` organization, and an admin token and an API key printed once.
//!
//! A database with no admin token and no API key is new. Then hearth creates the `default`
//! organization and whichever credentials the environment did not provide (HEARTH_ADMIN_TOKEN,
//! GATEWAY_API_KEY), stores only their hashes, and hands the secrets back to be shown once.
//! Later starts create an admin token only if none exists and the environment gives none.

use std::io::Write;

use crate::auth::{keys, secret};
use crate::db::{Db, DbError, admin_tokens, api_keys, now_ms, organizations};
use crate::ids::{AdminTokenId, OrgId};
use crate::orgs::{DEFAULT_ORG, new_org};

/// What start-up found or created.
#[derive(Debug)]
pub struct Bootstrap {
    /// The `default` organization's id.
    pub default_org: OrgId,
    /// A new admin token's secret, to show once.
    pub admin_token: Option<String>,
    /// A new API key's secret, to show once.
    pub api_key: Option<String>,
}

/// Ensures the `default` organization and, on a new database, the first credentials.
///
/// # Errors
/// On a storage failure.
pub async fn ensure(db: &Db, env_admin_token: bool, env_api_key: bool) -> Result<Bootstrap, DbError> {
    db.write(move |conn| {
        let default_org = match organizations::find_organization_by_slug(conn, DEFAULT_ORG)? {
            Some(org) => org.id,
            None => {
                let org = new_org(DEFAULT_ORG, Some("Default organization"));
                organizations::insert_organization(conn, &org)?;
                org.id
            }
        };
        let no_admin = admin_tokens::count_admin_tokens(conn)? == 0;
        let fresh = no_admin && api_keys::count_api_keys(conn)? == 0;
        let mut boot = Bootstrap { default_org, admin_token: None, api_key: None };
        // An admin token must always exist (or come from the environment), even when keys were
        // minted with the CLI before the first `serve`; an API key is made only on a new database.
        if no_admin && !env_admin_token {
            let token = secret::generate(secret::ADMIN_TOKEN_PREFIX);
            let hash = secret::hash(&token);
            admin_tokens::insert_admin_token(conn, &AdminTokenId::new(), "first-run", &hash, now_ms())?;
            boot.admin_token = Some(token);
        }
        if fresh && !env_api_key {
            let (_, key) = keys::insert_new_key(conn, &boot.default_org, "first-run", None)?;
            boot.api_key = Some(key);
        }
        Ok(boot)
    })
    .await
}

/// The `default` organization's id, read-only (for replicas, which never write).
///
/// # Errors
/// On a storage failure, or when the primary has not created it yet.
pub async fn find_default_org(db: &Db) -> Result<OrgId, DbError> {
    db.read(|conn| {
        organizations::find_organization_by_slug(conn, DEFAULT_ORG)?.map(|org| org.id).ok_or(DbError::Task(
            "the `default` organization does not exist yet; start the primary first".into(),
        ))
    })
    .await
}

/// Shows newly created secrets once, on stderr (never through the logger).
pub fn announce(boot: &Bootstrap) {
    if boot.admin_token.is_none() && boot.api_key.is_none() {
        return;
    }
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "\nhearth first run: created the `default` organization and these credentials.");
    let _ = writeln!(err, "They are shown only this once; the database stores only their hashes.");
    if let Some(token) = &boot.admin_token {
        let _ = writeln!(err, "  admin token: {token}");
    }
    if let Some(key) = &boot.api_key {
        let _ = writeln!(err, "  API key: {key}");
    }
    let _ = writeln!(err);
}
