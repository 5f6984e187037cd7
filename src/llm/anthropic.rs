//! The Anthropic Messages API provider: system prompt, messages, tools and tool results, stop
//! reasons, usage and streaming events translated to and from hearth's types.

use futures::future::BoxFuture;
use serde_json::{Value, json};

use super::http::{Answer, Upstream, call, whole_answer};
use super::{ChatModel, Deltas, ModelError, ModelOutput, ModelRequest, Usage};
use crate::domain::message::{Message, Role, ToolCall};

/// The Messages API version hearth speaks.
pub const API_VERSION: &str = "2023-06-01";
/// The path of the Messages API under the base URL.
pub const PATH: &str = "v1/messages";
/// `max_tokens` is required by the API; used when the request sets none.
const DEFAULT_MAX_TOKENS: u32 = 4096;

/// An Anthropic endpoint.
pub struct Anthropic {
    upstream: Upstream,
}

impl Anthropic {
    /// A provider over `upstream` (base URL `https://api.anthropic.com`, `x-api-key` header).
    #[must_use]
    pub fn new(upstream: Upstream) -> Self {
        Self { upstream }
    }
}

fn blocks(m: &Message) -> Vec<Value> {
    let mut out = Vec::new();
    if m.role == Role::Tool {
        let text = m.content.clone().unwrap_or_default();
        let is_error = text.starts_with("error: ");
        out.push(json!({"type": "tool_result", "tool_use_id": m.tool_call_id, "content": text, "is_error": is_error}));
        return out;
    }
    if let Some(text) = m.content.as_deref().filter(|t| !t.is_empty()) {
        out.push(json!({"type": "text", "text": text}));
    }
    for call in &m.tool_calls {
        let input: Value = serde_json::from_str(&call.arguments).unwrap_or_else(|_| json!({}));
        out.push(json!({"type": "tool_use", "id": call.id, "name": call.name, "input": input}));
    }
    out
}

/// Messages in Anthropic's form: system prompts lifted out, tool results as user turns, and
/// consecutive turns of the same role merged (the API wants them alternating).
fn wire_messages(messages: &[Message]) -> (Option<String>, Vec<Value>) {
    let system: Vec<&str> =
        messages.iter().filter(|m| m.role == Role::System).filter_map(|m| m.content.as_deref()).collect();
    let mut out: Vec<(String, Vec<Value>)> = Vec::new();
    for m in messages.iter().filter(|m| m.role != Role::System) {
        let role = if m.role == Role::Assistant { "assistant" } else { "user" };
        let content = blocks(m);
        match out.last_mut() {
            Some((last, existing)) if last == role => existing.extend(content),
            _ => out.push((role.to_owned(), content)),
        }
    }
    let system = (!system.is_empty()).then(|| system.join("\n\n"));
    (system, out.into_iter().map(|(role, content)| json!({"role": role, "content": content})).collect())
}

fn tool_choice(choice: &Value) -> Option<Value> {
    match choice {
        Value::String(s) if s == "auto" => Some(json!({"type": "auto"})),
        Value::String(s) if s == "none" => Some(json!({"type": "none"})),
        Value::String(s) if s == "required" => Some(json!({"type": "any"})),
        Value::Object(_) => {
            choice.pointer("/function/name").map(|name| json!({"type": "tool", "name": name}))
        }
        _ => None,
    }
}

/// The request body for a model call.
#[must_use]
pub fn request_body(request: &ModelRequest, stream: bool) -> Value {
    let (system, messages) = wire_messages(&request.messages);
    let o = &request.options;
    let mut body = json!({
        "model": request.model,
        "messages": messages,
        "max_tokens": o.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS),
        "stream": stream,
    });
    if let Some(system) = system {
        body["system"] = json!(system);
    }
    if !request.tools.is_empty() {
        body["tools"] = request
            .tools
            .iter()
            .map(|t| {
                let schema =
                    if t.parameters.is_object() { t.parameters.clone() } else { json!({"type": "object"}) };
                json!({"name": t.name, "description": t.description, "input_schema": schema})
            })
            .collect();
    }
    if let Some(t) = o.temperature {
        body["temperature"] = json!(t.min(1.0));
    }
    if let Some(p) = o.top_p {
        body["top_p"] = json!(p);
    }
    if !o.stop.is_empty() {
        body["stop_sequences"] = json!(o.stop);
    }
    if let Some(choice) = o.tool_choice.as_ref().and_then(tool_choice) {
        body["tool_choice"] = choice;
    }
    body
}

fn usage(input: u64, output: u64) -> Usage {
    Usage { prompt_tokens: input, completion_tokens: output, total_tokens: input + output }
}

fn parse_complete(body: &Value) -> Result<ModelOutput, ModelError> {
    let content = body
        .get("content")
        .and_then(Value::as_array)
        .ok_or_else(|| ModelError::Protocol("the response has no content blocks".into()))?;
    let mut output = ModelOutput::default();
    for block in content {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => {
                output.content.push_str(block.get("text").and_then(Value::as_str).unwrap_or_default())
            }
            Some("tool_use") => output.tool_calls.push(ToolCall {
                id: block.get("id").and_then(Value::as_str).unwrap_or_default().to_owned(),
                name: block.get("name").and_then(Value::as_str).unwrap_or_default().to_owned(),
                arguments: block.get("input").map_or_else(|| "{}".to_owned(), Value::to_string),
            }),
            _ => {}
        }
    }
    let n = |p: &str| body.pointer(p).and_then(Value::as_u64).unwrap_or(0);
    output.usage = usage(n("/usage/input_tokens"), n("/usage/output_tokens"));
    Ok(output)
}

