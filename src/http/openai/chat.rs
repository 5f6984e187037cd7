//! `POST /v1/chat/completions` in OpenAI's wire format: the request becomes a turn of the turn
//! service, and the turn's outcome or events become a `chat.completion` or
//! `chat.completion.chunk` frames ending in `[DONE]`. Nothing here decides how the turn runs.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::types::ChatCompletionRequest;
use crate::app::AppState;
use crate::domain::event::{Completed, EventData, RunEvent};
use crate::domain::outcome::{OpenAiToolCalls, Usage};
use crate::http::auth::Caller;
use crate::http::error::ApiError;
use crate::http::extract::Json;
use crate::ids::{RunId, SessionId};
use crate::queue::RunRow;
use crate::turns::TurnError;
use crate::turns::chat::ChatTurn;

/// SSE keep-alive comment interval while server-side tools run.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// What the answer needs of the request and its run.
struct Meta {
    id: String,
    session: SessionId,
    run: RunId,
    model: String,
    created: u64,
    started: Instant,
    include_usage: bool,
}

impl Meta {
    fn of(run: &RunRow, model: String, started: Instant, include_usage: bool) -> Self {
        let created =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        Self {
            id: format!("chatcmpl-{}", run.id.as_str().trim_start_matches("run_")),
            session: run.session_id.clone(),
            run: run.id.clone(),
            model,
            created,
            started,
            include_usage,
        }
    }

    /// `X-Session-Id` and `X-Run-Id`, on every answer about the run, errors included.
    fn ids_headers(&self, response: &mut Response) {
        ids_headers(response.headers_mut(), &self.session, &self.run);
    }

    /// The error answer of a turn that ended without output, with the run's ids.
    fn error(&self, error: TurnError) -> Response {
        let mut response = ApiError::from(error).into_response();
        self.ids_headers(&mut response);
        response
    }
}

fn ids_headers(h: &mut HeaderMap, session: &SessionId, run: &RunId) {
    if let Ok(v) = HeaderValue::from_str(session.as_str()) {
        h.insert("x-session-id", v);
    }
    if let Ok(v) = HeaderValue::from_str(run.as_str()) {
        h.insert("x-run-id", v);
    }
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
    let key = crate::http::runs::idempotency_key(&headers)?;
    let input = body.into_input(state.turns().default_model())?;
    let (model, stream) = (input.model.clone(), input.stream);
    // A streamed answer holds one of its key's stream slots, taken before the turn starts.
    let slot = if stream { Some(state.auth().open_stream(&principal)?) } else { None };
    let (turn, replayed) = match key {
        Some(key) => state.turns().start_chat_once(&principal, input, session, key).await?,
        None => (state.turns().start_chat(&principal, input, session).await?, false),
    };
    let meta = Meta::of(turn.run(), model, started, include_usage);
    let mut response = if let Some(slot) = slot {
        crate::http::auth::holding(stream_turn(turn, meta).await, slot)
    } else {
        match turn.outcome().await {
            Ok(completed) => answer(&meta, &completed),
            Err(error) => meta.error(error),
        }
    };
    if replayed {
        crate::http::runs::mark_replayed(&mut response);
    }
    Ok(response)
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

/// A `chat.completion` answer, serialized from the terminal event without copying it.
#[derive(serde::Serialize)]
struct CompletionOut<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: [ChoiceOut<'a>; 1],
    usage: &'a Usage,
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
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<OpenAiToolCalls<'a>>,
}

fn finish_reason(completed: &Completed) -> &'static str {
    if completed.output.calls_tools() { "tool_calls" } else { "stop" }
}

fn answer(meta: &Meta, completed: &Completed) -> Response {
    let output = &completed.output;
    let tool_calls = output.calls_tools().then_some(OpenAiToolCalls(&output.tool_calls));
    let content = match output.content.as_deref().filter(|c| !c.is_empty()) {
        Some(text) => Some(text),
        None if tool_calls.is_some() => None,
        None => Some(""),
    };
    let body = CompletionOut {
        id: &meta.id,
        object: "chat.completion",
        created: meta.created,
        model: &meta.model,
        choices: [ChoiceOut {
            index: 0,
            message: MessageOut { role: "assistant", content, tool_calls },
            logprobs: None,
            finish_reason: finish_reason(completed),
        }],
        usage: &completed.usage,
    };
    let mut response = axum::Json(body).into_response();
    meta.ids_headers(&mut response);
    timing(&mut response, meta.started.elapsed(), completed.upstream_ms);
    response
}

