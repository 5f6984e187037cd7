//! Run event kinds (SPEC §6): the typed vocabulary of a run's durable event log.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::run::RunStatus;

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

    /// The terminal event for a terminal status.
    #[must_use]
    pub fn terminal_for(status: RunStatus) -> Option<Self> {
        match status {
            RunStatus::Completed => Some(Self::Completed),
            RunStatus::Failed => Some(Self::Failed),
            RunStatus::Cancelled => Some(Self::Cancelled),
            _ => None,
        }
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

/// An event of a run as stored: numbered from 1 within its run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunEvent {
    /// Position in the run's log, from 1.
    pub seq: i64,
    /// What happened.
    #[serde(rename = "type")]
    pub kind: EventType,
    /// Details, by type.
    pub data: serde_json::Value,
    /// Unix ms.
    pub created_at: i64,
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
}
