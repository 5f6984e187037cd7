//! What a run produces: its output, token usage, and the error that ended it, as typed values
//! from the agent loop to storage to the API (serde only at the edges).

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::message::ToolCall;
use super::run::RunStatus;

/// Token counts of a model call, or summed over a run. Sums saturate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Tokens read.
    #[serde(default)]
    pub prompt_tokens: u64,
    /// Tokens written.
    #[serde(default)]
    pub completion_tokens: u64,
    /// Their sum.
    #[serde(default)]
    pub total_tokens: u64,
}

impl Usage {
    /// Adds another call's usage (saturating: a hostile upstream cannot overflow it).
    pub fn add(&mut self, other: Usage) {
        self.prompt_tokens = self.prompt_tokens.saturating_add(other.prompt_tokens);
        self.completion_tokens = self.completion_tokens.saturating_add(other.completion_tokens);
        self.total_tokens = self.total_tokens.saturating_add(other.total_tokens);
    }
}

/// A completed run's answer: its text and the client tool calls it hands back. On the wire,
/// the calls are in OpenAI's shape (`{"id", "type": "function", "function": {"name",
/// "arguments"}}`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunOutput {
    /// The final text (`null` before the run completed).
    #[serde(default)]
    pub content: Option<String>,
    /// Client tool calls, if the turn ended with them.
    #[serde(default, with = "openai_calls")]
    pub tool_calls: Vec<ToolCall>,
}

impl RunOutput {
    /// Whether the turn ended by handing tool calls back to the client.
    #[must_use]
    pub fn calls_tools(&self) -> bool {
        !self.tool_calls.is_empty()
    }
}

/// Tool calls serialized in OpenAI's wire shape (as in [`RunOutput`]).
#[derive(Debug, Clone, Copy)]
pub struct OpenAiToolCalls<'a>(pub &'a [ToolCall]);

impl Serialize for OpenAiToolCalls<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        openai_calls::serialize(self.0, s)
    }
}

/// Tool calls in OpenAI's wire shape.
mod openai_calls {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use crate::domain::message::ToolCall;

    #[derive(Serialize, Deserialize)]
    struct Function<'a> {
        #[serde(borrow)]
        name: std::borrow::Cow<'a, str>,
        #[serde(borrow)]
        arguments: std::borrow::Cow<'a, str>,
    }

    #[derive(Serialize, Deserialize)]
    struct Call<'a> {
        #[serde(borrow)]
        id: std::borrow::Cow<'a, str>,
        #[serde(rename = "type")]
        kind: &'a str,
        #[serde(borrow)]
        function: Function<'a>,
    }

    pub fn serialize<S: Serializer>(calls: &[ToolCall], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(calls.iter().map(|c| Call {
            id: c.id.as_str().into(),
            kind: "function",
            function: Function { name: c.name.as_str().into(), arguments: c.arguments.as_str().into() },
        }))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<ToolCall>, D::Error> {
        #[derive(Deserialize)]
        struct OwnedFunction {
            name: String,
            arguments: String,
        }
        #[derive(Deserialize)]
        struct OwnedCall {
            id: String,
            function: OwnedFunction,
        }
        let calls = Vec::<OwnedCall>::deserialize(d)?;
        Ok(calls
            .into_iter()
            .map(|c| ToolCall { id: c.id, name: c.function.name, arguments: c.function.arguments })
            .collect())
    }
}

/// A stable, machine-readable reason a run failed or was cancelled.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The upstream model provider failed.
    UpstreamError,
    /// The upstream model provider did not answer in time.
    UpstreamTimeout,
    /// The agent loop used its model calls without a final answer.
    MaxStepsExceeded,
    /// The workers holding the run stopped, attempt after attempt.
    MaxAttemptsExceeded,
    /// The run was cancelled (on request, or its client went away).
    Cancelled,
    /// The stored run could not be executed (its input, profile or model is unusable).
    InvalidRun,
    /// hearth failed inside the turn (a bug; logged).
    Internal,
    /// A code this version does not know (written by another worker runtime).
    Other(String),
}

