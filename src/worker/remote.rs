//! `hearth worker`: an external worker of one runner over the worker protocol
//! (docs/worker-protocol.md), running the same agent loop as the embedded pool.
//!
//! It registers, heartbeats every `heartbeat_s` (cancelling the runs the answer names, draining
//! when told), long-polls for claims while a slot is free, and executes each claimed run: its
//! events go back in appends (batched like the embedded sink: the first at once, then every
//! few ms), its outcome in a completion. A 409 on either means the run moved on: the attempt
//! stops at once. SIGTERM (or SIGINT) drains — no new claims, the held runs finish, the
//! heartbeat goes on — then it exits 0; a second one (or SIGQUIT) cancels what it holds.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{TurnTools, build_turn, completion_of};
use crate::agent::{self, tools::Toolbox, tools::TurnScope};
use crate::domain::event::{Emit, EventData};
use crate::domain::input::RunInput;
use crate::domain::message::Message;
use crate::domain::outcome::{ErrorCode, RunError, RunOutcome};
use crate::domain::profile::ResolvedProfile;
use crate::ids::OrgId;
use crate::llm::Models;
use crate::llm::http::{Client, Upstream};

/// Longest an answer of the server may be.
const MAX_ANSWER: usize = 64 << 20;
/// How long an event waits for company before it is appended.
const GATHER: Duration = Duration::from_millis(5);
/// Tries of an append or a completion that fails on the way (idempotent: safe to repeat).
const TRIES: u32 = 5;

/// What `hearth worker` runs with.
pub struct RemoteSettings {
    /// The server's base URL.
    pub server: String,
    /// The worker token (a secret: never logged).
    pub token: String,
    /// The runner it serves.
    pub runner: String,
    /// Its registered name.
    pub name: String,
    /// Runs at once.
    pub concurrency: usize,
    /// Exit after one run.
    pub once: bool,
    /// The longest one tool call may take.
    pub tool_timeout: Duration,
}

/// The server, as the protocol's calls.
#[derive(Clone)]
struct Server {
    client: Client,
    base: String,
    auth: String,
}

/// A call's failure: the server's answer, or none at all.
#[derive(Debug)]
enum CallError {
    /// The server answered this status and body.
    Status(u16, Value),
    /// No answer (connection, timeout, unreadable body).
    Transport(String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Status(status, body) => {
                let message = body.pointer("/error/message").and_then(Value::as_str).unwrap_or("no message");
                write!(f, "the server answered {status}: {message}")
            }
            Self::Transport(e) => write!(f, "the server could not be reached: {e}"),
        }
    }
}

impl Server {
    async fn post(&self, path: &str, body: &Value) -> Result<Value, CallError> {
        let endpoint =
            Upstream::new(self.client.clone(), &self.base, path, &[("authorization", self.auth.clone())])
                .map_err(CallError::Transport)?;
        let response = endpoint.post(body, &[]).await.map_err(|e| CallError::Transport(e.to_string()))?;
        let (parts, mut incoming) = response.into_parts();
        let bytes = endpoint
            .read_body(&mut incoming, MAX_ANSWER)
            .await
            .map_err(|e| CallError::Transport(e.to_string()))?;
        let answer: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if parts.status.is_success() {
            Ok(answer)
        } else {
            Err(CallError::Status(parts.status.as_u16(), answer))
        }
    }

    /// `post`, again on failures that carry no answer or a 5xx (the call is idempotent).
    async fn post_retrying(&self, path: &str, body: &Value) -> Result<Value, CallError> {
        let mut tries = 0;
        loop {
            match self.post(path, body).await {
                Err(CallError::Transport(_)) | Err(CallError::Status(500..=599, _)) if tries + 1 < TRIES => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(200 * u64::from(tries))).await;
                }
                other => return other,
            }
        }
    }
}

/// A claim, as the protocol hands it out.
#[derive(Debug, Deserialize)]
struct ClaimWire {
    run: RunWire,
    session: SessionWire,
    resolved_profile: ResolvedProfile,
    attempt: i64,
    next_seq: i64,
    organization_id: OrgId,
    #[serde(default)]
    user_id: Option<String>,
    #[serde(default)]
    interrupted_tool_calls: Vec<crate::domain::event::ToolStarted>,
}

#[derive(Debug, Deserialize)]
struct RunWire {
    id: String,
    input: RunInput,
}

#[derive(Debug, Deserialize)]
struct SessionWire {
    #[serde(default)]
    messages: Vec<Message>,
}

