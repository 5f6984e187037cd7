//! Workers: the execution of one claimed run ([`Executor`]), and the embedded pool inside
//! `hearth serve` ([`embedded`]).
//!
//! An executor runs the agent loop on a claimed run: it builds the turn from the stored input
//! and resolved profile, chooses the turn's tools for its organization and user, writes its
//! events through the queue's event sink, and ends it, fenced on the attempt.

pub mod embedded;
pub mod remote;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::task::TaskTracker;

use crate::agent::tools::{Toolbox, TurnScope};
use crate::agent::{self, Outcome, Turn};
use crate::domain::event::RunEvent;
use crate::domain::input::RunInput;
use crate::domain::message::{Message, Role};
use crate::domain::outcome::{ErrorCode, RunError, RunOutcome, RunOutput};
use crate::domain::profile::ResolvedProfile;
use crate::domain::run::RunStatus;
use crate::ids::WorkerId;
use crate::llm::Models;
use crate::queue::sink::{EventSink, Holder, SinkMode};
use crate::queue::{Claimed, Completion, Queue, RunRow};

/// Tries at recording a run's end before letting it go (see [`Queue::release`]).
const FINISH_TRIES: u32 = 5;
/// The pause after the first failed try; it doubles after each (0.5 + 1 + 2 + 4 s in all).
const FINISH_RETRY_FIRST: std::time::Duration = std::time::Duration::from_millis(500);

/// Executes claimed runs in this process.
pub struct Executor {
    queue: Arc<Queue>,
    models: Arc<Models>,
    toolbox: Arc<Toolbox>,
    tasks: TaskTracker,
    tool_timeout: Duration,
}

impl Executor {
    /// An executor of `queue`'s runs, spawning through `tasks` (so shutdown waits for them).
    #[must_use]
    pub fn new(
        queue: Arc<Queue>,
        models: Arc<Models>,
        toolbox: Arc<Toolbox>,
        tasks: TaskTracker,
        tool_timeout: Duration,
    ) -> Self {
        Self { queue, models, toolbox, tasks, tool_timeout }
    }

    /// Where this executor's tasks are tracked.
    #[must_use]
    pub fn tasks(&self) -> &TaskTracker {
        &self.tasks
    }

    /// Executes a claimed run in its own task, holding `slot` (of the in-process worker that
    /// claimed it) until it ends.
    pub fn spawn(self: &Arc<Self>, claimed: Claimed, slot: tokio::sync::OwnedSemaphorePermit) {
        // Cancellable from now on, not only once the task runs: a client that goes away at once
        // (or `POST …/cancel`) reaches the turn even before it started.
        let cancel = self.queue.track_cancel(&claimed.run.id);
        let executor = Arc::clone(self);
        self.tasks.spawn(async move {
            executor.execute_with(claimed, cancel).await;
            drop(slot);
        });
    }

    /// Executes a run taken at dispatch on the caller's own task (a non-streamed chat turn: no
    /// task hand-off, no wake-ups) and returns its terminal event once recorded. If the caller
    /// is dropped before the end — the client hung up — the turn stops with it (upstream call
    /// and tools included) and the run is recorded as cancelled.
    pub async fn execute_here(
        &self,
        claimed: Claimed,
        slot: tokio::sync::OwnedSemaphorePermit,
    ) -> Option<RunEvent> {
        let mut guard = Abandon {
            queue: Arc::clone(&self.queue),
            tasks: self.tasks.clone(),
            run: Some(claimed.run.clone()),
            worker: claimed.worker.clone(),
        };
        let terminal = self.execute(claimed).await;
        guard.run = None;
        drop(slot);
        terminal
    }

    /// Executes a claimed run to its end and records the outcome; returns its terminal event
    /// (`None` when it could not start or had moved on to another holder).
    pub async fn execute(&self, claimed: Claimed) -> Option<RunEvent> {
        let cancel = self.queue.track_cancel(&claimed.run.id);
        self.execute_with(claimed, cancel).await
    }

