//! `POST /v1/chat/completions`: a synchronous façade over a run — it starts the turn as a run
//! and waits on it (`chat.completion`) or streams it (`chat.completion.chunk` … `[DONE]`).

use std::convert::Infallible;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::types::ChatCompletionRequest;
use crate::app::AppState;
use crate::auth::Caller;
use crate::db::runs::RunRow;
use crate::domain::event::{EventType, RunEvent};
use crate::error::ApiError;
use crate::http::extract::Json;
use crate::ids::{RunId, SessionId};
use crate::queue::OnBusy;
use crate::queue::events::Follower;

/// SSE keep-alive comment interval while server-side tools run.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// Cancels the run if the client goes away before it ended.
struct CancelOnDrop {
    state: AppState,
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
            let state = self.state.clone();
            tracing::info!(run.id = %run.id, "client went away: cancelling the run");
            self.state.tasks().spawn(async move {
                if let Err(e) = state.queue().cancel(&run).await {
                    tracing::warn!(error = %e, run.id = %run.id, "could not cancel the abandoned run");
                }
            });
        }
    }
}

/// What the façade needs of the request once the run has started.
struct Turn {
    run: RunRow,
    model: String,
    created: u64,
    started: Instant,
    include_usage: bool,
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn completion_id(turn: &Turn) -> String {
    format!("chatcmpl-{}", turn.run.id.as_str().trim_start_matches("run_"))
}

fn session_header(headers: &HeaderMap) -> Result<Option<SessionId>, ApiError> {
    let Some(value) = headers.get("x-session-id") else { return Ok(None) };
    let text = value.to_str().unwrap_or_default();
    text.parse().map(Some).map_err(|_| {
        ApiError::not_found(format!("no session `{}`", text.chars().take(80).collect::<String>()))
    })
}

/// `POST /v1/chat/completions`.
pub async fn chat_completions(
    State(state): State<AppState>,
    Caller(principal): Caller,
    headers: HeaderMap,
    Json(body): Json<ChatCompletionRequest>,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let include_usage = body
        .stream_options
        .as_ref()
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let session = session_header(&headers)?;
    let input = body.into_input(state.models().default_model())?;
    let model = input.model.clone();
    let stream = input.stream;
    // Follow the run before it exists: its first events are published as the dispatch commits.
    let id = RunId::new();
    let follower = Follower::fresh(state.db().clone(), state.queue().hub(), id.clone());
    let dispatched =
        crate::runs::start_run(&state, &principal, id, input, session, OnBusy::Enqueue, true).await?;
    let turn = Turn { run: dispatched.run, model, created: unix_now(), started, include_usage };
    match dispatched.taken {
        // Taken at dispatch and answered whole: executed right here, on the request's task.
        Some((claimed, slot)) if !stream => {
            drop(follower);
            let terminal =
                crate::worker::execute_here(&state, claimed, slot).await.ok_or(ApiError::Internal)?;
            answer(&turn, &terminal)
        }
        taken => {
            if let Some((claimed, slot)) = taken {
                crate::worker::spawn_execution(&state, claimed, slot);
            }
            let guard = CancelOnDrop { state: state.clone(), run: Some(turn.run.clone()) };
            if stream {
                stream_turn(turn, follower, guard).await
            } else {
                complete_turn(turn, follower, guard).await
            }
        }
    }
}

fn ids_headers(response: &mut Response, run: &RunRow) {
    let h = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(run.session_id.as_str()) {
        h.insert("x-session-id", v);
    }
    if let Ok(v) = HeaderValue::from_str(run.id.as_str()) {
        h.insert("x-run-id", v);
    }
}

fn timing(response: &mut Response, total: Duration, upstream_ms: f64) {
    let total_ms = total.as_secs_f64() * 1000.0;
    let overhead_ms = (total_ms - upstream_ms).max(0.0);
    metrics::histogram!("hearth_overhead_seconds").record(overhead_ms / 1000.0);
    let value = format!("hearth;dur={overhead_ms:.3}, upstream;dur={upstream_ms:.3}");
    if let Ok(v) = HeaderValue::from_str(&value) {
        response.headers_mut().insert("server-timing", v);
    }
}

/// The HTTP error of a run that failed before answering.
fn failure(data: &Value) -> ApiError {
    let message =
        data.pointer("/error/message").and_then(Value::as_str).unwrap_or("the run failed").to_owned();
    match data.pointer("/error/code").and_then(Value::as_str) {
        Some("upstream_timeout") => ApiError::UpstreamTimeout(message),
        Some("upstream_error") => ApiError::Upstream(message),
        Some("cancelled") => ApiError::Conflict(format!("the run was cancelled: {message}")),
        _ => {
            tracing::warn!(message, "chat run failed");
            ApiError::RunFailed(message)
        }
    }
}

fn finish_reason(output: &Value) -> &'static str {
    let calls = output.get("tool_calls").and_then(Value::as_array).is_some_and(|c| !c.is_empty());
    if calls { "tool_calls" } else { "stop" }
}

