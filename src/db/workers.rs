//! SQL for `workers`: the registry of embedded and external workers.

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use super::DbError;
use crate::ids::WorkerId;

/// A worker as it registers.
#[derive(Debug, Clone)]
pub struct NewWorker {
    /// Unique name; re-registering under it replaces the old entry.
    pub name: String,
    /// The runner pool it serves.
    pub runtime: String,
    /// Its version.
    pub version: String,
    /// Host it runs on.
    pub hostname: String,
    /// Runs it executes at once.
    pub capacity: i64,
    /// Runs inside `hearth serve`.
    pub embedded: bool,
}

/// Registers a worker under its name, keeping the id of an earlier registration of that name.
///
/// # Errors
/// On a database failure.
pub fn upsert_worker(conn: &Connection, w: &NewWorker, now: i64) -> Result<WorkerId, DbError> {
    let existing: Option<WorkerId> = conn
        .prepare_cached("SELECT id FROM workers WHERE name = ?1")?
        .query_row([&w.name], |r| r.get(0))
        .optional()?;
    let id = existing.unwrap_or_default();
    conn.prepare_cached(
        "INSERT INTO workers (id, name, runtime, version, hostname, capacity, status, embedded,
                              registered_at, last_heartbeat_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'active', ?7, ?8, ?8)
         ON CONFLICT (id) DO UPDATE SET runtime = excluded.runtime, version = excluded.version,
             hostname = excluded.hostname, capacity = excluded.capacity, status = 'active',
             embedded = excluded.embedded, registered_at = excluded.registered_at,
             last_heartbeat_at = excluded.last_heartbeat_at",
    )?
    .execute(params![id, w.name, w.runtime, w.version, w.hostname, w.capacity, w.embedded, now])?;
    Ok(id)
}

/// Refreshes a worker's heartbeat.
///
/// # Errors
/// On a database failure.
pub fn touch_worker(conn: &Connection, id: &WorkerId, now: i64) -> Result<(), DbError> {
    conn.prepare_cached("UPDATE workers SET last_heartbeat_at = ?2 WHERE id = ?1")?
        .execute(params![id, now])?;
    Ok(())
}

/// A registered worker as `hearth workers list` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct WorkerListing {
    /// `wrk_…`
    pub id: WorkerId,
    /// Unique name.
    pub name: String,
    /// The runner pool it serves.
    pub runtime: String,
    /// Its version.
    pub version: String,
    /// Host it runs on.
    pub hostname: String,
    /// Runs it executes at once.
    pub capacity: i64,
    /// `active` or `draining`.
    pub status: String,
    /// Runs inside `hearth serve`.
    pub embedded: bool,
    /// Unix ms.
    pub registered_at: i64,
    /// Unix ms.
    pub last_heartbeat_at: i64,
    /// Runs it holds now (claimed or running by it).
    pub in_flight: i64,
}

/// Every registered worker, by runtime then name, with how many runs each holds: one statement,
/// the count read from the index of held runs.
///
/// # Errors
/// On a database failure.
pub fn list_workers(conn: &Connection) -> Result<Vec<WorkerListing>, DbError> {
    let mut stmt = conn.prepare_cached(
        "SELECT w.id, w.name, w.runtime, w.version, w.hostname, w.capacity, w.status, w.embedded,
                w.registered_at, w.last_heartbeat_at,
                (SELECT count(*) FROM runs r
                  WHERE r.claimed_by = w.id AND r.status IN ('claimed', 'running'))
         FROM workers w ORDER BY w.runtime, w.name",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(WorkerListing {
            id: r.get(0)?,
            name: r.get(1)?,
            runtime: r.get(2)?,
            version: r.get(3)?,
            hostname: r.get(4)?,
            capacity: r.get(5)?,
            status: r.get(6)?,
            embedded: r.get(7)?,
            registered_at: r.get(8)?,
            last_heartbeat_at: r.get(9)?,
            in_flight: r.get(10)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// How many active workers of `runtime` heartbeated since `since` (Unix ms).
///
/// # Errors
/// On a database failure.
pub fn count_healthy_workers(conn: &Connection, runtime: &str, since: i64) -> Result<i64, DbError> {
    Ok(conn
        .prepare_cached(
            "SELECT count(*) FROM workers WHERE runtime = ?1 AND status = 'active' AND last_heartbeat_at >= ?2",
        )?
        .query_row(params![runtime, since], |r| r.get(0))?)
}

/// An active worker with a recent heartbeat: what the guard of a runner-flag change weighs.
#[derive(Debug, Clone)]
pub struct HealthyWorker {
    /// Unique name.
    pub name: String,
    /// Its version, as it registered it (compared as a version by the caller, not as text).
    pub version: String,
}

/// The active workers of `runtime` that heartbeated since `since` (Unix ms), by name.
///
/// # Errors
/// On a database failure.
pub fn list_healthy_workers(
    conn: &Connection,
    runtime: &str,
    since: i64,
) -> Result<Vec<HealthyWorker>, DbError> {
    let mut stmt = conn.prepare_cached(
        "SELECT name, version FROM workers
         WHERE runtime = ?1 AND status = 'active' AND last_heartbeat_at >= ?2 ORDER BY name",
    )?;
    let rows = stmt
        .query_map(params![runtime, since], |r| Ok(HealthyWorker { name: r.get(0)?, version: r.get(1)? }))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// What the worker protocol needs of a registered worker.
#[derive(Debug, Clone)]
pub struct WorkerState {
    /// The runner pool it serves.
    pub runtime: String,
    /// Whether it drains (finishes what it holds, claims nothing new).
    pub draining: bool,
}

/// The runtime and status of worker `id`, if registered.
///
/// # Errors
/// On a database failure.
pub fn find_worker_state(conn: &Connection, id: &WorkerId) -> Result<Option<WorkerState>, DbError> {
    Ok(conn
        .prepare_cached("SELECT runtime, status FROM workers WHERE id = ?1")?
        .query_row([id], |r| {
            Ok(WorkerState { runtime: r.get(0)?, draining: r.get::<_, String>(1)? == "draining" })
        })
        .optional()?)
}

/// Marks worker `id` draining.
///
/// # Errors
/// On a database failure.
pub fn mark_draining(conn: &Connection, id: &WorkerId) -> Result<(), DbError> {
    conn.prepare_cached("UPDATE workers SET status = 'draining' WHERE id = ?1")?.execute([id])?;
    Ok(())
}

/// Whether worker `id` runs inside `hearth serve`; `None` when no worker has this id.
///
/// # Errors
/// On a database failure.
pub fn find_worker_embedded(conn: &Connection, id: &WorkerId) -> Result<Option<bool>, DbError> {
    Ok(conn
        .prepare_cached("SELECT embedded FROM workers WHERE id = ?1")?
        .query_row([id], |r| r.get(0))
        .optional()?)
}
