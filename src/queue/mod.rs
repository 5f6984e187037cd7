//! The run queue in SQLite, and its semantics.
//!
//! - **Dispatch** ([`dispatch`]) resolves the run's runner with the [`Resolver`] and stores the
//!   queued run, its `run.queued` event and the session's stamped profile in one transaction,
//!   then wakes one claimer of the run's runner.
//! - **Claim** ([`claim`]) is one `UPDATE … RETURNING` through the single writer: the oldest
//!   queued run of the runner whose session has no earlier queued run and nothing claimed or
//!   running (FIFO per session). A claimed run is invisible to every other claimer. It carries a
//!   lease (HEARTH_LEASE_S) that the holder's heartbeats extend ([`lease`]).
//! - **Delivery** is at least once: a worker that registers again under its name gives back
//!   what it held (re-queued with attempt + 1, same runner; failed past HEARTH_MAX_ATTEMPTS).
//!   Every transition of a held run is fenced on `(claimed_by, attempt)`, so a stale holder
//!   cannot complete a run that moved on.
//! - **Completion** ([`finish`]) is terminal and idempotent: the terminal event, the run's
//!   outcome, the turn's messages and the session's status commit together, exactly once.
//! - Claimers arm their wake-up *before* querying, then wait for it: new work wakes them at
//!   once, never after a polling sleep.
//! - **Hand-off in memory.** An in-process worker with a free slot ([`Queue::set_local`]) takes
//!   a run inside its dispatch transaction — claimed and started in the same commit, with the
//!   same FIFO rules as a claim from the queue — and the dispatcher hands it over without a
//!   wake-up or a second transaction. Otherwise the run waits in the queue for a claim.
//! - **Stored with its first events** ([`drafts`]): a chat turn on a new session that the
//!   in-process worker takes is written with its first events, not at dispatch.
//! - **Events** are written by a run's [`sink::EventSink`], published to live readers by the
//!   [`hub::EventHub`] once committed, and read by one [`follow::Follower`].

mod claim;
mod dispatch;
mod drafts;
mod finish;
pub mod follow;
pub mod hub;
mod lease;
mod remote;
pub mod sink;

pub use dispatch::{DispatchError, NewRun, OnBusy};
pub use drafts::Drafts;
pub use finish::failed;
pub use lease::{GivenBack, run_sweeper};
pub use remote::{Appended, Finished, HeartbeatAnswer};

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use serde_json::json;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::db::Db;
use crate::domain::event::{EventData, RunEvent, Started, ToolStarted};
use crate::domain::message::Message;
use crate::domain::outcome::{RunOutcome, Usage};
use crate::ids::{RunId, WorkerId};
use crate::runner::Resolver;
use hub::EventHub;

pub use crate::db::runs::RunRow;

/// A claimed run with what its executor needs.
#[derive(Debug, Clone)]
pub struct Claimed {
    /// The run, as claimed.
    pub run: RunRow,
    /// The worker holding it.
    pub worker: WorkerId,
    /// The session's conversation before this turn.
    pub history: Vec<Message>,
    /// The seq its next event gets.
    pub next_seq: i64,
    /// Not in the database yet ([`drafts`]): its first write of events stores it (its event
    /// sink is given the queue's [`Drafts`]).
    pub unstored: bool,
    /// Server-side tool calls an earlier attempt started and never saw finish: their outcome is
    /// unknown, and the model is told so rather than left to replay them blindly.
    pub interrupted: Vec<ToolStarted>,
}

/// How a held run ends.
#[derive(Debug, Clone)]
pub struct Completion {
    /// Completed with an answer, failed or cancelled with an error.
    pub outcome: RunOutcome,
    /// Usage of every model call.
    pub usage: Usage,
    /// Messages the turn adds to the session (input included), on success.
    pub messages: Vec<Message>,
    /// Time spent waiting on upstream model calls, in ms (recorded in the terminal event).
    pub upstream_ms: f64,
    /// Events not yet written, stored just before the terminal event in the same transaction.
    pub tail: Vec<EventData>,
}

/// A dispatched run; `taken` when the in-process worker took it in the dispatch transaction.
#[derive(Debug)]
pub struct Dispatched {
    /// The run as stored.
    pub run: RunRow,
    /// The claim and the worker slot it holds, for the caller to execute.
    pub taken: Option<(Claimed, OwnedSemaphorePermit)>,
}

/// The in-process worker that may take runs at dispatch.
#[derive(Debug)]
pub struct Local {
    /// The runner it serves.
    pub runner: String,
    /// Its worker id.
    pub worker: WorkerId,
    /// Its free slots: a run taken at dispatch holds one until it ends.
    pub slots: Arc<Semaphore>,
}

