//! SQL for the `admin_tokens` table (hashes only).

use rusqlite::{Connection, OptionalExtension, params};

use super::DbError;
use crate::ids::AdminTokenId;

/// Inserts an admin token's hash.
///
/// # Errors
/// On a database failure.
pub fn insert_admin_token(
    conn: &Connection,
    id: &AdminTokenId,
    name: &str,
    token_hash: &[u8],
    at: i64,
) -> Result<(), DbError> {
    conn.prepare_cached(
        "INSERT INTO admin_tokens (id, name, token_hash, created_at) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![id, name, token_hash, at])?;
    Ok(())
}

/// The live admin token whose hash is `token_hash`, with the stored hash.
///
/// # Errors
/// On a database failure.
pub fn find_admin_token_by_hash(
    conn: &Connection,
    token_hash: &[u8],
) -> Result<Option<(AdminTokenId, Vec<u8>)>, DbError> {
    Ok(conn
        .prepare_cached(
            "SELECT id, token_hash FROM admin_tokens WHERE token_hash = ?1 AND revoked_at IS NULL",
        )?
        .query_row([token_hash], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()?)
}

/// How many admin tokens exist at all (revoked included).
///
/// # Errors
/// On a database failure.
pub fn count_admin_tokens(conn: &Connection) -> Result<i64, DbError> {
    Ok(conn.query_row("SELECT count(*) FROM admin_tokens", [], |r| r.get(0))?)
}
