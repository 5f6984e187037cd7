//! The OpenAI-compatible provider (OpenAI, Ollama, vLLM, llama.cpp server, OpenRouter, …):
//! `POST {base}/chat/completions`, streaming or not, translated to and from hearth's types.

use futures::future::BoxFuture;
use serde_json::Value;

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

/// A chat completion request on the wire, serialized straight from hearth's types (no JSON tree
/// built in between).
#[derive(serde::Serialize)]
pub struct WireRequest<'a> {
    model: &'a str,
    messages: Vec<WireMessageOut<'a>>,
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_options: Option<StreamOptions>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<WireTyped<WireToolOut<'a>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    stop: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    response_format: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<&'a Value>,
}

#[derive(serde::Serialize)]
struct StreamOptions {
    include_usage: bool,
}

#[derive(serde::Serialize)]
struct WireMessageOut<'a> {
    role: &'a str,
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<WireCallOut<'a>>,
    /// Present (maybe `null`) on tool messages only.
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_call_id: Option<Option<&'a str>>,
}

/// `{"type": "function", "function": …}`.
#[derive(serde::Serialize)]
struct WireTyped<T> {
    #[serde(rename = "type")]
    kind: &'static str,
    function: T,
}

#[derive(serde::Serialize)]
struct WireCallOut<'a> {
    id: &'a str,
    #[serde(flatten)]
    call: WireTyped<WireCallFunction<'a>>,
}

#[derive(serde::Serialize)]
struct WireCallFunction<'a> {
    name: &'a str,
    arguments: &'a str,
}

#[derive(serde::Serialize)]
struct WireToolOut<'a> {
    name: &'a str,
    description: &'a str,
    parameters: &'a Value,
}

fn wire_message(m: &Message) -> WireMessageOut<'_> {
    WireMessageOut {
        role: m.role.as_str(),
        content: m.content.as_deref(),
        tool_calls: m
            .tool_calls
            .iter()
            .map(|c| WireCallOut {
                id: &c.id,
                call: WireTyped {
                    kind: "function",
                    function: WireCallFunction { name: &c.name, arguments: &c.arguments },
                },
            })
            .collect(),
        tool_call_id: (m.role == Role::Tool).then_some(m.tool_call_id.as_deref()),
    }
}

/// The request body for a model call.
#[must_use]
pub fn request_body(request: &ModelRequest, stream: bool) -> WireRequest<'_> {
    let o = &request.options;
    WireRequest {
        model: &request.model,
        messages: request.messages.iter().map(wire_message).collect(),
        stream,
        stream_options: stream.then_some(StreamOptions { include_usage: true }),
        tools: request
            .tools
            .iter()
            .map(|t| WireTyped {
                kind: "function",
                function: WireToolOut {
                    name: &t.name,
                    description: &t.description,
                    parameters: &t.parameters,
                },
            })
            .collect(),
        temperature: o.temperature,
        top_p: o.top_p,
        max_tokens: o.max_tokens,
        stop: &o.stop,
        response_format: o.response_format.as_ref(),
        tool_choice: o.tool_choice.as_ref(),
    }
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

