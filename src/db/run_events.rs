//! SQL for `run_events`: a run's durable, replayable event log, numbered from 1.

use std::borrow::Borrow;

use rusqlite::{Connection, params};

use super::{DbError, JsonText, ROWS_PER_INSERT, RowsInsert};
use crate::domain::event::{EventData, EventType, RunEvent};
use crate::ids::RunId;

/// `?1` the run; a row's own: seq, type, data, created_at.
static INSERT: RowsInsert = RowsInsert::new(
    "INSERT OR IGNORE INTO run_events (run_id, seq, type, data, created_at)",
    "(?1, $0, $1, $2, $3)",
    1,
    4,
);

/// Appends events (owned, or borrowed from more than one place), in as few statements as
/// [`ROWS_PER_INSERT`] allows; a seq already stored is left as it is (appends are idempotent on
/// seq).
///
/// # Errors
/// On a database failure.
pub fn insert_events<E: Borrow<RunEvent>>(
    conn: &Connection,
    run: &RunId,
    events: &[E],
) -> Result<(), DbError> {
    for chunk in events.chunks(ROWS_PER_INSERT) {
        let mut stmt = conn.prepare_cached(INSERT.sql(chunk.len()))?;
        stmt.raw_bind_parameter(1, run)?;
        for (i, e) in chunk.iter().map(Borrow::borrow).enumerate() {
            stmt.raw_bind_parameter(INSERT.param(i, 0), e.seq)?;
            stmt.raw_bind_parameter(INSERT.param(i, 1), e.kind().as_str())?;
            stmt.raw_bind_parameter(INSERT.param(i, 2), JsonText(&e.data))?;
            stmt.raw_bind_parameter(INSERT.param(i, 3), e.created_at)?;
        }
        stmt.raw_execute()?;
    }
    Ok(())
}

/// The events after `after_seq`, at most `limit`, in order.
///
/// # Errors
/// On a database failure or a stored row that does not parse.
pub fn list_events_after(
    conn: &Connection,
    run: &RunId,
    after_seq: i64,
    limit: u32,
) -> Result<Vec<RunEvent>, DbError> {
    let mut stmt = conn.prepare_cached(
        "SELECT seq, type, data, created_at FROM run_events WHERE run_id = ?1 AND seq > ?2 ORDER BY seq LIMIT +?3",
    )?;
    let rows = stmt.query_map(params![run, after_seq, limit], |row| {
        Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?, row.get::<_, String>(2)?, row.get::<_, i64>(3)?))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (seq, kind, data, created_at) = row?;
        let kind: EventType = kind.parse().map_err(|e| DbError::Task(format!("stored event: {e}")))?;
        out.push(RunEvent { seq, data: EventData::from_stored(kind, &data)?, created_at });
    }
    Ok(out)
}

/// The highest seq stored for the run (0 when none).
///
/// # Errors
/// On a database failure.
pub fn last_seq(conn: &Connection, run: &RunId) -> Result<i64, DbError> {
    Ok(conn
        .prepare_cached("SELECT coalesce(max(seq), 0) FROM run_events WHERE run_id = ?1")?
        .query_row([run], |r| r.get(0))?)
}

/// A read of a run's log: events after an offset, and where the log ends now.
#[derive(Debug, Clone)]
pub struct Slice {
    /// The events read.
    pub events: Vec<RunEvent>,
    /// The seq of the last stored event (0 when none).
    pub tail: i64,
    /// Whether the last stored event is terminal (the log is closed).
    pub closed: bool,
}

/// Reads up to `limit` events after `after_seq`, with the log's tail, consistently.
///
/// # Errors
/// On a database failure.
pub fn read_slice(conn: &Connection, run: &RunId, after_seq: i64, limit: u32) -> Result<Slice, DbError> {
    let tx = conn.unchecked_transaction()?;
    let events = list_events_after(&tx, run, after_seq, limit)?;
    let (tail, kind): (i64, Option<String>) = tx
        .prepare_cached("SELECT seq, type FROM run_events WHERE run_id = ?1 ORDER BY seq DESC LIMIT 1")?
        .query_row([run], |r| Ok((r.get(0)?, r.get(1)?)))
        .or_else(
            |e| if matches!(e, rusqlite::Error::QueryReturnedNoRows) { Ok((0, None)) } else { Err(e) },
        )?;
    tx.finish()?;
    let closed = kind.and_then(|k| k.parse::<EventType>().ok()).is_some_and(EventType::is_terminal);
    Ok(Slice { events, tail, closed })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_go_in_many_rows_a_statement_and_a_seq_stored_stays_as_it_is() {
        let conn = crate::db::bare_schema();
        let run = RunId::new();
        let event = |seq: i64, text: &str| RunEvent {
            seq,
            data: EventData::text(format!("{text} {seq}")),
            created_at: 1_000 + seq,
        };
        // 19 events: statements of 8, 8 and 3 rows.
        let first: Vec<RunEvent> = (1..=19).map(|s| event(s, "first")).collect();
        insert_events(&conn, &run, &first).unwrap();
        // Overlapping appends: seqs 15..=19 already stored keep their first data.
        let again: Vec<RunEvent> = (15..=22).map(|s| event(s, "again")).collect();
        insert_events(&conn, &run, &again).unwrap();
        let stored = list_events_after(&conn, &run, 0, 100).unwrap();
        assert_eq!(stored.len(), 22);
        for (i, e) in stored.iter().enumerate() {
            let seq = i64::try_from(i).unwrap() + 1;
            let text = if seq <= 19 { "first" } else { "again" };
            assert_eq!(e, &event(seq, text), "event {seq}");
        }
        assert_eq!(last_seq(&conn, &run).unwrap(), 22);
        insert_events::<RunEvent>(&conn, &run, &[]).unwrap();
        assert_eq!(last_seq(&conn, &run).unwrap(), 22, "nothing to append is no statement");
    }
}
