//! A chat turn: started as a run, then followed to its end — waited on (answered whole) or
//! read event by event (streamed). A client that goes away cancels the run.

use std::sync::Arc;

use tokio::sync::OwnedSemaphorePermit;
use tokio_util::task::TaskTracker;

use super::{RunInput, Start, TurnError, Turns};
use crate::auth::Principal;
use crate::domain::event::{Completed, EventData, EventType, RunEvent};
use crate::domain::outcome::{ErrorCode, RunError};
use crate::ids::{RunId, SessionId};
use crate::queue::follow::Follower;
use crate::queue::{Claimed, OnBusy, Queue, RunRow};
use crate::worker::Executor;

/// A chat turn under way.
pub struct ChatTurn {
    run: RunRow,
    /// `None` once executed here (its terminal event returned).
    how: Option<How>,
    guard: CancelOnDrop,
    /// Set when no live worker serves the run's runner: how long to wait for a claim before
    /// giving up with 503 (checked once, before the turn is followed).
    no_worker: Option<std::time::Duration>,
    db: crate::db::Db,
    /// The attempt whose answer the client has started to receive (set once [`ChatTurn::head`]
    /// returned): a later attempt's events would repeat it.
    streaming: Option<i64>,
    /// The attempt seen executing so far.
    attempt: i64,
}

/// Where the turn's outcome comes from.
enum How {
    /// Taken at dispatch and answered whole: executed on the caller's task when it waits.
    Here(Arc<Executor>, Box<Claimed>, OwnedSemaphorePermit),
    /// Executed elsewhere (a task of its own, or a worker): followed through its event log.
    Follow(Follower),
}

impl Turns {
    /// Starts a chat turn (continuing `session` when given). A streamed turn starts executing
    /// at once; one answered whole that the in-process worker took runs when
    /// [`ChatTurn::outcome`] is awaited. The run may be stored only with its first events
    /// (`queue::drafts`): its caller answers only after them.
    ///
    /// # Errors
    /// Unknown model or session, or a storage failure.
    pub async fn start_chat(
        &self,
        principal: &Principal,
        input: RunInput,
        session: Option<SessionId>,
    ) -> Result<ChatTurn, TurnError> {
        self.start_chat_with(principal, input, session, RunId::new(), true).await
    }

    /// [`Turns::start_chat`] under a run id chosen beforehand; `known_later`: the run may be
    /// stored only with its first events (else it is stored at dispatch).
    pub(super) async fn start_chat_with(
        &self,
        principal: &Principal,
        input: RunInput,
        session: Option<SessionId>,
        id: RunId,
        known_later: bool,
    ) -> Result<ChatTurn, TurnError> {
        let stream = input.stream;
        // Follow the run before it exists: its first events are published as they commit.
        let follower = Follower::fresh(self.db.clone(), self.queue.hub(), id.clone());
        let start = Start { id, input, session, on_busy: OnBusy::Enqueue, known_later };
        let dispatched = self.dispatch(principal, start).await?;
        let mut guard = CancelOnDrop {
            queue: Arc::clone(&self.queue),
            tasks: self.executor.tasks().clone(),
            run: Some(dispatched.run.clone()),
        };
        let how = match dispatched.taken {
            Some((claimed, slot)) if !stream => {
                // The executor records a cancel itself if the caller goes away.
                guard.disarm();
                How::Here(Arc::clone(&self.executor), Box::new(claimed), slot)
            }
            Some((claimed, slot)) => {
                self.executor.spawn(claimed, slot);
                How::Follow(follower)
            }
            None => How::Follow(follower),
        };
        let no_worker = match &how {
            How::Follow(_) if !self.queue.has_live_worker(&dispatched.run.runner).await? => {
                Some(self.no_worker_wait)
            }
            _ => None,
        };
        let attempt = dispatched.run.attempt;
        Ok(ChatTurn {
            run: dispatched.run,
            how: Some(how),
            guard,
            no_worker,
            db: self.db.clone(),
            streaming: None,
            attempt,
        })
    }
}

impl Turns {
    /// The chat turn of a run started before (a retry with the same `Idempotency-Key`): its
    /// events from the first, so its answer is replayed, or followed while it runs. Going away
    /// cancels it, as for the request that started it.
    pub(super) fn resume_chat(&self, run: RunRow) -> ChatTurn {
        let follower = Follower::new(self.db.clone(), self.queue.hub(), run.id.clone(), 0);
        let guard = CancelOnDrop {
            queue: Arc::clone(&self.queue),
            tasks: self.executor.tasks().clone(),
            run: (!run.status.is_terminal()).then(|| run.clone()),
        };
        let attempt = run.attempt;
        ChatTurn {
            run,
            how: Some(How::Follow(follower)),
            guard,
            no_worker: None,
            db: self.db.clone(),
            streaming: None,
            attempt,
        }
    }
}

impl ChatTurn {
    /// The run, as dispatched.
    #[must_use]
    pub fn run(&self) -> &RunRow {
        &self.run
    }

