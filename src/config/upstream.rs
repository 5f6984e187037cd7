//! Settings of the models: the catalog file, the default model and the upstream providers.
//!
//! Plain values only: `llm::ProviderSettings::from_config` turns them into providers.

use std::path::PathBuf;

use clap::Args;

use super::Secret;
use super::parse::parse_http_url;

/// Which models exist and how to reach their providers.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Models and upstream providers")]
pub struct UpstreamConfig {
    /// Model aliases and agents file (hearth.toml); none when unset.
    #[arg(long, env = "HEARTH_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Default model (`provider/model`), used when a request names none.
    #[arg(long, env = "MODEL_SPECIFIER", value_name = "PROVIDER/MODEL")]
    pub model_specifier: Option<String>,

    /// API key of the OpenAI-compatible provider.
    #[arg(long, env = "OPENAI_API_KEY", value_name = "KEY", hide_env_values = true)]
    pub openai_api_key: Option<Secret>,

    /// Base URL of the OpenAI-compatible provider (OpenAI, Ollama, vLLM, llama.cpp, OpenRouter…)
    /// [default: https://api.openai.com/v1]. Setting it enables the provider without a key.
    #[arg(long, env = "OPENAI_BASE_URL", value_name = "URL", value_parser = parse_http_url)]
    pub openai_base_url: Option<String>,

    /// API key of the Anthropic Messages API.
    #[arg(long, env = "ANTHROPIC_API_KEY", value_name = "KEY", hide_env_values = true)]
    pub anthropic_api_key: Option<Secret>,

    /// Base URL of the Anthropic API (proxies, tests) [default: https://api.anthropic.com].
    #[arg(long, env = "ANTHROPIC_BASE_URL", value_name = "URL", value_parser = parse_http_url)]
    pub anthropic_base_url: Option<String>,

    /// Seconds to wait for a connection to an upstream provider.
    #[arg(long, env = "HEARTH_UPSTREAM_CONNECT_TIMEOUT_S", value_name = "SECONDS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=600))]
    pub upstream_connect_timeout_s: u64,

    /// Longest wait for the next byte from an upstream provider (for the response headers:
    /// from the call, connecting included); exceeded → 504.
    #[arg(long, env = "HEARTH_UPSTREAM_TIMEOUT_S", value_name = "SECONDS", default_value_t = 300,
          value_parser = clap::value_parser!(u64).range(1..=3_600))]
    pub upstream_timeout_s: u64,

    /// Retries of an upstream call (connect errors, 429, 5xx) before any output reached the client.
    #[arg(long, env = "HEARTH_UPSTREAM_RETRIES", value_name = "N", default_value_t = 2,
          value_parser = clap::value_parser!(u32).range(0..=10))]
    pub upstream_retries: u32,
}
