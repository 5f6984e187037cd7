//! Starting runs: validate the model, resolve the runner, stamp the profile, dispatch.
//! The runs API and the chat API both start turns here.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::app::AppState;
use crate::auth::Principal;
use crate::domain::message::{Message, ToolSpec};
use crate::domain::profile::{AuthMode, ResolvedProfile};
use crate::error::ApiError;
use crate::ids::{RunId, SessionId};
use crate::llm::ModelOptions;
use crate::queue::{DispatchError, Dispatched, NewRun, OnBusy, Stamp};

/// A turn's input as stored on the run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunInput {
    /// The requested model.
    pub model: String,
    /// This turn's messages (appended to the session's conversation).
    pub messages: Vec<Message>,
    /// Client tools.
    #[serde(default)]
    pub tools: Vec<ToolSpec>,
    /// Sampling options.
    #[serde(default)]
    pub options: ModelOptions,
    /// Caller metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    /// OpenAI `user` field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Whether the client streams the answer (the upstream call streams too).
    #[serde(default)]
    pub stream: bool,
}

/// Dispatches run `id` for the caller. When the embedded worker took it at dispatch, the
/// caller executes it (`worker::execute_here` or `worker::spawn_execution`). The caller picks
/// the id so it can follow the run's events from before they exist. `known_later`: the caller
/// tells its client of the run only once its first events are committed (a chat turn) — such
/// a run, on a new session, may be stored only then (`NewRun::known_later`).
///
/// # Errors
/// 404 for an unknown model or session, 409 for a busy session with `on_busy: reject`.
pub async fn start_run(
    state: &AppState,
    principal: &Principal,
    id: RunId,
    input: RunInput,
    session: Option<SessionId>,
    on_busy: OnBusy,
    known_later: bool,
) -> Result<Dispatched, ApiError> {
    let model = state.models().resolve(&input.model).map_err(|message| ApiError::NotFound {
        message: format!("{message}; GET /v1/models lists the models you may use"),
        code: "model_not_found",
    })?;
    let tools = offered_tools(state, model.agent.as_ref());
    let max_steps = model.agent.as_ref().and_then(|a| a.max_steps).unwrap_or(state.config().agent.max_steps);
    let mut profile = ResolvedProfile {
        runner: String::new(),
        model: input.model.clone(),
        provider: model.provider,
        tools,
        max_steps,
        auth_mode: if principal.user.is_some() { AuthMode::UserJwt } else { AuthMode::ApiKey },
        runner_reason: String::new(),
    };
    let (resolver, org) = (state.resolver().clone(), principal.org.clone());
    // The runner is resolved inside the dispatch transaction: one round trip, one snapshot.
    let stamp = Box::new(move |conn: &rusqlite::Connection| {
        let decision = resolver.decide_with(conn, &org);
        profile.runner.clone_from(&decision.runner);
        profile.runner_reason = decision.reason;
        Stamp { runner: decision.runner, profile: serde_json::to_value(&profile).unwrap_or_default() }
    });
    let new = NewRun {
        id,
        org: principal.org.clone(),
        user: principal.user.clone(),
        session,
        on_busy,
        stamp,
        input: serde_json::to_string(&input).map_err(|_| ApiError::Internal)?,
        known_later,
    };
    state.queue().dispatch(new).await.map_err(|e| match e {
        DispatchError::NoSession(id) => ApiError::not_found(format!("no session `{id}`")),
        DispatchError::Busy(_) => ApiError::Conflict(e.to_string()),
        DispatchError::Db(e) => e.into(),
    })
}

/// Server-side tools offered: every tool for a plain model; only the agent's servers' tools
/// (`server__tool`) for an agent.
fn offered_tools(state: &AppState, agent: Option<&crate::catalog::Agent>) -> Vec<String> {
    let names = state.tools().specs().into_iter().map(|s| s.name);
    match agent {
        None => names.collect(),
        Some(agent) => names
            .filter(|n| {
                n.split_once("__").is_some_and(|(server, _)| agent.mcp_servers.iter().any(|s| s == server))
            })
            .collect(),
    }
}
