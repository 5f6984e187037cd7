//! Dispatch: a turn becomes a queued run (and, for a new conversation, a session) in one
//! transaction, with the runner resolved inside it and stamped on the run and its session.

use std::sync::Arc;

use tokio::sync::OwnedSemaphorePermit;

use super::drafts;
use super::{Claimed, Dispatched, Queue, RunRow, claimed_line, dispatch_line, started_event};
use crate::db::sessions::SessionRow;
use crate::db::{DbError, messages, now_ms, run_events, runs, sessions, users};
use crate::domain::event::{EventData, Queued, RunEvent};
use crate::domain::profile::ResolvedProfile;
use crate::domain::run::RunStatus;
use crate::domain::session::SessionStatus;
use crate::ids::{OrgId, RunId, SessionId, WorkerId};
use crate::runner::Resolver;

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
    /// The profile to stamp; dispatch fills in its runner and `runner_reason`.
    pub profile: ResolvedProfile,
    /// The turn's input, as JSON text (`turns::RunInput`).
    pub input: String,
    /// Nobody learns of the run before its first events are committed: the caller tells its
    /// client of it only then (a chat turn: streamed from its first committed event, or answered
    /// whole when it ends). With a new session and the in-process worker taking it, such a run
    /// is stored with its first write of events ([`super::drafts`]).
    pub known_later: bool,
}

impl std::fmt::Debug for NewRun {
    /// Leaves the input out: it holds the conversation.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewRun")
            .field("id", &self.id)
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
    NoSession(SessionId),
    /// The session has a run in flight and `on_busy` is `reject`.
    #[error("session `{0}` has a run in flight (on_busy: reject)")]
    Busy(SessionId),
    /// Storage failed.
    #[error(transparent)]
    Db(#[from] DbError),
}

/// The runner and resolved profile stamped on a dispatched run and its session.
#[derive(Debug, Clone)]
pub(super) struct Stamp {
    /// The runner.
    pub runner: String,
    /// The resolved profile, runner included.
    pub profile: Arc<ResolvedProfile>,
}

/// Resolves the runner of `org` on `conn` (failure-closed) and stamps it on `profile`.
pub(super) fn stamp(
    resolver: &Resolver,
    conn: &rusqlite::Connection,
    org: &OrgId,
    mut profile: ResolvedProfile,
) -> Stamp {
    let decision = resolver.decide_with(conn, org);
    profile.runner.clone_from(&decision.runner);
    profile.runner_reason = decision.reason;
    Stamp { runner: decision.runner, profile: Arc::new(profile) }
}

/// An in-process worker with a free slot, offered to the dispatch transaction: it takes the run
/// at once when the run is for its runner and nothing should go first.
pub(super) struct Taker {
    /// The runner it serves.
    pub runner: String,
    /// Its worker id.
    pub worker: WorkerId,
    /// Lease length, in ms.
    pub lease_ms: i64,
    /// The free slot it takes the run with (given back when it does not).
    pub slot: OwnedSemaphorePermit,
}

/// What the dispatch transaction stored: the run, its events, and the claim when an in-process
/// worker took it in the same transaction.
struct Stored {
    run: RunRow,
    events: Vec<RunEvent>,
    claimed: Option<(Claimed, OwnedSemaphorePermit)>,
}

impl Queue {
    /// Stores a run (and its session): taken at once by the in-process worker when it has a free
    /// slot and may take it, else queued with a claimer woken. The run's first events are
    /// published to live readers after the commit. A run nobody can learn of before its first
    /// events ([`NewRun::known_later`]) is not written here at all when the in-process worker
    /// takes it on a new session: see [`super::drafts`].
    ///
    /// # Errors
    /// Unknown or foreign session, busy session with `reject`, or storage failure.
    pub async fn dispatch(&self, new: NewRun) -> Result<Dispatched, DispatchError> {
        let lease_ms = self.lease_ms();
        let taker =
            self.local.read().unwrap_or_else(std::sync::PoisonError::into_inner).as_ref().and_then(|l| {
                let slot = Arc::clone(&l.slots).try_acquire_owned().ok()?;
                Some(Taker { runner: l.runner.clone(), worker: l.worker.clone(), lease_ms, slot })
            });
        let (new, resolved, taker) = if new.known_later && new.session.is_none() {
            match self.try_defer(new, taker).await? {
                Ok(dispatched) => return Ok(dispatched),
                Err(not_deferred) => not_deferred,
            }
        } else {
            (new, None, taker)
        };
        let resolver = self.resolver.clone();
        let Stored { run, events, claimed: taken } = self
            .db
            .write(move |conn| {
                let mut new = new;
                let stamped = match resolved {
                    Some(stamped) => stamped,
                    None => stamp(&resolver, conn, &new.org, std::mem::take(&mut new.profile)),
                };
                insert_dispatch(conn, new, stamped, taker)
            })
            .await??;
        self.hub.publish(&run.id, Arc::from(events));
        dispatch_line(&run);
        match &taken {
            Some((claimed, _)) => claimed_line(claimed),
            None => self.waker(&run.runner).notify_one(),
        }
        Ok(Dispatched { run, taken })
    }

