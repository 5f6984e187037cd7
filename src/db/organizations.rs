//! SQL for the `organizations` table.

use rusqlite::{Connection, OptionalExtension, Row, params};
use serde::Serialize;

use super::DbError;
use crate::ids::OrgId;

/// An organization row.
#[derive(Debug, Clone, Serialize)]
pub struct Organization {
    /// `org_…`
    pub id: OrgId,
    /// Unique, URL-safe short name.
    pub slug: String,
    /// Display name.
    pub name: String,
    /// Feature flags, e.g. `{"runner_default":"go"}`.
    pub features: serde_json::Value,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms.
    pub updated_at: i64,
}

/// Builds a `SELECT` of every column from `organizations` at compile time (SQL stays a literal).
macro_rules! select_org {
    ($($tail:literal),*) => {
        concat!("SELECT id, slug, name, features, created_at, updated_at", $($tail),*)
    };
}

fn from_row(row: &Row<'_>) -> rusqlite::Result<(Organization, String)> {
    Ok((
        Organization {
            id: row.get(0)?,
            slug: row.get(1)?,
            name: row.get(2)?,
            features: serde_json::Value::Null,
            created_at: row.get(4)?,
            updated_at: row.get(5)?,
        },
        row.get(3)?,
    ))
}

fn finish((mut org, features): (Organization, String)) -> Result<Organization, DbError> {
    org.features = serde_json::from_str(&features)?;
    Ok(org)
}

/// Inserts an organization.
///
/// # Errors
/// On a duplicate slug (a constraint error) or a database failure.
pub fn insert_organization(conn: &Connection, org: &Organization) -> Result<(), DbError> {
    conn.prepare_cached(
        "INSERT INTO organizations (id, slug, name, features, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        org.id,
        org.slug,
        org.name,
        org.features.to_string(),
        org.created_at,
        org.updated_at
    ])?;
    Ok(())
}

/// The organization with this slug, if any.
///
/// # Errors
/// On a database failure.
pub fn find_organization_by_slug(conn: &Connection, slug: &str) -> Result<Option<Organization>, DbError> {
    let sql = select_org!(" FROM organizations WHERE slug = ?1");
    conn.prepare_cached(sql)?.query_row([slug], from_row).optional()?.map(finish).transpose()
}

/// The organization with this slug, if any, and its `features` column as stored: parsed into
/// `features` when it is JSON (else left `Null`), the text returned either way. For inspecting a
/// row that a hand edit may have left unreadable to [`find_organization_by_slug`].
///
/// # Errors
/// On a database failure.
pub fn find_organization_as_stored(
    conn: &Connection,
    slug: &str,
) -> Result<Option<(Organization, String)>, DbError> {
    let sql = select_org!(" FROM organizations WHERE slug = ?1");
    let found = conn.prepare_cached(sql)?.query_row([slug], from_row).optional()?;
    Ok(found.map(|(mut org, text)| {
        org.features = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
        (org, text)
    }))
}

/// The organization with this id, if any.
///
/// # Errors
/// On a database failure.
pub fn find_organization(conn: &Connection, id: &OrgId) -> Result<Option<Organization>, DbError> {
    let sql = select_org!(" FROM organizations WHERE id = ?1");
    conn.prepare_cached(sql)?.query_row([id], from_row).optional()?.map(finish).transpose()
}

/// Every organization, by slug.
///
/// # Errors
/// On a database failure.
pub fn list_organizations(conn: &Connection) -> Result<Vec<Organization>, DbError> {
    let sql = select_org!(" FROM organizations ORDER BY slug");
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt.query_map([], from_row)?;
    rows.map(|r| finish(r?)).collect()
}

/// Replaces an organization's `features`.
///
/// # Errors
/// On a database failure.
pub fn update_features(
    conn: &Connection,
    id: &OrgId,
    features: &serde_json::Value,
    at: i64,
) -> Result<(), DbError> {
    conn.prepare_cached("UPDATE organizations SET features = ?2, updated_at = ?3 WHERE id = ?1")?
        .execute(params![id, features.to_string(), at])?;
    Ok(())
}
