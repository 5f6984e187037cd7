//! The worker fleet's service: what the worker protocol (`http/workers.rs`) does — registration
//! behind the version gate, heartbeats, long-poll claims, event appends and completions — over
//! the queue, with the protocol's inputs parsed into domain types here.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::db::DbError;
use crate::db::workers::NewWorker;
use crate::domain::event::{EventData, EventType};
use crate::domain::input::RunInput;
use crate::domain::message::{Message, Role};
use crate::domain::outcome::{ErrorCode, RunError, RunOutcome, RunOutput, Usage};
use crate::domain::version::MinVersions;
use crate::ids::{RunId, WorkerId};
use crate::queue::{Appended, Claimed, Completion, Finished, GivenBack, HeartbeatAnswer, Queue};

/// Longest a claim long-polls.
pub const MAX_CLAIM_WAIT: Duration = Duration::from_secs(60);
/// Most runs one claim takes.
pub const MAX_CLAIM: usize = 64;
/// Most events one append carries.
pub const MAX_APPEND: usize = 1000;

/// Why the fleet refused a call.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// The request is malformed.
    #[error("{message}")]
    Invalid {
        /// The offending field.
        param: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The worker's version is below the minimum of its runtime.
    #[error("{0}")]
    TooOld(String),
    /// No such worker: it must register (again).
    #[error("no worker `{0}` is registered: register again")]
    UnknownWorker(String),
    /// No such run.
    #[error("no run `{0}`")]
    NoRun(String),
    /// The caller does not hold the run at this attempt: its lease was lost.
    #[error(
        "worker `{worker}` does not hold run `{run}` at attempt {attempt} (its lease was lost or the run ended)"
    )]
    Fenced {
        /// The run.
        run: RunId,
        /// The worker.
        worker: WorkerId,
        /// The attempt it named.
        attempt: i64,
    },
    /// An append left a gap in the log.
    #[error("from_seq is past the end of the run's log: send the events from seq {0}")]
    Gap(i64),
    /// Storage failed.
    #[error(transparent)]
    Db(#[from] DbError),
}

fn invalid(param: &'static str, message: impl Into<String>) -> FleetError {
    FleetError::Invalid { param, message: message.into() }
}

/// A worker's registration.
#[derive(Debug, Clone)]
pub struct Registration {
    /// Unique name; registering again under it gives back what it held.
    pub name: String,
    /// The runner pool it serves.
    pub runtime: String,
    /// Its version.
    pub version: String,
    /// The host it runs on.
    pub hostname: String,
    /// Runs it executes at once.
    pub capacity: i64,
}

/// What a registration answers.
#[derive(Debug, Clone)]
pub struct Registered {
    /// The worker's id.
    pub worker: WorkerId,
    /// Seconds between heartbeats.
    pub heartbeat: Duration,
    /// How long a claim lasts without a heartbeat.
    pub lease: Duration,
    /// What an earlier incarnation of it held, now given back.
    pub given_back: Vec<GivenBack>,
}

/// A claimed run with its input parsed.
#[derive(Debug, Clone)]
pub struct ClaimedRun {
    /// The claim.
    pub claimed: Claimed,
    /// The turn's input.
    pub input: RunInput,
}

/// How an external worker ends a run.
#[derive(Debug, Clone)]
pub struct Ending {
    /// `completed`, `failed` or `cancelled`.
    pub status: String,
    /// The answer (`completed`).
    pub output: Option<Value>,
    /// Usage of the run's model calls.
    pub usage: Option<Value>,
    /// Why it failed or was cancelled.
    pub error: Option<Value>,
}

/// The worker fleet service.
pub struct Fleet {
    queue: Arc<Queue>,
    runners: Vec<String>,
    min_versions: MinVersions,
    heartbeat: Duration,
    lease: Duration,
    shutdown: CancellationToken,
}

/// What [`Fleet`] is built from.
pub struct FleetParts {
    /// The run queue.
    pub queue: Arc<Queue>,
    /// The runner pools (HEARTH_RUNNERS).
    pub runners: Vec<String>,
    /// HEARTH_RUNNER_MIN_VERSION.
    pub min_versions: MinVersions,
    /// HEARTH_HEARTBEAT_S.
    pub heartbeat: Duration,
    /// HEARTH_LEASE_S.
    pub lease: Duration,
    /// Cancelled at shutdown: long-poll claims end.
    pub shutdown: CancellationToken,
}

