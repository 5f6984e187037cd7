//! `/v1/runs`: start a run, read it (optionally waiting for its end), cancel it.

use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::extract::{Json, Path, Query};
use super::openai::types::ChatCompletionRequest;
use crate::app::AppState;
use crate::auth::{Caller, Principal};
use crate::db::runs::{self, RunRow};
use crate::error::ApiError;
use crate::ids::{RunId, SessionId};
use crate::queue::OnBusy;

/// Longest `?wait=` honoured, in seconds.
const MAX_WAIT_S: f64 = 60.0;
/// Re-check interval while waiting, for runs finished by another process.
const RECHECK: Duration = Duration::from_secs(1);

/// `POST /v1/runs` body: a chat-completion request plus session controls.
#[derive(Debug, Deserialize)]
pub struct CreateRunBody {
    /// The chat request.
    #[serde(flatten)]
    pub chat: ChatCompletionRequest,
    /// Continue this session.
    pub session_id: Option<String>,
    /// `enqueue` (default) or `reject` when the session is busy.
    pub on_busy: Option<OnBusy>,
}

/// The public view of a run.
#[must_use]
pub fn run_json(run: &RunRow) -> Value {
    json!({
        "id": run.id,
        "object": "run",
        "session_id": run.session_id,
        "status": run.status,
        "runner": run.runner,
        "resolved_profile": run.resolved_profile,
        "attempt": run.attempt,
        "created_at": run.created_at,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "output": run.output.clone().unwrap_or_else(|| json!({"content": null, "tool_calls": []})),
        "usage": run.usage,
        "error": run.error,
    })
}

/// Whether `principal` may see a run or session of `org` owned by `user`.
#[must_use]
pub fn visible(principal: &Principal, org: &crate::ids::OrgId, user: Option<&str>) -> bool {
    principal.org == *org && principal.user.as_deref().is_none_or(|u| user == Some(u))
}

/// Loads a run the caller may see; 404 otherwise (ids do not leak).
///
/// # Errors
/// 404 when absent or not the caller's.
pub async fn load_run(state: &AppState, principal: &Principal, id: &str) -> Result<RunRow, ApiError> {
    let not_found = || ApiError::not_found(format!("no run `{id}`"));
    let run_id: RunId = id.parse().map_err(|_| not_found())?;
    let run = state.db().read(move |conn| runs::find_run(conn, &run_id)).await?.ok_or_else(not_found)?;
    if visible(principal, &run.organization_id, run.user_id.as_deref()) { Ok(run) } else { Err(not_found()) }
}

/// `POST /v1/runs` → 202 with the run and its stream URL.
pub async fn create_run(
    State(state): State<AppState>,
    Caller(principal): Caller,
    Json(body): Json<CreateRunBody>,
) -> Result<Response, ApiError> {
    let mut input = body.chat.into_input(state.models().default_model())?;
    // A run's events are read as they come, so its upstream call streams.
    input.stream = true;
    let session = match body.session_id {
        Some(id) => {
            Some(id.parse::<SessionId>().map_err(|_| ApiError::not_found(format!("no session `{id}`")))?)
        }
        None => None,
    };
    let dispatched = crate::runs::start_run(
        &state,
        &principal,
        RunId::new(),
        input,
        session,
        body.on_busy.unwrap_or_default(),
        // Answered 202 at once: the run must be stored before that answer.
        false,
    )
    .await?;
    let run = dispatched.run;
    if let Some((claimed, slot)) = dispatched.taken {
        crate::worker::spawn_execution(&state, claimed, slot);
    }
    let mut view = run_json(&run);
    let stream_url = format!("/v1/runs/{}/events?offset=-1&live=sse", run.id);
    view["stream_url"] = json!(stream_url);
    let mut response = (StatusCode::ACCEPTED, axum::Json(view)).into_response();
    if let Ok(location) = HeaderValue::from_str(&format!("/v1/runs/{}", run.id)) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

/// `GET /v1/runs/{id}` query.
#[derive(Debug, Deserialize)]
pub struct GetRunQuery {
    /// Seconds to wait for a terminal status (at most 60).
    pub wait: Option<f64>,
}

/// `GET /v1/runs/{id}[?wait=S]`.
pub async fn get_run(
    State(state): State<AppState>,
    Caller(principal): Caller,
    Path(id): Path<String>,
    Query(query): Query<GetRunQuery>,
) -> Result<Response, ApiError> {
    let wait = match query.wait {
        Some(w) if !(0.0..=MAX_WAIT_S).contains(&w) || w.is_nan() => {
            return Err(ApiError::invalid(Some("wait"), "wait must be between 0 and 60 seconds"));
        }
        Some(w) => Duration::from_secs_f64(w),
        None => Duration::ZERO,
    };
    let mut run = load_run(&state, &principal, &id).await?;
    if !run.status.is_terminal() && !wait.is_zero() {
        run = wait_for_end(&state, run, wait).await?;
    }
    Ok(axum::Json(run_json(&run)).into_response())
}

/// Waits until the run is terminal or `wait` passes. Not cut short by shutdown: a wait is
/// bounded, and graceful shutdown lets in-flight requests finish.
async fn wait_for_end(state: &AppState, mut run: RunRow, wait: Duration) -> Result<RunRow, ApiError> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut subscription = state.queue().hub().subscribe(&run.id);
    loop {
        let id = run.id.clone();
        run = state.db().read(move |conn| runs::find_run(conn, &id)).await?.unwrap_or(run);
        if run.status.is_terminal() || tokio::time::Instant::now() >= deadline {
            return Ok(run);
        }
        let until = deadline.min(tokio::time::Instant::now() + RECHECK);
        tokio::select! {
            _ = subscription.receiver.changed() => {}
            () = tokio::time::sleep_until(until) => {}
        }
    }
}

/// `POST /v1/runs/{id}/cancel`: stops the run where it is; answers the run as it then stands.
pub async fn cancel_run(
    State(state): State<AppState>,
    Caller(principal): Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let run = load_run(&state, &principal, &id).await?;
    if !run.status.is_terminal() {
        state.queue().cancel(&run).await?;
    }
    let run = wait_for_end(&state, run, Duration::from_secs(5)).await?;
    Ok(axum::Json(run_json(&run)).into_response())
}
