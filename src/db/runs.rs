//! SQL for `runs`: insert, find, the atomic claim, fenced transitions.

use std::sync::Arc;

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::{DbError, JsonText};
use crate::domain::outcome::{RunError, RunOutput, Usage};
use crate::domain::profile::ResolvedProfile;
use crate::domain::run::RunStatus;
use crate::ids::{OrgId, RunId, SessionId, WorkerId};

/// A run row. JSON columns are read into their types; one that does not parse is an error.
#[derive(Debug, Clone)]
pub struct RunRow {
    /// `run_…`
    pub id: RunId,
    /// The session it belongs to.
    pub session_id: SessionId,
    /// Owner organization.
    pub organization_id: OrgId,
    /// Owner user, if any.
    pub user_id: Option<String>,
    /// Status.
    pub status: RunStatus,
    /// Stamped runner.
    pub runner: String,
    /// Stamped profile (shared: a run row is cloned on its way to the executor).
    pub resolved_profile: Arc<ResolvedProfile>,
    /// Worker holding it.
    pub claimed_by: Option<WorkerId>,
    /// Attempt number, from 1.
    pub attempt: i64,
    /// Unix ms.
    pub lease_expires_at: Option<i64>,
    /// A cancel was asked for.
    pub cancel_requested: bool,
    /// The turn's input as its stored JSON text (`runs::RunInput`): only the executor reads
    /// it, straight into its type, so it is never held as a `Value` tree.
    pub input: Arc<str>,
    /// The answer, once completed.
    pub output: Option<RunOutput>,
    /// Token usage, once ended.
    pub usage: Option<Usage>,
    /// Why it failed or was cancelled.
    pub error: Option<RunError>,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms.
    pub claimed_at: Option<i64>,
    /// Unix ms.
    pub started_at: Option<i64>,
    /// Unix ms.
    pub finished_at: Option<i64>,
}

macro_rules! run_columns {
    () => {
        "id, session_id, organization_id, user_id, status, runner, resolved_profile, claimed_by, attempt,
         lease_expires_at, cancel_requested, input, output, usage, error, created_at, claimed_at,
         started_at, finished_at"
    };
}

/// Column `idx` holding JSON text (or NULL), read into `T`.
pub(super) fn json_column<T: serde::de::DeserializeOwned>(
    row: &Row<'_>,
    idx: usize,
) -> rusqlite::Result<Option<T>> {
    let Some(text) = row.get_ref(idx)?.as_str_or_null()? else { return Ok(None) };
    serde_json::from_str(text)
        .map(Some)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(idx, rusqlite::types::Type::Text, Box::new(e)))
}

fn from_row(row: &Row<'_>) -> rusqlite::Result<RunRow> {
    let status: String = row.get(4)?;
    Ok(RunRow {
        id: row.get(0)?,
        session_id: row.get(1)?,
        organization_id: row.get(2)?,
        user_id: row.get(3)?,
        status: status.parse().map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(4, rusqlite::types::Type::Text, Box::new(e))
        })?,
        runner: row.get(5)?,
        resolved_profile: Arc::new(json_column(row, 6)?.ok_or_else(|| {
            rusqlite::Error::FromSqlConversionFailure(
                6,
                rusqlite::types::Type::Null,
                "no resolved profile".into(),
            )
        })?),
        claimed_by: row.get(7)?,
        attempt: row.get(8)?,
        lease_expires_at: row.get(9)?,
        cancel_requested: row.get::<_, i64>(10)? != 0,
        input: Arc::from(row.get::<_, String>(11)?),
        output: json_column(row, 12)?,
        usage: json_column(row, 13)?,
        error: json_column(row, 14)?,
        created_at: row.get(15)?,
        claimed_at: row.get(16)?,
        started_at: row.get(17)?,
        finished_at: row.get(18)?,
    })
}

/// Inserts a run: queued, already running when an in-process worker took it at dispatch, or
/// ended (a run stored whole when it ends, `updated_at` then being its `finished_at`).
///
/// # Errors
/// On a database failure.
pub fn insert_run(conn: &Connection, run: &RunRow) -> Result<(), DbError> {
    conn.prepare_cached(
        "INSERT INTO runs (id, session_id, organization_id, user_id, status, runner, resolved_profile,
                           attempt, input, created_at, updated_at, claimed_by, lease_expires_at,
                           claimed_at, started_at, finished_at, output, usage, error)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, coalesce(?15, ?10), ?11, ?12, ?13, ?14, ?15,
                 ?16, ?17, ?18)",
    )?
    .execute(params![
        run.id,
        run.session_id,
        run.organization_id,
        run.user_id,
        run.status.as_str(),
        run.runner,
        JsonText(&*run.resolved_profile),
        run.attempt,
        &*run.input,
        run.created_at,
        run.claimed_by,
        run.lease_expires_at,
        run.claimed_at,
        run.started_at,
        run.finished_at,
        run.output.as_ref().map(JsonText),
        run.usage.as_ref().map(JsonText),
        run.error.as_ref().map(JsonText)
    ])?;
    Ok(())
}