/// How the queue leases and retries runs.
#[derive(Debug, Clone, Copy)]
pub struct QueueSettings {
    /// How long a claim lasts without a heartbeat (HEARTH_LEASE_S).
    pub lease: Duration,
    /// Attempts a run gets before it fails (HEARTH_MAX_ATTEMPTS).
    pub max_attempts: u32,
}

/// The queue service.
pub struct Queue {
    db: Db,
    resolver: Resolver,
    hub: Arc<EventHub>,
    wakers: Mutex<HashMap<String, Arc<Notify>>>,
    cancels: Mutex<HashMap<RunId, CancellationToken>>,
    /// Runs this process executed but could not record the end of (storage failing): the
    /// heartbeat lets their leases lapse instead of extending them ([`Queue::release`]).
    released: Mutex<Vec<(RunId, WorkerId)>>,
    /// Runs taken at dispatch and not stored yet ([`drafts`]).
    drafts: Drafts,
    settings: QueueSettings,
    /// The in-process worker taking runs at dispatch, while this node runs one.
    local: RwLock<Option<Local>>,
}

impl Queue {
    /// A queue over `db` that resolves runners with `resolver`.
    #[must_use]
    pub fn new(db: Db, resolver: Resolver, settings: QueueSettings) -> Self {
        Self {
            db,
            resolver,
            hub: Arc::new(EventHub::default()),
            wakers: Mutex::default(),
            cancels: Mutex::default(),
            released: Mutex::default(),
            drafts: Drafts::default(),
            settings,
            local: RwLock::new(None),
        }
    }

    /// Registers the in-process worker that takes runs at dispatch (replacing an earlier one:
    /// a node promoted again starts its pool afresh).
    pub fn set_local(&self, local: Local) {
        *self.local.write().unwrap_or_else(PoisonError::into_inner) = Some(local);
    }

    /// Forgets the in-process worker (its pool stopped: this node was demoted), so dispatch
    /// hands nothing to it.
    pub fn clear_local(&self) {
        *self.local.write().unwrap_or_else(PoisonError::into_inner) = None;
    }

    fn lease_ms(&self) -> i64 {
        i64::try_from(self.settings.lease.as_millis()).unwrap_or(i64::MAX)
    }

    /// The store.
    #[must_use]
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// The event hub.
    #[must_use]
    pub fn hub(&self) -> &Arc<EventHub> {
        &self.hub
    }

    /// The runs taken at dispatch and not stored yet: an unstored run's [`sink::EventSink`]
    /// stores its run with its first write.
    #[must_use]
    pub fn drafts(&self) -> &Drafts {
        &self.drafts
    }

    /// The wake-up of `runner`'s claimers.
    pub fn waker(&self, runner: &str) -> Arc<Notify> {
        let mut wakers = self.wakers.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(wakers.entry(runner.to_owned()).or_default())
    }

    fn wake_all(&self) {
        let wakers = self.wakers.lock().unwrap_or_else(PoisonError::into_inner);
        for waker in wakers.values() {
            waker.notify_one();
        }
    }

    /// Registers a run executing in this process; a cancel request cancels the token.
    pub fn track_cancel(&self, run: &RunId) -> CancellationToken {
        let token = CancellationToken::new();
        self.cancels.lock().unwrap_or_else(PoisonError::into_inner).insert(run.clone(), token.clone());
        token
    }

    /// Forgets a run that stopped executing here.
    pub fn untrack_cancel(&self, run: &RunId) {
        self.cancels.lock().unwrap_or_else(PoisonError::into_inner).remove(run);
    }

    fn signal_cancel(&self, run: &RunId) {
        let cancels = self.cancels.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(token) = cancels.get(run) {
            token.cancel();
        }
    }
}

fn dispatch_line(run: &RunRow) {
    crate::telemetry::event_line(|| {
        json!({
            "event": "dispatch", "sessionId": run.session_id, "runId": run.id,
            "resolvedProfile": &*run.resolved_profile,
        })
    });
}

fn claimed_line(c: &Claimed) {
    crate::telemetry::event_line(|| {
        json!({
            "event": "claimed", "sessionId": c.run.session_id, "runId": c.run.id,
            "workerId": c.worker, "runner": c.run.runner, "attempt": c.run.attempt,
        })
    });
}

fn started_event(seq: i64, worker: &WorkerId, attempt: i64, at: i64) -> RunEvent {
    RunEvent { seq, data: EventData::Started(Started { worker_id: worker.clone(), attempt }), created_at: at }
}

#[cfg(test)]
mod tests;
