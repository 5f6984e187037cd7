//! API keys: minting (the secret is returned once, only its hash is stored), listing, revoking.

use crate::db::api_keys::{self, ApiKey};
use crate::db::{Db, DbError, now_ms, organizations};
use crate::ids::KeyId;

use super::secret;

/// Why a key could not be minted or revoked.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// No organization has this slug.
    #[error("no organization with slug `{0}`")]
    UnknownOrg(String),
    /// No key has this id.
    #[error("no API key with id `{0}`")]
    UnknownKey(String),
    /// The name is empty or too long.
    #[error("a key name must be 1 to 100 characters")]
    BadName,
    /// Storage failed.
    #[error(transparent)]
    Db(#[from] DbError),
}

/// Mints a key for the organization `org_slug`; returns the row and the secret, shown once.
///
/// # Errors
/// On an unknown organization, a bad name or a storage failure.
pub async fn create_key(
    db: &Db,
    org_slug: &str,
    name: &str,
    expires_at: Option<i64>,
) -> Result<(ApiKey, String), KeyError> {
    let name = name.trim().to_owned();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(KeyError::BadName);
    }
    let slug = org_slug.to_owned();
    db.write(move |conn| {
        let Some(org) = organizations::find_organization_by_slug(conn, &slug)? else {
            return Ok(Err(KeyError::UnknownOrg(slug)));
        };
        Ok(Ok(insert_new_key(conn, &org.id, &name, expires_at)?))
    })
    .await?
}

/// Inserts a new key for `org` inside a write; returns the row and its secret.
///
/// # Errors
/// On a storage failure.
pub fn insert_new_key(
    conn: &rusqlite::Connection,
    org: &crate::ids::OrgId,
    name: &str,
    expires_at: Option<i64>,
) -> Result<(ApiKey, String), DbError> {
    let secret = secret::generate(secret::API_KEY_PREFIX);
    let key = ApiKey {
        id: KeyId::new(),
        organization_id: org.clone(),
        name: name.to_owned(),
        prefix: secret::display_prefix(&secret),
        created_at: now_ms(),
        last_used_at: None,
        expires_at,
        revoked_at: None,
    };
    api_keys::insert_api_key(conn, &key, &secret::hash(&secret))?;
    Ok((key, secret))
}

/// A revocation: the key as it now stands, and whether it had been revoked before this call.
#[derive(Debug, Clone)]
pub struct Revocation {
    /// The key row (with `revoked_at` set).
    pub key: ApiKey,
    /// It was already revoked: nothing changed (revoking is idempotent).
    pub already_revoked: bool,
}

/// Revokes a key by id. Revoking a revoked key changes nothing and says so.
///
/// # Errors
/// When no key has this id, or on a storage failure.
pub async fn revoke_key(db: &Db, id: &str) -> Result<Revocation, KeyError> {
    let Ok(key_id) = id.parse::<KeyId>() else {
        return Err(KeyError::UnknownKey(id.to_owned()));
    };
    let text = id.to_owned();
    db.write(move |conn| {
        let revoked_now = api_keys::revoke_api_key(conn, &key_id, now_ms())?;
        match api_keys::find_api_key(conn, &key_id)? {
            Some(key) => Ok(Ok(Revocation { key, already_revoked: !revoked_now })),
            None => Ok(Err(KeyError::UnknownKey(text))),
        }
    })
    .await?
}
