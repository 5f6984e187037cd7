//! Dispatch: a turn becomes a queued run (and, for a new conversation, a session) in one
//! transaction, with the runner and profile resolved inside it.

use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::OwnedSemaphorePermit;

use crate::db::sessions::SessionRow;
use crate::db::{DbError, messages, now_ms, run_events, runs, sessions, users};
use crate::domain::event::{EventType, RunEvent};
use crate::domain::run::RunStatus;
use crate::ids::{OrgId, RunId, SessionId};

use super::{Claimed, RunRow};

/// What to do when a new turn arrives for a session with a run in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnBusy {
    /// Queue it behind the current one (FIFO per session).
    #[default]
    Enqueue,
    /// Refuse with 409.
    Reject,
}

/// A run to dispatch.
pub struct NewRun {
    /// The run's id, chosen by the caller so it can follow the run before it exists.
    pub id: RunId,
    /// Owner organization.
    pub org: OrgId,
    /// Owner user, if any.
    pub user: Option<String>,
    /// Continue this session, or start a new one.
    pub session: Option<SessionId>,
    /// Double-texting policy.
    pub on_busy: OnBusy,
    /// Resolves the runner and the profile to stamp, inside the dispatch transaction.
    pub stamp: Box<dyn FnOnce(&rusqlite::Connection) -> Stamp + Send>,
    /// The turn's input, as JSON text (`runs::RunInput`).
    pub input: String,
    /// Nobody learns of the run before its first events are committed: the caller tells its
    /// client of it only then (a chat turn: streamed from its first committed event, or answered
    /// whole when it ends). With a new session and the in-process worker taking it, such a run
    /// is stored with its first write of events ([`super::Queue::dispatch`]).
    pub known_later: bool,
}

/// The runner and resolved profile stamped on a dispatched run and its session.
#[derive(Debug, Clone, Default)]
pub struct Stamp {
    /// The runner.
    pub runner: String,
    /// The resolved profile.
    pub profile: Value,
}

impl std::fmt::Debug for NewRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewRun")
            .field("org", &self.org)
            .field("session", &self.session)
            .finish_non_exhaustive()
    }
}

/// Why a dispatch was refused.
#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    /// The session does not exist or is not the caller's.
    #[error("no session `{0}`")]
    NoSession(String),
    /// The session has a run in flight and `on_busy` is `reject`.
    #[error("session `{0}` has a run in flight (on_busy: reject)")]
    Busy(String),
    /// Storage failed.
    #[error(transparent)]
    Db(#[from] DbError),
}

/// An in-process worker with a free slot, offered to the dispatch transaction: it takes the run
/// at once when the run is for its runner and nothing should go first.
pub(super) struct Taker {
    /// The runner it serves.
    pub runner: String,
    /// Its worker id.
    pub worker: String,
    /// Lease length, in ms.
    pub lease_ms: i64,
    /// The free slot it takes the run with (given back when it does not).
    pub slot: OwnedSemaphorePermit,
}

/// What the dispatch transaction stored: the run, its events, and the claim when an in-process
/// worker took it in the same transaction.
pub(super) struct Stored {
    pub run: RunRow,
    pub events: Vec<RunEvent>,
    pub claimed: Option<(Claimed, OwnedSemaphorePermit)>,
}

/// Dispatches `new` in the writer's transaction: resolves its runner and stores it (with its
/// new session, or stamping the caller's), taken by `taker` when FIFO allows.
pub(super) fn insert_dispatch(
    conn: &rusqlite::Connection,
    mut new: NewRun,
    taker: Option<Taker>,
) -> Result<Result<Stored, DispatchError>, DbError> {
    let now = now_ms();
    let resolve = std::mem::replace(&mut new.stamp, Box::new(|_| Stamp::default()));
    let Stamp { runner, profile } = resolve(conn);
    let profile = Arc::new(profile);
    if let Some(user) = &new.user {
        users::upsert_user(conn, &new.org, user, now)?;
    }
    let mut existing = false;
    let session_id = match &new.session {
        Some(id) => {
            existing = true;
            let owned = sessions::find_session(conn, id)?
                .filter(|s| s.organization_id == new.org && s.user_id == new.user);
            if owned.is_none() {
                return Ok(Err(DispatchError::NoSession(id.to_string())));
            }
            if new.on_busy == OnBusy::Reject && runs::session_busy(conn, id)? {
                return Ok(Err(DispatchError::Busy(id.to_string())));
            }
            id.clone()
        }
        None => {
            let session = new_session(&new.org, new.user.as_ref(), &runner, &profile, now);
            sessions::insert_session(conn, &session)?;
            session.id
        }
    };
    if existing {
        sessions::stamp_session(conn, &session_id, &runner, &profile, now)?;
    }
    // The in-process worker takes the run in this same transaction when it serves the runner,
    // no older run of the runner waits, and the session has nothing in flight (FIFO per session
    // and per runner hold exactly as if it had claimed from the queue).
    let taker = match taker {
        Some(t)
            if t.runner == runner
                && !(existing && runs::session_busy(conn, &session_id)?)
                && !runs::runner_has_queued(conn, &runner)? =>
        {
            Some(t)
        }
        _ => None,
    };
    let (run, events) = draft_run(new, session_id, runner, profile, taker.as_ref(), now);
    runs::insert_run(conn, &run)?;
    run_events::insert_events(conn, &run.id, &events)?;
    let claimed = match taker {
        Some(t) => {
            let history = if existing { messages::list_messages(conn, &run.session_id)? } else { Vec::new() };
            Some((Claimed { run: run.clone(), history, next_seq: 3, unstored: false }, t.slot))
        }
        None => None,
    };
    Ok(Ok(Stored { run, events, claimed }))
}

