//! The agent loop: model → tool calls → results → model … up to `max_steps`.
//!
//! Server-side tool calls run in parallel, each under a timeout; their results (errors
//! included, marked as errors) go back to the model. Calls of tools the client sent end the
//! turn and are handed back. Hitting `max_steps` fails the run with a clear error. The loop
//! reports progress through [`Emit`] and stops where it is when cancelled.

pub mod tools;

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::domain::event::{Emit, EventData, ToolFinished, ToolStarted};
use crate::domain::message::{Message, Role, ToolCall, ToolSpec};
use crate::domain::outcome::{ErrorCode, RunError};
use crate::llm::{ChatModel, ModelError, ModelOptions, ModelOutput, ModelRequest, Usage};
use tools::ToolExecutor;

/// Everything one turn needs.
pub struct Turn {
    /// The model.
    pub model: Arc<dyn ChatModel>,
    /// The provider's model name.
    pub model_name: String,
    /// The conversation so far, this turn's input included.
    pub messages: Vec<Message>,
    /// Tools the client sent (handed back when called).
    pub client_tools: Vec<ToolSpec>,
    /// This turn's server-side tools (chosen for its organization and user).
    pub server_tools: Arc<dyn ToolExecutor>,
    /// Names of the server-side tools this turn may use.
    pub allowed_tools: Vec<String>,
    /// Model calls allowed.
    pub max_steps: u32,
    /// Sampling options.
    pub options: ModelOptions,
    /// Longest a server-side tool call may take.
    pub tool_timeout: Duration,
    /// Whether the caller streams the answer.
    pub stream: bool,
    /// Time spent in model calls, in nanoseconds (added to; read by the caller for overhead).
    pub upstream_nanos: Arc<std::sync::atomic::AtomicU64>,
}

/// How a turn ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// A final answer, or client tool calls handed back.
    Completed {
        /// Final text.
        content: String,
        /// Client tool calls, if the turn ends with them.
        tool_calls: Vec<ToolCall>,
        /// Messages this turn added to the conversation (after its input).
        messages: Vec<Message>,
        /// Usage of every model call.
        usage: Usage,
    },
    /// An error ended the turn.
    Failed {
        /// What went wrong (`max_steps_exceeded`, `upstream_error`, …).
        error: RunError,
        /// Usage so far.
        usage: Usage,
    },
    /// Cancelled on request.
    Cancelled {
        /// Usage so far.
        usage: Usage,
    },
}

/// Runs a turn to its end; a panic inside it (a bug in hearth or in a tool) ends only this
/// turn, as a failure with code `internal_error`, never the worker.
pub async fn run_turn_guarded(turn: Turn, emit: &dyn Emit, cancel: &CancellationToken) -> Outcome {
    use futures::FutureExt as _;
    match std::panic::AssertUnwindSafe(run_turn(turn, emit, cancel)).catch_unwind().await {
        Ok(outcome) => outcome,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".to_owned());
            tracing::error!(panic = %what, "a turn panicked: it fails, the worker goes on");
            Outcome::Failed {
                error: RunError::new(
                    ErrorCode::Internal,
                    "hearth failed inside this turn (a bug, logged); the run failed",
                ),
                usage: Usage::default(),
            }
        }
    }
}

