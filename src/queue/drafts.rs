//! **Stored with its first events**: a run nobody can learn of before its first events are
//! committed ([`super::NewRun::known_later`]: a chat turn on a new session, streamed from its
//! first committed event or answered whole at its end) that the in-process worker takes is not
//! written at dispatch. Its runner is resolved by a read on the writer's connection
//! (`Db::read_on_writer`: no transaction, a warm cache), the turn starts at once, and the run
//! and its session are written in the transaction of its first events — the first streamed
//! text, a tool's start, or its outcome. Its caller answers only after that commit, so a run
//! answered 200 is stored as surely as any other (SPEC §2), with one commit fewer and its
//! upstream call no longer waiting on a commit. Until then it is not in the database (a crash
//! before leaves no trace; its client sees the connection fail, never an answer).
//!
//! The drafted rows wait in [`Drafts`]; whoever takes them — the run's event sink with its first
//! write, or the run's end — stores them, exactly once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use super::dispatch::{NewRun, Stamp, Taker, draft_run, new_session};
use super::{Claimed, Dispatched, Queue, RunRow, claimed_line, dispatch_line};
use crate::db::runs::Finish;
use crate::db::sessions::SessionRow;
use crate::db::{DbError, run_events, runs, sessions, users};
use crate::domain::event::RunEvent;
use crate::domain::session::SessionStatus;
use crate::ids::RunId;

/// Runs taken at dispatch and not stored yet, by id.
#[derive(Clone, Default)]
pub struct Drafts(Arc<Mutex<HashMap<RunId, Deferred>>>);

impl Drafts {
    pub(super) fn insert(&self, deferred: Deferred) {
        let id = deferred.run.id.clone();
        self.0.lock().unwrap_or_else(PoisonError::into_inner).insert(id, deferred);
    }

    /// Whether `run` is still unstored (a failed write of it cannot be tried again: its rows
    /// went with the try).
    #[must_use]
    pub fn holds(&self, run: &RunId) -> bool {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).contains_key(run)
    }

    /// The unstored rows of `run`, taken: the caller must store them.
    pub(super) fn take(&self, run: &RunId) -> Option<Deferred> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).remove(run)
    }
}

/// A run taken at dispatch and not stored yet: its rows as they would have been written at
/// dispatch, written with its first events — or with its outcome, when it ends first.
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
/// same rows dispatch would have stored.
pub(super) fn defer_dispatch(new: NewRun, stamp: Stamp, taker: &Taker, now: i64) -> Deferred {
    let session = new_session(&new.org, new.user.as_ref(), &stamp, now);
    let (run, events) = draft_run(new, session.id.clone(), stamp, Some(taker), now);
    Deferred { session, run, events }
}

impl Queue {
    /// Hands a run drafted at dispatch to the embedded worker, unstored until its first events
    /// are written. Its dispatch events reach live readers with them, once committed.
    pub(super) fn defer(&self, deferred: Deferred, taker: Taker) -> Dispatched {
        let (worker, slot) = (taker.worker, taker.slot);
        let claimed = Claimed {
            run: deferred.run.clone(),
            worker,
            history: Vec::new(),
            next_seq: 3,
            unstored: true,
            interrupted: Vec::new(),
        };
        dispatch_line(&claimed.run);
        claimed_line(&claimed);
        let run = claimed.run.clone();
        self.drafts.insert(deferred);
        Dispatched { run, taken: Some((claimed, slot)) }
    }
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
    end: &Finish<'_>,
    later: &[RunEvent],
) -> Result<RunRow, DbError> {
    let Deferred { mut session, mut run, events } = deferred;
    if let Some(user) = &run.user_id {
        users::upsert_user(conn, &run.organization_id, user, run.created_at)?;
    }
    session.status = SessionStatus::Idle;
    session.updated_at = end.at;
    sessions::insert_session(conn, &session)?;
    run.status = end.status;
    run.output = end.output.cloned();
    run.usage = end.usage.copied();
    run.error = end.error.cloned();
    run.finished_at = Some(end.at);
    run.lease_expires_at = None;
    runs::insert_run(conn, &run)?;
    run_events::insert_events(conn, &run.id, &events.iter().chain(later).collect::<Vec<_>>())?;
    Ok(run)
}
