//! Claims: a worker takes the oldest claimable run of its runner under a lease, and starts it.

use std::sync::Arc;

use super::{Claimed, Queue, claimed_line, started_event};
use crate::db::{DbError, messages, now_ms, run_events, runs};
use crate::domain::event::{EventData, RunEvent, ToolStarted};
use crate::domain::run::RunStatus;
use crate::ids::WorkerId;

impl Queue {
    /// Claims the next run of `runner` for `worker`, if any.
    ///
    /// # Errors
    /// On a storage failure.
    pub async fn claim(&self, runner: &str, worker: &WorkerId) -> Result<Option<Claimed>, DbError> {
        self.claim_inner(runner, worker, false).await
    }

    /// Claims the next run and marks it running with its `run.started` event, in one
    /// transaction (what an in-process worker does; `claimed` is never observed alone).
    ///
    /// # Errors
    /// On a storage failure.
    pub async fn claim_and_start(&self, runner: &str, worker: &WorkerId) -> Result<Option<Claimed>, DbError> {
        self.claim_inner(runner, worker, true).await
    }

    async fn claim_inner(
        &self,
        runner: &str,
        worker: &WorkerId,
        start: bool,
    ) -> Result<Option<Claimed>, DbError> {
        let (runner, worker) = (runner.to_owned(), worker.clone());
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
                let interrupted =
                    if run.attempt > 1 { interrupted_calls(conn, &run.id)? } else { Vec::new() };
                let mut started = None;
                if start && runs::mark_running(conn, &run.id, &worker, run.attempt, now)? {
                    let event = started_event(next_seq, &worker, run.attempt, now);
                    run_events::insert_events(conn, &run.id, std::slice::from_ref(&event))?;
                    run.status = RunStatus::Running;
                    run.started_at = run.started_at.or(Some(now));
                    next_seq += 1;
                    started = Some(event);
                }
                Ok(Some((Claimed { run, worker, history, next_seq, unstored: false, interrupted }, started)))
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
    pub async fn start(&self, claimed: &Claimed) -> Result<bool, DbError> {
        let (id, attempt, seq, worker) =
            (claimed.run.id.clone(), claimed.run.attempt, claimed.next_seq, claimed.worker.clone());
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
}

/// The tool calls earlier attempts of `run` started and never finished, from its log.
fn interrupted_calls(
    conn: &rusqlite::Connection,
    run: &crate::ids::RunId,
) -> Result<Vec<ToolStarted>, DbError> {
    let events = run_events::list_events_after(conn, run, 0, u32::MAX)?;
    let finished: std::collections::HashSet<&str> = events
        .iter()
        .filter_map(|e| match &e.data {
            EventData::ToolFinished(f) => Some(f.id.as_str()),
            _ => None,
        })
        .collect();
    Ok(events
        .iter()
        .filter_map(|e| match &e.data {
            EventData::ToolStarted(s) if !finished.contains(s.id.as_str()) => Some(s.clone()),
            _ => None,
        })
        .collect())
}
