//! SQL for `admin_sessions`: logins to the admin pages, stored as the SHA-256 of the cookie.

use rusqlite::{Connection, OptionalExtension, params};

use super::DbError;

/// Stores a login whose cookie hashes to `token_hash`, valid until `expires_at` (Unix ms).
///
/// # Errors
/// On a database failure.
pub fn insert_admin_session(
    conn: &Connection,
    token_hash: &[u8],
    at: i64,
    expires_at: i64,
) -> Result<(), DbError> {
    conn.prepare_cached(
        "INSERT INTO admin_sessions (token_hash, created_at, expires_at) VALUES (?1, ?2, ?3)",
    )?
    .execute(params![token_hash, at, expires_at])?;
    Ok(())
}

/// The stored hash and expiry of the login whose cookie hashes to `token_hash`, if it is still
/// valid at `now`.
///
/// # Errors
/// On a database failure.
pub fn find_admin_session(
    conn: &Connection,
    token_hash: &[u8],
    now: i64,
) -> Result<Option<(Vec<u8>, i64)>, DbError> {
    Ok(conn
        .prepare_cached(
            "SELECT token_hash, expires_at FROM admin_sessions WHERE token_hash = ?1 AND expires_at > ?2",
        )?
        .query_row(params![token_hash, now], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?)
}

/// Ends the login whose cookie hashes to `token_hash`; whether one existed.
///
/// # Errors
/// On a database failure.
pub fn delete_admin_session(conn: &Connection, token_hash: &[u8]) -> Result<bool, DbError> {
    Ok(conn.prepare_cached("DELETE FROM admin_sessions WHERE token_hash = ?1")?.execute([token_hash])? > 0)
}

/// Deletes the logins expired at `now`; returns how many.
///
/// # Errors
/// On a database failure.
pub fn delete_expired_admin_sessions(conn: &Connection, now: i64) -> Result<usize, DbError> {
    Ok(conn.prepare_cached("DELETE FROM admin_sessions WHERE expires_at <= ?1")?.execute([now])?)
}
