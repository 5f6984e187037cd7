//! OpenAI chat-completion request wire types, validated into a [`RunInput`].
//!
//! Every documented field is either honoured or refused with a 400 naming it; unknown extra
//! fields are ignored, as OpenAI-compatible servers commonly do.

use serde::Deserialize;
use serde_json::Value;

use crate::domain::message::{Message, Role, ToolCall, ToolSpec};
use crate::http::error::ApiError;
use crate::llm::ModelOptions;
use crate::turns::RunInput;

/// `POST /v1/chat/completions` (and `POST /v1/runs`) body.
#[derive(Debug, Deserialize)]
pub struct ChatCompletionRequest {
    /// Model, alias or `agent:NAME`.
    pub model: Option<String>,
    /// The conversation.
    #[serde(default)]
    pub messages: Vec<WireMessage>,
    /// Stream the answer as SSE chunks.
    #[serde(default)]
    pub stream: bool,
    /// `{"include_usage": true}`.
    pub stream_options: Option<Value>,
    /// Client tools.
    #[serde(default)]
    pub tools: Vec<WireTool>,
    /// Tool choice, passed through.
    pub tool_choice: Option<Value>,
    /// Sampling temperature, 0–2.
    pub temperature: Option<f64>,
    /// Nucleus sampling, 0–1.
    pub top_p: Option<f64>,
    /// Most tokens to generate (legacy name).
    pub max_tokens: Option<u32>,
    /// Most tokens to generate.
    pub max_completion_tokens: Option<u32>,
    /// A stop sequence or a list of them.
    pub stop: Option<Value>,
    /// Response format, passed through.
    pub response_format: Option<Value>,
    /// End-user id (informational).
    pub user: Option<String>,
    /// Free-form metadata stored with the run.
    pub metadata: Option<Value>,
    /// Number of choices: only 1 is supported.
    pub n: Option<u32>,
}

/// A message on the wire.
#[derive(Debug, Deserialize)]
pub struct WireMessage {
    /// `system`, `developer`, `user`, `assistant` or `tool`.
    pub role: String,
    /// A string, a list of content parts, or null.
    #[serde(default)]
    pub content: Value,
    /// Assistant tool calls.
    #[serde(default)]
    pub tool_calls: Vec<WireToolCall>,
    /// The call a tool message answers.
    pub tool_call_id: Option<String>,
}

/// A tool call on the wire.
#[derive(Debug, Deserialize)]
pub struct WireToolCall {
    /// Call id.
    pub id: String,
    /// The function.
    pub function: WireFunctionCall,
}

/// The function part of a tool call.
#[derive(Debug, Deserialize)]
pub struct WireFunctionCall {
    /// Function name.
    pub name: String,
    /// Arguments as JSON text.
    #[serde(default)]
    pub arguments: String,
}

/// A client tool definition.
#[derive(Debug, Deserialize)]
pub struct WireTool {
    /// Must be `function`.
    #[serde(rename = "type", default)]
    pub kind: String,
    /// The function.
    pub function: ToolSpec,
}

/// Most messages one request may carry (a session keeps the rest of a conversation).
const MAX_MESSAGES: usize = 1024;
/// Most client tools one request may declare (OpenAI's own limit).
const MAX_TOOLS: usize = 128;

fn content_text(content: &Value, index: usize) -> Result<Option<String>, ApiError> {
    let param = || Some(format!("messages[{index}].content"));
    match content {
        Value::Null => Ok(None),
        Value::String(text) => Ok(Some(text.clone())),
        Value::Array(parts) => {
            let mut text = String::new();
            for part in parts {
                match (part.get("type").and_then(Value::as_str), part.get("text").and_then(Value::as_str)) {
                    (Some("text"), Some(t)) => text.push_str(t),
                    (kind, _) => {
                        return Err(ApiError::InvalidRequest {
                            message: format!(
                                "content part type {} is not supported; only text parts are",
                                kind.unwrap_or("(missing)")
                            ),
                            param: param(),
                        });
                    }
                }
            }
            Ok(Some(text))
        }
        _ => Err(ApiError::InvalidRequest {
            message: "content must be a string, a list of text parts, or null".into(),
            param: param(),
        }),
    }
}