    /// Waits for the turn's end: its answer, or the error it ended with.
    ///
    /// # Errors
    /// [`TurnError::Ended`] when the run failed or was cancelled, or a storage failure.
    pub async fn outcome(mut self) -> Result<Completed, TurnError> {
        self.wait_for_a_worker().await?;
        let terminal = match self.how.take() {
            Some(How::Here(executor, claimed, slot)) => executor.execute_here(*claimed, slot).await,
            Some(How::Follow(mut follower)) => loop {
                match follower.next().await? {
                    Some(event) if event.kind().is_terminal() => break Some(event),
                    Some(_) => {}
                    None => break None,
                }
            },
            None => None,
        };
        self.guard.disarm();
        ended(terminal.ok_or(TurnError::Unrecorded)?.data)
    }

    /// The turn's first events, up to its first text, tool start, or end — what a stream must
    /// wait for before it answers, so a turn that fails before any output gets an error status.
    ///
    /// # Errors
    /// [`TurnError::Ended`] when the run failed or was cancelled before any output.
    pub async fn head(&mut self) -> Result<Vec<RunEvent>, TurnError> {
        self.wait_for_a_worker().await?;
        let mut head = Vec::new();
        loop {
            let Some(event) = self.next().await? else { return Err(TurnError::Unrecorded) };
            let kind = event.kind();
            if matches!(kind, EventType::Failed | EventType::Cancelled) {
                return Err(ended(event.data).err().unwrap_or(TurnError::Unrecorded));
            }
            let substantive =
                matches!(kind, EventType::TextDelta | EventType::ToolStarted) || kind.is_terminal();
            head.push(event);
            if substantive {
                self.streaming = Some(self.attempt);
                return Ok(head);
            }
        }
    }

    /// When no live worker serves the run's runner: waits (bounded) for a worker to claim the
    /// run anyway, else cancels it and fails fast with [`TurnError::NoWorker`] — instead of
    /// leaving the client hanging until it gives up.
    async fn wait_for_a_worker(&mut self) -> Result<(), TurnError> {
        let Some(wait) = self.no_worker.take() else { return Ok(()) };
        let deadline = tokio::time::Instant::now() + wait;
        let hub = self.guard.queue.hub();
        let mut probe = Follower::new(self.db.clone(), hub, self.run.id.clone(), 0);
        loop {
            let batch = probe.next_batch(Some(deadline)).await?;
            if batch.events.iter().any(|e| e.kind() == EventType::Started) || batch.closed {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                break;
            }
        }
        let error = TurnError::NoWorker { runner: self.run.runner.clone(), waited_s: wait.as_secs() };
        tracing::warn!(run.id = %self.run.id, runner = %self.run.runner, "no live worker took the chat turn: cancelling it");
        let reason = RunError::new(ErrorCode::Cancelled, error.to_string());
        self.guard.queue.cancel_with(&self.run, reason).await?;
        self.guard.disarm();
        Err(error)
    }

    /// The turn's next event, `None` after its terminal one. A turn answered whole that the
    /// in-process worker took is executed here first.
    ///
    /// # Errors
    /// On a storage failure.
    pub async fn next(&mut self) -> Result<Option<RunEvent>, TurnError> {
        let event = match &mut self.how {
            Some(How::Follow(follower)) => follower.next().await?,
            Some(How::Here(..)) => match self.how.take() {
                Some(How::Here(executor, claimed, slot)) => executor.execute_here(*claimed, slot).await,
                _ => None,
            },
            None => None,
        };
        if let Some(RunEvent { data: EventData::Started(started), .. }) = &event {
            self.attempt = started.attempt;
            if self.streaming.is_some_and(|a| a != started.attempt) {
                // Left armed: dropping the turn cancels the retried run.
                return Err(TurnError::Retried { attempt: started.attempt });
            }
        }
        if event.as_ref().is_none_or(|e| e.kind().is_terminal()) {
            self.guard.disarm();
        }
        Ok(event)
    }
}

impl Drop for ChatTurn {
    /// A turn taken at dispatch to run here and dropped before it ran (its caller went away) is
    /// recorded as cancelled, and its slot given back: it is never left `running`.
    fn drop(&mut self) {
        let Some(How::Here(_, claimed, slot)) = self.how.take() else { return };
        let queue = Arc::clone(&self.guard.queue);
        tracing::info!(run.id = %claimed.run.id, "client went away before its turn ran: cancelling the run");
        self.guard.tasks.spawn(async move {
            if let Err(e) = queue.abandon(&claimed.run, &claimed.worker).await {
                tracing::warn!(error = %e, run.id = %claimed.run.id, "could not record the abandoned run");
            }
            drop(slot);
        });
    }
}

/// The answer of a terminal event, or the error it ended with.
fn ended(data: EventData) -> Result<Completed, TurnError> {
    match data {
        EventData::Completed(completed) => Ok(completed),
        EventData::Failed(end) | EventData::Cancelled(end) => Err(TurnError::Ended(Box::new(end))),
        _ => Err(TurnError::Unrecorded),
    }
}

/// Cancels the run if the client goes away before it ended.
struct CancelOnDrop {
    queue: Arc<Queue>,
    tasks: TaskTracker,
    run: Option<RunRow>,
}

impl CancelOnDrop {
    fn disarm(&mut self) {
        self.run = None;
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(run) = self.run.take() {
            let queue = Arc::clone(&self.queue);
            tracing::info!(run.id = %run.id, "client went away: cancelling the run");
            self.tasks.spawn(async move {
                if let Err(e) = queue.cancel(&run).await {
                    tracing::warn!(error = %e, run.id = %run.id, "could not cancel the abandoned run");
                }
            });
        }
    }
}
