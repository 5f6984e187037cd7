//! Workers: the embedded pool inside `hearth serve`, and the execution of one claimed run.
//!
//! The embedded worker uses the same queue semantics as external ones: it registers under a
//! stable name (`HOST/embedded`, so a restart gives back what a crashed process held) with its
//! capacity (`--workers`, runs at once), claims with a lease, heartbeats, and completes fenced on
//! the attempt.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use crate::agent::{self, Outcome, Turn};
use crate::app::AppState;
use crate::db::{now_ms, runs, workers};
use crate::domain::event::RunEvent;
use crate::domain::profile::ResolvedProfile;
use crate::domain::run::RunStatus;
use crate::queue::events::{EventSink, SinkMode};
use crate::queue::{Claimed, Completion};
use crate::runs::RunInput;

/// Safety net: a claimer re-checks the queue this often even without a wake-up (covers work
/// dispatched by another process on the same database).
const IDLE_RECHECK: Duration = Duration::from_secs(5);

/// Starts the embedded worker for `runner`: one registered worker (`HOST/embedded`) that runs up
/// to `capacity` runs at once, after giving back what an earlier incarnation of it held.
///
/// # Errors
/// On a storage failure while registering.
pub async fn start_embedded(
    state: &AppState,
    runner: &str,
    capacity: usize,
) -> Result<(), crate::db::DbError> {
    let host = hostname();
    let name = format!("{host}/embedded");
    let (runner_name, worker_name) = (runner.to_owned(), name.clone());
    let worker_id = state
        .db()
        .write(move |conn| {
            let now = now_ms();
            let new = workers::NewWorker {
                name: &worker_name,
                runtime: &runner_name,
                version: env!("CARGO_PKG_VERSION"),
                hostname: &host,
                capacity: i64::try_from(capacity).unwrap_or(i64::MAX),
                embedded: true,
            };
            workers::upsert_worker(conn, &new, now)
        })
        .await?;
    let max_attempts = i64::from(state.config().queue.max_attempts);
    for (run, attempt, requeued) in state.queue().give_back(worker_id.as_str(), max_attempts).await? {
        if requeued {
            tracing::warn!(run.id = %run, attempt, worker = %name, "re-queued a run this worker held before a restart");
        } else {
            tracing::error!(run.id = %run, attempt, worker = %name, "failed a run after its last attempt (HEARTH_MAX_ATTEMPTS)");
        }
    }
    let slots = Arc::new(tokio::sync::Semaphore::new(capacity.max(1)));
    state.queue().set_local(crate::queue::Local {
        runner: runner.to_owned(),
        worker: worker_id.to_string(),
        slots: Arc::clone(&slots),
    });
    let (claimer, runner) = (state.clone(), runner.to_owned());
    let id = worker_id.to_string();
    state.tasks().spawn(async move { claim_loop(claimer, runner, id, slots).await });
    let heartbeat_state = state.clone();
    state.tasks().spawn(async move { heartbeat_loop(heartbeat_state, vec![worker_id]).await });
    Ok(())
}

fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// Every HEARTH_HEARTBEAT_S: refreshes the embedded workers' heartbeats and extends the leases
/// of the runs they hold, in one transaction.
async fn heartbeat_loop(state: AppState, ids: Vec<crate::ids::WorkerId>) {
    let every = Duration::from_secs(state.config().queue.heartbeat_s);
    let lease_ms = i64::try_from(state.config().queue.lease_s.saturating_mul(1000)).unwrap_or(i64::MAX);
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = state.shutdown().cancelled() => return,
        }
        let ids = ids.clone();
        let beat = state
            .db()
            .write(move |conn| {
                let now = now_ms();
                for id in &ids {
                    workers::touch_worker(conn, id, now)?;
                    runs::extend_leases(conn, id.as_str(), now + lease_ms, now)?;
                }
                Ok(())
            })
            .await;
        if let Err(e) = beat {
            tracing::warn!(error = %e, "embedded worker heartbeat failed");
        }
    }
}

