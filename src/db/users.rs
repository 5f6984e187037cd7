//! SQL for `users`: a user (JWT `sub`) is recorded the first time it is seen in an organization.

use rusqlite::{Connection, params};

use super::DbError;
use crate::ids::OrgId;

/// Records that `user` was seen now (insert or refresh `last_seen_at`).
///
/// # Errors
/// On a database failure.
pub fn upsert_user(conn: &Connection, org: &OrgId, user: &str, at: i64) -> Result<(), DbError> {
    conn.prepare_cached(
        "INSERT INTO users (id, organization_id, first_seen_at, last_seen_at) VALUES (?1, ?2, ?3, ?3)
         ON CONFLICT (organization_id, id) DO UPDATE SET last_seen_at = excluded.last_seen_at",
    )?
    .execute(params![user, org, at])?;
    Ok(())
}
