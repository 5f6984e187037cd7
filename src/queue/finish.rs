//! The end of a run: its outcome and terminal event (fenced on holder and attempt), a client
//! that went away, and cancel requests.

use std::sync::Arc;

use serde_json::json;

use super::{Completion, Queue, RunRow};
use crate::db::runs::Finish;
use crate::db::{DbError, messages, now_ms, run_events, runs, sessions};
use crate::domain::event::{Ended, EventData, RunEvent};
use crate::domain::outcome::{ErrorCode, RunError, RunOutcome, Usage};
use crate::domain::run::RunStatus;
use crate::ids::WorkerId;

impl Queue {
    /// Ends a run held by `worker` (fenced on worker and attempt): its pending tail events from
    /// `seq` on, then its terminal event. Returns the terminal event as stored, or `None` when
    /// the run had moved on (a stale holder).
    ///
    /// # Errors
    /// On a storage failure.
    pub async fn finish(
        &self,
        run: &RunRow,
        worker: &WorkerId,
        seq: i64,
        done: Completion,
    ) -> Result<Option<RunEvent>, DbError> {
        let (id, session, attempt, worker) =
            (run.id.clone(), run.session_id.clone(), run.attempt, worker.clone());
        let now = now_ms();
        let status = done.outcome.status();
        let mut events: Vec<RunEvent> = done
            .tail
            .into_iter()
            .zip(seq..)
            .map(|(data, seq)| RunEvent { seq, data, created_at: now })
            .collect();
        let terminal_seq = seq + i64::try_from(events.len()).unwrap_or(0);
        let data = EventData::terminal(done.outcome.clone(), done.usage, done.upstream_ms);
        events.push(RunEvent { seq: terminal_seq, data, created_at: now });
        let terminal: Arc<[RunEvent]> = Arc::from(events);
        let stored = Arc::clone(&terminal);
        let deferred = self.drafts.take(&id);
        // Stored whole: live readers (if any) get its dispatch events with its last ones.
        let published: Arc<[RunEvent]> = match &deferred {
            Some(d) if self.hub.watched(&id) => d.events.iter().chain(terminal.iter()).cloned().collect(),
            _ => Arc::clone(&terminal),
        };
        let (outcome, usage, messages_out) = (done.outcome, done.usage, done.messages);
        let finished = self
            .db
            .write(move |conn| {
                let finish = Finish {
                    status,
                    output: outcome.output(),
                    usage: Some(&usage),
                    error: outcome.error(),
                    at: now,
                };
                let whole = deferred.is_some();
                if let Some(deferred) = deferred {
                    super::drafts::store_whole(conn, deferred, &finish, &stored)?;
                } else if runs::finish_held_run(conn, &id, &worker, attempt, &finish)? {
                    run_events::insert_events(conn, &id, &stored)?;
                } else {
                    return Ok(None);
                }
                if status == RunStatus::Completed {
                    messages::append_messages(conn, &session, &id, &messages_out, now, whole)?;
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
    pub async fn abandon(&self, run: &RunRow, worker: &WorkerId) -> Result<(), DbError> {
        let (id, session, attempt, worker) =
            (run.id.clone(), run.session_id.clone(), run.attempt, worker.clone());
        let error = RunError::new(ErrorCode::Cancelled, "the client went away before the turn ended");
        let deferred = self.drafts.take(&id);
        let terminal = self
            .db
            .write(move |conn| {
                let now = now_ms();
                let finish = Finish {
                    status: RunStatus::Cancelled,
                    output: None,
                    usage: None,
                    error: Some(&error),
                    at: now,
                };
                let data = EventData::Cancelled(Ended::new(error.clone()));
                if let Some(deferred) = deferred {
                    let seq = deferred.events.last().map_or(0, |e| e.seq) + 1;
                    let event = RunEvent { seq, data, created_at: now };
                    super::drafts::store_whole(conn, deferred, &finish, std::slice::from_ref(&event))?;
                    return Ok(Some(event));
                }
                if !runs::finish_held_run(conn, &id, &worker, attempt, &finish)? {
                    return Ok(None);
                }
                let event = RunEvent { seq: run_events::last_seq(conn, &id)? + 1, data, created_at: now };
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

    /// Asks a run to stop: a queued run is cancelled at once (its terminal event says so, with
    /// the `{error, usage}` of every ended run); a held one is signalled (the holder ends it as
    /// `cancelled`).
    ///
    /// # Errors
    /// On a storage failure.
    pub async fn cancel(&self, run: &RunRow) -> Result<(), DbError> {
        self.cancel_with(run, RunError::new(ErrorCode::Cancelled, "cancelled before it started")).await
    }

    /// [`Queue::cancel`], recording `error` when the run is still queued.
    ///
    /// # Errors
    /// On a storage failure.
    pub async fn cancel_with(&self, run: &RunRow, error: RunError) -> Result<(), DbError> {
        let id = run.id.clone();
        let cancelled_queued = self
            .db
            .write(move |conn| {
                let now = now_ms();
                if runs::cancel_queued_run(conn, &id, &error, now)? {
                    let event = RunEvent {
                        seq: run_events::last_seq(conn, &id)? + 1,
                        data: EventData::Cancelled(Ended::new(error)),
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
            None => self.signal_cancel(&run.id),
        }
        Ok(())
    }

    /// Whether a worker of `runner` is alive: registered, active, and heartbeating within the
    /// last two minutes (SPEC §6's healthy worker).
    ///
    /// # Errors
    /// On a storage failure.
    pub async fn has_live_worker(&self, runner: &str) -> Result<bool, DbError> {
        let runner = runner.to_owned();
        let since = now_ms() - crate::runner::HEALTHY_WITHIN_MS;
        self.db
            .read(move |conn| Ok(crate::db::workers::count_healthy_workers(conn, &runner, since)? > 0))
            .await
    }

    /// Publishes a run's terminal batch and logs the completion; `wake` when the session has a
    /// queued run that the end of this one makes claimable (its runner may be any).
    pub(super) fn after_terminal(&self, run: &RunRow, terminal: Arc<[RunEvent]>, wake: bool) {
        let status = terminal.last().and_then(|e| e.data.status()).unwrap_or(RunStatus::Failed);
        self.hub.publish(&run.id, terminal);
        if wake {
            self.wake_all();
        }
        crate::telemetry::event_line(|| {
            json!({
                "event": "completed", "sessionId": run.session_id, "runId": run.id,
                "runner": run.runner, "status": status.as_str(), "attempt": run.attempt,
            })
        });
    }
}

/// The completion of a run that failed with `error` before or without an answer.
#[must_use]
pub fn failed(error: RunError) -> Completion {
    Completion {
        outcome: RunOutcome::Failed(error),
        usage: Usage::default(),
        messages: Vec::new(),
        upstream_ms: 0.0,
        tail: Vec::new(),
    }
}
