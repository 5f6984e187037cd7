//! SQL over `agent_sessions` for the admin pages: a filtered listing, newest first, paged with a
//! keyset cursor on the id (a UUIDv7, so id order is creation order) — never `OFFSET`.
//!
//! Each filter that can lead has its own statement, reading its own index of migration 0008
//! (`INDEXED BY`, so the plan cannot drift to a sort); the other filters are checked on the rows
//! that index yields. Without a filter the primary key is read in reverse.

use rusqlite::{Connection, params};
use serde::Serialize;

use super::DbError;
use crate::ids::{OrgId, SessionId};

/// One session as the admin listing shows it.
#[derive(Debug, Clone, Serialize)]
pub struct SessionListing {
    /// `ses_…`
    pub id: SessionId,
    /// Owner organization.
    pub organization_id: OrgId,
    /// Its slug (`None` if the organization row is gone).
    pub org_slug: Option<String>,
    /// Owner user, if any.
    pub user_id: Option<String>,
    /// `idle` or `running`.
    pub status: String,
    /// Runner of the latest dispatch.
    pub runner: Option<String>,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms.
    pub updated_at: i64,
}

/// What to list: every field narrows; the id bounds page and filter by time.
#[derive(Debug, Clone, Default)]
pub struct SessionFilter {
    /// Only this organization's.
    pub org: Option<OrgId>,
    /// Only this user's.
    pub user: Option<String>,
    /// Only this status (`idle`, `running`).
    pub status: Option<String>,
    /// Only this runner's.
    pub runner: Option<String>,
    /// Only ids below this one (exclusive): the cursor, or the id of a time.
    pub before: Option<String>,
    /// Only ids at or above this one: the id of a time.
    pub since: Option<String>,
}

macro_rules! search {
    ($index:literal, $lead:literal) => {
        concat!(
            "SELECT s.id, s.organization_id, o.slug, s.user_id, s.status, s.runner, s.created_at, s.updated_at
             FROM agent_sessions s ", $index, "
             LEFT JOIN organizations o ON o.id = s.organization_id
             WHERE ", $lead, " s.id < ?5 AND s.id >= ?6
               AND (?1 IS NULL OR s.organization_id = ?1) AND (?2 IS NULL OR s.user_id = ?2)
               AND (?3 IS NULL OR s.status = ?3) AND (?4 IS NULL OR s.runner = ?4)
             ORDER BY s.id DESC LIMIT +?7"
        )
    };
}

/// Reads the primary key backwards.
pub(crate) const SEARCH_ALL: &str = search!("", "");
/// Reads `sessions_admin_by_user`.
pub(crate) const SEARCH_BY_USER: &str = search!("INDEXED BY sessions_admin_by_user", "s.user_id = ?2 AND");
/// Reads `sessions_admin_by_org`.
pub(crate) const SEARCH_BY_ORG: &str =
    search!("INDEXED BY sessions_admin_by_org", "s.organization_id = ?1 AND");
/// Reads `sessions_admin_by_runner`.
pub(crate) const SEARCH_BY_RUNNER: &str = search!("INDEXED BY sessions_admin_by_runner", "s.runner = ?4 AND");
/// Reads `sessions_admin_running` (the status is a literal, so the partial index applies).
pub(crate) const SEARCH_RUNNING: &str =
    search!("INDEXED BY sessions_admin_running", "s.status = 'running' AND");

/// Above every session id (`~` sorts after the base32 digits).
const TOP: &str = "ses_~";
/// Below every session id.
const BOTTOM: &str = "ses_";

/// The statement for `filter`: the filter likely to be the most selective leads — a user; then
/// `running` (sessions with a run in flight are few at any time, whatever the table's size);
/// then an organization, a runner — else the primary key (`idle`, most sessions, is checked on
/// the rows read).
fn statement(filter: &SessionFilter) -> &'static str {
    if filter.user.is_some() {
        SEARCH_BY_USER
    } else if filter.status.as_deref() == Some("running") {
        SEARCH_RUNNING
    } else if filter.org.is_some() {
        SEARCH_BY_ORG
    } else if filter.runner.is_some() {
        SEARCH_BY_RUNNER
    } else {
        SEARCH_ALL
    }
}