/// The run with this id.
///
/// # Errors
/// On a database failure.
pub fn find_run(conn: &Connection, id: &RunId) -> Result<Option<RunRow>, DbError> {
    let sql = concat!("SELECT ", run_columns!(), " FROM runs WHERE id = ?1");
    Ok(conn.prepare_cached(sql)?.query_row([id], from_row).optional()?)
}

/// Whether the session has a run queued, claimed or running.
///
/// # Errors
/// On a database failure.
pub fn session_busy(conn: &Connection, session: &SessionId) -> Result<bool, DbError> {
    Ok(conn
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM runs WHERE session_id = ?1 AND status = 'queued')
                 OR EXISTS (SELECT 1 FROM runs WHERE session_id = ?1 AND status = 'claimed')
                 OR EXISTS (SELECT 1 FROM runs WHERE session_id = ?1 AND status = 'running')",
        )?
        .query_row([session], |r| r.get(0))?)
}

/// Whether any run of `runner` waits in the queue.
///
/// # Errors
/// On a database failure.
pub fn runner_has_queued(conn: &Connection, runner: &str) -> Result<bool, DbError> {
    Ok(conn
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM runs WHERE runner = ?1 AND status = 'queued')")?
        .query_row([runner], |r| r.get(0))?)
}

/// Claims the oldest claimable run of `runner` for `worker`: queued, with no earlier queued run
/// and no claimed or running run in its session (FIFO per session).
///
/// # Errors
/// On a database failure.
pub fn claim_next_run(
    conn: &Connection,
    runner: &str,
    worker: &WorkerId,
    lease_expires_at: i64,
    now: i64,
) -> Result<Option<RunRow>, DbError> {
    let sql = concat!(
        "UPDATE runs SET status = 'claimed', claimed_by = ?2, claimed_at = ?4, lease_expires_at = ?3,
                         updated_at = ?4
         WHERE id = (
             SELECT r.id FROM runs r
             WHERE r.status = 'queued' AND r.runner = ?1
               AND NOT EXISTS (SELECT 1 FROM runs p WHERE p.session_id = r.session_id
                               AND p.status IN ('claimed', 'running'))
               AND NOT EXISTS (SELECT 1 FROM runs q WHERE q.session_id = r.session_id
                               AND q.status = 'queued' AND q.rowid < r.rowid)
             ORDER BY r.rowid LIMIT 1)
         RETURNING ",
        run_columns!()
    );
    Ok(conn
        .prepare_cached(sql)?
        .query_row(params![runner, worker, lease_expires_at, now], from_row)
        .optional()?)
}

/// Moves a claimed run to `running`, if `worker` still holds this `attempt`.
///
/// # Errors
/// On a database failure.
pub fn mark_running(
    conn: &Connection,
    id: &RunId,
    worker: &WorkerId,
    attempt: i64,
    now: i64,
) -> Result<bool, DbError> {
    let changed = conn
        .prepare_cached(
            "UPDATE runs SET status = 'running', started_at = coalesce(started_at, ?4), updated_at = ?4
             WHERE id = ?1 AND claimed_by = ?2 AND attempt = ?3 AND status = 'claimed'",
        )?
        .execute(params![id, worker, attempt, now])?;
    Ok(changed == 1)
}

/// What a terminal transition writes.
#[derive(Debug, Clone)]
pub struct Finish<'a> {
    /// `completed`, `failed` or `cancelled`.
    pub status: RunStatus,
    /// Output, if any.
    pub output: Option<&'a RunOutput>,
    /// Usage, if any.
    pub usage: Option<&'a Usage>,
    /// Error, if any.
    pub error: Option<&'a RunError>,
    /// Unix ms.
    pub at: i64,
}

