//! The runs and sessions a caller may see: one run (waiting for its end), cancelling it, its
//! event log, and sessions with their runs and messages. A run or session that is not the
//! caller's is reported as absent (ids do not leak).

use std::time::Duration;

use tokio::time::Instant;

use super::{TurnError, Turns};
use crate::auth::Principal;
use crate::db::sessions::SessionRow;
use crate::db::{messages, run_events, runs, sessions};
use crate::domain::message::Message;
use crate::ids::{RunId, SessionId};
use crate::queue::RunRow;
use crate::queue::follow::Follower;

/// How long cancelling waits for the run to stop before answering.
const CANCEL_WAIT: Duration = Duration::from_secs(5);

/// A session with its runs and messages.
#[derive(Debug, Clone)]
pub struct SessionView {
    /// The session.
    pub session: SessionRow,
    /// Its runs, oldest first.
    pub runs: Vec<RunRow>,
    /// Its conversation, or the page of it asked for: oldest first, each with its seq.
    pub messages: Vec<(i64, Message)>,
    /// Whether older messages than this page's exist.
    pub more_messages: bool,
}

/// The most messages one session read returns.
pub const MAX_MESSAGES_PAGE: i64 = 1000;
/// The most recent runs a session read returns.
pub const RECENT_RUNS: i64 = 100;

/// Where a reader of a run's event log starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offset {
    /// After this seq (0: from the start).
    After(i64),
    /// After the last event stored now.
    Now,
}

impl Turns {
    /// The run `id`, if the caller may see it.
    ///
    /// # Errors
    /// [`TurnError::NoRun`] when absent or not the caller's, or a storage failure.
    pub async fn find_run(&self, principal: &Principal, id: &str) -> Result<RunRow, TurnError> {
        let not_found = || TurnError::NoRun(id.chars().take(80).collect());
        let run_id: RunId = id.parse().map_err(|_| not_found())?;
        let run = self.db.read(move |conn| runs::find_run(conn, &run_id)).await?.ok_or_else(not_found)?;
        if principal.may_see(&run.organization_id, run.user_id.as_deref()) {
            Ok(run)
        } else {
            Err(not_found())
        }
    }

    /// The run `id`, once it has ended or `wait` has passed. Not cut short by shutdown: a wait
    /// is bounded, and graceful shutdown lets in-flight requests finish.
    ///
    /// # Errors
    /// As [`Turns::find_run`].
    pub async fn wait_run(
        &self,
        principal: &Principal,
        id: &str,
        wait: Duration,
    ) -> Result<RunRow, TurnError> {
        let run = self.find_run(principal, id).await?;
        self.wait_for_end(run, wait).await
    }

    async fn wait_for_end(&self, run: RunRow, wait: Duration) -> Result<RunRow, TurnError> {
        if run.status.is_terminal() || wait.is_zero() {
            return Ok(run);
        }
        let deadline = Instant::now() + wait;
        let mut follower = Follower::at_tail(self.db.clone(), self.queue.hub(), run.id.clone()).await?;
        follower.wait_closed(deadline).await?;
        let id = run.id.clone();
        Ok(self.db.read(move |conn| runs::find_run(conn, &id)).await?.unwrap_or(run))
    }

    /// Stops the run `id` where it is (upstream call and tools included) and answers it as it
    /// then stands, after waiting a few seconds for it to stop.
    ///
    /// # Errors
    /// As [`Turns::find_run`].
    pub async fn cancel_run(&self, principal: &Principal, id: &str) -> Result<RunRow, TurnError> {
        let run = self.find_run(principal, id).await?;
        if !run.status.is_terminal() {
            self.queue.cancel(&run).await?;
        }
        self.wait_for_end(run, CANCEL_WAIT).await
    }

    /// A follower of `run`'s event log from `from`.
    ///
    /// # Errors
    /// On a storage failure.
    pub async fn follow(&self, run: &RunRow, from: Offset) -> Result<Follower, TurnError> {
        Ok(match from {
            Offset::After(after) => Follower::new(self.db.clone(), self.queue.hub(), run.id.clone(), after),
            Offset::Now => Follower::at_tail(self.db.clone(), self.queue.hub(), run.id.clone()).await?,
        })
    }

    /// Up to `limit` events of `run` after seq `after`, with where its log stands.
    ///
    /// # Errors
    /// On a storage failure.
    pub async fn read_events(
        &self,
        run: &RunRow,
        after: i64,
        limit: u32,
    ) -> Result<run_events::Slice, TurnError> {
        let id = run.id.clone();
        Ok(self.db.read(move |conn| run_events::read_slice(conn, &id, after, limit)).await?)
    }

    /// The caller's sessions, most recently updated first, before the cursor `before`.
    ///
    /// # Errors
    /// On a storage failure.
    pub async fn list_sessions(
        &self,
        principal: &Principal,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<SessionRow>, TurnError> {
        let (org, user) = (principal.org.clone(), principal.user.clone());
        Ok(self
            .db
            .read(move |conn| sessions::list_sessions(conn, &org, user.as_deref(), before, limit))
            .await?)
    }

    /// The session `id` with its runs and messages, if the caller may see it.
    ///
    /// # Errors
    /// [`TurnError::NoSession`] when absent or not the caller's, or a storage failure.
    pub async fn get_session(
        &self,
        principal: &Principal,
        id: &str,
        before: Option<i64>,
        limit: i64,
    ) -> Result<SessionView, TurnError> {
        let limit = limit.clamp(1, MAX_MESSAGES_PAGE);
        let not_found = || TurnError::NoSession(id.chars().take(80).collect());
        let session_id: SessionId = id.parse().map_err(|_| not_found())?;
        let found = self
            .db
            .read(move |conn| {
                let Some(session) = sessions::find_session(conn, &session_id)? else { return Ok(None) };
                let runs = runs::list_recent_runs_by_session(conn, &session_id, RECENT_RUNS)?;
                // One more than asked tells whether older ones exist.
                let mut messages = messages::list_messages_page(conn, &session_id, before, limit + 1)?;
                let more_messages = messages.len() > usize::try_from(limit).unwrap_or(usize::MAX);
                if more_messages {
                    messages.remove(0);
                }
                Ok(Some(SessionView { session, runs, messages, more_messages }))
            })
            .await?;
        found
            .filter(|v| principal.may_see(&v.session.organization_id, v.session.user_id.as_deref()))
            .ok_or_else(not_found)
    }
}
