//! Workers and their leases: registration (which gives back what an earlier incarnation of the
//! worker held), heartbeats (which extend the leases of the runs a worker holds), and the sweep
//! that gives back the runs of a worker that is gone (its lease expired, or its heartbeat is
//! older than a lease).

use std::sync::{Arc, PoisonError};

use super::Queue;
use crate::db::runs::Held;
use crate::db::workers::{self, NewWorker};
use crate::db::{DbError, now_ms, run_events, runs, sessions};
use crate::domain::event::{Ended, EventData, RunEvent};
use crate::domain::outcome::{ErrorCode, RunError};
use crate::ids::{RunId, WorkerId};

/// A run a worker held when it stopped, and what became of it.
#[derive(Debug, Clone)]
pub struct GivenBack {
    /// The run.
    pub run: RunId,
    /// The attempt it is now at.
    pub attempt: i64,
    /// Back in the queue (else failed: it had used its attempts).
    pub requeued: bool,
}

impl Queue {
    /// Registers a worker under its name (keeping the id an earlier registration of that name
    /// had) and gives back what that earlier incarnation held ([`Queue::give_back`]).
    ///
    /// # Errors
    /// On a storage failure.
    pub async fn register_worker(&self, worker: NewWorker) -> Result<(WorkerId, Vec<GivenBack>), DbError> {
        let id = self.db.write(move |conn| workers::upsert_worker(conn, &worker, now_ms())).await?;
        let given_back = self.give_back(&id).await?;
        Ok((id, given_back))
    }

    /// Records the heartbeat of `workers` and extends the leases of the runs they hold, in one
    /// transaction.
    ///
    /// # Errors
    /// On a storage failure.
    pub async fn heartbeat(&self, workers: &[WorkerId]) -> Result<(), DbError> {
        let ids = workers.to_vec();
        let lease_ms = self.lease_ms();
        let released = self.released.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let moved_on = self
            .db
            .write(move |conn| {
                let now = now_ms();
                for id in &ids {
                    workers::touch_worker(conn, id, now)?;
                    runs::extend_leases(conn, id, now + lease_ms, now)?;
                }
                // Released runs keep a lapsed lease (whatever the extension above did) until the
                // sweeper has taken them: then they are forgotten.
                let mut moved_on = Vec::new();
                for (run, worker) in released {
                    if runs::end_lease(conn, &run, &worker, now)? == 0 {
                        moved_on.push((run, worker));
                    }
                }
                Ok(moved_on)
            })
            .await?;
        if !moved_on.is_empty() {
            self.released.lock().unwrap_or_else(PoisonError::into_inner).retain(|r| !moved_on.contains(r));
        }
        Ok(())
    }

    /// Lets go of a run this process executed but could not record the end of (every try
    /// failed: disk full, I/O errors): from the next heartbeat that can write, its lease is
    /// ended instead of extended, until the sweeper has re-queued it (attempt + 1) — it is never
    /// left `running` forever with its readers waiting.
    pub fn release(&self, run: &RunId, worker: &WorkerId) {
        tracing::warn!(run.id = %run, "a run whose end could not be recorded is let go: its lease lapses for the sweeper");
        self.released.lock().unwrap_or_else(PoisonError::into_inner).push((run.clone(), worker.clone()));
    }