/// Ends a run held by `worker` at `attempt` (fenced); returns whether it changed.
///
/// # Errors
/// On a database failure.
pub fn finish_held_run(
    conn: &Connection,
    id: &RunId,
    worker: &WorkerId,
    attempt: i64,
    finish: &Finish<'_>,
) -> Result<bool, DbError> {
    let changed = conn
        .prepare_cached(
            "UPDATE runs SET status = ?4, output = ?5, usage = ?6, error = ?7, finished_at = ?8, updated_at = ?8,
                             lease_expires_at = NULL
             WHERE id = ?1 AND claimed_by = ?2 AND attempt = ?3 AND status IN ('claimed', 'running')",
        )?
        .execute(params![
            id,
            worker,
            attempt,
            finish.status.as_str(),
            finish.output.map(JsonText),
            finish.usage.map(JsonText),
            finish.error.map(JsonText),
            finish.at
        ])?;
    Ok(changed == 1)
}

/// Cancels a run that is still queued, with `error`; returns whether it was.
///
/// # Errors
/// On a database failure.
pub fn cancel_queued_run(conn: &Connection, id: &RunId, error: &RunError, now: i64) -> Result<bool, DbError> {
    let changed = conn
        .prepare_cached(
            "UPDATE runs SET status = 'cancelled', cancel_requested = 1, finished_at = ?2, updated_at = ?2,
                             error = ?3
             WHERE id = ?1 AND status = 'queued'",
        )?
        .execute(params![id, now, JsonText(error)])?;
    Ok(changed == 1)
}

/// Records that a cancel was asked for a claimed or running run.
///
/// # Errors
/// On a database failure.
pub fn request_cancel(conn: &Connection, id: &RunId, now: i64) -> Result<bool, DbError> {
    let changed = conn
        .prepare_cached(
            "UPDATE runs SET cancel_requested = 1, updated_at = ?2
             WHERE id = ?1 AND status IN ('claimed', 'running')",
        )?
        .execute(params![id, now])?;
    Ok(changed == 1)
}

