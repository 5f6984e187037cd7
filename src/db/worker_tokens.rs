//! SQL for the `worker_tokens` table: the credentials of the worker protocol (hashes only, never
//! secrets).

use rusqlite::{Connection, OptionalExtension, Row, params};
use serde::Serialize;

use super::DbError;
use crate::ids::WorkerTokenId;

/// A worker token row, without any secret.
#[derive(Debug, Clone, Serialize)]
pub struct WorkerToken {
    /// `wtk_…`
    pub id: WorkerTokenId,
    /// A label chosen at creation.
    pub name: String,
    /// The first characters of the secret, to recognise it.
    pub prefix: String,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms, updated at most once a minute.
    pub last_used_at: Option<i64>,
    /// Unix ms; set once revoked.
    pub revoked_at: Option<i64>,
}

/// Builds a `SELECT` of every column from `worker_tokens` at compile time (SQL stays a literal).
macro_rules! select_token {
    ($($tail:literal),*) => {
        concat!("SELECT id, name, prefix, created_at, last_used_at, revoked_at", $($tail),*)
    };
}

fn from_row(row: &Row<'_>) -> rusqlite::Result<WorkerToken> {
    Ok(WorkerToken {
        id: row.get(0)?,
        name: row.get(1)?,
        prefix: row.get(2)?,
        created_at: row.get(3)?,
        last_used_at: row.get(4)?,
        revoked_at: row.get(5)?,
    })
}

/// Inserts a token with the SHA-256 of its secret.
///
/// # Errors
/// On a database failure.
pub fn insert_worker_token(conn: &Connection, token: &WorkerToken, token_hash: &[u8]) -> Result<(), DbError> {
    conn.prepare_cached(
        "INSERT INTO worker_tokens (id, name, token_hash, prefix, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![token.id, token.name, token_hash, token.prefix, token.created_at])?;
    Ok(())
}

/// The token whose secret hashes to `token_hash`, revoked or not, with that stored hash.
///
/// # Errors
/// On a database failure.
pub fn find_worker_token_by_hash(
    conn: &Connection,
    token_hash: &[u8],
) -> Result<Option<(WorkerToken, Vec<u8>)>, DbError> {
    let sql = select_token!(", token_hash FROM worker_tokens WHERE token_hash = ?1");
    Ok(conn
        .prepare_cached(sql)?
        .query_row([token_hash], |row| Ok((from_row(row)?, row.get(6)?)))
        .optional()?)
}

/// Every token, revoked ones included, newest first.
///
/// # Errors
/// On a database failure.
pub fn list_worker_tokens(conn: &Connection) -> Result<Vec<WorkerToken>, DbError> {
    let sql = select_token!(" FROM worker_tokens ORDER BY created_at DESC, id DESC");
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt.query_map([], from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The token with this id.
///
/// # Errors
/// On a database failure.
pub fn find_worker_token(conn: &Connection, id: &WorkerTokenId) -> Result<Option<WorkerToken>, DbError> {
    let sql = select_token!(" FROM worker_tokens WHERE id = ?1");
    Ok(conn.prepare_cached(sql)?.query_row([id], from_row).optional()?)
}

/// Marks a token revoked; returns whether a live token was revoked.
///
/// # Errors
/// On a database failure.
pub fn revoke_worker_token(conn: &Connection, id: &WorkerTokenId, at: i64) -> Result<bool, DbError> {
    let changed = conn
        .prepare_cached("UPDATE worker_tokens SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL")?
        .execute(params![id, at])?;
    Ok(changed == 1)
}

/// Records a use of the token (callers throttle this to about once a minute).
///
/// # Errors
/// On a database failure.
pub fn touch_worker_token(conn: &Connection, id: &WorkerTokenId, at: i64) -> Result<(), DbError> {
    conn.prepare_cached("UPDATE worker_tokens SET last_used_at = ?2 WHERE id = ?1")?
        .execute(params![id, at])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(name: &str, created_at: i64) -> WorkerToken {
        WorkerToken {
            id: WorkerTokenId::new(),
            name: name.into(),
            prefix: "hwk_0123456".into(),
            created_at,
            last_used_at: None,
            revoked_at: None,
        }
    }

    #[test]
    fn insert_find_list_touch_and_revoke() {
        let conn = crate::db::bare_schema();
        let (a, b) = (token("a", 1), token("b", 2));
        insert_worker_token(&conn, &a, &[1; 32]).unwrap();
        insert_worker_token(&conn, &b, &[2; 32]).unwrap();
        assert!(insert_worker_token(&conn, &token("c", 3), &[1; 32]).is_err(), "hashes are unique");

        let (found, stored) = find_worker_token_by_hash(&conn, &[2; 32]).unwrap().unwrap();
        assert_eq!((found.id, stored), (b.id, vec![2; 32]));
        assert!(find_worker_token_by_hash(&conn, &[3; 32]).unwrap().is_none());
        let names: Vec<String> = list_worker_tokens(&conn).unwrap().into_iter().map(|t| t.name).collect();
        assert_eq!(names, ["b", "a"], "newest first");

        touch_worker_token(&conn, &a.id, 50).unwrap();
        assert_eq!(find_worker_token(&conn, &a.id).unwrap().unwrap().last_used_at, Some(50));
        assert!(revoke_worker_token(&conn, &a.id, 60).unwrap());
        assert!(!revoke_worker_token(&conn, &a.id, 70).unwrap(), "revoking twice changes nothing");
        assert_eq!(find_worker_token(&conn, &a.id).unwrap().unwrap().revoked_at, Some(60));
    }
}
