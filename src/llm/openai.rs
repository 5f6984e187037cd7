//! The OpenAI-compatible provider (OpenAI, Ollama, vLLM, llama.cpp server, OpenRouter, …):
//! `POST {base}/chat/completions`, streaming or not, translated to and from hearth's types.

use futures::future::BoxFuture;
use serde_json::{Value, json};

use super::http::{Answer, Upstream, call, whole_answer};
use super::{ChatModel, Deltas, ModelError, ModelOutput, ModelRequest, Usage};
use crate::domain::message::{Message, Role, ToolCall};

/// An OpenAI-compatible endpoint.
pub struct OpenAi {
    upstream: Upstream,
}

impl OpenAi {
    /// A provider at `base_url` (e.g. `https://api.openai.com/v1`) with an optional key.
    #[must_use]
    pub fn new(upstream: Upstream) -> Self {
        Self { upstream }
    }
}

fn wire_message(m: &Message) -> Value {
    let mut out = json!({"role": m.role.as_str(), "content": m.content});
    if !m.tool_calls.is_empty() {
        out["tool_calls"] = m
            .tool_calls
            .iter()
            .map(|c| json!({"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}))
            .collect();
    }
    if m.role == Role::Tool {
        out["tool_call_id"] = json!(m.tool_call_id);
    }
    out
}

/// The request body for a model call.
#[must_use]
pub fn request_body(request: &ModelRequest, stream: bool) -> Value {
    let mut body = json!({
        "model": request.model,
        "messages": request.messages.iter().map(wire_message).collect::<Vec<_>>(),
        "stream": stream,
    });
    if stream {
        body["stream_options"] = json!({"include_usage": true});
    }
    if !request.tools.is_empty() {
        body["tools"] = request
            .tools
            .iter()
            .map(|t| json!({"type": "function", "function": {"name": t.name, "description": t.description, "parameters": t.parameters}}))
            .collect();
    }
    let o = &request.options;
    let optional = [
        ("temperature", o.temperature.map(Value::from)),
        ("top_p", o.top_p.map(Value::from)),
        ("max_tokens", o.max_tokens.map(Value::from)),
        ("stop", (!o.stop.is_empty()).then(|| json!(o.stop))),
        ("response_format", o.response_format.clone()),
        ("tool_choice", o.tool_choice.clone()),
    ];
    for (key, value) in optional {
        if let Some(value) = value {
            body[key] = value;
        }
    }
    body
}

fn usage_of(value: &Value) -> Usage {
    let n = |k: &str| value.get(k).and_then(Value::as_u64).unwrap_or(0);
    Usage {
        prompt_tokens: n("prompt_tokens"),
        completion_tokens: n("completion_tokens"),
        total_tokens: n("total_tokens"),
    }
}

fn parse_complete(body: &Value) -> Result<ModelOutput, ModelError> {
    let message = body
        .pointer("/choices/0/message")
        .ok_or_else(|| ModelError::Protocol("the response has no choices[0].message".into()))?;
    let tool_calls = message
        .get("tool_calls")
        .and_then(Value::as_array)
        .map(|calls| {
            calls
                .iter()
                .map(|c| ToolCall {
                    id: c.get("id").and_then(Value::as_str).unwrap_or_default().to_owned(),
                    name: c.pointer("/function/name").and_then(Value::as_str).unwrap_or_default().to_owned(),
                    arguments: c
                        .pointer("/function/arguments")
                        .and_then(Value::as_str)
                        .unwrap_or("{}")
                        .to_owned(),
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(ModelOutput {
        content: message.get("content").and_then(Value::as_str).unwrap_or_default().to_owned(),
        tool_calls,
        usage: body.get("usage").map(usage_of).unwrap_or_default(),
    })
}

/// Folds streamed chunks into an output.
#[derive(Default)]
struct StreamState {
    output: ModelOutput,
    done: bool,
}

impl StreamState {
    fn chunk(&mut self, data: &str, deltas: Deltas<'_>) -> Result<(), ModelError> {
        if data == "[DONE]" {
            self.done = true;
            return Ok(());
        }
        let chunk: Value = serde_json::from_str(data)
            .map_err(|_| ModelError::Protocol("a stream chunk is not JSON".into()))?;
        if let Some(error) = chunk.get("error") {
            return Err(ModelError::Protocol(format!("error in stream: {error}")));
        }
        if let Some(usage) = chunk.get("usage").filter(|u| u.is_object()) {
            self.output.usage = usage_of(usage);
        }
        let Some(delta) = chunk.pointer("/choices/0/delta") else { return Ok(()) };
        if let Some(text) = delta.get("content").and_then(Value::as_str).filter(|t| !t.is_empty()) {
            self.output.content.push_str(text);
            deltas(text);
        }
        for call in delta.get("tool_calls").and_then(Value::as_array).into_iter().flatten() {
            let index = call.get("index").and_then(Value::as_u64).unwrap_or(0) as usize;
            while self.output.tool_calls.len() <= index {
                self.output.tool_calls.push(ToolCall {
                    id: String::new(),
                    name: String::new(),
                    arguments: String::new(),
                });
            }
            let slot = &mut self.output.tool_calls[index];
            if let Some(id) = call.get("id").and_then(Value::as_str) {
                slot.id = id.to_owned();
            }
            if let Some(name) = call.pointer("/function/name").and_then(Value::as_str) {
                slot.name.push_str(name);
            }
            if let Some(args) = call.pointer("/function/arguments").and_then(Value::as_str) {
                slot.arguments.push_str(args);
            }
        }
        Ok(())
    }
}

impl ChatModel for OpenAi {
    fn complete<'a>(
        &'a self,
        request: &'a ModelRequest,
        deltas: Deltas<'a>,
    ) -> BoxFuture<'a, Result<ModelOutput, ModelError>> {
        Box::pin(async move {
            let body = request_body(request, request.stream);
            let mut state = StreamState::default();
            let on_frame = |data: &str| state.chunk(data, deltas).map(|()| state.done);
            match call(&self.upstream, "chat/completions", &body, &[], request.stream, "[DONE]", on_frame)
                .await?
            {
                Answer::Json(body) => whole_answer(&body, parse_complete, deltas),
                Answer::Streamed => Ok(state.output),
            }
        })
    }
}