/// Runs a turn to its end.
pub async fn run_turn(turn: Turn, emit: &dyn Emit, cancel: &CancellationToken) -> Outcome {
    let mut usage = Usage::default();
    let mut conversation = turn.messages.clone();
    let input_len = conversation.len();
    let specs: Vec<ToolSpec> = turn
        .server_tools
        .specs()
        .into_iter()
        .filter(|s| turn.allowed_tools.contains(&s.name))
        .chain(turn.client_tools.iter().cloned())
        .collect();
    for _step in 0..turn.max_steps {
        let request = ModelRequest {
            model: turn.model_name.clone(),
            messages: conversation.clone(),
            tools: specs.clone(),
            options: turn.options.clone(),
            stream: turn.stream,
        };
        let called = std::time::Instant::now();
        let output = tokio::select! {
            () = cancel.cancelled() => return Outcome::Cancelled { usage },
            out = call_model(turn.model.as_ref(), &request, emit) => out,
        };
        let spent = u64::try_from(called.elapsed().as_nanos()).unwrap_or(u64::MAX);
        turn.upstream_nanos.fetch_add(spent, std::sync::atomic::Ordering::Relaxed);
        let output = match output {
            Ok(output) => output,
            Err(e) => return model_failure(&e, usage),
        };
        usage.add(output.usage);
        emit.emit(EventData::Usage(output.usage));
        let (client, server): (Vec<ToolCall>, Vec<ToolCall>) = output
            .tool_calls
            .iter()
            .cloned()
            .partition(|c| turn.client_tools.iter().any(|t| t.name == c.name));
        conversation.push(Message {
            role: Role::Assistant,
            content: (!output.content.is_empty()).then(|| output.content.clone()),
            tool_calls: output.tool_calls.clone(),
            tool_call_id: None,
        });
        if !server.is_empty() {
            let results = tokio::select! {
                () = cancel.cancelled() => return Outcome::Cancelled { usage },
                r = run_tools(&turn, &server, emit) => r,
            };
            conversation.extend(results);
        }
        if server.is_empty() || !client.is_empty() {
            return Outcome::Completed {
                content: output.content,
                tool_calls: client,
                messages: conversation.split_off(input_len),
                usage,
            };
        }
    }
    Outcome::Failed {
        error: RunError::new(
            ErrorCode::MaxStepsExceeded,
            format!("the agent reached max_steps ({}) without a final answer", turn.max_steps),
        ),
        usage,
    }
}

async fn call_model(
    model: &dyn ChatModel,
    request: &ModelRequest,
    emit: &dyn Emit,
) -> Result<ModelOutput, ModelError> {
    let deltas = |text: &str| {
        if !text.is_empty() {
            emit.emit(EventData::text(text));
        }
    };
    model.complete(request, &deltas).await
}

fn model_failure(error: &ModelError, usage: Usage) -> Outcome {
    let code = match error {
        ModelError::Timeout(_) => ErrorCode::UpstreamTimeout,
        _ => ErrorCode::UpstreamError,
    };
    // The whole error is for the log; the run's error (what its client sees) says nothing of
    // hearth's credentials or the provider's addresses.
    tracing::warn!(error = %error, "model call failed");
    Outcome::Failed { error: RunError::new(code, error.public_message()), usage }
}

/// Runs server-side calls in parallel, each under the timeout; returns the tool messages.
/// Every call's `tool.started` is stored before any call is made: after a crash, the retry
/// knows which calls may have taken effect (`worker::interrupted_note`).
async fn run_tools(turn: &Turn, calls: &[ToolCall], emit: &dyn Emit) -> Vec<Message> {
    for call in calls {
        emit.emit(EventData::ToolStarted(ToolStarted {
            id: call.id.clone(),
            name: call.name.clone(),
            arguments: call.arguments.clone(),
        }));
    }
    emit.durable().await;
    let futures = calls.iter().map(|call| async move {
        let started = std::time::Instant::now();
        let result = call_tool(turn, call).await;
        let (text, is_error) = match result {
            Ok(text) => (text, false),
            Err(text) => (format!("error: {text}"), true),
        };
        emit.emit(EventData::ToolFinished(ToolFinished {
            id: call.id.clone(),
            name: call.name.clone(),
            is_error,
            result: text.clone(),
            duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        }));
        Message { tool_call_id: Some(call.id.clone()), ..Message::text(Role::Tool, text) }
    });
    futures::future::join_all(futures).await
}