impl Fleet {
    /// The service over its parts.
    #[must_use]
    pub fn new(parts: FleetParts) -> Self {
        let FleetParts { queue, runners, min_versions, heartbeat, lease, shutdown } = parts;
        Self { queue, runners, min_versions, heartbeat, lease, shutdown }
    }

    /// Registers a worker (refused below its runtime's minimum version, or for an unknown
    /// runtime) and gives back what an earlier incarnation under its name held.
    ///
    /// # Errors
    /// A bad request, a version too old, or a storage failure.
    pub async fn register(&self, r: Registration) -> Result<Registered, FleetError> {
        if r.name.trim().is_empty() || r.name.len() > 200 {
            return Err(invalid("name", "name must be 1 to 200 characters"));
        }
        if !self.runners.contains(&r.runtime) {
            let known = self.runners.join(", ");
            return Err(invalid(
                "runtime",
                format!("unknown runtime `{}` (HEARTH_RUNNERS: {known})", r.runtime),
            ));
        }
        if !(1..=65_535).contains(&r.capacity) {
            return Err(invalid("capacity", "capacity must be 1 to 65535"));
        }
        if let Some(refusal) = self.min_versions.refusal(&r.runtime, &r.version) {
            return Err(FleetError::TooOld(refusal));
        }
        let new = NewWorker {
            name: r.name,
            runtime: r.runtime,
            version: r.version,
            hostname: r.hostname,
            capacity: r.capacity,
            embedded: false,
        };
        let (worker, given_back) = self.queue.register_worker(new).await?;
        Ok(Registered { worker, heartbeat: self.heartbeat, lease: self.lease, given_back })
    }

    /// A heartbeat: extends the worker's leases; answers what to cancel and whether to drain.
    ///
    /// # Errors
    /// An unknown worker, or a storage failure.
    pub async fn heartbeat(&self, worker: &WorkerId, draining: bool) -> Result<HeartbeatAnswer, FleetError> {
        self.queue
            .worker_heartbeat(worker, draining)
            .await?
            .ok_or_else(|| FleetError::UnknownWorker(worker.to_string()))
    }

