//! Session statuses (SPEC §2): whether a conversation has a run in flight.

use serde::{Deserialize, Serialize};

/// Whether a session has a run queued, claimed or running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionStatus {
    /// Nothing in flight.
    Idle,
    /// A run is queued, claimed or running.
    Running,
}

impl SessionStatus {
    /// The stored and wire string.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::Running => "running",
        }
    }

    /// The status stored as `text`.
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        [Self::Idle, Self::Running].into_iter().find(|s| s.as_str() == text)
    }
}
