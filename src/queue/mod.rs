//! The run queue in SQLite, and its semantics.
//!
//! - **Dispatch** stores the queued run, its `run.queued` event and the session's stamped profile
//!   in one transaction, then wakes one claimer of the run's runner.
//! - **Claim** is one `UPDATE … RETURNING` through the single writer: the oldest queued run of the
//!   runner whose session has no earlier queued run and nothing claimed or running (FIFO per
//!   session). A claimed run is invisible to every other claimer. It carries a lease
//!   (HEARTH_LEASE_S) that the holder's heartbeats extend.
//! - **Delivery** is at least once: a worker that comes back under the same name gives back what
//!   it held (re-queued with attempt + 1, same runner). Every transition of a held run is fenced
//!   on `(claimed_by, attempt)`, so a stale holder cannot complete a run that moved on.
//! - **Completion** is terminal and idempotent: the terminal event, the run's outcome, the turn's
//!   messages and the session's status commit together, exactly once.
//! - Claimers arm their wake-up *before* querying, then wait for it: new work wakes them at
//!   once, never after a polling sleep.
//! - **Hand-off in memory.** An in-process worker with a free slot ([`Queue::set_local`]) takes
//!   a run inside its dispatch transaction — claimed and started in the same commit, with the
//!   same FIFO rules as a claim from the queue — and the dispatcher hands it over without a
//!   wake-up or a second transaction. Otherwise the run waits in the queue for a claim.

mod dispatch;
pub mod events;

pub use dispatch::{DispatchError, NewRun, OnBusy, Stamp};

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::db::{Db, DbError, messages, now_ms, run_events, runs, sessions};
use crate::domain::event::{EventType, RunEvent};
use crate::domain::message::Message;
use crate::domain::run::RunStatus;
use crate::ids::RunId;
use events::EventHub;

pub use crate::db::runs::RunRow;

/// A claimed run with what its executor needs.
#[derive(Debug, Clone)]
pub struct Claimed {
    /// The run, as claimed.
    pub run: RunRow,
    /// The session's conversation before this turn.
    pub history: Vec<Message>,
    /// The seq its next event gets.
    pub next_seq: i64,
    /// Not in the database yet (see [`Queue::dispatch`]): its first write of events stores it
    /// (its event sink is given the queue's [`Drafts`]).
    pub unstored: bool,
}

/// How a held run ends.
#[derive(Debug, Clone)]
pub struct Completion {
    /// `completed`, `failed` or `cancelled`.
    pub status: RunStatus,
    /// `{"content", "tool_calls"}`.
    pub output: Option<Value>,
    /// Usage.
    pub usage: Option<Value>,
    /// `{"message", "code"}`.
    pub error: Option<Value>,
    /// Messages the turn adds to the session (input included), on success.
    pub messages: Vec<Message>,
    /// Time spent waiting on upstream model calls, in ms (recorded in the terminal event).
    pub upstream_ms: f64,
    /// Events not yet written, stored just before the terminal event in the same transaction.
    pub tail: Vec<(EventType, Value)>,
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
    pub worker: String,
    /// Its free slots: a run taken at dispatch holds one until it ends.
    pub slots: Arc<Semaphore>,
}

/// Runs taken at dispatch and not stored yet, by id: each is stored with its first write of
/// events, or whole when it ends (see [`Queue::dispatch`]). Whoever takes a run's rows stores
/// them, exactly once.
#[derive(Clone, Default)]
pub struct Drafts(Arc<Mutex<HashMap<RunId, dispatch::Deferred>>>);

impl Drafts {
    fn insert(&self, deferred: dispatch::Deferred) {
        let id = deferred.run.id.clone();
        self.0.lock().unwrap_or_else(PoisonError::into_inner).insert(id, deferred);
    }

    fn take(&self, run: &RunId) -> Option<dispatch::Deferred> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).remove(run)
    }
}

/// The queue service.
pub struct Queue {
    db: Db,
    hub: Arc<EventHub>,
    wakers: Mutex<HashMap<String, Arc<Notify>>>,
    cancels: Mutex<HashMap<RunId, CancellationToken>>,
    /// Runs taken at dispatch and not stored yet (see [`Queue::dispatch`]).
    drafts: Drafts,
    lease: Duration,
    local: OnceLock<Local>,
}

