//! SQL for `flag_changes`: the audit of every runner-flag change.

use rusqlite::{Connection, params};
use serde::Serialize;

use super::DbError;
use crate::ids::OrgId;

/// One audited change.
#[derive(Debug, Clone, Serialize)]
pub struct FlagChange {
    /// The organization.
    pub organization_id: OrgId,
    /// The runner before (`None`: no flag).
    pub old: Option<String>,
    /// The runner after (`None`: cleared).
    pub new: Option<String>,
    /// Who: `cli`, `admin`, …
    pub actor: String,
    /// Why, as given.
    pub reason: Option<String>,
    /// Whether the healthy-worker check was overridden.
    pub forced: bool,
    /// Unix ms.
    pub at: i64,
}

/// Records a change.
///
/// # Errors
/// On a database failure.
pub fn insert_flag_change(conn: &Connection, c: &FlagChange) -> Result<(), DbError> {
    conn.prepare_cached(
        "INSERT INTO flag_changes (organization_id, old, new, actor, reason, forced, at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![c.organization_id, c.old, c.new, c.actor, c.reason, c.forced, c.at])?;
    Ok(())
}

/// An organization's changes, newest first.
///
/// # Errors
/// On a database failure.
pub fn list_flag_changes(conn: &Connection, org: &OrgId, limit: u32) -> Result<Vec<FlagChange>, DbError> {
    let mut stmt = conn.prepare_cached(
        "SELECT organization_id, old, new, actor, reason, forced, at FROM flag_changes
         WHERE organization_id = ?1 ORDER BY at DESC, id DESC LIMIT +?2",
    )?;
    let rows = stmt.query_map(params![org, limit], |r| {
        Ok(FlagChange {
            organization_id: r.get(0)?,
            old: r.get(1)?,
            new: r.get(2)?,
            actor: r.get(3)?,
            reason: r.get(4)?,
            forced: r.get(5)?,
            at: r.get(6)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}
