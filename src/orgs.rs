//! Organizations: creation with a validated slug, lookup and listing.

use crate::db::organizations::{self, Organization};
use crate::db::{Db, DbError, now_ms};
use crate::ids::OrgId;

/// The slug of the organization that the static API key and first run use.
pub const DEFAULT_ORG: &str = "default";

/// Why an organization could not be created.
#[derive(Debug, thiserror::Error)]
pub enum OrgError {
    /// The slug is not 1–63 of `a-z 0-9 -`, starting with a letter or digit.
    #[error(
        "invalid slug `{0}`: use 1-63 lowercase letters, digits and dashes, starting with a letter or digit"
    )]
    BadSlug(String),
    /// The slug is taken.
    #[error("an organization with slug `{0}` already exists")]
    Exists(String),
    /// Storage failed.
    #[error(transparent)]
    Db(#[from] DbError),
}

/// Checks a slug: 1–63 of `a-z 0-9 -`, starting with a letter or digit.
///
/// # Errors
/// When it is not such a slug.
pub fn validate_slug(slug: &str) -> Result<(), OrgError> {
    let ok = (1..=63).contains(&slug.len())
        && slug.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && slug.bytes().next().is_some_and(|b| b != b'-');
    if ok { Ok(()) } else { Err(OrgError::BadSlug(slug.chars().take(80).collect())) }
}

/// A new organization row (not yet stored).
#[must_use]
pub fn new_org(slug: &str, name: Option<&str>) -> Organization {
    let now = now_ms();
    Organization {
        id: OrgId::new(),
        slug: slug.to_owned(),
        name: name.map_or_else(|| slug.to_owned(), str::to_owned),
        features: serde_json::json!({}),
        created_at: now,
        updated_at: now,
    }
}

/// Creates an organization.
///
/// # Errors
/// On a bad or taken slug, or a storage failure.
pub async fn create_org(db: &Db, slug: &str, name: Option<&str>) -> Result<Organization, OrgError> {
    validate_slug(slug)?;
    let org = new_org(slug, name);
    db.write(move |conn| {
        if organizations::find_organization_by_slug(conn, &org.slug)?.is_some() {
            return Ok(Err(OrgError::Exists(org.slug)));
        }
        organizations::insert_organization(conn, &org)?;
        Ok(Ok(org))
    })
    .await?
}

/// The organization with this slug.
///
/// # Errors
/// On a storage failure.
pub async fn find_org(db: &Db, slug: &str) -> Result<Option<Organization>, DbError> {
    let slug = slug.to_owned();
    db.read(move |conn| organizations::find_organization_by_slug(conn, &slug)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs() {
        assert!(validate_slug("default").is_ok());
        assert!(validate_slug("acme-2").is_ok());
        assert!(validate_slug("-acme").is_err());
        assert!(validate_slug("Acme").is_err());
        assert!(validate_slug("").is_err());
        assert!(validate_slug(&"a".repeat(64)).is_err());
    }
}