    /// Drafts a run the embedded worker takes at once, unstored ([`super::drafts`]); else gives
    /// back the run with its runner resolved (no transaction, nothing written) and the taker.
    async fn try_defer(
        &self,
        mut new: NewRun,
        taker: Option<Taker>,
    ) -> Result<Result<Dispatched, (NewRun, Option<Stamp>, Option<Taker>)>, DbError> {
        let Some(t) = taker else { return Ok(Err((new, None, None))) };
        // A read on the writer's connection: no transaction, a warm cache, nothing written.
        // The profile moves into the stamp; the run goes on with that stamp either way.
        let (resolver, org, profile, runner) =
            (self.resolver.clone(), new.org.clone(), std::mem::take(&mut new.profile), t.runner.clone());
        let (stamped, take) = self
            .db
            .read_on_writer(move |conn| {
                let stamped = stamp(&resolver, conn, &org, profile);
                let take = stamped.runner == runner && !runs::runner_has_queued(conn, &stamped.runner)?;
                Ok((stamped, take))
            })
            .await?;
        if !take {
            // Not the embedded worker's to take at once: dispatched the usual way, on this stamp.
            return Ok(Err((new, Some(stamped), Some(t))));
        }
        let deferred = drafts::defer_dispatch(new, stamped, &t, now_ms());
        Ok(Ok(self.defer(deferred, t)))
    }
}

/// Dispatches `new` in the writer's transaction: stores it (with its new session, or stamping
/// the caller's), taken by `taker` when FIFO allows.
fn insert_dispatch(
    conn: &rusqlite::Connection,
    new: NewRun,
    stamp: Stamp,
    taker: Option<Taker>,
) -> Result<Result<Stored, DispatchError>, DbError> {
    let now = now_ms();
    if let Some(user) = &new.user {
        users::upsert_user(conn, &new.org, user, now)?;
    }
    let existing = new.session.is_some();
    let session_id = match &new.session {
        Some(id) => {
            let owned = sessions::find_session(conn, id)?
                .filter(|s| s.organization_id == new.org && s.user_id == new.user);
            if owned.is_none() {
                return Ok(Err(DispatchError::NoSession(id.clone())));
            }
            if new.on_busy == OnBusy::Reject && runs::session_busy(conn, id)? {
                return Ok(Err(DispatchError::Busy(id.clone())));
            }
            sessions::stamp_session(conn, id, &stamp.runner, &stamp.profile, now)?;
            id.clone()
        }
        None => {
            let session = new_session(&new.org, new.user.as_ref(), &stamp, now);
            sessions::insert_session(conn, &session)?;
            session.id
        }
    };
    // The in-process worker takes the run in this same transaction when it serves the runner,
    // no older run of the runner waits, and the session has nothing in flight (FIFO per session
    // and per runner hold exactly as if it had claimed from the queue).
    let taker = match taker {
        Some(t)
            if t.runner == stamp.runner
                && !(existing && runs::session_busy(conn, &session_id)?)
                && !runs::runner_has_queued(conn, &stamp.runner)? =>
        {
            Some(t)
        }
        _ => None,
    };
    let (run, events) = draft_run(new, session_id, stamp, taker.as_ref(), now);
    runs::insert_run(conn, &run)?;
    run_events::insert_events(conn, &run.id, &events)?;
    let claimed = match taker {
        Some(t) => {
            let history = if existing { messages::list_messages(conn, &run.session_id)? } else { Vec::new() };
            let claimed = Claimed {
                run: run.clone(),
                worker: t.worker,
                history,
                next_seq: 3,
                unstored: false,
                interrupted: Vec::new(),
            };
            Some((claimed, t.slot))
        }
        None => None,
    };
    Ok(Ok(Stored { run, events, claimed }))
}

/// A new session, `running` its first run.
pub(super) fn new_session(org: &OrgId, user: Option<&String>, stamp: &Stamp, now: i64) -> SessionRow {
    SessionRow {
        id: SessionId::new(),
        organization_id: org.clone(),
        user_id: user.cloned(),
        status: SessionStatus::Running,
        runner: Some(stamp.runner.clone()),
        resolved_profile: Arc::clone(&stamp.profile),
        created_at: now,
        updated_at: now,
    }
}

/// The run row and its first events: queued, or running when `taker` takes it.
pub(super) fn draft_run(
    new: NewRun,
    session_id: SessionId,
    stamp: Stamp,
    taker: Option<&Taker>,
    now: i64,
) -> (RunRow, Vec<RunEvent>) {
    let mut run = RunRow {
        id: new.id,
        session_id,
        organization_id: new.org,
        user_id: new.user,
        status: RunStatus::Queued,
        runner: stamp.runner,
        resolved_profile: stamp.profile,
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
    let queued = Queued { runner: run.runner.clone(), session_id: run.session_id.clone() };
    let mut events = vec![RunEvent { seq: 1, data: EventData::Queued(queued), created_at: now }];
    if let Some(taker) = taker {
        run.status = RunStatus::Running;
        run.claimed_by = Some(taker.worker.clone());
        run.lease_expires_at = Some(now.saturating_add(taker.lease_ms));
        run.claimed_at = Some(now);
        run.started_at = Some(now);
        events.push(started_event(2, &taker.worker, 1, now));
    }
    (run, events)
}
