//! Chat models behind one interface: the agent loop calls [`ChatModel::complete`] and receives
//! text deltas as they arrive. This issue ships the built-in `echo` model; providers plug in here.

pub mod echo;

use std::sync::Arc;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::domain::message::{Message, ToolCall, ToolSpec};

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

/// One call of a model.
#[derive(Debug, Clone)]
pub struct ModelRequest {
    /// The provider's name for the model.
    pub model: String,
    /// The conversation.
    pub messages: Vec<Message>,
    /// Tools the model may call.
    pub tools: Vec<ToolSpec>,
    /// Options.
    pub options: ModelOptions,
}

/// Token counts of a model call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Tokens read.
    pub prompt_tokens: u64,
    /// Tokens written.
    pub completion_tokens: u64,
    /// Their sum.
    pub total_tokens: u64,
}

impl Usage {
    /// Adds another call's usage.
    pub fn add(&mut self, other: Usage) {
        self.prompt_tokens += other.prompt_tokens;
        self.completion_tokens += other.completion_tokens;
        self.total_tokens += other.total_tokens;
    }
}

/// What a model call produced.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModelOutput {
    /// The text (also streamed as deltas).
    pub content: String,
    /// Tool calls requested.
    pub tool_calls: Vec<ToolCall>,
    /// Token usage.
    pub usage: Usage,
}

/// Why a model call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    /// The provider answered with an error or broke the stream.
    #[error("upstream error: {0}")]
    Upstream(String),
    /// The provider did not answer in time.
    #[error("upstream timeout: {0}")]
    Timeout(String),
}

/// Receives text deltas while a model call streams.
pub type Deltas<'a> = &'a (dyn Fn(&str) + Send + Sync);

/// A chat model.
pub trait ChatModel: Send + Sync {
    /// Calls the model, sending text deltas to `deltas` as they arrive.
    fn complete<'a>(
        &'a self,
        request: &'a ModelRequest,
        deltas: Deltas<'a>,
    ) -> BoxFuture<'a, Result<ModelOutput, ModelError>>;
}

/// A model name resolved to the model that serves it.
#[derive(Clone)]
pub struct ResolvedModel {
    /// The provider's name (`echo`, …).
    pub provider: String,
    /// The provider's model name.
    pub model: String,
    /// The model.
    pub chat: Arc<dyn ChatModel>,
}

/// The models this server can call, by request name.
#[derive(Clone)]
pub struct Models {
    echo: Arc<dyn ChatModel>,
}

impl Default for Models {
    fn default() -> Self {
        Self { echo: Arc::new(echo::Echo) }
    }
}

impl Models {
    /// Resolves a request's `model`; `None` when nothing by that name exists.
    #[must_use]
    pub fn resolve(&self, name: &str) -> Option<ResolvedModel> {
        match name {
            "echo" | "echo/echo" => Some(ResolvedModel {
                provider: "echo".into(),
                model: "echo".into(),
                chat: Arc::clone(&self.echo),
            }),
            _ => None,
        }
    }

    /// Names a caller may use, for `GET /v1/models`.
    #[must_use]
    pub fn names(&self) -> Vec<String> {
        vec!["echo".into()]
    }
}