fn upstream_ms(data: &Value) -> f64 {
    data.get("upstream_ms").and_then(Value::as_f64).unwrap_or(0.0)
}

async fn wait_terminal(follower: &mut Follower) -> Result<RunEvent, ApiError> {
    while let Some(event) = follower.next().await? {
        if event.kind.is_terminal() {
            return Ok(event);
        }
    }
    Err(ApiError::Internal)
}

async fn complete_turn(
    turn: Turn,
    mut follower: Follower,
    mut guard: CancelOnDrop,
) -> Result<Response, ApiError> {
    let terminal = wait_terminal(&mut follower).await?;
    guard.disarm();
    answer(&turn, &terminal)
}

/// The `chat.completion` for a run's terminal event, or its error.
/// A `chat.completion` answer, serialized from the terminal event without copying it.
#[derive(serde::Serialize)]
struct CompletionOut<'a> {
    id: String,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: [ChoiceOut<'a>; 1],
    usage: &'a Value,
}

#[derive(serde::Serialize)]
struct ChoiceOut<'a> {
    index: u32,
    message: MessageOut<'a>,
    logprobs: Option<()>,
    finish_reason: &'static str,
}

#[derive(serde::Serialize)]
struct MessageOut<'a> {
    role: &'static str,
    /// The text; `null` beside tool calls when there is none, else `""`.
    content: &'a Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<&'a Value>,
}

