//! The worker protocol (SPEC §6, docs/worker-protocol.md): register, heartbeat, claim (long
//! poll), append events, complete — authenticated by worker tokens, never API keys. Each
//! handler maps the wire to one call of the fleet service.

use std::time::Duration;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::WorkerCaller;
use super::error::ApiError;
use super::extract::{Json, Path};
use super::runs::run_json;
use crate::app::AppState;
use crate::fleet::{ClaimedRun, Ending, Registration};
use crate::ids::{RunId, WorkerId};

/// `POST /v1/workers/register` body.
#[derive(Debug, Deserialize)]
pub struct RegisterBody {
    /// Unique name; registering again under it gives back what it held.
    pub name: String,
    /// The runner pool it serves.
    pub runtime: String,
    /// Its version.
    pub version: String,
    /// Its host.
    #[serde(default)]
    pub hostname: String,
    /// Runs it executes at once (default 1).
    pub capacity: Option<i64>,
}

/// `POST /v1/workers/{id}/heartbeat` body.
#[derive(Debug, Deserialize)]
pub struct HeartbeatBody {
    /// Runs it executes now (informative).
    pub in_flight: Option<u32>,
    /// `active`, or `draining` when it is shutting down.
    pub status: Option<String>,
}

/// `POST /v1/workers/{id}/claim` body.
#[derive(Debug, Deserialize)]
pub struct ClaimBody {
    /// Most runs to take (1–64, default 1).
    pub max: Option<usize>,
    /// Seconds to wait for one (0–60, default 30).
    pub wait_s: Option<f64>,
}

/// One appended event.
#[derive(Debug, Deserialize)]
pub struct WireEvent {
    /// `text.delta`, `tool.started`, `tool.finished` or `usage`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Its data, as the run events API shows it.
    #[serde(default)]
    pub data: Value,
}

/// `POST /v1/runs/{id}/events` body.
#[derive(Debug, Deserialize)]
pub struct AppendBody {
    /// The worker that holds the run.
    pub worker_id: String,
    /// The attempt it holds.
    pub attempt: i64,
    /// The seq of the first event sent.
    pub from_seq: i64,
    /// The events, in order.
    pub events: Vec<WireEvent>,
}

/// `POST /v1/runs/{id}/complete` body.
#[derive(Debug, Deserialize)]
pub struct CompleteBody {
    /// The worker that holds the run.
    pub worker_id: String,
    /// The attempt it holds.
    pub attempt: i64,
    /// `completed`, `failed` or `cancelled`.
    pub status: String,
    /// `{"content", "tool_calls"}` when completed.
    pub output: Option<Value>,
    /// Usage of the run's model calls.
    pub usage: Option<Value>,
    /// `{"message", "code"}` when failed or cancelled.
    pub error: Option<Value>,
}

fn worker_id(text: &str) -> Result<WorkerId, ApiError> {
    text.parse().map_err(|_| {
        ApiError::not_found(format!("no worker `{}`", text.chars().take(80).collect::<String>()))
    })
}

fn run_id(text: &str) -> Result<RunId, ApiError> {
    text.parse()
        .map_err(|_| ApiError::not_found(format!("no run `{}`", text.chars().take(80).collect::<String>())))
}

/// `POST /v1/workers/register`.
pub async fn register_worker(
    State(state): State<AppState>,
    _caller: WorkerCaller,
    Json(body): Json<RegisterBody>,
) -> Result<Response, ApiError> {
    let registration = Registration {
        name: body.name,
        runtime: body.runtime,
        version: body.version,
        hostname: body.hostname,
        capacity: body.capacity.unwrap_or(1),
    };
    let done = state.fleet().register(registration).await?;
    let given_back: Vec<Value> = done
        .given_back
        .iter()
        .map(|g| json!({"run_id": g.run, "attempt": g.attempt, "requeued": g.requeued}))
        .collect();
    Ok(axum::Json(json!({
        "worker_id": done.worker,
        "heartbeat_s": done.heartbeat.as_secs(),
        "lease_s": done.lease.as_secs(),
        "given_back": given_back,
    }))
    .into_response())
}

/// `POST /v1/workers/{id}/heartbeat`.
pub async fn worker_heartbeat(
    State(state): State<AppState>,
    _caller: WorkerCaller,
    Path(id): Path<String>,
    Json(body): Json<HeartbeatBody>,
) -> Result<Response, ApiError> {
    let draining = match body.status.as_deref() {
        None | Some("active") => false,
        Some("draining") => true,
        Some(other) => {
            return Err(ApiError::invalid(
                Some("status"),
                format!("status must be active or draining, not `{other}`"),
            ));
        }
    };
    let _ = body.in_flight;
    let answer = state.fleet().heartbeat(&worker_id(&id)?, draining).await?;
    Ok(axum::Json(json!({"cancel": answer.cancel, "drain": answer.drain})).into_response())
}

/// `POST /v1/workers/{id}/claim`: long-polls up to `wait_s` for runs of the worker's runtime.
pub async fn claim_runs(
    State(state): State<AppState>,
    _caller: WorkerCaller,
    Path(id): Path<String>,
    Json(body): Json<ClaimBody>,
) -> Result<Response, ApiError> {
    let wait = match body.wait_s {
        Some(w) if w.is_nan() || w < 0.0 => {
            return Err(ApiError::invalid(Some("wait_s"), "wait_s must be a number of seconds, 0 or more"));
        }
        Some(w) => Duration::from_secs_f64(w.min(60.0)),
        None => Duration::from_secs(30),
    };
    let claimed = state.fleet().claim(&worker_id(&id)?, body.max.unwrap_or(1), wait).await?;
    let runs: Vec<Value> = claimed.iter().map(claim_json).collect();
    Ok(axum::Json(json!({"runs": runs})).into_response())
}

fn claim_json(c: &ClaimedRun) -> Value {
    let run = &c.claimed.run;
    let mut view = run_json(run);
    view["input"] = json!(c.input);
    json!({
        "run": view,
        "session": {"id": run.session_id, "messages": c.claimed.history},
        "resolved_profile": &*run.resolved_profile,
        "attempt": run.attempt,
        "lease_expires_at": run.lease_expires_at,
        "next_seq": c.claimed.next_seq,
        "interrupted_tool_calls": c.claimed.interrupted,
        "organization_id": run.organization_id,
        "user_id": run.user_id,
    })
}

/// `POST /v1/runs/{id}/events` (the worker protocol's append).
pub async fn append_events(
    State(state): State<AppState>,
    _caller: WorkerCaller,
    Path(id): Path<String>,
    Json(body): Json<AppendBody>,
) -> Result<Response, ApiError> {
    let (run, worker) = (run_id(&id)?, worker_id(&body.worker_id)?);
    let events = body.events.into_iter().map(|e| (e.kind, e.data)).collect();
    let next = state.fleet().append(&run, &worker, body.attempt, body.from_seq, events).await?;
    Ok(axum::Json(json!({"next_seq": next})).into_response())
}

/// `POST /v1/runs/{id}/complete`.
pub async fn complete_run(
    State(state): State<AppState>,
    _caller: WorkerCaller,
    Path(id): Path<String>,
    Json(body): Json<CompleteBody>,
) -> Result<Response, ApiError> {
    let (run, worker) = (run_id(&id)?, worker_id(&body.worker_id)?);
    let ending = Ending { status: body.status, output: body.output, usage: body.usage, error: body.error };
    let recorded = state.fleet().complete(&run, &worker, body.attempt, ending).await?;
    Ok(axum::Json(json!({"recorded": recorded})).into_response())
}