fn message(index: usize, wire: WireMessage) -> Result<Message, ApiError> {
    let role = Role::parse(&wire.role).ok_or_else(|| ApiError::InvalidRequest {
        message: format!("unknown role `{}`: use system, developer, user, assistant or tool", wire.role),
        param: Some(format!("messages[{index}].role")),
    })?;
    if role == Role::Tool && wire.tool_call_id.is_none() {
        return Err(ApiError::InvalidRequest {
            message: "a tool message needs tool_call_id".into(),
            param: Some(format!("messages[{index}].tool_call_id")),
        });
    }
    Ok(Message {
        role,
        content: content_text(&wire.content, index)?,
        tool_calls: wire
            .tool_calls
            .into_iter()
            .map(|c| ToolCall { id: c.id, name: c.function.name, arguments: c.function.arguments })
            .collect(),
        tool_call_id: wire.tool_call_id,
    })
}

fn check_range(value: Option<f64>, range: std::ops::RangeInclusive<f64>, name: &str) -> Result<(), ApiError> {
    match value {
        Some(v) if !range.contains(&v) => Err(ApiError::invalid(
            Some(name),
            format!("{name} must be between {} and {}", range.start(), range.end()),
        )),
        _ => Ok(()),
    }
}

fn stop_list(stop: Option<Value>) -> Result<Vec<String>, ApiError> {
    match stop {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![s]),
        Some(Value::Array(items)) if items.len() <= 4 => items
            .into_iter()
            .map(|v| match v {
                Value::String(s) => Ok(s),
                _ => Err(ApiError::invalid(Some("stop"), "stop must be a string or a list of strings")),
            })
            .collect(),
        _ => Err(ApiError::invalid(Some("stop"), "stop must be a string or a list of up to 4 strings")),
    }
}

impl ChatCompletionRequest {
    /// Validates the request into a run's input.
    ///
    /// # Errors
    /// A 400 naming the offending field.
    pub fn into_input(self, default_model: Option<&str>) -> Result<RunInput, ApiError> {
        let model = self
            .model
            .filter(|m| !m.trim().is_empty())
            .or_else(|| default_model.map(str::to_owned))
            .ok_or_else(|| {
                ApiError::invalid(Some("model"), "model is required (try \"echo\", the built-in test model)")
            })?;
        if self.n.is_some_and(|n| n != 1) {
            return Err(ApiError::invalid(Some("n"), "only n = 1 is supported"));
        }
        if self.messages.is_empty() {
            return Err(ApiError::invalid(Some("messages"), "messages must not be empty"));
        }
        if self.messages.len() > MAX_MESSAGES {
            return Err(ApiError::invalid(
                Some("messages"),
                format!(
                    "at most {MAX_MESSAGES} messages a request: continue a long conversation with X-Session-Id"
                ),
            ));
        }
        if self.tools.len() > MAX_TOOLS {
            return Err(ApiError::invalid(Some("tools"), format!("at most {MAX_TOOLS} tools a request")));
        }
        check_range(self.temperature, 0.0..=2.0, "temperature")?;
        check_range(self.top_p, 0.0..=1.0, "top_p")?;
        let messages = self
            .messages
            .into_iter()
            .enumerate()
            .map(|(i, m)| message(i, m))
            .collect::<Result<Vec<_>, _>>()?;
        let mut tools = Vec::with_capacity(self.tools.len());
        for (i, tool) in self.tools.into_iter().enumerate() {
            if tool.kind != "function" || tool.function.name.is_empty() {
                return Err(ApiError::InvalidRequest {
                    message: "each tool must be {\"type\": \"function\", \"function\": {\"name\", …}}".into(),
                    param: Some(format!("tools[{i}]")),
                });
            }
            tools.push(tool.function);
        }
        let options = ModelOptions {
            temperature: self.temperature,
            top_p: self.top_p,
            max_tokens: self.max_completion_tokens.or(self.max_tokens),
            stop: stop_list(self.stop)?,
            response_format: self.response_format,
            tool_choice: self.tool_choice,
        };
        Ok(RunInput {
            model,
            messages,
            tools,
            options,
            metadata: self.metadata,
            user: self.user,
            stream: self.stream,
        })
    }
}
