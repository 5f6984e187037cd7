//! Sessions for the admin pages: a filtered listing paged with a keyset cursor (the last id
//! shown; ids sort by creation time, so a time filter is an id bound too), and one session with
//! its resolved profile, runs, messages and each run's events.

use std::sync::Arc;

use super::AdminError;
use crate::db::run_events;
use crate::db::runs::{self, RunRow};
use crate::db::session_search::{self, SearchResult, SessionFilter, SessionListing};
use crate::db::sessions::{self, SessionRow};
use crate::db::{Db, messages, organizations};
use crate::domain::event::RunEvent;
use crate::domain::message::Message;
use crate::domain::session::SessionStatus;
use crate::ids::SessionId;

/// The most entries of the leading index one page reads when other filters are checked on them.
pub const SEARCH_BUDGET: u32 = 10_000;

/// The most events of one run the session page shows.
pub const EVENTS_PER_RUN: u32 = 500;

/// A request for a page of sessions; every field is optional.
#[derive(Debug, Clone, Default)]
pub struct SessionQuery {
    /// Organization slug.
    pub org: Option<String>,
    /// User id (JWT `sub`).
    pub user: Option<String>,
    /// `idle` or `running`.
    pub status: Option<String>,
    /// Runner name.
    pub runner: Option<String>,
    /// Created at or after (Unix ms).
    pub since: Option<i64>,
    /// Created before (Unix ms).
    pub until: Option<i64>,
    /// The last id of the previous page.
    pub cursor: Option<String>,
    /// Page size (1–200).
    pub limit: u32,
}

/// A page of sessions, newest first.
#[derive(Debug, Clone)]
pub struct SessionPage {
    /// The sessions.
    pub sessions: Vec<SessionListing>,
    /// The cursor of the next page, when there is one.
    pub next_cursor: Option<String>,
    /// The search stopped at [`SEARCH_BUDGET`] entries before filling the page: the next
    /// cursor goes on searching older sessions.
    pub partial: bool,
}

fn invalid(param: &'static str, message: impl Into<String>) -> AdminError {
    AdminError::Invalid { param, message: message.into() }
}

fn short(text: Option<String>, param: &'static str, max: usize) -> Result<Option<String>, AdminError> {
    match text.map(|t| t.trim().to_owned()).filter(|t| !t.is_empty()) {
        Some(t) if t.chars().count() > max => {
            Err(invalid(param, format!("{param} is at most {max} characters")))
        }
        other => Ok(other),
    }
}

/// A page of sessions matching `query`.
pub(super) async fn search(db: &Db, query: SessionQuery) -> Result<SessionPage, AdminError> {
    let limit = query.limit.clamp(1, 200);
    let status = short(query.status, "status", 16)?;
    if let Some(s) = &status
        && SessionStatus::parse(s).is_none()
    {
        return Err(invalid("status", "status is `idle` or `running`"));
    }
    let cursor = match short(query.cursor, "cursor", 64)? {
        Some(c) => Some(c.parse::<SessionId>().map_err(|e| invalid("cursor", e.to_string()))?.to_string()),
        None => None,
    };
    let until = query.until.map(SessionId::floor_at);
    let before = match (cursor, until) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let mut filter = SessionFilter {
        org: None,
        user: short(query.user, "user", 256)?,
        status,
        runner: short(query.runner, "runner", 32)?,
        before,
        since: query.since.map(SessionId::floor_at),
    };
    let org = short(query.org, "org", 63)?;
    let found = db
        .read(move |conn| {
            if let Some(slug) = org {
                match organizations::find_organization_by_slug(conn, &slug)? {
                    Some(o) => filter.org = Some(o.id),
                    None => return Ok(Err(invalid("org", format!("no organization with slug `{slug}`")))),
                }
            }
            Ok(Ok(session_search::search_sessions(conn, &filter, limit + 1, SEARCH_BUDGET)?))
        })
        .await??;
    let SearchResult { mut sessions, searched_to } = found;
    let (next_cursor, partial) = if sessions.len() > limit as usize {
        sessions.truncate(limit as usize);
        (sessions.last().map(|s| s.id.to_string()), false)
    } else {
        (searched_to.clone(), searched_to.is_some())
    };
    Ok(SessionPage { sessions, next_cursor, partial })
}

/// A run with its events.
#[derive(Debug, Clone)]
pub struct TimedRun {
    /// The run row.
    pub run: RunRow,
    /// Its first [`EVENTS_PER_RUN`] events.
    pub events: Vec<RunEvent>,
    /// More events exist than are shown.
    pub truncated: bool,
}

/// One session as its admin page shows it.
#[derive(Debug, Clone)]
pub struct SessionDetail {
    /// The session row (with its resolved profile).
    pub session: SessionRow,
    /// Its organization's slug.
    pub org_slug: Option<String>,
    /// Its runs, oldest first, each with its events.
    pub runs: Vec<TimedRun>,
    /// Its conversation.
    pub messages: Vec<Message>,
}

impl SessionDetail {
    /// The resolved profile as indented JSON.
    #[must_use]
    pub fn profile_json(&self) -> String {
        serde_json::to_string_pretty(Arc::as_ref(&self.session.resolved_profile)).unwrap_or_default()
    }
}

/// The session `id`.
pub(super) async fn detail(db: &Db, id: &str) -> Result<SessionDetail, AdminError> {
    let unknown =
        || AdminError::NotFound(format!("no session with id `{}`", id.chars().take(80).collect::<String>()));
    let session_id: SessionId = id.parse().map_err(|_| unknown())?;
    db.read(move |conn| {
        let Some(session) = sessions::find_session(conn, &session_id)? else { return Ok(None) };
        let org_slug = organizations::find_organization(conn, &session.organization_id)?.map(|o| o.slug);
        let mut timed = Vec::new();
        for run in runs::list_runs_by_session(conn, &session_id)? {
            let mut events = run_events::list_events_after(conn, &run.id, 0, EVENTS_PER_RUN + 1)?;
            let truncated = events.len() > EVENTS_PER_RUN as usize;
            events.truncate(EVENTS_PER_RUN as usize);
            timed.push(TimedRun { run, events, truncated });
        }
        let messages = messages::list_messages(conn, &session_id)?;
        Ok(Some(SessionDetail { session, org_slug, runs: timed, messages }))
    })
    .await?
    .ok_or_else(unknown)
}