impl ErrorCode {
    const KNOWN: [Self; 7] = [
        Self::UpstreamError,
        Self::UpstreamTimeout,
        Self::MaxStepsExceeded,
        Self::MaxAttemptsExceeded,
        Self::Cancelled,
        Self::InvalidRun,
        Self::Internal,
    ];

    /// The stored and wire string.
    #[must_use]
    pub fn as_str(&self) -> &str {
        match self {
            Self::UpstreamError => "upstream_error",
            Self::UpstreamTimeout => "upstream_timeout",
            Self::MaxStepsExceeded => "max_steps_exceeded",
            Self::MaxAttemptsExceeded => "max_attempts_exceeded",
            Self::Cancelled => "cancelled",
            Self::InvalidRun => "invalid_run",
            Self::Internal => "internal_error",
            Self::Other(code) => code,
        }
    }

    /// The code for `text`: a known one, else [`ErrorCode::Other`].
    #[must_use]
    pub fn parse(text: &str) -> Self {
        Self::KNOWN.into_iter().find(|c| c.as_str() == text).unwrap_or_else(|| Self::Other(text.to_owned()))
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ErrorCode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = std::borrow::Cow::<'de, str>::deserialize(d)?;
        Ok(Self::parse(&text))
    }
}

/// Why a run failed or was cancelled: `{"message", "code"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunError {
    /// What happened, for people.
    pub message: String,
    /// What happened, for programs.
    pub code: ErrorCode,
}

impl RunError {
    /// An error with `code`.
    #[must_use]
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { message: message.into(), code }
    }
}

impl Default for RunError {
    /// What an old terminal event that recorded no error reads as.
    fn default() -> Self {
        Self::new(ErrorCode::Other("unknown".into()), "no error was recorded")
    }
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunOutcome {
    /// With an answer.
    Completed(RunOutput),
    /// With an error.
    Failed(RunError),
    /// Stopped (on request, or its client went away).
    Cancelled(RunError),
}

impl RunOutcome {
    /// The run's terminal status.
    #[must_use]
    pub fn status(&self) -> RunStatus {
        match self {
            Self::Completed(_) => RunStatus::Completed,
            Self::Failed(_) => RunStatus::Failed,
            Self::Cancelled(_) => RunStatus::Cancelled,
        }
    }

    /// The answer, when completed.
    #[must_use]
    pub fn output(&self) -> Option<&RunOutput> {
        match self {
            Self::Completed(output) => Some(output),
            _ => None,
        }
    }

    /// The error, when failed or cancelled.
    #[must_use]
    pub fn error(&self) -> Option<&RunError> {
        match self {
            Self::Completed(_) => None,
            Self::Failed(error) | Self::Cancelled(error) => Some(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn output_tool_calls_are_in_openai_shape_both_ways() {
        let output = RunOutput {
            content: Some(String::new()),
            tool_calls: vec![ToolCall { id: "c1".into(), name: "lookup".into(), arguments: "{}".into() }],
        };
        let wire = json!({"content": "", "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}]});
        assert_eq!(serde_json::to_value(&output).unwrap(), wire);
        assert_eq!(serde_json::from_value::<RunOutput>(wire).unwrap(), output);
    }

    #[test]
    fn error_codes_keep_unknown_ones() {
        for code in ErrorCode::KNOWN {
            assert_eq!(ErrorCode::parse(code.as_str()), code);
        }
        let other: ErrorCode = serde_json::from_value(json!("go_worker_oom")).unwrap();
        assert_eq!(other, ErrorCode::Other("go_worker_oom".into()));
        assert_eq!(serde_json::to_value(&other).unwrap(), json!("go_worker_oom"));
    }

    #[test]
    fn usage_sums_saturate() {
        let mut usage = Usage { prompt_tokens: u64::MAX - 1, ..Usage::default() };
        usage.add(Usage { prompt_tokens: 5, completion_tokens: 1, total_tokens: 6 });
        assert_eq!((usage.prompt_tokens, usage.total_tokens), (u64::MAX, 6));
    }
}
