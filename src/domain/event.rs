//! Run event kinds (SPEC §6): the typed vocabulary of a run's durable event log.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::outcome::{ErrorCode, RunError, RunOutcome, RunOutput, Usage};
use super::run::RunStatus;
use crate::ids::{SessionId, WorkerId};

/// The type of a run event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventType {
    /// The run entered the queue.
    #[serde(rename = "run.queued")]
    Queued,
    /// A worker began executing it.
    #[serde(rename = "run.started")]
    Started,
    /// A piece of the answer's text.
    #[serde(rename = "text.delta")]
    TextDelta,
    /// A server-side tool call began.
    #[serde(rename = "tool.started")]
    ToolStarted,
    /// A server-side tool call ended (result or error).
    #[serde(rename = "tool.finished")]
    ToolFinished,
    /// Token usage of a model call.
    #[serde(rename = "usage")]
    Usage,
    /// Terminal: the run completed.
    #[serde(rename = "run.completed")]
    Completed,
    /// Terminal: the run failed.
    #[serde(rename = "run.failed")]
    Failed,
    /// Terminal: the run was cancelled.
    #[serde(rename = "run.cancelled")]
    Cancelled,
}

impl EventType {
    const ALL: [Self; 9] = [
        Self::Queued,
        Self::Started,
        Self::TextDelta,
        Self::ToolStarted,
        Self::ToolFinished,
        Self::Usage,
        Self::Completed,
        Self::Failed,
        Self::Cancelled,
    ];

    /// The stored and wire string.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "run.queued",
            Self::Started => "run.started",
            Self::TextDelta => "text.delta",
            Self::ToolStarted => "tool.started",
            Self::ToolFinished => "tool.finished",
            Self::Usage => "usage",
            Self::Completed => "run.completed",
            Self::Failed => "run.failed",
            Self::Cancelled => "run.cancelled",
        }
    }

    /// Whether this event closes the run's stream.
    #[must_use]
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Cancelled)
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that is not an event type.
#[derive(Debug, thiserror::Error)]
#[error("unknown event type `{0}`")]
pub struct UnknownEventType(pub String);

impl FromStr for EventType {
    type Err = UnknownEventType;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL.into_iter().find(|t| t.as_str() == s).ok_or_else(|| UnknownEventType(s.to_owned()))
    }
}

/// An event of a run as stored: numbered from 1 within its run. On the wire and in the API:
/// `{"seq", "type", "data", "created_at"}`.
#[derive(Debug, Clone, PartialEq)]
pub struct RunEvent {
    /// Position in the run's log, from 1.
    pub seq: i64,
    /// What happened, with its details.
    pub data: EventData,
    /// Unix ms.
    pub created_at: i64,
}

impl RunEvent {
    /// The event's type.
    #[must_use]
    pub fn kind(&self) -> EventType {
        self.data.kind()
    }
}

impl Serialize for RunEvent {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct as _;
        let mut out = s.serialize_struct("RunEvent", 4)?;
        out.serialize_field("seq", &self.seq)?;
        out.serialize_field("type", &self.kind())?;
        out.serialize_field("data", &self.data)?;
        out.serialize_field("created_at", &self.created_at)?;
        out.end()
    }
}

/// What a run event says, by type. Serialized alone, it is the event's `data` object.
#[derive(Debug, Clone, PartialEq)]
pub enum EventData {
    /// `run.queued`.
    Queued(Queued),
    /// `run.started`.
    Started(Started),
    /// `text.delta`.
    TextDelta(TextDelta),
    /// `tool.started`.
    ToolStarted(ToolStarted),
    /// `tool.finished`.
    ToolFinished(ToolFinished),
    /// `usage`: one model call's token counts.
    Usage(Usage),
    /// `run.completed`.
    Completed(Completed),
    /// `run.failed`.
    Failed(Ended),
    /// `run.cancelled`.
    Cancelled(Ended),
}

/// `run.queued`: the runner it waits for, in which session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Queued {
    /// The runner stamped at dispatch.
    pub runner: String,
    /// The run's session.
    pub session_id: SessionId,
}

/// `run.started`: who executes which attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Started {
    /// The worker.
    pub worker_id: WorkerId,
    /// The attempt, from 1.
    pub attempt: i64,
}

/// `text.delta`: a piece of the answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TextDelta {
    /// The text.
    pub text: String,
}

/// `tool.started`: a server-side tool call began.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolStarted {
    /// The call's id.
    pub id: String,
    /// The tool.
    pub name: String,
    /// Its arguments, as the model wrote them.
    pub arguments: String,
}