    /// Gives back what `worker` held when it stopped: runs that have had HEARTH_MAX_ATTEMPTS
    /// fail with a clear error (and their terminal event); the others go back to the queue
    /// with attempt + 1 on the same runner.
    ///
    /// # Errors
    /// On a storage failure.
    pub async fn give_back(&self, worker: &WorkerId) -> Result<Vec<GivenBack>, DbError> {
        let (worker, max_attempts) = (worker.clone(), i64::from(self.settings.max_attempts));
        let (failed, requeued) = self
            .db
            .write(move |conn| {
                let now = now_ms();
                let mut failed = Vec::new();
                for (run, session, attempt) in runs::fail_exhausted_runs(conn, &worker, max_attempts, now)? {
                    let error = RunError::new(
                        ErrorCode::MaxAttemptsExceeded,
                        format!(
                            "gave up after {attempt} attempts: the worker holding the run stopped each time"
                        ),
                    );
                    let event = RunEvent {
                        seq: run_events::last_seq(conn, &run)? + 1,
                        data: EventData::Failed(Ended::new(error)),
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
            out.push(GivenBack { run, attempt, requeued: false });
        }
        out.extend(requeued.into_iter().map(|(run, attempt)| GivenBack { run, attempt, requeued: true }));
        if out.iter().any(|g| g.requeued) {
            self.wake_all();
        }
        Ok(out)
    }

    /// Gives back the runs whose holder is lost — lease expired, or the worker's heartbeat older
    /// than a lease — each fenced on its holder and attempt: re-queued with attempt + 1 on the
    /// same runner, or failed with `max_attempts_exceeded` once it has had HEARTH_MAX_ATTEMPTS.
    /// Runs on the node that may write, every heartbeat interval.
    ///
    /// # Errors
    /// On a storage failure.
    pub async fn sweep(&self) -> Result<Vec<GivenBack>, DbError> {
        let (lease_ms, max_attempts) = (self.lease_ms(), i64::from(self.settings.max_attempts));
        let (failed, requeued) = self
            .db
            .write(move |conn| {
                let now = now_ms();
                let (mut failed, mut requeued) = (Vec::new(), Vec::new());
                for held in runs::lost_runs(conn, now, now.saturating_sub(lease_ms))? {
                    if held.attempt >= max_attempts {
                        if let Some(event) = fail_lost(conn, &held, now)? {
                            failed.push((held, event));
                        }
                    } else if runs::requeue_held_run(conn, &held, now)? {
                        requeued.push(held);
                    }
                }
                Ok((failed, requeued))
            })
            .await?;
        let mut out = Vec::new();
        for (held, event) in failed {
            tracing::error!(run.id = %held.id, worker.id = %held.worker, attempt = held.attempt,
                "failed a run whose worker was lost, after its last attempt (HEARTH_MAX_ATTEMPTS)");
            self.hub.publish(&held.id, Arc::from(vec![event]));
            out.push(GivenBack { run: held.id, attempt: held.attempt, requeued: false });
        }
        for held in requeued {
            tracing::warn!(run.id = %held.id, worker.id = %held.worker, attempt = held.attempt + 1,
                "re-queued a run whose worker was lost (lease expired or heartbeat stale)");
            out.push(GivenBack { run: held.id, attempt: held.attempt + 1, requeued: true });
        }
        if out.iter().any(|g| g.requeued) {
            self.wake_all();
        }
        Ok(out)
    }
}

/// Fails a lost run that has used its attempts, with its terminal event; `None` when it had
/// moved on meanwhile.
fn fail_lost(conn: &rusqlite::Connection, held: &Held, now: i64) -> Result<Option<RunEvent>, DbError> {
    let error = RunError::new(
        ErrorCode::MaxAttemptsExceeded,
        format!("gave up after {} attempts: the worker holding the run was lost each time", held.attempt),
    );
    if !runs::fail_held_run(conn, held, &error, now)? {
        return Ok(None);
    }
    let event = RunEvent {
        seq: run_events::last_seq(conn, &held.id)? + 1,
        data: EventData::Failed(Ended::new(error)),
        created_at: now,
    };
    run_events::insert_events(conn, &held.id, std::slice::from_ref(&event))?;
    sessions::settle_session(conn, &held.session, now)?;
    Ok(Some(event))
}

/// Sweeps `queue` every `every` until `shutdown` ([`Queue::sweep`]).
pub async fn run_sweeper(
    queue: Arc<Queue>,
    every: std::time::Duration,
    shutdown: tokio_util::sync::CancellationToken,
) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = shutdown.cancelled() => return,
        }
        if let Err(e) = queue.sweep().await {
            tracing::warn!(error = %e, "lease sweep failed; will retry");
        }
    }
}
