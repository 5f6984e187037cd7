//! SQL over `runs` for the admin overview: runs finished since a time by status, and the
//! latest failures. Both read an index (`runs_by_finish`, `runs_failed`).

use rusqlite::{Connection, params};
use serde::Serialize;

use super::DbError;
use crate::ids::{RunId, SessionId};

/// How many runs finished since `since` (Unix ms), per terminal status.
///
/// # Errors
/// On a database failure.
pub fn finished_since(conn: &Connection, since: i64) -> Result<Vec<(String, i64)>, DbError> {
    let mut stmt = conn.prepare_cached(
        "SELECT status, count(*) FROM runs WHERE finished_at IS NOT NULL AND finished_at >= ?1
         GROUP BY status ORDER BY status",
    )?;
    let rows = stmt.query_map([since], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// A failed run as the overview lists it.
#[derive(Debug, Clone, Serialize)]
pub struct FailedRun {
    /// `run_…`
    pub id: RunId,
    /// Its session.
    pub session_id: SessionId,
    /// Its runner.
    pub runner: String,
    /// Unix ms.
    pub finished_at: i64,
    /// The error's code, if the stored error reads.
    pub code: Option<String>,
    /// The error's message, if the stored error reads.
    pub message: Option<String>,
}

/// The latest `limit` failed runs, newest first.
///
/// # Errors
/// On a database failure.
pub fn recent_failures(conn: &Connection, limit: u32) -> Result<Vec<FailedRun>, DbError> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, session_id, runner, finished_at, iif(json_valid(error), json_extract(error, '$.code'), NULL),
                iif(json_valid(error), json_extract(error, '$.message'), NULL)
         FROM runs WHERE status = 'failed' ORDER BY finished_at DESC LIMIT +?1",
    )?;
    let rows = stmt.query_map(params![limit], |r| {
        Ok(FailedRun {
            id: r.get(0)?,
            session_id: r.get(1)?,
            runner: r.get(2)?,
            finished_at: r.get::<_, Option<i64>>(3)?.unwrap_or(0),
            code: r.get(4)?,
            message: r.get(5)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}
