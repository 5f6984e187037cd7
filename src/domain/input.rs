//! A turn's input as stored on its run: the conversation's new messages, the client's tools,
//! and the sampling options passed through to the provider.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::message::{Message, ToolSpec};

/// Sampling and output options passed through to a provider.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelOptions {
    /// Sampling temperature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// Nucleus sampling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    /// Most tokens to generate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// Stop sequences.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stop: Vec<String>,
    /// OpenAI `response_format`, passed through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_format: Option<serde_json::Value>,
    /// OpenAI `tool_choice`, passed through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<serde_json::Value>,
}

/// A turn's input as stored on the run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunInput {
    /// The requested model.
    pub model: String,
    /// This turn's messages (appended to the session's conversation).
    pub messages: Vec<Message>,
    /// Client tools.
    #[serde(default)]
    pub tools: Vec<ToolSpec>,
    /// Sampling options.
    #[serde(default)]
    pub options: ModelOptions,
    /// Caller metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    /// OpenAI `user` field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Whether the client streams the answer (the upstream call streams too).
    #[serde(default)]
    pub stream: bool,
}
