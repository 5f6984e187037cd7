//! The queue's side of the worker protocol: heartbeats that answer what to cancel and whether
//! to drain, long-poll claims, and event appends and completions from external workers — each
//! fenced on the run's holder and attempt, so a worker that lost its run can change nothing.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Claimed, Completion, Queue};
use crate::db::workers::{self, WorkerState};
use crate::db::{DbError, now_ms, run_events, runs};
use crate::domain::event::{EventData, RunEvent};
use crate::ids::{RunId, WorkerId};

/// What a heartbeat answers.
#[derive(Debug, Clone, Default)]
pub struct HeartbeatAnswer {
    /// Runs the worker holds whose cancel was asked for: it stops them and completes them
    /// `cancelled`.
    pub cancel: Vec<RunId>,
    /// Whether the worker drains: finishes what it holds, claims nothing new.
    pub drain: bool,
}

/// How an append of events went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Appended {
    /// Stored (seqs already stored were left as they were); the run's next seq.
    Next(i64),
    /// The caller does not hold the run at this attempt (any more).
    Fenced,
    /// `from_seq` is past the log's end: the events from `next` are missing.
    Gap {
        /// The seq the log expects next.
        next: i64,
    },
    /// No such run.
    NoRun,
}

/// How a completion went.
#[derive(Debug, Clone)]
pub enum Finished {
    /// Recorded: the terminal event.
    Done(RunEvent),
    /// This holder's completion was already recorded (a retry).
    Already,
    /// The caller does not hold the run at this attempt (any more).
    Fenced,
    /// No such run.
    NoRun,
}

impl Queue {
    /// The runtime and status of a registered worker.
    ///
    /// # Errors
    /// On a storage failure.
    pub async fn worker_state(&self, worker: &WorkerId) -> Result<Option<WorkerState>, DbError> {
        let id = worker.clone();
        self.db.read(move |conn| workers::find_worker_state(conn, &id)).await
    }

    /// A worker's heartbeat: records it (and that it drains, if it says so), extends the leases
    /// of what it holds, and answers; `None` for a worker that is not registered.
    ///
    /// # Errors
    /// On a storage failure.
    pub async fn worker_heartbeat(
        &self,
        worker: &WorkerId,
        draining: bool,
    ) -> Result<Option<HeartbeatAnswer>, DbError> {
        let (id, lease_ms) = (worker.clone(), self.lease_ms());
        self.db
            .write(move |conn| {
                let Some(state) = workers::find_worker_state(conn, &id)? else { return Ok(None) };
                if draining && !state.draining {
                    workers::mark_draining(conn, &id)?;
                }
                let now = now_ms();
                workers::touch_worker(conn, &id, now)?;
                runs::extend_leases(conn, &id, now + lease_ms, now)?;
                let cancel = runs::cancels_for(conn, &id)?;
                Ok(Some(HeartbeatAnswer { cancel, drain: draining || state.draining }))
            })
            .await
    }

    /// Claims up to `max` runs of `runner` for `worker`, each started (`running`, with its
    /// `run.started`), waiting up to `wait` for the first (woken at once by new work of the
    /// runner) or until `stop`.
    ///
    /// # Errors
    /// On a storage failure.
    pub async fn claim_waiting(
        &self,
        runner: &str,
        worker: &WorkerId,
        max: usize,
        wait: Duration,
        stop: &CancellationToken,
    ) -> Result<Vec<Claimed>, DbError> {
        let deadline = Instant::now() + wait;
        let waker = self.waker(runner);
        loop {
            // Armed before looking, so work dispatched in between is never missed.
            let notified = waker.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let mut claimed = Vec::new();
            while claimed.len() < max {
                match self.claim_and_start(runner, worker).await? {
                    Some(c) => claimed.push(c),
                    None => break,
                }
            }
            if !claimed.is_empty() || Instant::now() >= deadline {
                return Ok(claimed);
            }
            tokio::select! {
                () = &mut notified => {}
                () = tokio::time::sleep_until(deadline) => {}
                () = stop.cancelled() => return Ok(claimed),
            }
        }
    }

    /// Appends events of `run` numbered from `from_seq`, for `worker` at `attempt` (fenced).
    /// Seqs already stored are left as they were (appends are idempotent on seq); a `from_seq`
    /// past the log's end is refused.
    ///
    /// # Errors
    /// On a storage failure.
    pub async fn append_events(
        &self,
        run: &RunId,
        worker: &WorkerId,
        attempt: i64,
        from_seq: i64,
        events: Vec<EventData>,
    ) -> Result<Appended, DbError> {
        let (id, worker) = (run.clone(), worker.clone());
        let now = now_ms();
        let events: Vec<RunEvent> = events
            .into_iter()
            .zip(from_seq..)
            .map(|(data, seq)| RunEvent { seq, data, created_at: now })
            .collect();
        let (appended, fresh) = self
            .db
            .write(move |conn| {
                if runs::find_run(conn, &id)?.is_none() {
                    return Ok((Appended::NoRun, Vec::new()));
                }
                if !runs::holds(conn, &id, &worker, attempt)? {
                    return Ok((Appended::Fenced, Vec::new()));
                }
                let last = run_events::last_seq(conn, &id)?;
                if from_seq > last + 1 {
                    return Ok((Appended::Gap { next: last + 1 }, Vec::new()));
                }
                run_events::insert_events(conn, &id, &events)?;
                let fresh: Vec<RunEvent> = events.into_iter().filter(|e| e.seq > last).collect();
                let next = fresh.last().map_or(last, |e| e.seq) + 1;
                Ok((Appended::Next(next), fresh))
            })
            .await?;
        if !fresh.is_empty() {
            self.hub.publish(run, Arc::from(fresh));
        }
        Ok(appended)
    }

    /// Completes `run` for `worker` at `attempt` (fenced; idempotent for its holder).
    ///
    /// # Errors
    /// On a storage failure.
    pub async fn complete(
        &self,
        run: &RunId,
        worker: &WorkerId,
        attempt: i64,
        done: Completion,
    ) -> Result<Finished, DbError> {
        let id = run.clone();
        let found = self
            .db
            .read(move |conn| Ok(runs::find_run(conn, &id)?.map(|r| (r, run_events::last_seq(conn, &id)))))
            .await?;
        let Some((row, last)) = found else { return Ok(Finished::NoRun) };
        let ours = row.attempt == attempt && row.claimed_by.as_ref() == Some(worker);
        if ours && row.status.is_terminal() {
            return Ok(Finished::Already);
        }
        if !ours {
            return Ok(Finished::Fenced);
        }
        self.untrack_cancel(run);
        Ok(match self.finish(&row, worker, last? + 1, done).await? {
            Some(terminal) => Finished::Done(terminal),
            // Lost between the read and the write (swept, or completed by a retry meanwhile).
            None => Finished::Fenced,
        })
    }
}
