//! SQL for `messages`: a session's conversation, appended when a turn completes.

use rusqlite::{Connection, params};

use super::DbError;
use crate::domain::message::{Message, Role};
use crate::ids::{RunId, SessionId};

/// Appends messages to a session after its last one.
///
/// # Errors
/// On a database failure.
pub fn append_messages(
    conn: &Connection,
    session: &SessionId,
    run: &RunId,
    messages: &[Message],
    at: i64,
) -> Result<(), DbError> {
    let next: i64 = conn
        .prepare_cached("SELECT coalesce(max(seq), 0) + 1 FROM messages WHERE session_id = ?1")?
        .query_row([session], |r| r.get(0))?;
    let mut insert = conn.prepare_cached(
        "INSERT INTO messages (session_id, seq, role, content, tool_calls, tool_call_id, run_id, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?;
    for (offset, m) in (0i64..).zip(messages) {
        let tool_calls =
            if m.tool_calls.is_empty() { None } else { Some(serde_json::to_string(&m.tool_calls)?) };
        insert.execute(params![
            session,
            next + offset,
            m.role.as_str(),
            m.content.as_ref().map(serde_json::to_string).transpose()?,
            tool_calls,
            m.tool_call_id,
            run,
            at
        ])?;
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
