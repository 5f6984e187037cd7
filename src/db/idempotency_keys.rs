//! SQL for the `idempotency_keys` table: which run a caller's `Idempotency-Key` started.

use rusqlite::{Connection, OptionalExtension, params};

use super::DbError;
use crate::ids::RunId;

/// A key already used: the request it was used with and the run it started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsedKey {
    /// SHA-256 of the request it was first used with.
    pub request_hash: Vec<u8>,
    /// The run it started.
    pub run_id: RunId,
}

/// Records `key` of `scope` for `run`, unless it is already used: then returns its use.
///
/// # Errors
/// On a database failure.
pub fn claim_key(
    conn: &Connection,
    scope: &[u8],
    key: &str,
    request_hash: &[u8],
    run: &RunId,
    now: i64,
) -> Result<Option<UsedKey>, DbError> {
    let used = conn
        .prepare_cached("SELECT request_hash, run_id FROM idempotency_keys WHERE scope = ?1 AND key = ?2")?
        .query_row(params![scope, key], |r| Ok(UsedKey { request_hash: r.get(0)?, run_id: r.get(1)? }))
        .optional()?;
    if used.is_none() {
        conn.prepare_cached(
            "INSERT INTO idempotency_keys (scope, key, request_hash, run_id, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![scope, key, request_hash, run, now])?;
    }
    Ok(used)
}

/// Points `key` of `scope` at `run` instead of `was` (a chat turn started again after its
/// first run ended without an answer); false when it no longer points at `was`.
///
/// # Errors
/// On a database failure.
pub fn move_key(
    conn: &Connection,
    scope: &[u8],
    key: &str,
    was: &RunId,
    run: &RunId,
) -> Result<bool, DbError> {
    Ok(conn
        .prepare_cached(
            "UPDATE idempotency_keys SET run_id = ?4 WHERE scope = ?1 AND key = ?2 AND run_id = ?3",
        )?
        .execute(params![scope, key, was, run])?
        == 1)
}

/// Forgets a key (its run could not be started).
///
/// # Errors
/// On a database failure.
pub fn drop_key(conn: &Connection, scope: &[u8], key: &str, run: &RunId) -> Result<(), DbError> {
    conn.prepare_cached("DELETE FROM idempotency_keys WHERE scope = ?1 AND key = ?2 AND run_id = ?3")?
        .execute(params![scope, key, run])?;
    Ok(())
}

/// Forgets keys used before `before`; returns how many.
///
/// # Errors
/// On a database failure.
pub fn prune_keys(conn: &Connection, before: i64) -> Result<usize, DbError> {
    Ok(conn.prepare_cached("DELETE FROM idempotency_keys WHERE created_at < ?1")?.execute([before])?)
}