/// A run taken at dispatch and not stored yet: its rows as they would have been written at
/// dispatch, written with its first events — or with its outcome, when it ends first (see
/// [`super::Queue::dispatch`]).
#[derive(Debug, Clone)]
pub(super) struct Deferred {
    /// Its new session, `running`.
    pub session: SessionRow,
    /// The run, `running`, held by the in-process worker.
    pub run: RunRow,
    /// `run.queued` and `run.started`.
    pub events: Vec<RunEvent>,
}

/// Drafts a run for a new session that `taker` takes at once, without writing anything: the
/// same rows [`insert_dispatch`] would have stored.
pub(super) fn defer_dispatch(new: NewRun, stamp: Stamp, taker: &Taker, now: i64) -> Deferred {
    let Stamp { runner, profile } = stamp;
    let profile = Arc::new(profile);
    let session = new_session(&new.org, new.user.as_ref(), &runner, &profile, now);
    let (run, events) = draft_run(new, session.id.clone(), runner, profile, Some(taker), now);
    Deferred { session, run, events }
}

/// Stores a deferred run as dispatch would have: its new session and the run, both `running`,
/// with its dispatch events. The caller writes the run's first later events beside them.
///
/// # Errors
/// On a database failure.
pub(super) fn store_drafted(conn: &rusqlite::Connection, deferred: &Deferred) -> Result<(), DbError> {
    let Deferred { session, run, events } = deferred;
    if let Some(user) = &run.user_id {
        users::upsert_user(conn, &run.organization_id, user, run.created_at)?;
    }
    sessions::insert_session(conn, session)?;
    runs::insert_run(conn, run)?;
    run_events::insert_events(conn, &run.id, events)
}

/// Stores a deferred run whole, in its final state, with its session (settled: `idle`), its
/// dispatch events and `later` (its tail and terminal events): what dispatch and finish would
/// have written in two transactions, written in one. The caller appends the turn's messages.
///
/// # Errors
/// On a database failure.
pub(super) fn store_whole(
    conn: &rusqlite::Connection,
    deferred: Deferred,
    end: &runs::Finish<'_>,
    later: &[RunEvent],
) -> Result<RunRow, DbError> {
    let Deferred { mut session, mut run, events } = deferred;
    if let Some(user) = &run.user_id {
        users::upsert_user(conn, &run.organization_id, user, run.created_at)?;
    }
    "idle".clone_into(&mut session.status);
    session.updated_at = end.at;
    sessions::insert_session(conn, &session)?;
    run.status = end.status;
    run.output = end.output.cloned();
    run.usage = end.usage.cloned();
    run.error = end.error.cloned();
    run.finished_at = Some(end.at);
    run.lease_expires_at = None;
    runs::insert_run(conn, &run)?;
    run_events::insert_events(conn, &run.id, &events.iter().chain(later).collect::<Vec<_>>())?;
    Ok(run)
}

fn new_session(
    org: &OrgId,
    user: Option<&String>,
    runner: &str,
    profile: &Arc<Value>,
    now: i64,
) -> SessionRow {
    SessionRow {
        id: SessionId::new(),
        organization_id: org.clone(),
        user_id: user.cloned(),
        status: "running".into(),
        runner: Some(runner.to_owned()),
        resolved_profile: Arc::clone(profile),
        created_at: now,
        updated_at: now,
    }
}

/// The run row and its first events: queued, or running when `taker` takes it.
fn draft_run(
    new: NewRun,
    session_id: SessionId,
    runner: String,
    profile: Arc<Value>,
    taker: Option<&Taker>,
    now: i64,
) -> (RunRow, Vec<RunEvent>) {
    let mut run = RunRow {
        id: new.id,
        session_id,
        organization_id: new.org,
        user_id: new.user,
        status: RunStatus::Queued,
        runner,
        resolved_profile: profile,
        claimed_by: None,
        attempt: 1,
        lease_expires_at: None,
        cancel_requested: false,
        input: Arc::from(new.input),
        output: None,
        usage: None,
        error: None,
        created_at: now,
        claimed_at: None,
        started_at: None,
        finished_at: None,
    };
    let mut events = vec![RunEvent {
        seq: 1,
        kind: EventType::Queued,
        data: json!({"runner": run.runner, "session_id": run.session_id}),
        created_at: now,
    }];
    if let Some(taker) = taker {
        run.status = RunStatus::Running;
        run.claimed_by = Some(taker.worker.clone());
        run.lease_expires_at = Some(now.saturating_add(taker.lease_ms));
        run.claimed_at = Some(now);
        run.started_at = Some(now);
        events.push(super::started_event(2, &taker.worker, 1, now));
    }
    (run, events)
}