fn answer(turn: &Turn, terminal: &RunEvent) -> Result<Response, ApiError> {
    static NULL: Value = Value::Null;
    static EMPTY: std::sync::LazyLock<Value> = std::sync::LazyLock::new(|| json!(""));
    static NO_USAGE: std::sync::LazyLock<Value> =
        std::sync::LazyLock::new(|| json!({"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}));
    if terminal.kind != EventType::Completed {
        return Err(failure(&terminal.data));
    }
    let output = terminal.data.get("output").unwrap_or(&NULL);
    let finish_reason = finish_reason(output);
    let tool_calls = (finish_reason == "tool_calls").then(|| &output["tool_calls"]);
    let content = match output.get("content").filter(|c| !c.is_null() && c.as_str() != Some("")) {
        Some(text) => text,
        None if tool_calls.is_some() => &NULL,
        None => &EMPTY,
    };
    let body = CompletionOut {
        id: completion_id(turn),
        object: "chat.completion",
        created: turn.created,
        model: &turn.model,
        choices: [ChoiceOut {
            index: 0,
            message: MessageOut { role: "assistant", content, tool_calls },
            logprobs: None,
            finish_reason,
        }],
        usage: terminal.data.get("usage").unwrap_or(&NO_USAGE),
    };
    let mut response = axum::Json(body).into_response();
    ids_headers(&mut response, &turn.run);
    timing(&mut response, turn.started.elapsed(), upstream_ms(&terminal.data));
    Ok(response)
}

fn chunk(turn: &Turn, delta: &Value, finish: Option<&str>) -> Event {
    let body = json!({
        "id": completion_id(turn),
        "object": "chat.completion.chunk",
        "created": turn.created,
        "model": turn.model,
        "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
    });
    Event::default().data(body.to_string())
}

/// Frames for one run event, in OpenAI's streaming shape.
fn frames(turn: &Turn, event: &RunEvent) -> Vec<Event> {
    match event.kind {
        EventType::TextDelta => {
            let text = event.data.get("text").cloned().unwrap_or_default();
            vec![chunk(turn, &json!({"content": text}), None)]
        }
        EventType::ToolStarted | EventType::ToolFinished => {
            let name = event.data.get("name").and_then(Value::as_str).unwrap_or("tool");
            let what = if event.kind == EventType::ToolStarted { "started" } else { "finished" };
            vec![Event::default().comment(format!("tool {name} {what}"))]
        }
        EventType::Completed => completed_frames(turn, &event.data),
        EventType::Failed | EventType::Cancelled => {
            let error = failure(&event.data);
            let (kind, code) = error.kind();
            let body =
                json!({"error": {"message": error.to_string(), "type": kind, "param": null, "code": code}});
            vec![Event::default().data(body.to_string())]
        }
        _ => Vec::new(),
    }
}

fn completed_frames(turn: &Turn, data: &Value) -> Vec<Event> {
    let output = data.get("output").cloned().unwrap_or_default();
    let mut out = Vec::new();
    if let Some(calls) = output.get("tool_calls").and_then(Value::as_array).filter(|c| !c.is_empty()) {
        let deltas: Vec<Value> = calls
            .iter()
            .enumerate()
            .map(|(index, call)| {
                json!({"index": index, "id": call["id"], "type": "function", "function": call["function"]})
            })
            .collect();
        out.push(chunk(turn, &json!({"tool_calls": deltas}), None));
    }
    out.push(chunk(turn, &json!({}), Some(finish_reason(&output))));
    if turn.include_usage {
        let body = json!({
            "id": completion_id(turn), "object": "chat.completion.chunk", "created": turn.created,
            "model": turn.model, "choices": [], "usage": data.get("usage"),
        });
        out.push(Event::default().data(body.to_string()));
    }
    out.push(Event::default().data("[DONE]"));
    out
}

/// Streams the run. Waits for its first content (or its end) before answering, so a run that
/// fails before any output gets a real HTTP error status, as OpenAI's SDKs expect.
async fn stream_turn(
    turn: Turn,
    mut follower: Follower,
    mut guard: CancelOnDrop,
) -> Result<Response, ApiError> {
    let mut first = Vec::new();
    loop {
        let Some(event) = follower.next().await? else { return Err(ApiError::Internal) };
        let substantive =
            matches!(event.kind, EventType::TextDelta | EventType::ToolStarted) || event.kind.is_terminal();
        if event.kind.is_terminal() && event.kind != EventType::Completed {
            guard.disarm();
            return Err(failure(&event.data));
        }
        first.push(event);
        if substantive {
            break;
        }
    }
    let head_ms = turn.started.elapsed();
    let mut frames_out = vec![chunk(&turn, &json!({"role": "assistant", "content": ""}), None)];
    for event in &first {
        frames_out.extend(frames(&turn, event));
    }
    let done = first.last().is_some_and(|e| e.kind.is_terminal());
    if done {
        guard.disarm();
    }
    let run = turn.run.clone();
    let stream = futures::stream::unfold(
        (std::collections::VecDeque::from(frames_out), turn, follower, guard, done),
        |(mut pending, turn, mut follower, mut guard, mut done)| async move {
            loop {
                if let Some(frame) = pending.pop_front() {
                    return Some((Ok::<Event, Infallible>(frame), (pending, turn, follower, guard, done)));
                }
                if done {
                    return None;
                }
                match follower.next().await {
                    Ok(Some(event)) => {
                        if event.kind.is_terminal() {
                            done = true;
                            guard.disarm();
                        }
                        pending.extend(frames(&turn, &event));
                    }
                    Ok(None) | Err(_) => return None,
                }
            }
        },
    );
    let mut response = Sse::new(stream).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)).into_response();
    ids_headers(&mut response, &run);
    let overhead = head_ms.as_secs_f64() * 1000.0;
    if let Ok(v) = HeaderValue::from_str(&format!("hearth;desc=\"to first event\";dur={overhead:.3}")) {
        response.headers_mut().insert("server-timing", v);
    }
    Ok(response)
}