/// The worker while it runs.
struct Worker {
    server: Server,
    /// Its id, as its last registration answered.
    id: Mutex<String>,
    /// What it registers with (again, when the server no longer knows it).
    registration: Value,
    models: Arc<Models>,
    toolbox: Arc<Toolbox>,
    settings: RemoteSettings,
    /// The cancel signal of each run it executes.
    running: Mutex<HashMap<String, CancellationToken>>,
    /// Cancelled on the first SIGTERM, or when the server says drain.
    drain: CancellationToken,
    /// Cancelled on the second signal: everything held stops.
    kill: CancellationToken,
}

/// Runs `hearth worker` until it has drained.
///
/// # Errors
/// When it cannot register (the message says why: a bad token, a version below the minimum…).
pub async fn run(settings: RemoteSettings, models: Arc<Models>, toolbox: Arc<Toolbox>) -> anyhow::Result<()> {
    let client = crate::llm::http::client(Duration::from_secs(10), Duration::from_secs(120))
        .map_err(|e| anyhow::anyhow!(e))?;
    let server = Server { client, base: settings.server.clone(), auth: format!("Bearer {}", settings.token) };
    let body = json!({
        "name": settings.name, "runtime": settings.runner, "version": env!("CARGO_PKG_VERSION"),
        "hostname": super::embedded::hostname(),
        "capacity": settings.concurrency,
    });
    let registered = server
        .post_retrying("v1/workers/register", &body)
        .await
        .map_err(|e| anyhow::anyhow!("could not register with {}: {e}", settings.server))?;
    let registration = body;
    let id = registered["worker_id"].as_str().unwrap_or_default().to_owned();
    let every = Duration::from_secs(registered["heartbeat_s"].as_u64().unwrap_or(10).max(1));
    tracing::info!(worker.id = %id, worker.name = %settings.name, runner = %settings.runner, "registered");
    let worker = Arc::new(Worker {
        server,
        id: Mutex::new(id),
        registration,
        models,
        toolbox,
        settings,
        running: Mutex::default(),
        drain: CancellationToken::new(),
        kill: CancellationToken::new(),
    });
    let background = TaskTracker::new();
    background.spawn(watch_signals(worker.drain.clone(), worker.kill.clone()));
    let stopped = CancellationToken::new();
    background.spawn(heartbeat_loop(Arc::clone(&worker), every, stopped.clone()));
    let runs = TaskTracker::new();
    claim_loop(&worker, &runs).await;
    runs.close();
    tracing::info!(in_flight = runs.len(), "draining: finishing the runs held");
    runs.wait().await;
    stopped.cancel();
    background.close();
    tracing::info!("drained; exiting");
    Ok(())
}

/// First SIGTERM/SIGINT: drain. Second (or SIGQUIT): cancel what is held.
async fn watch_signals(drain: CancellationToken, kill: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int), Ok(mut quit)) =
        (signal(SignalKind::terminate()), signal(SignalKind::interrupt()), signal(SignalKind::quit()))
    else {
        tracing::warn!("cannot watch signals: SIGTERM will not drain");
        return;
    };
    loop {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
            _ = quit.recv() => { kill.cancel(); drain.cancel(); return; }
            () = kill.cancelled() => return,
        }
        if drain.is_cancelled() {
            tracing::warn!("second signal: cancelling the runs held");
            kill.cancel();
            return;
        }
        tracing::info!("signal received: draining (no new claims; the runs held finish)");
        drain.cancel();
    }
}

async fn heartbeat_loop(worker: Arc<Worker>, every: Duration, stopped: CancellationToken) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = stopped.cancelled() => return,
        }
        let in_flight = worker.running.lock().unwrap_or_else(PoisonError::into_inner).len();
        let status = if worker.drain.is_cancelled() { "draining" } else { "active" };
        let path = format!("v1/workers/{}/heartbeat", worker.id());
        match worker.server.post(&path, &json!({"in_flight": in_flight, "status": status})).await {
            Err(CallError::Status(404, _)) => worker.register_again().await,
            Ok(answer) => {
                if answer["drain"] == true && !worker.drain.is_cancelled() {
                    tracing::info!("the server asks this worker to drain");
                    worker.drain.cancel();
                }
                let running = worker.running.lock().unwrap_or_else(PoisonError::into_inner);
                for run in answer["cancel"].as_array().into_iter().flatten().filter_map(Value::as_str) {
                    if let Some(token) = running.get(run) {
                        tracing::info!(run.id = run, "cancel asked for: stopping the run");
                        token.cancel();
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "heartbeat failed; the runs held keep their lease until it expires")
            }
        }
    }
}

