//! SQL for `messages`: a session's conversation, appended when a turn completes.

use rusqlite::Connection;

use super::{DbError, ROWS_PER_INSERT, RowsInsert};
use crate::domain::message::{Message, Role};
use crate::ids::{RunId, SessionId};

/// `?1` the session, `?2` the run, `?3` the time; a row's own: seq, role, content, tool calls,
/// tool call id.
static INSERT: RowsInsert = RowsInsert::new(
    "INSERT INTO messages (session_id, seq, role, content, tool_calls, tool_call_id, run_id, created_at)",
    "(?1, $0, $1, $2, $3, $4, ?2, ?3)",
    3,
    5,
);

/// Appends messages to a session after its last one (`new_session`: it has none yet, so the
/// first is seq 1 without asking).
///
/// # Errors
/// On a database failure.
pub fn append_messages(
    conn: &Connection,
    session: &SessionId,
    run: &RunId,
    messages: &[Message],
    at: i64,
    new_session: bool,
) -> Result<(), DbError> {
    let mut next: i64 = if new_session {
        1
    } else {
        conn.prepare_cached("SELECT coalesce(max(seq), 0) + 1 FROM messages WHERE session_id = ?1")?
            .query_row([session], |r| r.get(0))?
    };
    for chunk in messages.chunks(ROWS_PER_INSERT) {
        let mut insert = conn.prepare_cached(INSERT.sql(chunk.len()))?;
        insert.raw_bind_parameter(1, session)?;
        insert.raw_bind_parameter(2, run)?;
        insert.raw_bind_parameter(3, at)?;
        for (i, m) in chunk.iter().enumerate() {
            let tool_calls =
                if m.tool_calls.is_empty() { None } else { Some(serde_json::to_string(&m.tool_calls)?) };
            insert.raw_bind_parameter(INSERT.param(i, 0), next)?;
            insert.raw_bind_parameter(INSERT.param(i, 1), m.role.as_str())?;
            insert.raw_bind_parameter(
                INSERT.param(i, 2),
                m.content.as_ref().map(serde_json::to_string).transpose()?,
            )?;
            insert.raw_bind_parameter(INSERT.param(i, 3), tool_calls)?;
            insert.raw_bind_parameter(INSERT.param(i, 4), &m.tool_call_id)?;
            next += 1;
        }
        insert.raw_execute()?;
    }
    Ok(())
}

/// The session's conversation in order.
///
/// # Errors
/// On a database failure or a stored row that does not parse.
pub fn list_messages(conn: &Connection, session: &SessionId) -> Result<Vec<Message>, DbError> {
    let mut stmt = conn.prepare_cached(
        "SELECT role, content, tool_calls, tool_call_id FROM messages WHERE session_id = ?1 ORDER BY seq",
    )?;
    let rows = stmt.query_map([session], |row| {
        Ok((
            row.get::<_, String>(0)?,
            row.get::<_, Option<String>>(1)?,
            row.get::<_, Option<String>>(2)?,
            row.get::<_, Option<String>>(3)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (role, content, tool_calls, tool_call_id) = row?;
        out.push(Message {
            role: Role::parse(&role).unwrap_or(Role::User),
            content: content.map(|c| serde_json::from_str::<String>(&c)).transpose()?,
            tool_calls: tool_calls.map(|t| serde_json::from_str(&t)).transpose()?.unwrap_or_default(),
            tool_call_id,
        });
    }
    Ok(out)
}

/// A page of a session's conversation: at most `limit` messages before seq `before` (all the
/// newest when `None`), oldest first, each with its seq.
///
/// # Errors
/// On a database failure, or a stored JSON column that does not parse.
pub fn list_messages_page(
    conn: &Connection,
    session: &SessionId,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<(i64, Message)>, DbError> {
    let mut stmt = conn.prepare_cached(
        "SELECT seq, role, content, tool_calls, tool_call_id FROM messages
         WHERE session_id = ?1 AND seq < ?2 ORDER BY seq DESC LIMIT +?3",
    )?;
    let rows = stmt.query_map(rusqlite::params![session, before.unwrap_or(i64::MAX), limit], |row| {
        Ok((
            row.get::<_, i64>(0)?,
            row.get::<_, String>(1)?,
            row.get::<_, Option<String>>(2)?,
            row.get::<_, Option<String>>(3)?,
            row.get::<_, Option<String>>(4)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (seq, role, content, tool_calls, tool_call_id) = row?;
        out.push((
            seq,
            Message {
                role: Role::parse(&role).unwrap_or(Role::User),
                content: content.map(|c| serde_json::from_str::<String>(&c)).transpose()?,
                tool_calls: tool_calls.map(|t| serde_json::from_str(&t)).transpose()?.unwrap_or_default(),
                tool_call_id,
            },
        ));
    }
    out.reverse();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_append_in_order_across_statements_and_turns() {
        let conn = crate::db::bare_schema();
        let (session, run) = (SessionId::new(), RunId::new());
        let said = |n: usize| {
            Message::text(if n.is_multiple_of(2) { Role::User } else { Role::Assistant }, format!("m{n}"))
        };
        // 11 messages (statements of 8 and 3 rows) on a new session, then 2 more.
        let first: Vec<Message> = (0..11).map(said).collect();
        append_messages(&conn, &session, &run, &first, 5, true).unwrap();
        append_messages(&conn, &session, &run, &[said(11), said(12)], 6, false).unwrap();
        let stored = list_messages(&conn, &session).unwrap();
        assert_eq!(stored, (0..13).map(said).collect::<Vec<_>>());
        let seqs: Vec<i64> = conn
            .prepare("SELECT seq FROM messages WHERE session_id = ?1 ORDER BY seq")
            .unwrap()
            .query_map([&session], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(seqs, (1..=13).collect::<Vec<i64>>());
    }
}