fn chunk(meta: &Meta, delta: &Value, finish: Option<&str>) -> Event {
    let body = json!({
        "id": meta.id,
        "object": "chat.completion.chunk",
        "created": meta.created,
        "model": meta.model,
        "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
    });
    Event::default().data(body.to_string())
}

/// Frames for one run event, in OpenAI's streaming shape.
fn frames(meta: &Meta, event: RunEvent) -> Vec<Event> {
    match event.data {
        EventData::TextDelta(delta) => vec![chunk(meta, &json!({"content": delta.text}), None)],
        EventData::ToolStarted(call) => vec![Event::default().comment(format!("tool {} started", call.name))],
        EventData::ToolFinished(call) => {
            vec![Event::default().comment(format!("tool {} finished", call.name))]
        }
        EventData::Completed(completed) => completed_frames(meta, &completed),
        EventData::Failed(end) | EventData::Cancelled(end) => {
            let error = ApiError::from(TurnError::Ended(Box::new(end)));
            vec![Event::default().data(error.body().to_string())]
        }
        EventData::Queued(_) | EventData::Started(_) | EventData::Usage(_) => Vec::new(),
    }
}

fn completed_frames(meta: &Meta, completed: &Completed) -> Vec<Event> {
    let mut out = Vec::new();
    let calls = &completed.output.tool_calls;
    if !calls.is_empty() {
        let deltas: Vec<Value> = calls
            .iter()
            .enumerate()
            .map(|(index, call)| {
                json!({"index": index, "id": call.id, "type": "function",
                       "function": {"name": call.name, "arguments": call.arguments}})
            })
            .collect();
        out.push(chunk(meta, &json!({"tool_calls": deltas}), None));
    }
    out.push(chunk(meta, &json!({}), Some(finish_reason(completed))));
    if meta.include_usage {
        let body = json!({
            "id": meta.id, "object": "chat.completion.chunk", "created": meta.created,
            "model": meta.model, "choices": [], "usage": completed.usage,
        });
        out.push(Event::default().data(body.to_string()));
    }
    out.push(Event::default().data("[DONE]"));
    out
}

/// Streams the turn. Waits for its first content (or its end) before answering, so a turn
/// that fails before any output gets a real HTTP error status, as OpenAI's SDKs expect.
async fn stream_turn(mut turn: ChatTurn, meta: Meta) -> Response {
    let head = match turn.head().await {
        Ok(head) => head,
        Err(error) => return meta.error(error),
    };
    let head_ms = meta.started.elapsed();
    let done = head.last().is_some_and(|e| e.kind().is_terminal());
    let mut pending = VecDeque::from(vec![chunk(&meta, &json!({"role": "assistant", "content": ""}), None)]);
    for event in head {
        pending.extend(frames(&meta, event));
    }
    let (session, run) = (meta.session.clone(), meta.run.clone());
    let stream = futures::stream::unfold(
        (pending, turn, meta, done),
        |(mut pending, mut turn, meta, mut done)| async move {
            loop {
                if let Some(frame) = pending.pop_front() {
                    return Some((Ok::<Event, Infallible>(frame), (pending, turn, meta, done)));
                }
                if done {
                    return None;
                }
                match turn.next().await {
                    Ok(Some(event)) => {
                        done = event.kind().is_terminal();
                        pending.extend(frames(&meta, event));
                    }
                    // The answer cannot go on (its worker was lost mid-answer): a terminal error
                    // chunk, never a second attempt's text after the first's.
                    Err(error @ TurnError::Retried { .. }) => {
                        done = true;
                        pending.push_back(Event::default().data(ApiError::from(error).body().to_string()));
                    }
                    Ok(None) | Err(_) => return None,
                }
            }
        },
    );
    let mut response = Sse::new(stream).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)).into_response();
    ids_headers(response.headers_mut(), &session, &run);
    let overhead = head_ms.as_secs_f64() * 1000.0;
    if let Ok(v) = HeaderValue::from_str(&format!("hearth;desc=\"to first event\";dur={overhead:.3}")) {
        response.headers_mut().insert("server-timing", v);
    }
    response
}
