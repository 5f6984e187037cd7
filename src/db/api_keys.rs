//! SQL for the `api_keys` table (hashes only, never secrets).

use rusqlite::{Connection, OptionalExtension, Row, params};
use serde::Serialize;

use super::DbError;
use crate::ids::{KeyId, OrgId};

/// An API key row, without any secret.
#[derive(Debug, Clone, Serialize)]
pub struct ApiKey {
    /// `key_…`
    pub id: KeyId,
    /// The organization the key acts for.
    pub organization_id: OrgId,
    /// A label chosen at creation.
    pub name: String,
    /// The first characters of the secret, to recognise it.
    pub prefix: String,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms, updated at most once a minute.
    pub last_used_at: Option<i64>,
    /// Unix ms; the key stops working then.
    pub expires_at: Option<i64>,
    /// Unix ms; set once revoked.
    pub revoked_at: Option<i64>,
}

/// Builds a `SELECT` of every column from `api_keys` at compile time (SQL stays a literal).
macro_rules! select_key {
    ($($tail:literal),*) => {
        concat!("SELECT id, organization_id, name, prefix, created_at, last_used_at, expires_at, revoked_at", $($tail),*)
    };
}

fn from_row(row: &Row<'_>) -> rusqlite::Result<ApiKey> {
    Ok(ApiKey {
        id: row.get(0)?,
        organization_id: row.get(1)?,
        name: row.get(2)?,
        prefix: row.get(3)?,
        created_at: row.get(4)?,
        last_used_at: row.get(5)?,
        expires_at: row.get(6)?,
        revoked_at: row.get(7)?,
    })
}

/// Inserts a key with the SHA-256 of its secret.
///
/// # Errors
/// On a database failure.
pub fn insert_api_key(conn: &Connection, key: &ApiKey, secret_hash: &[u8]) -> Result<(), DbError> {
    conn.prepare_cached(
        "INSERT INTO api_keys (id, organization_id, name, secret_hash, prefix, created_at, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        key.id,
        key.organization_id,
        key.name,
        secret_hash,
        key.prefix,
        key.created_at,
        key.expires_at
    ])?;
    Ok(())
}

/// The key whose secret hashes to `secret_hash`, revoked or not, with that stored hash.
///
/// # Errors
/// On a database failure.
pub fn find_api_key_by_hash(
    conn: &Connection,
    secret_hash: &[u8],
) -> Result<Option<(ApiKey, Vec<u8>)>, DbError> {
    let sql = select_key!(", secret_hash FROM api_keys WHERE secret_hash = ?1");
    Ok(conn
        .prepare_cached(sql)?
        .query_row([secret_hash], |row| Ok((from_row(row)?, row.get(8)?)))
        .optional()?)
}

/// Keys, newest first, optionally of one organization.
///
/// # Errors
/// On a database failure.
pub fn list_api_keys(conn: &Connection, org: Option<&OrgId>) -> Result<Vec<ApiKey>, DbError> {
    let sql = select_key!(
        " FROM api_keys WHERE ?1 IS NULL OR organization_id = ?1
         ORDER BY created_at DESC, id DESC"
    );
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt.query_map([org], from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Marks a key revoked; returns whether a live key was revoked.
///
/// # Errors
/// On a database failure.
pub fn revoke_api_key(conn: &Connection, id: &KeyId, at: i64) -> Result<bool, DbError> {
    let changed = conn
        .prepare_cached("UPDATE api_keys SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL")?
        .execute(params![id, at])?;
    Ok(changed == 1)
}

/// The key with this id.
///
/// # Errors
/// On a database failure.
pub fn find_api_key(conn: &Connection, id: &KeyId) -> Result<Option<ApiKey>, DbError> {
    let sql = select_key!(" FROM api_keys WHERE id = ?1");
    Ok(conn.prepare_cached(sql)?.query_row([id], from_row).optional()?)
}

/// Records a use of the key (callers throttle this to about once a minute).
///
/// # Errors
/// On a database failure.
pub fn touch_api_key(conn: &Connection, id: &KeyId, at: i64) -> Result<(), DbError> {
    conn.prepare_cached("UPDATE api_keys SET last_used_at = ?2 WHERE id = ?1")?.execute(params![id, at])?;
    Ok(())
}

/// How many keys exist at all (revoked included).
///
/// # Errors
/// On a database failure.
pub fn count_api_keys(conn: &Connection) -> Result<i64, DbError> {
    Ok(conn.query_row("SELECT count(*) FROM api_keys", [], |r| r.get(0))?)
}