    /// Claims up to `max` runs of the worker's runtime, waiting up to `wait` for one. A
    /// draining worker claims nothing.
    ///
    /// # Errors
    /// An unknown worker, or a storage failure.
    pub async fn claim(
        &self,
        worker: &WorkerId,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<ClaimedRun>, FleetError> {
        let state = self
            .queue
            .worker_state(worker)
            .await?
            .ok_or_else(|| FleetError::UnknownWorker(worker.to_string()))?;
        if state.draining {
            return Ok(Vec::new());
        }
        let (max, wait) = (max.clamp(1, MAX_CLAIM), wait.min(MAX_CLAIM_WAIT));
        let claimed = self.queue.claim_waiting(&state.runtime, worker, max, wait, &self.shutdown).await?;
        let mut out = Vec::with_capacity(claimed.len());
        for claimed in claimed {
            match serde_json::from_str::<RunInput>(&claimed.run.input) {
                Ok(input) => out.push(ClaimedRun { claimed, input }),
                // A stored input this version cannot read: the run fails here, clearly.
                Err(e) => {
                    let error = RunError::new(ErrorCode::InvalidRun, format!("stored run input: {e}"));
                    let (run, worker) = (claimed.run.clone(), claimed.worker.clone());
                    self.queue.finish(&run, &worker, claimed.next_seq, crate::queue::failed(error)).await?;
                }
            }
        }
        Ok(out)
    }

    /// Appends a held run's events (`{type, data}` as sent), numbered from `from_seq`.
    /// Returns the run's next seq.
    ///
    /// # Errors
    /// Bad events, a lost lease (fenced), a gap, or a storage failure.
    pub async fn append(
        &self,
        run: &RunId,
        worker: &WorkerId,
        attempt: i64,
        from_seq: i64,
        events: Vec<(String, Value)>,
    ) -> Result<i64, FleetError> {
        if from_seq < 1 {
            return Err(invalid("from_seq", "from_seq must be 1 or more"));
        }
        if events.len() > MAX_APPEND {
            return Err(invalid("events", format!("at most {MAX_APPEND} events an append")));
        }
        let events = events
            .into_iter()
            .enumerate()
            .map(|(i, (kind, data))| event(i, &kind, &data))
            .collect::<Result<Vec<_>, _>>()?;
        match self.queue.append_events(run, worker, attempt, from_seq, events).await? {
            Appended::Next(next) => Ok(next),
            Appended::Fenced => Err(FleetError::Fenced { run: run.clone(), worker: worker.clone(), attempt }),
            Appended::Gap { next } => Err(FleetError::Gap(next)),
            Appended::NoRun => Err(FleetError::NoRun(run.to_string())),
        }
    }

    /// Ends a held run: its outcome, usage and terminal event, and (completed) the turn's
    /// messages — its input and the answer — appended to the session. Idempotent for its
    /// holder; fenced for anyone else.
    ///
    /// # Errors
    /// A bad body, a lost lease (fenced), or a storage failure.
    pub async fn complete(
        &self,
        run: &RunId,
        worker: &WorkerId,
        attempt: i64,
        ending: Ending,
    ) -> Result<bool, FleetError> {
        let usage = match ending.usage {
            None | Some(Value::Null) => Usage::default(),
            Some(u) => serde_json::from_value(u).map_err(|e| invalid("usage", format!("usage: {e}")))?,
        };
        let error = |code: ErrorCode| -> Result<RunError, FleetError> {
            match ending.error.clone() {
                None | Some(Value::Null) => Ok(RunError::new(code, "the worker gave no reason")),
                Some(e) => serde_json::from_value(e)
                    .map_err(|e| invalid("error", format!("error {{message, code}}: {e}"))),
            }
        };
        let outcome = match ending.status.as_str() {
            "completed" => {
                let output = ending
                    .output
                    .clone()
                    .ok_or_else(|| invalid("output", "a completed run needs its output"))?;
                RunOutcome::Completed(
                    serde_json::from_value::<RunOutput>(output)
                        .map_err(|e| invalid("output", format!("output {{content, tool_calls}}: {e}")))?,
                )
            }
            "failed" => RunOutcome::Failed(error(ErrorCode::Other("worker_error".into()))?),
            "cancelled" => RunOutcome::Cancelled(error(ErrorCode::Cancelled)?),
            other => {
                return Err(invalid(
                    "status",
                    format!("status must be completed, failed or cancelled, not `{other}`"),
                ));
            }
        };
        let messages = match &outcome {
            RunOutcome::Completed(output) => self.turn_messages(run, output).await?,
            _ => Vec::new(),
        };
        let done = Completion { outcome, usage, messages, upstream_ms: 0.0, tail: Vec::new() };
        match self.queue.complete(run, worker, attempt, done).await? {
            Finished::Done(_) => Ok(true),
            Finished::Already => Ok(false),
            Finished::Fenced => Err(FleetError::Fenced { run: run.clone(), worker: worker.clone(), attempt }),
            Finished::NoRun => Err(FleetError::NoRun(run.to_string())),
        }
    }

    /// The messages a completed turn adds to its session: its input, then the answer.
    async fn turn_messages(&self, run: &RunId, output: &RunOutput) -> Result<Vec<Message>, FleetError> {
        let id = run.clone();
        let found = self.queue.db().read(move |conn| crate::db::runs::find_run(conn, &id)).await?;
        let Some(row) = found else { return Err(FleetError::NoRun(run.to_string())) };
        let mut messages =
            serde_json::from_str::<RunInput>(&row.input).map(|i| i.messages).unwrap_or_default();
        messages.push(Message {
            role: Role::Assistant,
            content: output.content.clone().filter(|c| !c.is_empty()),
            tool_calls: output.tool_calls.clone(),
            tool_call_id: None,
        });
        Ok(messages)
    }
}

/// One appended event, typed: only the events a worker writes while it runs a turn.
fn event(index: usize, kind: &str, data: &Value) -> Result<EventData, FleetError> {
    let bad = |message: String| invalid("events", format!("events[{index}]: {message}"));
    let kind: EventType = kind.parse().map_err(|e| bad(format!("{e}")))?;
    if !matches!(
        kind,
        EventType::TextDelta | EventType::ToolStarted | EventType::ToolFinished | EventType::Usage
    ) {
        return Err(bad(format!(
            "`{kind}` is not appended: run.started comes with the claim, the end with /complete"
        )));
    }
    EventData::from_stored(kind, &data.to_string()).map_err(|e| bad(format!("data of `{kind}`: {e}")))
}
