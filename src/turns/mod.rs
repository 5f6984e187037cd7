//! The turn service: every agent turn — a chat completion or a `POST /v1/runs` — starts here,
//! and the runs and sessions APIs read through here.
//!
//! Starting a turn resolves its model, chooses the tools its profile offers, and dispatches it
//! as a run; the queue resolves the runner. Where the run executes is decided here and in the
//! queue, never by a handler: the in-process worker may take it at dispatch (executed on the
//! request's own task for a chat turn answered whole, or in a task of its own), or it waits in
//! the queue for a worker of its runner. [`chat::ChatTurn`] then follows it to its end.

pub mod chat;
mod once;
mod reads;

pub use crate::domain::input::RunInput;
pub use once::{IdempotencyKey, KEY_TTL};
pub use reads::{MAX_MESSAGES_PAGE, Offset, SessionView};

use std::sync::Arc;

use crate::agent::tools::Toolbox;
use crate::auth::Principal;
use crate::db::{Db, DbError};
use crate::domain::event::Ended;
use crate::domain::profile::{AuthMode, ResolvedProfile};
use crate::ids::{RunId, SessionId};
use crate::llm::Models;
use crate::queue::{DispatchError, Dispatched, NewRun, OnBusy, Queue, RunRow};
use crate::worker::Executor;

