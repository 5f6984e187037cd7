//! SQL for `agent_sessions`.

use std::sync::Arc;

use rusqlite::{Connection, OptionalExtension, Row, params};
use serde::Serialize;

use super::{DbError, JsonText};
use crate::domain::profile::ResolvedProfile;
use crate::domain::session::SessionStatus;
use crate::ids::{OrgId, SessionId};

/// A session row.
#[derive(Debug, Clone, Serialize)]
pub struct SessionRow {
    /// `ses_…`
    pub id: SessionId,
    /// Owner organization.
    pub organization_id: OrgId,
    /// Owner user (JWT `sub`), if the session was made with one.
    pub user_id: Option<String>,
    /// `idle` or `running`.
    pub status: SessionStatus,
    /// Runner of the latest dispatch.
    pub runner: Option<String>,
    /// Resolved profile of the latest dispatch.
    pub resolved_profile: Arc<ResolvedProfile>,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms.
    pub updated_at: i64,
}

macro_rules! select_session {
    ($($tail:literal),*) => {
        concat!("SELECT id, organization_id, user_id, status, runner, resolved_profile, created_at, updated_at
                 FROM agent_sessions ", $($tail),*)
    };
}

// The listing is two statements, so each reads its own index: `sessions_by_user` when a user
// is given (it holds only sessions with a user), `sessions_by_org` otherwise.
const LIST_BY_USER: &str = select_session!(
    "WHERE organization_id = ?1 AND user_id = ?2 AND (?3 IS NULL OR updated_at < ?3)
     ORDER BY updated_at DESC, id DESC LIMIT +?4"
);
const LIST_BY_ORG: &str = select_session!(
    "WHERE organization_id = ?1 AND ?2 IS NULL AND (?3 IS NULL OR updated_at < ?3)
     ORDER BY updated_at DESC, id DESC LIMIT +?4"
);

fn from_row(row: &Row<'_>) -> rusqlite::Result<SessionRow> {
    let status: String = row.get(3)?;
    let bad = |idx: usize, what: String| {
        rusqlite::Error::FromSqlConversionFailure(idx, rusqlite::types::Type::Text, what.into())
    };
    let profile = super::runs::json_column(row, 5)?.ok_or_else(|| bad(5, "no resolved profile".into()))?;
    Ok(SessionRow {
        id: row.get(0)?,
        organization_id: row.get(1)?,
        user_id: row.get(2)?,
        status: SessionStatus::parse(&status)
            .ok_or_else(|| bad(3, format!("unknown session status `{status}`")))?,
        runner: row.get(4)?,
        resolved_profile: Arc::new(profile),
        created_at: row.get(6)?,
        updated_at: row.get(7)?,
    })
}

/// Inserts a session.
///
/// # Errors
/// On a database failure.
pub fn insert_session(conn: &Connection, s: &SessionRow) -> Result<(), DbError> {
    conn.prepare_cached(
        "INSERT INTO agent_sessions (id, organization_id, user_id, status, runner, resolved_profile,
                                     created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        s.id,
        s.organization_id,
        s.user_id,
        s.status.as_str(),
        s.runner,
        JsonText(&*s.resolved_profile),
        s.created_at,
        s.updated_at
    ])?;
    Ok(())
}

/// The session with this id.
///
/// # Errors
/// On a database failure.
pub fn find_session(conn: &Connection, id: &SessionId) -> Result<Option<SessionRow>, DbError> {
    Ok(conn.prepare_cached(select_session!("WHERE id = ?1"))?.query_row([id], from_row).optional()?)
}

/// Stamps a dispatch on the session: status, runner and resolved profile.
///
/// # Errors
/// On a database failure.
pub fn stamp_session(
    conn: &Connection,
    id: &SessionId,
    runner: &str,
    profile: &ResolvedProfile,
    at: i64,
) -> Result<(), DbError> {
    conn.prepare_cached(
        "UPDATE agent_sessions SET status = 'running', runner = ?2, resolved_profile = ?3, updated_at = ?4
         WHERE id = ?1",
    )?
    .execute(params![id, runner, JsonText(profile), at])?;
    Ok(())
}

/// Sets the session `idle` when none of its runs is still in flight; returns whether it did
/// (false: a run of the session is still queued or held).
///
/// # Errors
/// On a database failure.
pub fn settle_session(conn: &Connection, id: &SessionId, at: i64) -> Result<bool, DbError> {
    let changed = conn
        .prepare_cached(
            "UPDATE agent_sessions SET status = 'idle', updated_at = ?2
         WHERE id = ?1
           AND NOT EXISTS (SELECT 1 FROM runs WHERE session_id = ?1 AND status = 'queued')
           AND NOT EXISTS (SELECT 1 FROM runs WHERE session_id = ?1 AND status = 'claimed')
           AND NOT EXISTS (SELECT 1 FROM runs WHERE session_id = ?1 AND status = 'running')",
        )?
        .execute(params![id, at])?;
    Ok(changed == 1)
}

/// Sessions of an organization (and user, when given), most recently updated first, before the
/// cursor `before` (an `updated_at`, exclusive) when given.
///
/// # Errors
/// On a database failure.
pub fn list_sessions(
    conn: &Connection,
    org: &OrgId,
    user: Option<&str>,
    before: Option<i64>,
    limit: u32,
) -> Result<Vec<SessionRow>, DbError> {
    let mut stmt = conn.prepare_cached(if user.is_some() { LIST_BY_USER } else { LIST_BY_ORG })?;
    let rows = stmt.query_map(params![org, user, before, limit], from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(org: &str, user: Option<&str>, updated_at: i64) -> SessionRow {
        SessionRow {
            id: SessionId::new(),
            organization_id: org.parse().unwrap(),
            user_id: user.map(str::to_owned),
            status: SessionStatus::Idle,
            runner: Some("ts".into()),
            resolved_profile: std::sync::Arc::new(crate::domain::profile::tests::profile("ts")),
            created_at: updated_at,
            updated_at,
        }
    }

    /// Both listings come newest first, page with `before`, and each reads its own index.
    #[test]
    fn listings_come_newest_first_and_page_from_their_index() {
        let conn = crate::db::bare_schema();
        let org: OrgId = "org_a".parse().unwrap();
        for (user, at) in [(None, 10), (Some("u1"), 30), (None, 20), (Some("u1"), 40), (Some("u2"), 50)] {
            insert_session(&conn, &session("org_a", user, at)).unwrap();
        }
        insert_session(&conn, &session("org_b", Some("u1"), 60)).unwrap();
        let times = |user: Option<&str>, before: Option<i64>| -> Vec<i64> {
            list_sessions(&conn, &org, user, before, 10).unwrap().iter().map(|s| s.updated_at).collect()
        };
        assert_eq!(times(None, None), [50, 40, 30, 20, 10]);
        assert_eq!(times(None, Some(40)), [30, 20, 10]);
        assert_eq!(times(Some("u1"), None), [40, 30]);
        assert_eq!(times(Some("u1"), Some(40)), [30]);

        for (sql, index) in [(LIST_BY_ORG, "sessions_by_org"), (LIST_BY_USER, "sessions_by_user")] {
            let plan: Vec<String> = conn
                .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                .unwrap()
                .query_map(params!["org_a", "u1", 40, 10], |r| r.get::<_, String>(3))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            assert!(plan.iter().any(|step| step.contains(&format!("USING INDEX {index}"))), "{plan:?}");
        }
    }
}