/// Most tool calls one streamed answer may carry.
const MAX_STREAMED_TOOL_CALLS: usize = 128;

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
            let index = call.get("index").and_then(Value::as_u64).unwrap_or(0);
            // An index far past the calls seen so far would grow the list without bound (a
            // hostile or broken upstream sending `index: 4000000000`).
            let index = usize::try_from(index)
                .ok()
                .filter(|i| *i < MAX_STREAMED_TOOL_CALLS)
                .ok_or_else(|| {
                    ModelError::Protocol(format!(
                        "a streamed tool call has index {index}: at most {MAX_STREAMED_TOOL_CALLS} calls an answer"
                    ))
                })?;
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
    use serde_json::json;

    use super::*;
    use crate::domain::message::ToolSpec;
    use crate::llm::ModelOptions;

    #[test]
    fn the_request_body_is_openais_wire_shape() {
        let call =
            ToolCall { id: "c1".into(), name: "get_weather".into(), arguments: r#"{"city":"Oslo"}"#.into() };
        let request = ModelRequest {
            model: "gpt-x".into(),
            messages: vec![
                Message::text(Role::System, "be brief"),
                Message { role: Role::Assistant, content: None, tool_calls: vec![call], tool_call_id: None },
                Message {
                    role: Role::Tool,
                    content: Some("sunny".into()),
                    tool_calls: vec![],
                    tool_call_id: Some("c1".into()),
                },
                Message { role: Role::Tool, content: None, tool_calls: vec![], tool_call_id: None },
            ],
            tools: vec![ToolSpec {
                name: "get_weather".into(),
                description: "weather".into(),
                parameters: json!({"type": "object"}),
            }],
            options: ModelOptions {
                temperature: Some(0.5),
                max_tokens: Some(20),
                stop: vec!["\n".into()],
                tool_choice: Some(json!("auto")),
                ..ModelOptions::default()
            },
            stream: true,
        };
        let body = serde_json::to_value(request_body(&request, true)).unwrap();
        assert_eq!(
            body,
            json!({
                "model": "gpt-x",
                "messages": [
                    {"role": "system", "content": "be brief"},
                    {"role": "assistant", "content": null, "tool_calls": [
                        {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}}]},
                    {"role": "tool", "content": "sunny", "tool_call_id": "c1"},
                    {"role": "tool", "content": null, "tool_call_id": null},
                ],
                "stream": true,
                "stream_options": {"include_usage": true},
                "tools": [{"type": "function", "function": {"name": "get_weather", "description": "weather", "parameters": {"type": "object"}}}],
                "temperature": 0.5,
                "max_tokens": 20,
                "stop": ["\n"],
                "tool_choice": "auto",
            })
        );
        let plain =
            ModelRequest { tools: vec![], options: ModelOptions::default(), stream: false, ..request };
        let body = serde_json::to_value(request_body(&plain, false)).unwrap();
        assert_eq!(body.as_object().unwrap().keys().collect::<Vec<_>>(), ["messages", "model", "stream"]);
    }

    fn parse(body: &str) -> Result<ModelOutput, ModelError> {
        let upstream =
            Upstream::new(super::super::http::tests::quick_client(), "http://upstream.test/v1", PATH, &[])
                .unwrap();
        let seen = std::sync::Mutex::new(String::new());
        let deltas = |text: &str| seen.lock().unwrap().push_str(text);
        let out = super::super::http::whole_answer(&upstream, body.as_bytes(), parse_complete, &deltas);
        if let Ok(o) = &out {
            assert_eq!(*seen.lock().unwrap(), o.content, "the whole text is handed on as one delta");
        }
        out
    }

    #[test]
    fn a_streamed_tool_call_index_past_the_bound_is_refused_without_growing_anything() {
        let no_deltas = |_: &str| {};
        let mut state = StreamState::default();
        let first = r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"id":"c1","function":{"name":"a","arguments":""}}]}}]}"#;
        state.chunk(first, &no_deltas).unwrap();
        let second = r#"{"choices":[{"delta":{"tool_calls":[{"index":1,"id":"c2","function":{"name":"b","arguments":"{}"}}]}}]}"#;
        state.chunk(second, &no_deltas).unwrap();
        let hostile =
            r#"{"choices":[{"delta":{"tool_calls":[{"index":4000000000,"function":{"arguments":"x"}}]}}]}"#;
        let err = state.chunk(hostile, &no_deltas).unwrap_err();
        assert!(matches!(&err, ModelError::Protocol(m) if m.contains("4000000000")), "{err}");
        assert_eq!(state.output.tool_calls.len(), 2, "nothing grew");
        let last = r#"{"choices":[{"delta":{"tool_calls":[{"index":127,"id":"c","function":{"name":"z","arguments":"{}"}}]}}]}"#;
        state.chunk(last, &no_deltas).unwrap();
        assert_eq!(state.output.tool_calls.len(), 128, "up to the bound, as before");
        let over = r#"{"choices":[{"delta":{"tool_calls":[{"index":128,"function":{"arguments":"x"}}]}}]}"#;
        assert!(state.chunk(over, &no_deltas).is_err());
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
