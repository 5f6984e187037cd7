//! SQL over `agent_sessions` for the admin pages: a filtered listing, newest first, paged with a
//! keyset cursor on the id (a UUIDv7, so id order is creation order) — never `OFFSET`.
//!
//! Each filter that can lead has its own statement, reading its own index of migration 0012
//! (`INDEXED BY`, so the plan cannot drift to a sort); the other filters are checked on the rows
//! that index yields. Without a filter the primary key is read in reverse.

use rusqlite::{Connection, OptionalExtension, params};
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

/// The id `?7` entries down the leading index: where a bounded search stops.
macro_rules! bound {
    ($index:literal, $lead:literal) => {
        concat!(
            "SELECT s.id FROM agent_sessions s ",
            $index,
            "
             WHERE ",
            $lead,
            " s.id < ?5 AND s.id >= ?6 AND coalesce(?1, ?2, ?3, ?4) IS NOT NULL
             ORDER BY s.id DESC LIMIT 1 OFFSET ?7"
        )
    };
}

/// A leading index: the listing and its bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Lead {
    /// The listing statement.
    pub(crate) search: &'static str,
    /// The bound statement.
    pub(crate) bound: &'static str,
    /// Which filter it satisfies (`""`: none, the primary key).
    field: &'static str,
}

/// Reads the primary key backwards.
pub(crate) const SEARCH_ALL: Lead = Lead { search: search!("", ""), bound: bound!("", ""), field: "" };
/// Reads `sessions_admin_by_user`.
pub(crate) const SEARCH_BY_USER: Lead = Lead {
    search: search!("INDEXED BY sessions_admin_by_user", "s.user_id = ?2 AND"),
    bound: bound!("INDEXED BY sessions_admin_by_user", "s.user_id = ?2 AND"),
    field: "user",
};
/// Reads `sessions_admin_by_org`.
pub(crate) const SEARCH_BY_ORG: Lead = Lead {
    search: search!("INDEXED BY sessions_admin_by_org", "s.organization_id = ?1 AND"),
    bound: bound!("INDEXED BY sessions_admin_by_org", "s.organization_id = ?1 AND"),
    field: "org",
};
/// Reads `sessions_admin_by_runner`.
pub(crate) const SEARCH_BY_RUNNER: Lead = Lead {
    search: search!("INDEXED BY sessions_admin_by_runner", "s.runner = ?4 AND"),
    bound: bound!("INDEXED BY sessions_admin_by_runner", "s.runner = ?4 AND"),
    field: "runner",
};
/// Reads `sessions_admin_running` (the status is a literal, so the partial index applies).
pub(crate) const SEARCH_RUNNING: Lead = Lead {
    search: search!("INDEXED BY sessions_admin_running", "s.status = 'running' AND"),
    bound: bound!("INDEXED BY sessions_admin_running", "s.status = 'running' AND"),
    field: "status",
};

/// Above every session id (`~` sorts after the base32 digits).
const TOP: &str = "ses_~";
/// Below every session id.
const BOTTOM: &str = "ses_";