    /// [`Executor::execute`] with the run's cancel signal already registered.
    async fn execute_with(
        &self,
        claimed: Claimed,
        cancel: tokio_util::sync::CancellationToken,
    ) -> Option<RunEvent> {
        let (run, worker) = (claimed.run.clone(), claimed.worker.clone());
        let queue = &self.queue;
        if run.cancel_requested {
            cancel.cancel();
        }
        if run.status != RunStatus::Running && !self.start(&claimed).await {
            queue.untrack_cancel(&run.id);
            return None;
        }
        let started_seq =
            if run.status == RunStatus::Running { claimed.next_seq } else { claimed.next_seq + 1 };
        let (completion, next_seq) = match self.build_turn(&claimed) {
            Ok((turn, input_messages)) => {
                let mode = if turn.stream { SinkMode::Eager } else { SinkMode::HoldUntilTool };
                let sink = EventSink::start(
                    queue.db().clone(),
                    Arc::clone(queue.hub()),
                    run.id.clone(),
                    started_seq,
                    mode,
                    claimed.unstored.then(|| queue.drafts().clone()),
                    Some(Holder { worker: worker.clone(), attempt: run.attempt, on_lost: cancel.clone() }),
                );
                let upstream = Arc::clone(&turn.upstream_nanos);
                let outcome = agent::run_turn_guarded(turn, &sink, &cancel).await;
                let (next, tail) = sink.finish(started_seq).await;
                let mut completion = completion_of(outcome, input_messages);
                completion.upstream_ms = upstream.load(std::sync::atomic::Ordering::Relaxed) as f64 / 1e6;
                completion.tail = tail;
                (completion, next)
            }
            Err(message) => {
                (crate::queue::failed(RunError::new(ErrorCode::InvalidRun, message)), started_seq)
            }
        };
        queue.untrack_cancel(&run.id);
        if queue.drafts().holds(&run.id) {
            // Stored whole with its end, on the request that runs it: a failure is that
            // request's error (nothing was stored, nothing acknowledged), not worth a retry.
            return match queue.finish(&run, &worker, next_seq, completion).await {
                Ok(terminal) => terminal,
                Err(e) => {
                    tracing::error!(error = %e, run.id = %run.id, "could not store the run with its outcome");
                    None
                }
            };
        }
        let mut pause = FINISH_RETRY_FIRST;
        for tries in 1.. {
            match queue.finish(&run, &worker, next_seq, completion.clone()).await {
                Ok(Some(terminal)) => return Some(terminal),
                Ok(None) => {
                    tracing::warn!(run.id = %run.id, worker.id = %worker, "the run moved on before this worker finished it");
                    return None;
                }
                Err(e) if tries < FINISH_TRIES => {
                    tracing::error!(error = %e, run.id = %run.id, tries, "could not record the run's outcome; retrying");
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                }
                Err(e) => {
                    tracing::error!(
                        error = %e,
                        run.id = %run.id,
                        tries,
                        "could not record the run's outcome: letting its lease lapse so the sweeper re-queues it"
                    );
                    queue.release(&run.id, &worker);
                    return None;
                }
            }
        }
        None
    }

    /// Starts a run claimed without starting (an external-protocol claim); false when it could
    /// not start.
    async fn start(&self, claimed: &Claimed) -> bool {
        match self.queue.start(claimed).await {
            Ok(started) => started,
            Err(e) => {
                tracing::error!(error = %e, run.id = %claimed.run.id, "could not start the run");
                false
            }
        }
    }

    fn build_turn(&self, claimed: &Claimed) -> Result<(Turn, Vec<Message>), String> {
        let input: RunInput =
            serde_json::from_str(&claimed.run.input).map_err(|e| format!("stored run input: {e}"))?;
        let scope = TurnScope { org: &claimed.run.organization_id, user: claimed.run.user_id.as_deref() };
        let tools = TurnTools { toolbox: &self.toolbox, scope, timeout: self.tool_timeout };
        let mut turn =
            build_turn(&self.models, tools, &claimed.run.resolved_profile, input, &claimed.history)?;
        if let Some(note) = interrupted_note(&claimed.interrupted) {
            turn.0.messages.push(note);
        }
        Ok(turn)
    }
}

/// A turn's server-side tools: the toolbox, who they act for, and their timeout.
#[derive(Clone, Copy)]
pub struct TurnTools<'a> {
    /// Chooses them.
    pub toolbox: &'a Toolbox,
    /// For whom.
    pub scope: TurnScope<'a>,
    /// The longest one call may take.
    pub timeout: Duration,
}

