//! Workers and their leases: registration (which gives back what an earlier incarnation of the
//! worker held), heartbeats (which extend the leases of the runs a worker holds). The sweeper of
//! expired leases will live here too.

use std::sync::Arc;

use super::Queue;
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
        self.db
            .write(move |conn| {
                let now = now_ms();
                for id in &ids {
                    workers::touch_worker(conn, id, now)?;
                    runs::extend_leases(conn, id, now + lease_ms, now)?;
                }
                Ok(())
            })
            .await
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
}
