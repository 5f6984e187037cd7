//! `/v1/runs`: start a run, read it (optionally waiting for its end), cancel it.

use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::Caller;
use super::error::ApiError;
use super::extract::{Json, Path, Query};
use super::openai::types::ChatCompletionRequest;
use crate::app::AppState;
use crate::ids::SessionId;
use crate::queue::{OnBusy, RunRow};
use crate::turns::IdempotencyKey;

/// Longest `?wait=` honoured, in seconds: longer waits are cut to it.
const MAX_WAIT_S: f64 = 60.0;

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
        "resolved_profile": &*run.resolved_profile,
        "attempt": run.attempt,
        "created_at": run.created_at,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "output": run.output.clone().unwrap_or_default(),
        "usage": run.usage,
        "error": run.error,
    })
}

/// `POST /v1/runs` → 202 with the run and its stream URL.
pub async fn create_run(
    State(state): State<AppState>,
    Caller(principal): Caller,
    headers: HeaderMap,
    Json(body): Json<CreateRunBody>,
) -> Result<Response, ApiError> {
    let key = idempotency_key(&headers)?;
    let mut input = body.chat.into_input(state.turns().default_model())?;
    // A run's events are read as they come, so its upstream call streams.
    input.stream = true;
    let session = match body.session_id {
        Some(id) => {
            Some(id.parse::<SessionId>().map_err(|_| ApiError::not_found(format!("no session `{id}`")))?)
        }
        None => None,
    };
    let on_busy = body.on_busy.unwrap_or_default();
    let (run, replayed) = match key {
        Some(key) => state.turns().start_run_once(&principal, input, session, on_busy, key).await?,
        None => (state.turns().start_run(&principal, input, session, on_busy).await?, false),
    };
    let mut view = run_json(&run);
    view["stream_url"] = json!(format!("/v1/runs/{}/events?offset=-1&live=sse", run.id));
    let mut response = (StatusCode::ACCEPTED, axum::Json(view)).into_response();
    if replayed {
        mark_replayed(&mut response);
    }
    if let Ok(location) = HeaderValue::from_str(&format!("/v1/runs/{}", run.id)) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

/// The request's `Idempotency-Key`, if it has one.
///
/// # Errors
/// 400 naming the header when it is malformed.
pub fn idempotency_key(headers: &HeaderMap) -> Result<Option<IdempotencyKey>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else { return Ok(None) };
    let text = value.to_str().unwrap_or_default();
    IdempotencyKey::parse(text)
        .map(Some)
        .map_err(|message| ApiError::invalid(Some("Idempotency-Key"), message))
}

/// Marks the answer of a retry that started nothing new (`Idempotent-Replayed: true`).
pub fn mark_replayed(response: &mut Response) {
    response.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
}

/// `GET /v1/runs/{id}` query.
#[derive(Debug, Deserialize)]
pub struct GetRunQuery {
    /// Seconds to wait for a terminal status (longer waits are cut to 60).
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
        Some(w) if w.is_nan() || w < 0.0 => {
            return Err(ApiError::invalid(Some("wait"), "wait must be a number of seconds, 0 or more"));
        }
        Some(w) => Duration::from_secs_f64(w.min(MAX_WAIT_S)),
        None => Duration::ZERO,
    };
    let run = state.turns().wait_run(&principal, &id, wait).await?;
    Ok(axum::Json(run_json(&run)).into_response())
}

/// `POST /v1/runs/{id}/cancel`: stops the run where it is; answers the run as it then stands.
pub async fn cancel_run(
    State(state): State<AppState>,
    Caller(principal): Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let run = state.turns().cancel_run(&principal, &id).await?;
    Ok(axum::Json(run_json(&run)).into_response())
}
