//! The OpenAI-compatible provider (OpenAI, Ollama, vLLM, llama.cpp server, OpenRouter, …):
//! `POST {base}/chat/completions`, streaming or not, translated to and from hearth's types.

use futures::future::BoxFuture;
use serde_json::{Value, json};

use super::http::{Answer, Upstream, call, whole_answer};
use super::{ChatModel, Deltas, ModelError, ModelOutput, ModelRequest, Usage};
use crate::domain::message::{Message, Role, ToolCall};

/// The path of chat completions under the base URL.
pub const PATH: &str = "chat/completions";

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

/// A non-streamed `chat.completion`, as far as hearth reads it. Every field is optional on the
/// wire and read leniently (a missing one is empty, as OpenAI-compatible servers differ).
#[derive(serde::Deserialize)]
struct WireCompletion {
    #[serde(default)]
    choices: Vec<WireChoice>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(serde::Deserialize)]
struct WireChoice {
    message: Option<WireMessage>,
}

#[derive(serde::Deserialize)]
struct WireMessage {
    /// A string; anything else (null, parts) reads as no text.
    #[serde(default)]
    content: Option<Value>,
    #[serde(default)]
    tool_calls: Option<Vec<WireCall>>,
}

#[derive(serde::Deserialize)]
struct WireCall {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    function: Option<WireFunction>,
}

#[derive(serde::Deserialize)]
struct WireFunction {
    #[serde(default)]
    name: Option<String>,
    /// A JSON string; anything else reads as `{}`.
    #[serde(default)]
    arguments: Option<Value>,
}

#[derive(serde::Deserialize, Default)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
    #[serde(default)]
    total_tokens: Option<u64>,
}

fn parse_complete(body: WireCompletion) -> Result<ModelOutput, ModelError> {
    let message = body
        .choices
        .into_iter()
        .next()
        .and_then(|c| c.message)
        .ok_or_else(|| ModelError::Protocol("the response has no choices[0].message".into()))?;
    let tool_calls = message
        .tool_calls
        .unwrap_or_default()
        .into_iter()
        .map(|c| {
            let function = c.function.unwrap_or(WireFunction { name: None, arguments: None });
            ToolCall {
                id: c.id.unwrap_or_default(),
                name: function.name.unwrap_or_default(),
                arguments: match function.arguments {
                    Some(Value::String(text)) => text,
                    _ => "{}".to_owned(),
                },
            }
        })
        .collect();
    let content = match message.content {
        Some(Value::String(text)) => text,
        _ => String::new(),
    };
    let usage = body.usage.unwrap_or_default();
    Ok(ModelOutput {
        content,
        tool_calls,
        usage: Usage {
            prompt_tokens: usage.prompt_tokens.unwrap_or(0),
            completion_tokens: usage.completion_tokens.unwrap_or(0),
            total_tokens: usage.total_tokens.unwrap_or(0),
        },
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
            match call(&self.upstream, &body, &[], request.stream, "[DONE]", on_frame).await? {
                Answer::Body(body) => whole_answer(&self.upstream, &body, parse_complete, deltas),
                Answer::Streamed => Ok(state.output),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<ModelOutput, ModelError> {
        let upstream = Upstream::new(reqwest::Client::new(), "http://upstream.test/v1", PATH, &[]).unwrap();
        let seen = std::sync::Mutex::new(String::new());
        let deltas = |text: &str| seen.lock().unwrap().push_str(text);
        let out = super::super::http::whole_answer(&upstream, body.as_bytes(), parse_complete, &deltas);
        if let Ok(o) = &out {
            assert_eq!(*seen.lock().unwrap(), o.content, "the whole text is handed on as one delta");
        }
        out
    }

    #[test]
    fn a_whole_answer_reads_text_tool_calls_and_usage() {
        let out = parse(
            r#"{"id":"x","choices":[{"index":0,"message":{"role":"assistant","content":"hi",
                "tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"{\"a\":1}"}}]},
                "finish_reason":"tool_calls"}],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5},
                "system_fingerprint":null}"#,
        )
        .unwrap();
        assert_eq!(out.content, "hi");
        assert_eq!(
            (
                out.tool_calls[0].id.as_str(),
                out.tool_calls[0].name.as_str(),
                out.tool_calls[0].arguments.as_str()
            ),
            ("c1", "f", r#"{"a":1}"#)
        );
        assert_eq!((out.usage.prompt_tokens, out.usage.completion_tokens, out.usage.total_tokens), (3, 2, 5));
    }

    #[test]
    fn odd_but_valid_answers_read_leniently() {
        let out =
            parse(r#"{"choices":[{"message":{"content":null,"tool_calls":null}}],"usage":null}"#).unwrap();
        assert_eq!((out.content.as_str(), out.tool_calls.len(), out.usage.total_tokens), ("", 0, 0));
        let out = parse(
            r#"{"choices":[{"message":{"content":[{"type":"text","text":"x"}],
                "tool_calls":[{"function":{"name":"f","arguments":{"a":1}}}]}}]}"#,
        )
        .unwrap();
        assert_eq!((out.content.as_str(), out.tool_calls[0].arguments.as_str()), ("", "{}"));
    }

    #[test]
    fn broken_answers_are_protocol_errors_that_say_why() {
        let message = |body: &str| match parse(body) {
            Err(ModelError::Protocol(m)) => m,
            other => panic!("expected a protocol error, got {:?}", other.map(|o| o.content)),
        };
        assert!(message(r#"{"choices":[]}"#).contains("no choices[0].message"));
        assert!(message("<html>502</html>").contains("is not valid JSON"));
        assert!(message(r#"{"choices":{"0":1}}"#).contains("expected shape"));
    }
}