/// Why a turn could not start, or ended without an answer.
#[derive(Debug, thiserror::Error)]
pub enum TurnError {
    /// The model, alias or agent is not one the caller may use.
    #[error("{0}; GET /v1/models lists the models you may use")]
    UnknownModel(String),
    /// No such session, or not the caller's.
    #[error("no session `{0}`")]
    NoSession(String),
    /// No such run, or not the caller's.
    #[error("no run `{0}`")]
    NoRun(String),
    /// The session has a run in flight and `on_busy` is `reject`.
    #[error("session `{0}` has a run in flight (on_busy: reject)")]
    Busy(SessionId),
    /// No live worker serves the run's runner, and none claimed the run within the wait.
    #[error(
        "no live worker of runner `{runner}` took the turn within {waited_s} s (HEARTH_NO_WORKER_WAIT_S); the run was cancelled: start a worker of `{runner}`, or move the organization to another runner"
    )]
    NoWorker {
        /// The runner.
        runner: String,
        /// How long it waited.
        waited_s: u64,
    },
    /// The worker executing a streamed turn was lost after the answer had started, and the run
    /// is being retried: its new attempt's answer would repeat what was streamed.
    #[error(
        "the worker executing this turn was lost after it had started answering, and the run was retried as attempt {attempt}; the answer so far is not repeated: the run is cancelled"
    )]
    Retried {
        /// The new attempt.
        attempt: i64,
    },
    /// The run ended without an answer: failed or cancelled, with its error.
    #[error("{}", .0.error.message)]
    Ended(Box<Ended>),
    /// The `Idempotency-Key` was used before with another request.
    #[error(
        "this Idempotency-Key was already used with a different request; use a new key for a new request"
    )]
    KeyReused,
    /// The run's outcome could not be recorded (already logged).
    #[error("the run's outcome could not be recorded")]
    Unrecorded,
    /// A tool the client sent has the name of a server-side tool offered to the turn.
    #[error(
        "the client tool `{0}` has the name of a server-side tool this model or agent is offered; rename your tool (hearth never lets one shadow the other)"
    )]
    ToolCollision(String),
    /// The input could not be encoded for storage.
    #[error("the run's input could not be encoded: {0}")]
    Encode(#[from] serde_json::Error),
    /// Storage failed.
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<DispatchError> for TurnError {
    fn from(error: DispatchError) -> Self {
        match error {
            DispatchError::NoSession(id) => Self::NoSession(id.to_string()),
            DispatchError::Busy(id) => Self::Busy(id),
            DispatchError::Db(e) => Self::Db(e),
        }
    }
}

/// What [`Turns`] is built from.
pub struct TurnsParts {
    /// The store (reads of runs and sessions).
    pub db: Db,
    /// The run queue.
    pub queue: Arc<Queue>,
    /// The models requests may name.
    pub models: Arc<Models>,
    /// Chooses the tools of each turn.
    pub toolbox: Arc<Toolbox>,
    /// Executes runs in this process.
    pub executor: Arc<Executor>,
    /// HEARTH_MAX_STEPS, when the agent does not say.
    pub max_steps: u32,
    /// HEARTH_NO_WORKER_WAIT_S: how long a chat turn waits for a claim when no live worker
    /// serves its runner.
    pub no_worker_wait: std::time::Duration,
}

/// The turn service.
pub struct Turns {
    db: Db,
    queue: Arc<Queue>,
    models: Arc<Models>,
    toolbox: Arc<Toolbox>,
    executor: Arc<Executor>,
    max_steps: u32,
    no_worker_wait: std::time::Duration,
}

/// How a turn is started.
struct Start {
    id: RunId,
    input: RunInput,
    session: Option<SessionId>,
    on_busy: OnBusy,
    known_later: bool,
}

impl Turns {
    /// The service over its parts.
    #[must_use]
    pub fn new(parts: TurnsParts) -> Self {
        let TurnsParts { db, queue, models, toolbox, executor, max_steps, no_worker_wait } = parts;
        Self { db, queue, models, toolbox, executor, max_steps, no_worker_wait }
    }

    /// The default model (`MODEL_SPECIFIER`), for requests that name none.
    #[must_use]
    pub fn default_model(&self) -> Option<&str> {
        self.models.default_model()
    }

    /// Starts a run for `POST /v1/runs`: stored before this returns (its caller answers 202
    /// at once), executed in the background or queued for a worker of its runner.
    ///
    /// # Errors
    /// Unknown model or session, a busy session with `reject`, or a storage failure.
    pub async fn start_run(
        &self,
        principal: &Principal,
        input: RunInput,
        session: Option<SessionId>,
        on_busy: OnBusy,
    ) -> Result<RunRow, TurnError> {
        self.start_run_with(principal, input, session, on_busy, RunId::new()).await
    }

    /// [`Turns::start_run`] under a run id chosen beforehand.
    async fn start_run_with(
        &self,
        principal: &Principal,
        input: RunInput,
        session: Option<SessionId>,
        on_busy: OnBusy,
        id: RunId,
    ) -> Result<RunRow, TurnError> {
        let start = Start { id, input, session, on_busy, known_later: false };
        let dispatched = self.dispatch(principal, start).await?;
        if let Some((claimed, slot)) = dispatched.taken {
            self.executor.spawn(claimed, slot);
        }
        Ok(dispatched.run)
    }

    /// Resolves the model and the profile to stamp, and dispatches the run.
    async fn dispatch(&self, principal: &Principal, start: Start) -> Result<Dispatched, TurnError> {
        let model = self.models.resolve(&start.input.model).map_err(TurnError::UnknownModel)?;
        let agent = model.agent.as_ref();
        let tools = self.toolbox.offered(agent);
        if let Some(clash) = start.input.tools.iter().find(|t| tools.contains(&t.name)) {
            return Err(TurnError::ToolCollision(clash.name.clone()));
        }
        let profile = ResolvedProfile {
            runner: String::new(),
            model: start.input.model.clone(),
            provider: model.provider,
            tools,
            max_steps: agent.and_then(|a| a.max_steps).unwrap_or(self.max_steps),
            auth_mode: if principal.user.is_some() { AuthMode::UserJwt } else { AuthMode::ApiKey },
            runner_reason: String::new(),
        };
        let new = NewRun {
            id: start.id,
            org: principal.org.clone(),
            user: principal.user.clone(),
            session: start.session,
            on_busy: start.on_busy,
            profile,
            input: serde_json::to_string(&start.input)?,
            known_later: start.known_later,
        };
        Ok(self.queue.dispatch(new).await?)
    }
}