/// Up to `limit` sessions matching `filter`, newest first.
///
/// # Errors
/// On a database failure.
pub fn search_sessions(
    conn: &Connection,
    filter: &SessionFilter,
    limit: u32,
) -> Result<Vec<SessionListing>, DbError> {
    let mut stmt = conn.prepare_cached(statement(filter))?;
    let before = filter.before.as_deref().unwrap_or(TOP);
    let since = filter.since.as_deref().unwrap_or(BOTTOM);
    let rows = stmt.query_map(
        params![filter.org, filter.user, filter.status, filter.runner, before, since, limit],
        |r| {
            Ok(SessionListing {
                id: r.get(0)?,
                organization_id: r.get(1)?,
                org_slug: r.get(2)?,
                user_id: r.get(3)?,
                status: r.get(4)?,
                runner: r.get(5)?,
                created_at: r.get(6)?,
                updated_at: r.get(7)?,
            })
        },
    )?;
    Ok(rows.collect::<Result<_, _>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::sessions::{SessionRow, insert_session};
    use crate::domain::session::SessionStatus;

    fn session(org: &str, user: Option<&str>, runner: &str, status: SessionStatus) -> SessionRow {
        SessionRow {
            id: SessionId::new(),
            organization_id: org.parse().unwrap(),
            user_id: user.map(str::to_owned),
            status,
            runner: Some(runner.into()),
            resolved_profile: std::sync::Arc::new(crate::domain::profile::tests::profile(runner)),
            created_at: 1,
            updated_at: 1,
        }
    }

    /// Every filter narrows, pages come newest first from the cursor, and every statement reads
    /// its index with no temporary sort.
    #[test]
    fn filters_page_by_keyset_and_read_their_index() {
        let conn = crate::db::bare_schema();
        let mut ids = Vec::new();
        for i in 0..12 {
            let org = if i % 2 == 0 { "org_a" } else { "org_b" };
            let user = (i % 3 == 0).then_some("u1");
            let runner = if i % 4 == 0 { "go" } else { "ts" };
            let status = if i == 5 { SessionStatus::Running } else { SessionStatus::Idle };
            let row = session(org, user, runner, status);
            ids.push(row.id.to_string());
            insert_session(&conn, &row).unwrap();
        }
        ids.reverse(); // newest first
        let list = |f: &SessionFilter, limit| -> Vec<String> {
            search_sessions(&conn, f, limit).unwrap().into_iter().map(|s| s.id.to_string()).collect()
        };
        let all = SessionFilter::default();
        assert_eq!(list(&all, 100), ids);
        let first = list(&all, 5);
        let next = list(&SessionFilter { before: first.last().cloned(), ..all }, 5);
        assert_eq!([first, next].concat(), ids[..10]);
        let org = SessionFilter { org: Some("org_a".parse().unwrap()), ..Default::default() };
        assert_eq!(list(&org, 100).len(), 6);
        let user = SessionFilter { user: Some("u1".into()), org: org.org.clone(), ..Default::default() };
        assert_eq!(list(&user, 100).len(), 2, "i = 0, 6");
        let runner = SessionFilter { runner: Some("go".into()), ..Default::default() };
        assert_eq!(list(&runner, 100).len(), 3);
        let status = SessionFilter { status: Some("running".into()), ..Default::default() };
        assert_eq!(list(&status, 100), [ids[6].clone()]);
        let since = SessionFilter { since: Some(ids[2].clone()), ..Default::default() };
        assert_eq!(list(&since, 100), ids[..3]);

        let both =
            SessionFilter { status: Some("running".into()), org: org.org.clone(), ..Default::default() };
        assert_eq!(statement(&both), SEARCH_RUNNING, "`running` is few rows: it leads");
        assert!(list(&both, 100).is_empty(), "the running one (i = 5) is in org_b");
        let idle = SessionFilter { status: Some("idle".into()), org: org.org, ..Default::default() };
        assert_eq!(statement(&idle), SEARCH_BY_ORG, "`idle` is most rows: the organization leads");
        assert_eq!(list(&idle, 100).len(), 6);

        for (sql, index) in [
            (SEARCH_ALL, "sqlite_autoindex_agent_sessions_1"),
            (SEARCH_BY_USER, "sessions_admin_by_user"),
            (SEARCH_BY_ORG, "sessions_admin_by_org"),
            (SEARCH_BY_RUNNER, "sessions_admin_by_runner"),
            (SEARCH_RUNNING, "sessions_admin_running"),
        ] {
            let plan: Vec<String> = conn
                .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                .unwrap()
                .query_map(params!["org_a", "u1", "idle", "ts", TOP, BOTTOM, 50], |r| r.get::<_, String>(3))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            assert!(plan.iter().any(|step| step.contains(index)), "{sql}: {plan:?}");
            assert!(!plan.iter().any(|step| step.contains("TEMP B-TREE")), "{sql} sorts: {plan:?}");
        }
    }
}
