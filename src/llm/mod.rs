//! Chat models behind one interface: the agent loop calls [`ChatModel::complete`] and receives
//! text deltas as they arrive. This issue ships the built-in `echo` model; providers plug in here.

pub mod anthropic;
pub mod echo;
pub mod http;
pub mod openai;
mod redact;
pub mod route;
pub mod sse;

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::future::BoxFuture;

use crate::catalog::{Agent, Catalog};
use crate::config::{Secret, UpstreamConfig};
use crate::domain::message::{Message, ToolCall, ToolSpec};
use route::Target;

pub use crate::domain::input::ModelOptions;

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
    /// Whether the caller wants the answer streamed (providers may call upstream either way).
    pub stream: bool,
}

pub use crate::domain::outcome::Usage;

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
    /// The provider could not be reached (retryable).
    #[error("cannot reach the upstream provider: {0}")]
    Connect(String),
    /// The provider answered with an error status (429 and 5xx are retryable).
    #[error("upstream provider answered {status}: {message}")]
    Status {
        /// HTTP status.
        status: u16,
        /// The provider's message.
        message: String,
        /// The provider's `Retry-After`, if any.
        retry_after: Option<std::time::Duration>,
    },
    /// The provider did not send the next byte in time.
    #[error("upstream provider timed out: {0}")]
    Timeout(String),
    /// The provider broke the protocol (cut stream, malformed event, bad JSON).
    #[error("upstream provider broke the protocol: {0}")]
    Protocol(String),
}