/// One server-side call: only a tool the profile offers, with JSON-object-or-any arguments,
/// under its timeout (the tool's own, else the turn's). A timed-out call may have taken effect.
async fn call_tool(turn: &Turn, call: &ToolCall) -> Result<String, String> {
    let tools = &turn.server_tools;
    if !turn.allowed_tools.contains(&call.name) {
        return Err(tools.explain(&call.name).unwrap_or_else(|| format!("unknown tool `{}`", call.name)));
    }
    let args = serde_json::from_str::<Value>(&call.arguments)
        .map_err(|e| format!("invalid arguments for `{}`: not valid JSON ({e})", call.name))?;
    let limit = tools.timeout(&call.name).unwrap_or(turn.tool_timeout);
    tokio::time::timeout(limit, tools.call(&call.name, args)).await.unwrap_or_else(|_| {
        Err(format!(
            "`{}` timed out after {} ms; whether it took effect is unknown: do not repeat it blindly",
            call.name,
            limit.as_millis()
        ))
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::agent::tools::TestTools;
    use crate::llm::echo::Echo;

    use crate::domain::event::EventType;

    #[derive(Default)]
    struct Recorder(Mutex<Vec<EventData>>);

    impl Emit for Recorder {
        fn emit(&self, data: EventData) {
            self.0.lock().unwrap().push(data);
        }
    }

    fn turn(text: &str, client_tools: &[&str], max_steps: u32) -> Turn {
        Turn {
            model: Arc::new(Echo),
            model_name: "echo".into(),
            messages: vec![Message::text(Role::User, text)],
            client_tools: client_tools
                .iter()
                .map(|n| ToolSpec {
                    name: (*n).into(),
                    description: String::new(),
                    parameters: serde_json::json!({}),
                })
                .collect(),
            server_tools: Arc::new(TestTools),
            allowed_tools: TestTools.specs().into_iter().map(|s| s.name).collect(),
            max_steps,
            options: ModelOptions::default(),
            tool_timeout: Duration::from_secs(5),
            stream: true,
            upstream_nanos: Arc::default(),
        }
    }

    #[tokio::test]
    async fn server_tools_run_and_their_result_is_answered() {
        let rec = Recorder::default();
        let out =
            run_turn(turn(r#"call:test__echo {"text":"pong"}"#, &[], 8), &rec, &CancellationToken::new())
                .await;
        let Outcome::Completed { content, messages, .. } = out else { panic!("{out:?}") };
        assert_eq!(content, "pong");
        assert_eq!(messages.len(), 3); // assistant call, tool result, final answer
        let kinds: Vec<EventType> = rec.0.lock().unwrap().iter().map(EventData::kind).collect();
        assert!(kinds.contains(&EventType::ToolStarted) && kinds.contains(&EventType::ToolFinished));
    }

    #[tokio::test]
    async fn client_tools_are_handed_back() {
        let out =
            run_turn(turn("call:lookup {}", &["lookup"], 8), &Recorder::default(), &CancellationToken::new())
                .await;
        let Outcome::Completed { tool_calls, .. } = out else { panic!("{out:?}") };
        assert_eq!(tool_calls[0].name, "lookup");
    }

    #[tokio::test]
    async fn tool_errors_go_back_to_the_model() {
        let out = run_turn(
            turn(r#"call:test__fail {"message":"boom"}"#, &[], 8),
            &Recorder::default(),
            &CancellationToken::new(),
        )
        .await;
        let Outcome::Completed { content, .. } = out else { panic!("{out:?}") };
        assert_eq!(content, "error: boom");
    }

    #[tokio::test]
    async fn max_steps_ends_with_a_clear_error() {
        let out =
            run_turn(turn("call:test__loop {}", &[], 3), &Recorder::default(), &CancellationToken::new())
                .await;
        let Outcome::Failed { error, .. } = out else { panic!("{out:?}") };
        assert_eq!(error.code, ErrorCode::MaxStepsExceeded);
        assert!(error.message.contains("max_steps (3)"));
    }

    #[tokio::test]
    async fn cancellation_stops_a_running_tool() {
        let cancel = CancellationToken::new();
        let stopper = cancel.clone();
        let tracker = tokio_util::task::TaskTracker::new();
        tracker.spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            stopper.cancel();
        });
        let started = std::time::Instant::now();
        let out =
            run_turn(turn(r#"call:test__sleep {"ms":5000}"#, &[], 8), &Recorder::default(), &cancel).await;
        assert!(matches!(out, Outcome::Cancelled { .. }));
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