/// Claims while a slot is free, until drained (or, with `--once`, after one run).
async fn claim_loop(worker: &Arc<Worker>, runs: &TaskTracker) {
    let slots = Arc::new(Semaphore::new(worker.settings.concurrency.max(1)));
    while !worker.drain.is_cancelled() {
        let path = format!("v1/workers/{}/claim", worker.id());
        let slot = tokio::select! {
            slot = Arc::clone(&slots).acquire_owned() => match slot { Ok(s) => s, Err(_) => return },
            () = worker.drain.cancelled() => return,
        };
        let max = if worker.settings.once { 1 } else { slots.available_permits() + 1 };
        let body = json!({"max": max, "wait_s": 30});
        let answer = tokio::select! {
            answer = worker.server.post(&path, &body) => answer,
            () = worker.drain.cancelled() => return,
        };
        let claims = match answer {
            Ok(answer) => answer["runs"].as_array().cloned().unwrap_or_default(),
            Err(CallError::Status(404, _)) => {
                worker.register_again().await;
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "claim failed; retrying in 1 s");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let mut slot = Some(slot);
        for claim in claims {
            let Some(held) = slot.take().or_else(|| Arc::clone(&slots).try_acquire_owned().ok()) else {
                break;
            };
            let worker = Arc::clone(worker);
            runs.spawn(async move {
                worker.execute(claim).await;
                drop(held);
            });
        }
        if worker.settings.once && !runs.is_empty() {
            worker.drain.cancel();
        }
    }
}

impl Worker {
    /// Its id now.
    fn id(&self) -> String {
        self.id.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Registers again, under its name, when the server no longer knows its id (a database
    /// restored from a backup, say): the runs it held there are given back by the server.
    async fn register_again(&self) {
        tracing::warn!("the server no longer knows this worker: registering again");
        match self.server.post_retrying("v1/workers/register", &self.registration).await {
            Ok(answer) => {
                if let Some(id) = answer["worker_id"].as_str() {
                    *self.id.lock().unwrap_or_else(PoisonError::into_inner) = id.to_owned();
                    tracing::info!(worker.id = id, "registered again");
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "could not register again; retrying in 1 s");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }

    /// Executes one claimed run to its end: the agent loop, its events appended as they come,
    /// its outcome completed — or nothing more once the server says the run moved on (409).
    async fn execute(&self, claim: Value) {
        let claim: ClaimWire = match serde_json::from_value(claim) {
            Ok(claim) => claim,
            Err(e) => {
                tracing::error!(error = %e, "a claim this worker cannot read; its lease will expire and it goes back");
                return;
            }
        };
        let run = claim.run.id.clone();
        let cancel = self.kill.child_token();
        self.running.lock().unwrap_or_else(PoisonError::into_inner).insert(run.clone(), cancel.clone());
        tracing::info!(run.id = %run, attempt = claim.attempt, "claimed");
        let ending = self.turn(&claim, &cancel).await;
        if let Some(ending) = ending {
            let path = format!("v1/runs/{run}/complete");
            match self.server.post_retrying(&path, &ending).await {
                Ok(_) => tracing::info!(run.id = %run, status = %ending["status"], "completed"),
                Err(CallError::Status(409, _)) => {
                    tracing::warn!(run.id = %run, "the run moved on before it completed")
                }
                Err(e) => {
                    tracing::error!(run.id = %run, error = %e, "could not complete the run; its lease will expire and it goes back")
                }
            }
        }
        self.running.lock().unwrap_or_else(PoisonError::into_inner).remove(&run);
    }

    /// Runs the turn; the completion's body, or `None` when the run moved on meanwhile.
    async fn turn(&self, claim: &ClaimWire, cancel: &CancellationToken) -> Option<Value> {
        let scope = TurnScope { org: &claim.organization_id, user: claim.user_id.as_deref() };
        let tools = TurnTools { toolbox: &self.toolbox, scope, timeout: self.settings.tool_timeout };
        let built = build_turn(
            &self.models,
            tools,
            &claim.resolved_profile,
            claim.run.input.clone(),
            &claim.session.messages,
        );
        let id = self.id();
        let head = json!({"worker_id": id, "attempt": claim.attempt});
        let (mut turn, input_messages) = match built {
            Ok(built) => built,
            Err(message) => {
                return Some(ending(
                    &head,
                    RunOutcome::Failed(RunError::new(ErrorCode::InvalidRun, message)),
                    None,
                ));
            }
        };
        if let Some(note) = super::interrupted_note(&claim.interrupted_tool_calls) {
            turn.messages.push(note);
        }
        let (sink, flusher) = RemoteSink::start(self.server.clone(), claim, &id, cancel.clone());
        let outcome = agent::run_turn_guarded(turn, &sink, cancel).await;
        drop(sink);
        let lost = flusher.await.unwrap_or(true);
        if lost {
            return None;
        }
        let completion = completion_of(outcome, input_messages);
        Some(ending(&head, completion.outcome, Some(completion.usage)))
    }
}

/// The completion's body for `outcome`.
fn ending(head: &Value, outcome: RunOutcome, usage: Option<crate::domain::outcome::Usage>) -> Value {
    let mut body = head.clone();
    body["status"] = json!(outcome.status().as_str());
    body["usage"] = json!(usage);
    match outcome {
        RunOutcome::Completed(output) => body["output"] = json!(output),
        RunOutcome::Failed(error) | RunOutcome::Cancelled(error) => body["error"] = json!(error),
    }
    body
}

/// A run's events on their way to the server: batched (the first at once, then every few ms)
/// and appended in order, each append naming its first seq.
struct RemoteSink {
    tx: mpsc::UnboundedSender<Sent>,
}

/// What the flusher is sent: an event, or a request to append what is pending now and answer.
enum Sent {
    Event(EventData),
    Durable(tokio::sync::oneshot::Sender<()>),
}

/// Answers the `durable()` calls waiting on an append (made, or given up on: logged).
fn answer(acks: Vec<tokio::sync::oneshot::Sender<()>>) {
    for ack in acks {
        let _ = ack.send(());
    }
}

impl Sent {
    fn take(self, batch: &mut Vec<EventData>, acks: &mut Vec<tokio::sync::oneshot::Sender<()>>) {
        match self {
            Self::Event(data) => batch.push(data),
            Self::Durable(ack) => acks.push(ack),
        }
    }
}

impl Emit for RemoteSink {
    fn emit(&self, data: EventData) {
        // The flusher lives until the sink is dropped; a send fails only after that.
        let _ = self.tx.send(Sent::Event(data));
    }

    fn durable(&self) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        let (ack, done) = tokio::sync::oneshot::channel();
        let sent = self.tx.send(Sent::Durable(ack)).is_ok();
        Box::pin(async move {
            if sent {
                let _ = done.await;
            }
        })
    }
}

impl RemoteSink {
    /// A sink for `claim`'s run and its flusher, which answers whether the run was lost (a
    /// 409: it then cancels `cancel`, and writes nothing more).
    fn start(
        server: Server,
        claim: &ClaimWire,
        worker: &str,
        cancel: CancellationToken,
    ) -> (Self, tokio::task::JoinHandle<bool>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let path = format!("v1/runs/{}/events", claim.run.id);
        let head = json!({"worker_id": worker, "attempt": claim.attempt});
        // Joined by the run's own task (`turn`), which the worker's tracker waits for.
        #[expect(clippy::disallowed_methods, reason = "owned by the run's task and joined there")]
        let flusher = tokio::spawn(flush(server, path, head, claim.next_seq, rx, cancel));
        (Self { tx }, flusher)
    }
}

async fn flush(
    server: Server,
    path: String,
    head: Value,
    mut next_seq: i64,
    mut rx: mpsc::UnboundedReceiver<Sent>,
    cancel: CancellationToken,
) -> bool {
    while let Some(first) = rx.recv().await {
        let (mut batch, mut acks) = (Vec::new(), Vec::new());
        Sent::take(first, &mut batch, &mut acks);
        let deadline = tokio::time::Instant::now() + GATHER;
        // Gather for a few ms, less when a durable() waits on this append.
        while acks.is_empty()
            && let Ok(Some(more)) = tokio::time::timeout_at(deadline, rx.recv()).await
        {
            Sent::take(more, &mut batch, &mut acks);
        }
        if batch.is_empty() {
            answer(acks);
            continue;
        }
        let events: Vec<Value> =
            batch.iter().map(|d| json!({"type": d.kind().as_str(), "data": d})).collect();
        let mut body = head.clone();
        body["from_seq"] = json!(next_seq);
        body["events"] = json!(events);
        let appended = server.post_retrying(&path, &body).await;
        answer(acks);
        match appended {
            Ok(answer) => {
                next_seq =
                    answer["next_seq"].as_i64().unwrap_or(next_seq + i64::try_from(batch.len()).unwrap_or(0))
            }
            Err(CallError::Status(409, _)) => {
                tracing::warn!(path, "the run moved on (its lease was lost): stopping this attempt");
                cancel.cancel();
                return true;
            }
            Err(e) => {
                // Events that cannot be stored would leave a gap: stop the attempt; its lease
                // expires and the run goes back.
                tracing::error!(error = %e, path, "could not append events: stopping this attempt");
                cancel.cancel();
                return true;
            }
        }
    }
    false
}