/// Claims runs from the queue while a slot is free, executing each in its own task. Arms its
/// wake-up before looking, so work dispatched in between is never missed. (Runs dispatched
/// while a slot is free are taken at dispatch and never reach this loop.)
async fn claim_loop(state: AppState, runner: String, worker: String, slots: Arc<tokio::sync::Semaphore>) {
    let waker = state.queue().waker(&runner);
    let shutdown = state.shutdown().clone();
    while !shutdown.is_cancelled() {
        let slot = tokio::select! {
            slot = Arc::clone(&slots).acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => return,
            },
            () = shutdown.cancelled() => return,
        };
        let notified = waker.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        match state.queue().claim_and_start(&runner, &worker).await {
            Ok(Some(claimed)) => spawn_execution(&state, claimed, slot),
            Ok(None) => {
                drop(slot);
                tokio::select! {
                    () = &mut notified => {}
                    () = shutdown.cancelled() => {}
                    () = tokio::time::sleep(IDLE_RECHECK) => {}
                }
            }
            Err(e) => {
                drop(slot);
                tracing::error!(error = %e, worker, "claim failed; retrying in 1 s");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Executes a claimed run in its own task, holding `slot` (of the in-process worker that
/// claimed it) until it ends.
pub fn spawn_execution(state: &AppState, claimed: Claimed, slot: tokio::sync::OwnedSemaphorePermit) {
    let task_state = state.clone();
    state.tasks().spawn(async move {
        let worker = claimed.run.claimed_by.clone().unwrap_or_default();
        execute(&task_state, claimed, &worker).await;
        drop(slot);
    });
}

/// Executes a run taken at dispatch on the caller's own task (a non-streamed chat turn: no
/// task hand-off, no wake-ups) and returns its terminal event once recorded. If the caller is
/// dropped before the end — the client hung up — the turn stops with it (upstream call and
/// tools included) and the run is recorded as cancelled.
pub async fn execute_here(
    state: &AppState,
    claimed: Claimed,
    slot: tokio::sync::OwnedSemaphorePermit,
) -> Option<RunEvent> {
    let worker = claimed.run.claimed_by.clone().unwrap_or_default();
    let mut guard = Abandon { state: state.clone(), run: Some(claimed.run.clone()), worker: worker.clone() };
    let terminal = execute(state, claimed, &worker).await;
    guard.run = None;
    drop(slot);
    terminal
}

/// Records a run executed on a request as cancelled when the request is dropped mid-turn.
struct Abandon {
    state: AppState,
    run: Option<crate::queue::RunRow>,
    worker: String,
}

impl Drop for Abandon {
    fn drop(&mut self) {
        let Some(run) = self.run.take() else { return };
        let (state, worker) = (self.state.clone(), std::mem::take(&mut self.worker));
        tracing::info!(run.id = %run.id, "client went away: cancelling the run");
        self.state.tasks().spawn(async move {
            if let Err(e) = state.queue().abandon(&run, &worker).await {
                tracing::warn!(error = %e, run.id = %run.id, "could not record the abandoned run");
            }
        });
    }
}

/// Executes a claimed run to its end and records the outcome; returns its terminal event
/// (`None` when it could not start or had moved on to another holder).
pub async fn execute(state: &AppState, claimed: Claimed, worker: &str) -> Option<RunEvent> {
    let run = claimed.run.clone();
    let queue = state.queue();
    let cancel = queue.track_cancel(&run.id);
    if run.cancel_requested {
        cancel.cancel();
    }
    if run.status != RunStatus::Running {
        // Claimed without starting (an external-protocol claim): start it now.
        match queue.start(&claimed, worker).await {
            Ok(true) => {}
            Ok(false) => {
                queue.untrack_cancel(&run.id);
                return None;
            }
            Err(e) => {
                tracing::error!(error = %e, run.id = %run.id, "could not start the run");
                queue.untrack_cancel(&run.id);
                return None;
            }
        }
    }
    let started_seq = if run.status == RunStatus::Running { claimed.next_seq } else { claimed.next_seq + 1 };
    let (completion, next_seq) = match build_turn(state, &claimed) {
        Ok((turn, input_messages)) => {
            let mode = if turn.stream { SinkMode::Eager } else { SinkMode::HoldUntilTool };
            let sink = EventSink::start(
                state.db().clone(),
                Arc::clone(queue.hub()),
                run.id.clone(),
                started_seq,
                mode,
                claimed.unstored.then(|| queue.drafts().clone()),
            );
            let upstream = Arc::clone(&turn.upstream_nanos);
            let outcome = agent::run_turn(turn, &sink, &cancel).await;
            let (next, tail) = sink.finish(started_seq).await;
            let mut completion = completion_of(outcome, input_messages);
            completion.upstream_ms = upstream.load(std::sync::atomic::Ordering::Relaxed) as f64 / 1e6;
            completion.tail = tail;
            (completion, next)
        }
        Err(message) => (failure(&message, "invalid_run"), started_seq),
    };
    queue.untrack_cancel(&run.id);
    match queue.finish(&run, worker, next_seq, completion).await {
        Ok(Some(terminal)) => Some(terminal),
        Ok(None) => {
            tracing::warn!(run.id = %run.id, worker, "the run moved on before this worker finished it");
            None
        }
        Err(e) => {
            tracing::error!(error = %e, run.id = %run.id, "could not record the run's outcome");
            None
        }
    }
}

fn build_turn(
    state: &AppState,
    claimed: &Claimed,
) -> Result<(Turn, Vec<crate::domain::message::Message>), String> {
    use serde::Deserialize as _;
    let input: RunInput =
        serde_json::from_str(&claimed.run.input).map_err(|e| format!("stored run input: {e}"))?;
    let profile = ResolvedProfile::deserialize(&*claimed.run.resolved_profile)
        .map_err(|e| format!("stored resolved profile: {e}"))?;
    let model = state
        .models()
        .resolve(&profile.model)
        .map_err(|e| format!("model `{}` is no longer available: {e}", profile.model))?;
    let mut messages = Vec::with_capacity(claimed.history.len() + input.messages.len() + 1);
    let mut options = input.options;
    if let Some(agent) = &model.agent {
        if let Some(system) = &agent.system {
            messages.push(crate::domain::message::Message::text(
                crate::domain::message::Role::System,
                system.clone(),
            ));
        }
        options.temperature = options.temperature.or(agent.temperature);
    }
    messages.extend(claimed.history.iter().cloned());
    messages.extend(input.messages.iter().cloned());
    let turn = Turn {
        model: model.chat,
        model_name: model.model,
        messages,
        client_tools: input.tools,
        server_tools: state.tools(),
        allowed_tools: profile.tools,
        max_steps: profile.max_steps,
        options,
        tool_timeout: Duration::from_secs(state.config().agent.tool_timeout_s),
        stream: input.stream,
        upstream_nanos: Arc::default(),
    };
    Ok((turn, input.messages))
}

fn failure(message: &str, code: &str) -> Completion {
    Completion {
        status: RunStatus::Failed,
        output: None,
        usage: None,
        error: Some(json!({"message": message, "code": code})),
        messages: Vec::new(),
        upstream_ms: 0.0,
        tail: Vec::new(),
    }
}

fn completion_of(outcome: Outcome, input_messages: Vec<crate::domain::message::Message>) -> Completion {
    match outcome {
        Outcome::Completed { content, tool_calls, messages, usage } => {
            let calls: Vec<_> = tool_calls
                .iter()
                .map(|c| json!({"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}))
                .collect();
            let mut all = input_messages;
            all.extend(messages);
            Completion {
                status: RunStatus::Completed,
                output: Some(json!({"content": content, "tool_calls": calls})),
                usage: Some(json!(usage)),
                error: None,
                messages: all,
                upstream_ms: 0.0,
                tail: Vec::new(),
            }
        }
        Outcome::Failed { message, code, usage } => {
            Completion { usage: Some(json!(usage)), ..failure(&message, code) }
        }
        Outcome::Cancelled { usage } => Completion {
            status: RunStatus::Cancelled,
            output: None,
            usage: Some(json!(usage)),
            error: Some(json!({"message": "cancelled on request", "code": "cancelled"})),
            messages: Vec::new(),
            upstream_ms: 0.0,
            tail: Vec::new(),
        },
    }
}