/// Folds streamed events into an output.
#[derive(Default)]
struct StreamState {
    output: ModelOutput,
    input_tokens: u64,
    output_tokens: u64,
    /// Tool calls by content-block index.
    blocks: Vec<(usize, usize)>,
    done: bool,
}

impl StreamState {
    fn event(&mut self, data: &str, deltas: Deltas<'_>) -> Result<(), ModelError> {
        let event: Value = serde_json::from_str(data)
            .map_err(|_| ModelError::Protocol("a stream event is not JSON".into()))?;
        let n = |v: &Value, p: &str| v.pointer(p).and_then(Value::as_u64);
        match event.get("type").and_then(Value::as_str) {
            Some("message_start") => {
                self.input_tokens = n(&event, "/message/usage/input_tokens").unwrap_or(0);
                self.output_tokens = n(&event, "/message/usage/output_tokens").unwrap_or(0);
            }
            Some("content_block_start") => {
                let block = event.get("content_block").cloned().unwrap_or_default();
                if block.get("type").and_then(Value::as_str) == Some("tool_use") {
                    let index = n(&event, "/index").unwrap_or(0) as usize;
                    self.blocks.push((index, self.output.tool_calls.len()));
                    self.output.tool_calls.push(ToolCall {
                        id: block.get("id").and_then(Value::as_str).unwrap_or_default().to_owned(),
                        name: block.get("name").and_then(Value::as_str).unwrap_or_default().to_owned(),
                        arguments: String::new(),
                    });
                }
            }
            Some("content_block_delta") => self.delta(&event, deltas),
            Some("message_delta") => {
                if let Some(out) = n(&event, "/usage/output_tokens") {
                    self.output_tokens = out;
                }
            }
            Some("message_stop") => self.done = true,
            Some("error") => {
                let message =
                    event.pointer("/error/message").and_then(Value::as_str).unwrap_or("stream error");
                return Err(ModelError::Status {
                    status: 529,
                    message: message.to_owned(),
                    retry_after: None,
                });
            }
            _ => {}
        }
        Ok(())
    }

    fn delta(&mut self, event: &Value, deltas: Deltas<'_>) {
        let Some(delta) = event.get("delta") else { return };
        match delta.get("type").and_then(Value::as_str) {
            Some("text_delta") => {
                if let Some(text) = delta.get("text").and_then(Value::as_str).filter(|t| !t.is_empty()) {
                    self.output.content.push_str(text);
                    deltas(text);
                }
            }
            Some("input_json_delta") => {
                let index = event.get("index").and_then(Value::as_u64).unwrap_or(0) as usize;
                let partial = delta.get("partial_json").and_then(Value::as_str).unwrap_or_default();
                if let Some((_, call)) = self.blocks.iter().find(|(block, _)| *block == index)
                    && let Some(call) = self.output.tool_calls.get_mut(*call)
                {
                    call.arguments.push_str(partial);
                }
            }
            _ => {}
        }
    }

    fn finish(mut self) -> ModelOutput {
        for call in &mut self.output.tool_calls {
            if call.arguments.is_empty() {
                call.arguments = "{}".into();
            }
        }
        self.output.usage = usage(self.input_tokens, self.output_tokens);
        self.output
    }
}

impl ChatModel for Anthropic {
    fn complete<'a>(
        &'a self,
        request: &'a ModelRequest,
        deltas: Deltas<'a>,
    ) -> BoxFuture<'a, Result<ModelOutput, ModelError>> {
        Box::pin(async move {
            let body = request_body(request, request.stream);
            let mut state = StreamState::default();
            let on_frame = |data: &str| state.event(data, deltas).map(|()| state.done);
            let extra = [("anthropic-version", API_VERSION)];
            match call(&self.upstream, &body, &extra, request.stream, "message_stop", on_frame).await? {
                Answer::Body(body) => {
                    whole_answer(&self.upstream, &body, |v: Value| parse_complete(&v), deltas)
                }
                Answer::Streamed => Ok(state.finish()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_results_become_user_turns_and_system_is_lifted() {
        let messages = vec![
            Message::text(Role::System, "be kind"),
            Message::text(Role::User, "weather?"),
            Message {
                role: Role::Assistant,
                content: None,
                tool_calls: vec![ToolCall {
                    id: "t1".into(),
                    name: "w".into(),
                    arguments: "{\"c\":1}".into(),
                }],
                tool_call_id: None,
            },
            Message { tool_call_id: Some("t1".into()), ..Message::text(Role::Tool, "sunny") },
        ];
        let (system, wire) = wire_messages(&messages);
        assert_eq!(system.as_deref(), Some("be kind"));
        assert_eq!(wire.len(), 3);
        assert_eq!(wire[1]["content"][0]["type"], "tool_use");
        assert_eq!(wire[1]["content"][0]["input"]["c"], 1);
        assert_eq!(wire[2]["role"], "user");
        assert_eq!(wire[2]["content"][0]["tool_use_id"], "t1");
    }
}