/// `tool.finished`: a server-side tool call ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolFinished {
    /// The call's id.
    pub id: String,
    /// The tool.
    pub name: String,
    /// Whether the result is an error shown to the model as one.
    #[serde(default)]
    pub is_error: bool,
    /// The result's text.
    #[serde(default)]
    pub result: String,
    /// How long the call took, in milliseconds.
    #[serde(default)]
    pub duration_ms: u64,
}

/// `run.completed`: the answer, the run's usage, and the time spent upstream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Completed {
    /// The answer.
    pub output: RunOutput,
    /// Usage of every model call.
    #[serde(default, deserialize_with = "null_as_default")]
    pub usage: Usage,
    /// Time spent waiting on upstream model calls, in ms.
    #[serde(default, deserialize_with = "null_as_default")]
    pub upstream_ms: f64,
}

/// `run.failed` and `run.cancelled`: always `{"error": {"message", "code"}, "usage",
/// "upstream_ms"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "StoredEnd")]
pub struct Ended {
    /// Why.
    pub error: RunError,
    /// Usage up to the end.
    pub usage: Usage,
    /// Time spent waiting on upstream model calls, in ms.
    pub upstream_ms: f64,
}

/// An ended run's data as stored by this or an older hearth: older ones wrote `"usage": null`
/// and `"error": null` where there was none, and `{"reason"}` for a run cancelled while queued.
#[derive(Deserialize)]
struct StoredEnd {
    #[serde(default)]
    error: Option<RunError>,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    usage: Usage,
    #[serde(default, deserialize_with = "null_as_default")]
    upstream_ms: f64,
}

impl From<StoredEnd> for Ended {
    fn from(stored: StoredEnd) -> Self {
        let error = match (stored.error, stored.reason) {
            (Some(error), _) => error,
            (None, Some(reason)) => RunError::new(ErrorCode::Cancelled, reason),
            (None, None) => RunError::default(),
        };
        Self { error, usage: stored.usage, upstream_ms: stored.upstream_ms }
    }
}

/// A field an older hearth may have stored as `null`: read as its default.
fn null_as_default<'de, D: serde::Deserializer<'de>, T: Default + Deserialize<'de>>(
    d: D,
) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

impl Ended {
    /// An end with `error` and no usage.
    #[must_use]
    pub fn new(error: RunError) -> Self {
        Self { error, usage: Usage::default(), upstream_ms: 0.0 }
    }
}

impl EventData {
    /// The event's type.
    #[must_use]
    pub fn kind(&self) -> EventType {
        match self {
            Self::Queued(_) => EventType::Queued,
            Self::Started(_) => EventType::Started,
            Self::TextDelta(_) => EventType::TextDelta,
            Self::ToolStarted(_) => EventType::ToolStarted,
            Self::ToolFinished(_) => EventType::ToolFinished,
            Self::Usage(_) => EventType::Usage,
            Self::Completed(_) => EventType::Completed,
            Self::Failed(_) => EventType::Failed,
            Self::Cancelled(_) => EventType::Cancelled,
        }
    }

    /// A text delta.
    #[must_use]
    pub fn text(text: impl Into<String>) -> Self {
        Self::TextDelta(TextDelta { text: text.into() })
    }

    /// The status a terminal event records (`None` for other events).
    #[must_use]
    pub fn status(&self) -> Option<RunStatus> {
        match self {
            Self::Completed(_) => Some(RunStatus::Completed),
            Self::Failed(_) => Some(RunStatus::Failed),
            Self::Cancelled(_) => Some(RunStatus::Cancelled),
            _ => None,
        }
    }

    /// The terminal event of `outcome`: always `{"output", "usage", "upstream_ms"}` or
    /// `{"error", "usage", "upstream_ms"}`.
    #[must_use]
    pub fn terminal(outcome: RunOutcome, usage: Usage, upstream_ms: f64) -> Self {
        match outcome {
            RunOutcome::Completed(output) => Self::Completed(Completed { output, usage, upstream_ms }),
            RunOutcome::Failed(error) => Self::Failed(Ended { error, usage, upstream_ms }),
            RunOutcome::Cancelled(error) => Self::Cancelled(Ended { error, usage, upstream_ms }),
        }
    }

    /// The outcome a terminal event records (`None` for other events).
    #[must_use]
    pub fn outcome(&self) -> Option<RunOutcome> {
        match self {
            Self::Completed(c) => Some(RunOutcome::Completed(c.output.clone())),
            Self::Failed(e) => Some(RunOutcome::Failed(e.error.clone())),
            Self::Cancelled(e) => Some(RunOutcome::Cancelled(e.error.clone())),
            _ => None,
        }
    }