impl ModelError {
    /// Whether another attempt may succeed (connect errors, 429, 5xx).
    #[must_use]
    pub fn retryable(&self) -> bool {
        match self {
            Self::Connect(_) => true,
            Self::Status { status, .. } => *status == 429 || *status >= 500,
            Self::Timeout(_) | Self::Protocol(_) => false,
        }
    }
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

/// A model name resolved to what serves it.
#[derive(Clone)]
pub struct ResolvedModel {
    /// The provider of the primary target (`echo`, `openai`, `anthropic`).
    pub provider: String,
    /// The primary target's model name at its provider.
    pub model: String,
    /// The model, with retries and fallbacks.
    pub chat: Arc<dyn ChatModel>,
    /// The agent, when the name was `agent:NAME`.
    pub agent: Option<Agent>,
}

/// The models this server can call, by request name: `echo`, `provider/model`, aliases and
/// agents from `hearth.toml`.
pub struct Models {
    providers: BTreeMap<&'static str, Arc<dyn ChatModel>>,
    catalog: Catalog,
    default_model: Option<String>,
    retries: u32,
}

/// How to reach the upstream providers.
#[derive(Debug, Clone, Default)]
pub struct ProviderSettings {
    /// OpenAI-compatible base URL and key (configured when either is set).
    pub openai: Option<(String, Option<String>)>,
    /// Anthropic base URL and key (configured when the key or URL is set).
    pub anthropic: Option<(String, Option<String>)>,
    /// Connect timeout.
    pub connect_timeout: std::time::Duration,
    /// Longest wait for the next byte.
    pub read_timeout: std::time::Duration,
    /// Retries per target before the first byte.
    pub retries: u32,
}

impl ProviderSettings {
    /// The providers the settings configure: one is configured when its key or base URL is set.
    #[must_use]
    pub fn from_config(config: &UpstreamConfig) -> Self {
        let provider = |key: &Option<Secret>, url: &Option<String>, default: &str| {
            (key.is_some() || url.is_some()).then(|| {
                (
                    url.clone().unwrap_or_else(|| default.to_owned()),
                    key.as_ref().map(|k| k.expose().to_owned()),
                )
            })
        };
        Self {
            openai: provider(&config.openai_api_key, &config.openai_base_url, "https://api.openai.com/v1"),
            anthropic: provider(
                &config.anthropic_api_key,
                &config.anthropic_base_url,
                "https://api.anthropic.com",
            ),
            connect_timeout: std::time::Duration::from_secs(config.upstream_connect_timeout_s),
            read_timeout: std::time::Duration::from_secs(config.upstream_timeout_s),
            retries: config.upstream_retries,
        }
    }
}

impl Models {
    /// Builds the providers and checks the catalog's default model.
    ///
    /// # Errors
    /// A message naming the setting at fault.
    pub fn build(
        settings: &ProviderSettings,
        catalog: Catalog,
        default_model: Option<String>,
    ) -> Result<Self, String> {
        let mut providers: BTreeMap<&'static str, Arc<dyn ChatModel>> = BTreeMap::new();
        providers.insert("echo", Arc::new(echo::Echo));
        let client = http::client(settings.connect_timeout, settings.read_timeout)?;
        if let Some((url, key)) = &settings.openai {
            let headers: Vec<(&'static str, String)> =
                key.iter().map(|k| ("authorization", format!("Bearer {k}"))).collect();
            let upstream = http::Upstream::new(client.clone(), url, openai::PATH, &headers)
                .map_err(|e| format!("OPENAI_BASE_URL / OPENAI_API_KEY: {e}"))?;
            providers.insert("openai", Arc::new(openai::OpenAi::new(upstream)));
        }
        if let Some((url, key)) = &settings.anthropic {
            let headers: Vec<(&'static str, String)> = key.iter().map(|k| ("x-api-key", k.clone())).collect();
            let upstream = http::Upstream::new(client, url, anthropic::PATH, &headers)
                .map_err(|e| format!("ANTHROPIC_BASE_URL / ANTHROPIC_API_KEY: {e}"))?;
            providers.insert("anthropic", Arc::new(anthropic::Anthropic::new(upstream)));
        }
        let models = Self { providers, catalog, default_model, retries: settings.retries };
        if let Some(default) = &models.default_model {
            models.resolve(default).map_err(|e| format!("MODEL_SPECIFIER: {e}"))?;
        }
        Ok(models)
    }

    /// The default model (MODEL_SPECIFIER), if set.
    #[must_use]
    pub fn default_model(&self) -> Option<&str> {
        self.default_model.as_deref()
    }

    fn target(&self, spec: &str) -> Result<Target, String> {
        let (provider, model) = match spec.split_once('/') {
            Some((provider, model)) if !model.is_empty() => (provider, model),
            _ if spec == "echo" => ("echo", "echo"),
            _ => {
                return Err(format!(
                    "model `{spec}` not found: name provider/model, an alias, or agent:NAME"
                ));
            }
        };
        let chat = self.providers.get(provider).ok_or_else(|| match provider {
            "openai" => {
                "provider `openai` is not configured: set OPENAI_API_KEY or OPENAI_BASE_URL".to_owned()
            }
            "anthropic" => "provider `anthropic` is not configured: set ANTHROPIC_API_KEY".to_owned(),
            other => format!("unknown provider `{other}` (known: openai, anthropic, echo)"),
        })?;
        Ok(Target { provider: provider.to_owned(), model: model.to_owned(), chat: Arc::clone(chat) })
    }

    /// Resolves a request's `model`.
    ///
    /// # Errors
    /// A message for a 404: unknown model, alias or agent, or an unconfigured provider.
    pub fn resolve(&self, name: &str) -> Result<ResolvedModel, String> {
        let (specs, agent) = if let Some(agent_name) = name.strip_prefix("agent:") {
            let agent = self
                .catalog
                .agents
                .get(agent_name)
                .ok_or_else(|| format!("agent `{agent_name}` not found"))?;
            (self.specs(&agent.model), Some(agent.clone()))
        } else {
            (self.specs(name), None)
        };
        let targets = specs.iter().map(|s| self.target(s)).collect::<Result<Vec<_>, _>>()?;
        let first = targets.first().ok_or_else(|| format!("model `{name}` not found"))?;
        let (provider, model) = (first.provider.clone(), first.model.clone());
        let chat: Arc<dyn ChatModel> = if provider == "echo" && targets.len() == 1 {
            Arc::clone(&first.chat)
        } else {
            Arc::new(route::Route::new(targets, self.retries))
        };
        Ok(ResolvedModel { provider, model, chat, agent })
    }

    fn specs(&self, name: &str) -> Vec<String> {
        match self.catalog.models.get(name) {
            Some(alias) => {
                std::iter::once(alias.target.clone()).chain(alias.fallbacks.iter().cloned()).collect()
            }
            None => vec![name.to_owned()],
        }
    }

    /// Names a caller may use, for `GET /v1/models`: `echo`, the default model, aliases and
    /// agents whose providers are configured.
    #[must_use]
    pub fn names(&self) -> Vec<(String, String)> {
        let mut names = vec![("echo".to_owned(), "hearth".to_owned())];
        if let Some(default) = &self.default_model {
            names.push((default.clone(), default.split('/').next().unwrap_or("hearth").to_owned()));
        }
        for name in self.catalog.models.keys() {
            if self.resolve(name).is_ok() {
                names.push((name.clone(), "hearth-alias".to_owned()));
            }
        }
        for name in self.catalog.agents.keys() {
            let full = format!("agent:{name}");
            if self.resolve(&full).is_ok() {
                names.push((full, "hearth-agent".to_owned()));
            }
        }
        names.dedup_by(|a, b| a.0 == b.0);
        names
    }
}