/// Fails every run `worker` holds whose attempt is already `max_attempts`; returns them with
/// their session.
///
/// # Errors
/// On a database failure.
pub fn fail_exhausted_runs(
    conn: &Connection,
    worker: &WorkerId,
    max_attempts: i64,
    now: i64,
) -> Result<Vec<(RunId, SessionId, i64)>, DbError> {
    let mut stmt = conn.prepare_cached(
        "UPDATE runs SET status = 'failed', lease_expires_at = NULL, finished_at = ?3, updated_at = ?3,
                         error = json_object('message', 'gave up after ' || attempt ||
                                             ' attempts: the worker holding the run stopped each time',
                                             'code', 'max_attempts_exceeded')
         WHERE claimed_by = ?1 AND status IN ('claimed', 'running') AND attempt >= ?2
         RETURNING id, session_id, attempt",
    )?;
    let rows =
        stmt.query_map(params![worker, max_attempts, now], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// A run a worker holds: who, and at which attempt.
#[derive(Debug, Clone)]
pub struct Held {
    /// The run.
    pub id: RunId,
    /// Its session.
    pub session: SessionId,
    /// The worker holding it.
    pub worker: WorkerId,
    /// The attempt it holds.
    pub attempt: i64,
}

/// The runs whose holder is lost: their lease expired before `now`, or their worker's last
/// heartbeat is older than `stale_before`.
///
/// # Errors
/// On a database failure.
pub fn lost_runs(conn: &Connection, now: i64, stale_before: i64) -> Result<Vec<Held>, DbError> {
    let mut stmt = conn.prepare_cached(
        "SELECT r.id, r.session_id, r.claimed_by, r.attempt FROM runs r
         LEFT JOIN workers w ON w.id = r.claimed_by
         WHERE r.status IN ('claimed', 'running')
           AND (r.lease_expires_at < ?1 OR w.last_heartbeat_at < ?2)",
    )?;
    let rows = stmt.query_map(params![now, stale_before], |r| {
        Ok(Held { id: r.get(0)?, session: r.get(1)?, worker: r.get(2)?, attempt: r.get(3)? })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Puts one held run back in the queue (attempt + 1, same runner), if `held` still holds it.
///
/// # Errors
/// On a database failure.
pub fn requeue_held_run(conn: &Connection, held: &Held, now: i64) -> Result<bool, DbError> {
    let changed = conn
        .prepare_cached(
            "UPDATE runs SET status = 'queued', claimed_by = NULL, lease_expires_at = NULL,
                             attempt = attempt + 1, updated_at = ?4
             WHERE id = ?1 AND claimed_by = ?2 AND attempt = ?3 AND status IN ('claimed', 'running')",
        )?
        .execute(params![held.id, held.worker, held.attempt, now])?;
    Ok(changed == 1)
}

/// Fails one held run that has used its attempts, if `held` still holds it.
///
/// # Errors
/// On a database failure.
pub fn fail_held_run(conn: &Connection, held: &Held, error: &RunError, now: i64) -> Result<bool, DbError> {
    let changed = conn
        .prepare_cached(
            "UPDATE runs SET status = 'failed', lease_expires_at = NULL, finished_at = ?4, updated_at = ?4,
                             error = ?5
             WHERE id = ?1 AND claimed_by = ?2 AND attempt = ?3 AND status IN ('claimed', 'running')",
        )?
        .execute(params![held.id, held.worker, held.attempt, now, JsonText(error)])?;
    Ok(changed == 1)
}

/// Whether `worker` still holds `run` at `attempt` (claimed or running): what every write of a
/// held run's events is fenced on.
///
/// # Errors
/// On a database failure.
pub fn holds(conn: &Connection, run: &RunId, worker: &WorkerId, attempt: i64) -> Result<bool, DbError> {
    Ok(conn
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM runs WHERE id = ?1 AND claimed_by = ?2 AND attempt = ?3
                                              AND status IN ('claimed', 'running'))",
        )?
        .query_row(params![run, worker, attempt], |r| r.get(0))?)
}

/// The runs `worker` holds whose cancel was asked for.
///
/// # Errors
/// On a database failure.
pub fn cancels_for(conn: &Connection, worker: &WorkerId) -> Result<Vec<RunId>, DbError> {
    let mut stmt = conn.prepare_cached(
        "SELECT id FROM runs WHERE claimed_by = ?1 AND status IN ('claimed', 'running') AND cancel_requested = 1",
    )?;
    let rows = stmt.query_map([worker], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Puts back in the queue every run `worker` holds (attempt + 1, same runner); returns them.
///
/// # Errors
/// On a database failure.
pub fn requeue_worker_runs(
    conn: &Connection,
    worker: &WorkerId,
    now: i64,
) -> Result<Vec<(RunId, i64)>, DbError> {
    let mut stmt = conn.prepare_cached(
        "UPDATE runs SET status = 'queued', claimed_by = NULL, lease_expires_at = NULL, attempt = attempt + 1,
                         updated_at = ?2
         WHERE claimed_by = ?1 AND status IN ('claimed', 'running')
         RETURNING id, attempt",
    )?;
    let rows = stmt.query_map(params![worker, now], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Runs of a session, oldest first.
///
/// # Errors
/// On a database failure.
pub fn list_runs_by_session(conn: &Connection, session: &SessionId) -> Result<Vec<RunRow>, DbError> {
    let sql = concat!("SELECT ", run_columns!(), " FROM runs WHERE session_id = ?1 ORDER BY rowid");
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt.query_map([session], from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The newest `limit` runs of a session, oldest first.
///
/// # Errors
/// On a database failure.
pub fn list_recent_runs_by_session(
    conn: &Connection,
    session: &SessionId,
    limit: i64,
) -> Result<Vec<RunRow>, DbError> {
    let sql =
        concat!("SELECT ", run_columns!(), " FROM runs WHERE session_id = ?1 ORDER BY rowid DESC LIMIT +?2");
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt.query_map(params![session, limit], from_row)?;
    let mut runs: Vec<RunRow> = rows.collect::<Result<_, _>>()?;
    runs.reverse();
    Ok(runs)
}

/// Queued runs per runner: `(runner, count, oldest created_at)`.
///
/// # Errors
/// On a database failure.
pub fn queue_depths(conn: &Connection) -> Result<Vec<(String, i64, i64)>, DbError> {
    let mut stmt = conn.prepare_cached(
        "SELECT runner, count(*), min(created_at) FROM runs WHERE status = 'queued' GROUP BY runner ORDER BY runner",
    )?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Extends the leases of every run `worker` holds to `until`; returns how many.
///
/// # Errors
/// On a database failure.
pub fn extend_leases(conn: &Connection, worker: &WorkerId, until: i64, now: i64) -> Result<usize, DbError> {
    Ok(conn
        .prepare_cached(
            "UPDATE runs SET lease_expires_at = ?2, updated_at = ?3
             WHERE claimed_by = ?1 AND status IN ('claimed', 'running')",
        )?
        .execute(params![worker, until, now])?)
}

/// Ends the lease of `run` held by `worker` now (when it is still claimed or running under it),
/// so the sweeper takes it on its next pass.
///
/// # Errors
/// On a database failure.
pub fn end_lease(conn: &Connection, run: &RunId, worker: &WorkerId, now: i64) -> Result<usize, DbError> {
    Ok(conn
        .prepare_cached(
            "UPDATE runs SET lease_expires_at = ?3, updated_at = ?3
             WHERE id = ?1 AND claimed_by = ?2 AND status IN ('claimed', 'running')",
        )?
        .execute(params![run, worker, now])?)
}