/// The leading index for `filter`: the filter likely to be the most selective leads — a user;
/// then `running` (sessions with a run in flight are few at any time, whatever the table's
/// size); then an organization, a runner — else the primary key (`idle`, most sessions, is
/// checked on the rows read).
pub(crate) fn lead(filter: &SessionFilter) -> Lead {
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

/// A page of a search.
#[derive(Debug, Clone, Default)]
pub struct SearchResult {
    /// The sessions found, newest first.
    pub sessions: Vec<SessionListing>,
    /// Set when the search stopped at its budget before filling the page: the id down to which
    /// it looked (exclusive cursor of the rest).
    pub searched_to: Option<String>,
}

/// Up to `limit` sessions matching `filter`, newest first, reading at most `budget` entries of
/// the leading index when other filters are checked on its rows (so a combination that matches
/// little costs a bounded read, not the whole index: `searched_to` then says where to go on).
///
/// # Errors
/// On a database failure.
pub fn search_sessions(
    conn: &Connection,
    filter: &SessionFilter,
    limit: u32,
    budget: u32,
) -> Result<SearchResult, DbError> {
    let lead = lead(filter);
    let before = filter.before.as_deref().unwrap_or(TOP);
    let mut since = filter.since.clone().unwrap_or_else(|| BOTTOM.to_owned());
    let checked = [
        ("org", filter.org.is_some()),
        ("user", filter.user.is_some()),
        ("status", filter.status.is_some()),
        ("runner", filter.runner.is_some()),
    ];
    let mut bound = None;
    if checked.iter().any(|(field, given)| *given && *field != lead.field) {
        bound = conn
            .prepare_cached(lead.bound)?
            .query_row(
                params![filter.org, filter.user, filter.status, filter.runner, before, since, budget],
                |r| r.get::<_, String>(0),
            )
            .optional()?;
        if let Some(b) = &bound
            && *b > since
        {
            since.clone_from(b);
        }
    }
    let mut stmt = conn.prepare_cached(lead.search)?;
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
    let sessions: Vec<SessionListing> = rows.collect::<Result<_, _>>()?;
    let full = sessions.len() >= limit as usize;
    Ok(SearchResult { searched_to: bound.filter(|_| !full), sessions })
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
            search_sessions(&conn, f, limit, 1000)
                .unwrap()
                .sessions
                .into_iter()
                .map(|s| s.id.to_string())
                .collect()
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
        assert_eq!(lead(&both), SEARCH_RUNNING, "`running` is few rows: it leads");
        assert!(list(&both, 100).is_empty(), "the running one (i = 5) is in org_b");
        let idle = SessionFilter { status: Some("idle".into()), org: org.org, ..Default::default() };
        assert_eq!(lead(&idle), SEARCH_BY_ORG, "`idle` is most rows: the organization leads");
        assert_eq!(list(&idle, 100).len(), 6);

        // A budget of 3 entries of org_a's index (i = 10, 8, 6, and the bound i = 4): i = 8 and
        // i = 4 are `go`; the page stops at the bound and says where to go on.
        let org_go = SessionFilter {
            org: Some("org_a".parse().unwrap()),
            runner: Some("go".into()),
            ..Default::default()
        };
        let bounded = search_sessions(&conn, &org_go, 50, 3).unwrap();
        let found: Vec<String> = bounded.sessions.iter().map(|s| s.id.to_string()).collect();
        assert_eq!(found, [ids[3].clone(), ids[7].clone()], "i = 8 and 4 are org_a and go");
        assert_eq!(bounded.searched_to.as_deref(), Some(ids[7].as_str()), "org_a's 4th newest (i = 4)");
        let rest = SessionFilter { before: bounded.searched_to, ..org_go.clone() };
        let rest = search_sessions(&conn, &rest, 50, 3).unwrap();
        assert_eq!(rest.sessions.iter().map(|s| s.id.to_string()).collect::<Vec<_>>(), [ids[11].clone()]);
        assert_eq!(rest.searched_to, None, "the index ended within the budget");
        let unbounded =
            search_sessions(&conn, &SessionFilter { org: org_go.org, ..Default::default() }, 2, 1).unwrap();
        assert_eq!(
            (unbounded.sessions.len(), unbounded.searched_to),
            (2, None),
            "a single filter is never bounded"
        );

        for (lead, index) in [
            (SEARCH_ALL, "sqlite_autoindex_agent_sessions_1"),
            (SEARCH_BY_USER, "sessions_admin_by_user"),
            (SEARCH_BY_ORG, "sessions_admin_by_org"),
            (SEARCH_BY_RUNNER, "sessions_admin_by_runner"),
            (SEARCH_RUNNING, "sessions_admin_running"),
        ] {
            for sql in [lead.search, lead.bound] {
                let plan: Vec<String> = conn
                    .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                    .unwrap()
                    .query_map(params!["org_a", "u1", "idle", "ts", TOP, BOTTOM, 50], |r| {
                        r.get::<_, String>(3)
                    })
                    .unwrap()
                    .collect::<Result<_, _>>()
                    .unwrap();
                assert!(plan.iter().any(|step| step.contains(index)), "{sql}: {plan:?}");
                assert!(!plan.iter().any(|step| step.contains("TEMP B-TREE")), "{sql} sorts: {plan:?}");
            }
        }
    }
}