impl Queue {
    /// A queue over `db` with leases of `lease`.
    #[must_use]
    pub fn new(db: Db, lease: Duration) -> Self {
        Self {
            db,
            hub: Arc::new(EventHub::default()),
            wakers: Mutex::default(),
            cancels: Mutex::default(),
            drafts: Drafts::default(),
            lease,
            local: OnceLock::new(),
        }
    }

    /// Registers the in-process worker that takes runs at dispatch (once; later calls are
    /// ignored).
    pub fn set_local(&self, local: Local) {
        let _ = self.local.set(local);
    }

    fn lease_ms(&self) -> i64 {
        i64::try_from(self.lease.as_millis()).unwrap_or(i64::MAX)
    }

    /// The event hub.
    #[must_use]
    pub fn hub(&self) -> &Arc<EventHub> {
        &self.hub
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

    /// Stores a run (and its session): taken at once by the in-process worker when it has a free
    /// slot and may take it, else queued with a claimer woken. The run's first events are
    /// published to live readers after the commit.
    ///
    /// **Stored with its first events.** A run nobody can learn of before its first events are
    /// committed ([`NewRun::known_later`]: a chat turn on a new session, streamed from its first
    /// committed event or answered whole at its end) that the in-process worker takes is not
    /// written at dispatch: its runner is resolved by a read on the writer's connection
    /// ([`Db::read_on_writer`]: no transaction, a warm cache), the turn starts at once, and the
    /// run and its session are written in the transaction of its first events — the first
    /// streamed text, a tool's start, or its outcome. Its caller answers only after that
    /// commit, so a run answered 200 is stored as surely as any other (SPEC §2), with one
    /// commit fewer and its upstream call no longer waiting on a commit. Until then it is not in
    /// the database (a crash before leaves no trace; its client sees the connection fail, never
    /// an answer).
    ///
    /// # Errors
    /// Unknown or foreign session, busy session with `reject`, or storage failure.
    pub async fn dispatch(&self, mut new: NewRun) -> Result<Dispatched, DispatchError> {
        let lease_ms = self.lease_ms();
        let taker = self.local.get().and_then(|l| {
            let slot = Arc::clone(&l.slots).try_acquire_owned().ok()?;
            Some(dispatch::Taker { runner: l.runner.clone(), worker: l.worker.clone(), lease_ms, slot })
        });
        if let Some(t) = taker.as_ref().filter(|_| new.known_later && new.session.is_none()) {
            // A read on the writer's connection: no transaction, nothing written.
            let (resolve, runner) =
                (std::mem::replace(&mut new.stamp, Box::new(|_| Stamp::default())), t.runner.clone());
            let (stamp, take) = self
                .db
                .read_on_writer(move |conn| {
                    let stamp = resolve(conn);
                    let take = stamp.runner == runner && !runs::runner_has_queued(conn, &stamp.runner)?;
                    Ok((stamp, take))
                })
                .await?;
            if take && let Some(t) = taker {
                let deferred = dispatch::defer_dispatch(new, stamp, &t, now_ms());
                return Ok(self.defer(deferred, t.slot));
            }
            // Not the embedded worker's to take at once: dispatched the usual way, on this stamp.
            new.stamp = Box::new(move |_| stamp);
        }
        let dispatch::Stored { run, events, claimed: taken } =
            self.db.write(move |conn| dispatch::insert_dispatch(conn, new, taker)).await??;
        self.hub.publish(&run.id, Arc::from(events));
        dispatch_line(&run);
        match &taken {
            Some((claimed, _)) => claimed_line(claimed),
            None => self.waker(&run.runner).notify_one(),
        }
        Ok(Dispatched { run, taken })
    }

    /// Hands a run drafted at dispatch to the embedded worker, unstored until its first events
    /// are written. Its dispatch events reach live readers with them, once committed.
    fn defer(&self, deferred: dispatch::Deferred, slot: OwnedSemaphorePermit) -> Dispatched {
        let claimed = Claimed { run: deferred.run.clone(), history: Vec::new(), next_seq: 3, unstored: true };
        dispatch_line(&claimed.run);
        claimed_line(&claimed);
        let run = claimed.run.clone();
        self.drafts.insert(deferred);
        Dispatched { run, taken: Some((claimed, slot)) }
    }

    /// Claims the next run of `runner` for `worker`, if any.
    ///
    /// # Errors
    /// On a storage failure.
    pub async fn claim(&self, runner: &str, worker: &str) -> Result<Option<Claimed>, DbError> {
        self.claim_inner(runner, worker, false).await
    }

    /// Claims the next run and marks it running with its `run.started` event, in one
    /// transaction (what an in-process worker does; `claimed` is never observed alone).
    ///
    /// # Errors
    /// On a storage failure.
    pub async fn claim_and_start(&self, runner: &str, worker: &str) -> Result<Option<Claimed>, DbError> {
        self.claim_inner(runner, worker, true).await
    }

    async fn claim_inner(&self, runner: &str, worker: &str, start: bool) -> Result<Option<Claimed>, DbError> {
        let (runner, worker) = (runner.to_owned(), worker.to_owned());
        let lease_ms = self.lease_ms();
        let claimed = self
            .db
            .write(move |conn| {
                let now = now_ms();
                let Some(mut run) = runs::claim_next_run(conn, &runner, &worker, now + lease_ms, now)? else {
                    return Ok(None);
                };
                let history = messages::list_messages(conn, &run.session_id)?;
                let mut next_seq = run_events::last_seq(conn, &run.id)? + 1;
                let mut started = None;
                if start && runs::mark_running(conn, &run.id, &worker, run.attempt, now)? {
                    let event = started_event(next_seq, &worker, run.attempt, now);
                    run_events::insert_events(conn, &run.id, std::slice::from_ref(&event))?;
                    run.status = RunStatus::Running;
                    run.started_at = run.started_at.or(Some(now));
                    next_seq += 1;
                    started = Some(event);
                }
                Ok(Some((Claimed { run, history, next_seq, unstored: false }, started)))
            })
            .await?;
        let claimed = claimed.map(|(c, started)| {
            if let Some(event) = started {
                self.hub.publish(&c.run.id, Arc::from(vec![event]));
            }
            c
        });
        if let Some(c) = &claimed {
            claimed_line(c);
        }
        Ok(claimed)
    }

    /// Marks a claimed run running and records `run.started`; false when the claim was lost.
    ///
    /// # Errors
    /// On a storage failure.
    pub async fn start(&self, claimed: &Claimed, worker: &str) -> Result<bool, DbError> {
        let (id, attempt, seq, worker) =
            (claimed.run.id.clone(), claimed.run.attempt, claimed.next_seq, worker.to_owned());
        let event = started_event(seq, &worker, attempt, now_ms());
        let (run, batch) = (id.clone(), Arc::<[RunEvent]>::from(vec![event]));
        let stored = Arc::clone(&batch);
        let started = self
            .db
            .write(move |conn| {
                let ok = runs::mark_running(conn, &run, &worker, attempt, stored[0].created_at)?;
                if ok {
                    run_events::insert_events(conn, &run, &stored)?;
                }
                Ok(ok)
            })
            .await?;
        if started {
            self.hub.publish(&id, batch);
        }
        Ok(started)
    }

    /// Ends a held run (fenced on worker and attempt): its pending tail events from `seq` on,
    /// then its terminal event. Returns the terminal event as stored, or `None` when the run
    /// had moved on (a stale holder).
    ///
    /// # Errors
    /// On a storage failure.
    pub async fn finish(
        &self,
        run: &RunRow,
        worker: &str,
        seq: i64,
        done: Completion,
    ) -> Result<Option<RunEvent>, DbError> {
        let (id, session, attempt, worker) =
            (run.id.clone(), run.session_id.clone(), run.attempt, worker.to_owned());
        let kind = EventType::terminal_for(done.status).unwrap_or(EventType::Failed);
        let now = now_ms();
        let mut events: Vec<RunEvent> = done
            .tail
            .iter()
            .cloned()
            .zip(seq..)
            .map(|((kind, data), seq)| RunEvent { seq, kind, data, created_at: now })
            .collect();
        let terminal_seq = seq + i64::try_from(events.len()).unwrap_or(0);
        events.push(RunEvent { seq: terminal_seq, kind, data: terminal_data(&done), created_at: now });
        let terminal: Arc<[RunEvent]> = Arc::from(events);
        let stored = Arc::clone(&terminal);
        let deferred = self.take_deferred(&id);
        // Stored whole: live readers (if any) get its dispatch events with its last ones.
        let published: Arc<[RunEvent]> = match &deferred {
            Some(d) if self.hub.watched(&id) => d.events.iter().chain(terminal.iter()).cloned().collect(),
            _ => Arc::clone(&terminal),
        };
        let finished = self
            .db
            .write(move |conn| {
                let finish = runs::Finish {
                    status: done.status,
                    output: done.output.as_ref(),
                    usage: done.usage.as_ref(),
                    error: done.error.as_ref(),
                    at: now,
                };
                let whole = deferred.is_some();
                if let Some(deferred) = deferred {
                    dispatch::store_whole(conn, deferred, &finish, &stored)?;
                } else if runs::finish_held_run(conn, &id, &worker, attempt, &finish)? {
                    run_events::insert_events(conn, &id, &stored)?;
                } else {
                    return Ok(None);
                }
                if done.status == RunStatus::Completed {
                    messages::append_messages(conn, &session, &id, &done.messages, now, whole)?;
                }
                // A run stored whole is its new session's only one: the session is settled.
                // Else, not settled: the session's next run waits in the queue, claimable now.
                Ok(Some(!whole && !sessions::settle_session(conn, &session, now)?))
            })
            .await?;
        let Some(next_waits) = finished else { return Ok(None) };
        let last = terminal.last().cloned();
        self.after_terminal(run, published, next_waits);
        Ok(last)
    }

    /// Ends a held run whose executor went away mid-turn (the client hung up on a run executed
    /// on its request): `cancelled`, numbered after whatever the log holds, fenced like
    /// [`Queue::finish`].
    ///
    /// # Errors
    /// On a storage failure.
    pub async fn abandon(&self, run: &RunRow, worker: &str) -> Result<(), DbError> {
        let (id, session, attempt, worker) =
            (run.id.clone(), run.session_id.clone(), run.attempt, worker.to_owned());
        let error = json!({"message": "the client went away before the turn ended", "code": "cancelled"});
        let deferred = self.take_deferred(&id);
        let terminal = self
            .db
            .write(move |conn| {
                let now = now_ms();
                let finish = runs::Finish {
                    status: RunStatus::Cancelled,
                    output: None,
                    usage: None,
                    error: Some(&error),
                    at: now,
                };
                if let Some(deferred) = deferred {
                    let event = RunEvent {
                        seq: deferred.events.last().map_or(0, |e| e.seq) + 1,
                        kind: EventType::Cancelled,
                        data: json!({"error": error}),
                        created_at: now,
                    };
                    dispatch::store_whole(conn, deferred, &finish, std::slice::from_ref(&event))?;
                    return Ok(Some(event));
                }
                if !runs::finish_held_run(conn, &id, &worker, attempt, &finish)? {
                    return Ok(None);
                }
                let event = RunEvent {
                    seq: run_events::last_seq(conn, &id)? + 1,
                    kind: EventType::Cancelled,
                    data: json!({"error": error}),
                    created_at: now,
                };
                run_events::insert_events(conn, &id, std::slice::from_ref(&event))?;
                sessions::settle_session(conn, &session, now)?;
                Ok(Some(event))
            })
            .await?;
        self.untrack_cancel(&run.id);
        if let Some(event) = terminal {
            self.after_terminal(run, Arc::from(vec![event]), true);
        }
        Ok(())
    }

    /// Publishes a run's terminal batch and logs the completion; `wake` when the session has a
    /// queued run that the end of this one makes claimable (its runner may be any).
    fn after_terminal(&self, run: &RunRow, terminal: Arc<[RunEvent]>, wake: bool) {
        let kind = terminal.last().map_or(EventType::Failed, |e| e.kind);
        self.hub.publish(&run.id, terminal);
        if wake {
            self.wake_all();
        }
        crate::telemetry::event_line(|| {
            json!({
                "event": "completed", "sessionId": run.session_id, "runId": run.id,
                "runner": run.runner, "status": kind.as_str().trim_start_matches("run."),
                "attempt": run.attempt,
            })
        });
    }

    /// Asks a run to stop: a queued run is cancelled at once; a held one is signalled (the
    /// holder ends it as `cancelled`). Returns the run after the request.
    ///
    /// # Errors
    /// On a storage failure.
    pub async fn cancel(&self, run: &RunRow) -> Result<(), DbError> {
        let id = run.id.clone();
        let cancelled_queued = self
            .db
            .write(move |conn| {
                let now = now_ms();
                if runs::cancel_queued_run(conn, &id, now)? {
                    let seq = run_events::last_seq(conn, &id)? + 1;
                    let event = RunEvent {
                        seq,
                        kind: EventType::Cancelled,
                        data: json!({"reason": "cancelled before it started"}),
                        created_at: now,
                    };
                    run_events::insert_events(conn, &id, std::slice::from_ref(&event))?;
                    if let Some(r) = runs::find_run(conn, &id)? {
                        sessions::settle_session(conn, &r.session_id, now)?;
                    }
                    return Ok(Some(event));
                }
                runs::request_cancel(conn, &id, now)?;
                Ok(None)
            })
            .await?;
        match cancelled_queued {
            Some(event) => self.after_terminal(run, Arc::from(vec![event]), true),
            None => {
                let cancels = self.cancels.lock().unwrap_or_else(PoisonError::into_inner);
                if let Some(token) = cancels.get(&run.id) {
                    token.cancel();
                }
            }
        }
        Ok(())
    }

    /// Gives back what `worker` held when it stopped: runs that have had `max_attempts` fail
    /// with a clear error (and their terminal event); the others go back to the queue with
    /// attempt + 1 on the same runner. Returns `(run, attempt, requeued)` for each.
    ///
    /// # Errors
    /// On a storage failure.
    pub async fn give_back(
        &self,
        worker: &str,
        max_attempts: i64,
    ) -> Result<Vec<(RunId, i64, bool)>, DbError> {
        let worker = worker.to_owned();
        let (failed, requeued) = self
            .db
            .write(move |conn| {
                let now = now_ms();
                let mut failed = Vec::new();
                for (run, session, attempt) in runs::fail_exhausted_runs(conn, &worker, max_attempts, now)? {
                    let event = RunEvent {
                        seq: run_events::last_seq(conn, &run)? + 1,
                        kind: EventType::Failed,
                        data: json!({"error": {"message": format!("gave up after {attempt} attempts: the worker holding the run stopped each time"),
                                               "code": "max_attempts_exceeded"}}),
                        created_at: now,
                    };
                    run_events::insert_events(conn, &run, std::slice::from_ref(&event))?;
                    sessions::settle_session(conn, &session, now)?;
                    failed.push((run, attempt, event));
                }
                Ok((failed, runs::requeue_worker_runs(conn, &worker, now)?))
            })
            .await?;
        let mut out = Vec::new();
        for (run, attempt, event) in failed {
            self.hub.publish(&run, Arc::from(vec![event]));
            out.push((run, attempt, false));
        }
        out.extend(requeued.into_iter().map(|(run, attempt)| (run, attempt, true)));
        if out.iter().any(|(_, _, requeued)| *requeued) {
            self.wake_all();
        }
        Ok(out)
    }

    /// The unstored rows of a run taken at dispatch, if it is one and none of its events has
    /// been written yet.
    fn take_deferred(&self, run: &RunId) -> Option<dispatch::Deferred> {
        self.drafts.take(run)
    }

    /// The runs taken at dispatch and not stored yet: an unstored run's [`events::EventSink`]
    /// stores its run with its first write.
    #[must_use]
    pub fn drafts(&self) -> &Drafts {
        &self.drafts
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
}

fn dispatch_line(run: &RunRow) {
    crate::telemetry::event_line(|| {
        json!({
            "event": "dispatch", "sessionId": run.session_id, "runId": run.id,
            "resolvedProfile": run.resolved_profile,
        })
    });
}

fn claimed_line(c: &Claimed) {
    crate::telemetry::event_line(|| {
        json!({
            "event": "claimed", "sessionId": c.run.session_id, "runId": c.run.id,
            "workerId": c.run.claimed_by, "runner": c.run.runner, "attempt": c.run.attempt,
        })
    });
}

fn started_event(seq: i64, worker: &str, attempt: i64, at: i64) -> RunEvent {
    RunEvent {
        seq,
        kind: EventType::Started,
        data: json!({"worker_id": worker, "attempt": attempt}),
        created_at: at,
    }
}

fn terminal_data(done: &Completion) -> Value {
    match done.status {
        RunStatus::Completed => {
            json!({"output": done.output, "usage": done.usage, "upstream_ms": done.upstream_ms})
        }
        _ => json!({"error": done.error, "usage": done.usage, "upstream_ms": done.upstream_ms}),
    }
}

#[cfg(test)]
mod tests;