/// The agent loop's turn for a run: the profile's model (and agent), the conversation so far
/// (`history`, the agent's system prompt first) and this turn's input. Returns the turn and
/// the input's messages (what the turn adds to the session before its answer). The embedded
/// and the external worker build turns alike.
///
/// # Errors
/// A model that is no longer available, as a message for the run's error.
pub fn build_turn(
    models: &Models,
    tools: TurnTools<'_>,
    profile: &ResolvedProfile,
    input: RunInput,
    history: &[Message],
) -> Result<(Turn, Vec<Message>), String> {
    let model = models
        .resolve(&profile.model)
        .map_err(|e| format!("model `{}` is no longer available: {e}", profile.model))?;
    let mut messages = Vec::with_capacity(history.len() + input.messages.len() + 1);
    let mut options = input.options;
    if let Some(agent) = &model.agent {
        if let Some(system) = &agent.system {
            messages.push(Message::text(Role::System, system.clone()));
        }
        options.temperature = options.temperature.or(agent.temperature);
    }
    messages.extend(history.iter().cloned());
    messages.extend(input.messages.iter().cloned());
    let turn = Turn {
        model: model.chat,
        model_name: model.model,
        messages,
        client_tools: input.tools,
        server_tools: tools.toolbox.for_turn(tools.scope),
        allowed_tools: profile.tools.clone(),
        max_steps: profile.max_steps,
        options,
        tool_timeout: tools.timeout,
        stream: input.stream,
        upstream_nanos: Arc::default(),
    };
    Ok((turn, input.messages))
}

/// What the model is told of the tool calls an earlier attempt of its turn started and never
/// finished: their outcome is unknown, so it must not repeat them blindly.
#[must_use]
pub fn interrupted_note(calls: &[crate::domain::event::ToolStarted]) -> Option<Message> {
    if calls.is_empty() {
        return None;
    }
    let list: Vec<String> = calls
        .iter()
        .map(|c| format!("- `{}` (call {}) with arguments {}", c.name, c.id, c.arguments))
        .collect();
    let text = format!(
        "Note from the runtime: an earlier attempt at this turn was interrupted while these tool calls were \
         running. Whether they took effect is unknown. Do not repeat them blindly: check their effect first \
         if you can, or tell the user.\n{}",
        list.join("\n")
    );
    Some(Message::text(Role::System, text))
}

/// Records a run executed on a request as cancelled when the request is dropped mid-turn.
struct Abandon {
    queue: Arc<Queue>,
    tasks: TaskTracker,
    run: Option<RunRow>,
    worker: WorkerId,
}

impl Drop for Abandon {
    fn drop(&mut self) {
        let Some(run) = self.run.take() else { return };
        let (queue, worker) = (Arc::clone(&self.queue), self.worker.clone());
        tracing::info!(run.id = %run.id, "client went away: cancelling the run");
        self.tasks.spawn(async move {
            if let Err(e) = queue.abandon(&run, &worker).await {
                tracing::warn!(error = %e, run.id = %run.id, "could not record the abandoned run");
            }
        });
    }
}

/// The completion of a turn that ended with `outcome`.
pub(crate) fn completion_of(outcome: Outcome, input_messages: Vec<Message>) -> Completion {
    let (outcome, usage, messages) = match outcome {
        Outcome::Completed { content, tool_calls, messages, usage } => {
            let mut all = input_messages;
            all.extend(messages);
            (RunOutcome::Completed(RunOutput { content: Some(content), tool_calls }), usage, all)
        }
        Outcome::Failed { error, usage } => (RunOutcome::Failed(error), usage, Vec::new()),
        Outcome::Cancelled { usage } => (
            RunOutcome::Cancelled(RunError::new(ErrorCode::Cancelled, "cancelled on request")),
            usage,
            Vec::new(),
        ),
    };
    Completion { outcome, usage, messages, upstream_ms: 0.0, tail: Vec::new() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::event::ToolStarted;

    #[test]
    fn interrupted_calls_are_reported_to_the_model_as_unknown() {
        assert!(interrupted_note(&[]).is_none());
        let call =
            ToolStarted { id: "c1".into(), name: "charge_card".into(), arguments: "{\"eur\":5}".into() };
        let note = interrupted_note(&[call]).unwrap();
        assert_eq!(note.role, Role::System);
        let text = note.content.unwrap();
        assert!(text.contains("charge_card") && text.contains("c1") && text.contains("unknown"), "{text}");
        assert!(text.contains("Do not repeat them blindly"), "{text}");
    }
}