    /// Reads the stored `data` of an event of type `kind`.
    ///
    /// # Errors
    /// When the text is not that type's data.
    pub fn from_stored(kind: EventType, data: &str) -> serde_json::Result<Self> {
        Ok(match kind {
            EventType::Queued => Self::Queued(serde_json::from_str(data)?),
            EventType::Started => Self::Started(serde_json::from_str(data)?),
            EventType::TextDelta => Self::TextDelta(serde_json::from_str(data)?),
            EventType::ToolStarted => Self::ToolStarted(serde_json::from_str(data)?),
            EventType::ToolFinished => Self::ToolFinished(serde_json::from_str(data)?),
            EventType::Usage => Self::Usage(serde_json::from_str(data)?),
            EventType::Completed => Self::Completed(serde_json::from_str(data)?),
            EventType::Failed => Self::Failed(serde_json::from_str(data)?),
            EventType::Cancelled => Self::Cancelled(serde_json::from_str(data)?),
        })
    }
}

impl Serialize for EventData {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Queued(d) => d.serialize(s),
            Self::Started(d) => d.serialize(s),
            Self::TextDelta(d) => d.serialize(s),
            Self::ToolStarted(d) => d.serialize(s),
            Self::ToolFinished(d) => d.serialize(s),
            Self::Usage(d) => d.serialize(s),
            Self::Completed(d) => d.serialize(s),
            Self::Failed(d) | Self::Cancelled(d) => d.serialize(s),
        }
    }
}

/// Where a running turn reports its events (text deltas, tool progress, usage): the queue's
/// event sink in a worker, a recorder in tests.
pub trait Emit: Send + Sync {
    /// Records one event.
    fn emit(&self, data: EventData);

    /// Resolves once every event emitted so far is stored (or could not be: the wait never
    /// outlasts the write). The agent loop waits on it between a tool call's `tool.started`
    /// and the call itself, so a crash can never leave a call made but not recorded. The
    /// default resolves at once (a sink with nothing durable to wait for).
    fn durable(&self) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(std::future::ready(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_round_trip_and_match_serde() {
        for kind in EventType::ALL {
            assert_eq!(kind.as_str().parse::<EventType>().unwrap(), kind);
            assert_eq!(serde_json::to_value(kind).unwrap(), kind.as_str());
        }
        assert_eq!(EventType::ALL.iter().filter(|k| k.is_terminal()).count(), 3);
    }

    #[test]
    fn every_stored_shape_reads_back_and_ends_carry_error_and_usage() {
        let data = EventData::Cancelled(Ended::new(RunError::new(ErrorCode::Cancelled, "stop")));
        let text = serde_json::to_string(&data).unwrap();
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["error"], serde_json::json!({"message": "stop", "code": "cancelled"}));
        assert_eq!(value["usage"]["total_tokens"], 0);
        assert_eq!(EventData::from_stored(EventType::Cancelled, &text).unwrap(), data);
        // What older versions wrote still reads: a cancel of a queued run said `{"reason"}`, and
        // `null` stood where there was no usage (a run that could not start) or no error.
        let old = EventData::from_stored(EventType::Cancelled, r#"{"reason":"cancelled before it started"}"#);
        let Ok(EventData::Cancelled(end)) = old else { panic!("{old:?}") };
        assert_eq!(end.error, RunError::new(ErrorCode::Cancelled, "cancelled before it started"));
        let failed = r#"{"error":{"message":"model `x` is no longer available","code":"invalid_run"},"usage":null,"upstream_ms":0.0}"#;
        let Ok(EventData::Failed(end)) = EventData::from_stored(EventType::Failed, failed) else { panic!() };
        assert_eq!((end.error.code, end.usage), (ErrorCode::InvalidRun, Usage::default()));
        let given_up = r#"{"error":{"message":"gave up","code":"max_attempts_exceeded"}}"#;
        assert!(EventData::from_stored(EventType::Failed, given_up).is_ok());
        let completed = r#"{"output":{"content":"hi","tool_calls":[]},"usage":null,"upstream_ms":null}"#;
        assert!(EventData::from_stored(EventType::Completed, completed).is_ok());
        let event = RunEvent { seq: 4, data: EventData::text("hi"), created_at: 9 };
        assert_eq!(
            serde_json::to_value(&event).unwrap(),
            serde_json::json!({"seq": 4, "type": "text.delta", "data": {"text": "hi"}, "created_at": 9})
        );
    }
}
