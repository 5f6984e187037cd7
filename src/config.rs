//! Typed settings: every one a clap flag with an environment variable, validated at start.
//!
//! Secrets are [`Secret`]s, whose `Debug` prints `***`, so a settings dump never leaks them.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;

use clap::{Args, ValueEnum};

/// A secret setting (API key, token). Its `Debug` and `Display` never show the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The secret itself; use only to compare or hash, never to log.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl FromStr for Secret {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            Err("must not be empty".into())
        } else if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            Err("must not contain whitespace or control characters".into())
        } else {
            Ok(Self(s.to_owned()))
        }
    }
}

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line (the default; what log shippers want).
    Json,
    /// Human-readable lines for a terminal.
    Text,
}

/// Settings every subcommand shares: where the database is and how to log.
#[derive(Debug, Clone, Args)]
pub struct GlobalConfig {
    /// SQLite database file [default: ./data/hearth.db]. Wins over DATABASE_URL.
    #[arg(long, env = "HEARTH_DB", value_name = "PATH", global = true)]
    pub db: Option<PathBuf>,

    /// Database as a URL, `sqlite:PATH` or `sqlite://PATH`; used when HEARTH_DB is unset.
    #[arg(long, env = "DATABASE_URL", value_name = "URL", global = true, value_parser = parse_sqlite_url)]
    pub database_url: Option<PathBuf>,

    /// Log filter: a level (error, warn, info, debug, trace) or tracing directives
    /// such as `info,hearth=debug`.
    #[arg(long, env = "HEARTH_LOG", value_name = "FILTER", default_value = "info", global = true,
          value_parser = parse_log_filter)]
    pub log: String,

    /// Async worker threads [default: one per CPU core].
    #[arg(long, env = "HEARTH_THREADS", value_name = "N", global = true,
          value_parser = clap::value_parser!(u16).range(1..=512))]
    pub threads: Option<u16>,

    /// Log line format on stderr.
    #[arg(long, env = "HEARTH_LOG_FORMAT", value_enum, default_value = "json", global = true)]
    pub log_format: LogFormat,
}

impl GlobalConfig {
    /// The database file: `--db`/HEARTH_DB, else DATABASE_URL, else `./data/hearth.db`.
    #[must_use]
    pub fn db_path(&self) -> PathBuf {
        self.db
            .clone()
            .or_else(|| self.database_url.clone())
            .unwrap_or_else(|| PathBuf::from("data/hearth.db"))
    }
}

/// Settings of `hearth serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeConfig {
    /// TCP port to listen on.
    #[arg(long, env = "PORT", default_value_t = 8080)]
    pub port: u16,

    /// Address to listen on.
    #[arg(long, env = "HEARTH_HOST", default_value = "0.0.0.0")]
    pub host: IpAddr,

    /// Static service API key accepted as `Authorization: Bearer …` for the `default`
    /// organization (legacy alias: MESHI_RUNTIME_API_KEY). When set, first run creates no key.
    #[arg(long, env = "GATEWAY_API_KEY", value_name = "KEY", hide_env_values = true)]
    pub api_key: Option<Secret>,

    /// Admin token for the inspector and the admin API. When set, first run creates none.
    #[arg(long, env = "HEARTH_ADMIN_TOKEN", value_name = "TOKEN", hide_env_values = true)]
    pub admin_token: Option<Secret>,

    /// Apply pending migrations at start (primary only). With `false`, an unmigrated database
    /// stops start-up with a hint to run `hearth migrate`.
    #[arg(long, env = "HEARTH_AUTO_MIGRATE", value_name = "BOOL", default_value = "true",
          value_parser = parse_bool,
          action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub auto_migrate: bool,

    /// Largest accepted request body, in bytes or with a unit (`512KiB`, `1MiB`, `2MB`);
    /// larger bodies get 413.
    #[arg(long, env = "HEARTH_MAX_BODY", value_name = "SIZE", default_value = "1MiB",
          value_parser = parse_size)]
    pub max_body: usize,

    /// Seconds that in-flight requests get to finish after SIGTERM/SIGINT before the server
    /// closes them.
    #[arg(long, env = "HEARTH_SHUTDOWN_GRACE_S", value_name = "SECONDS", default_value_t = 30)]
    pub shutdown_grace_s: u64,

    /// Bearer token required by `GET /metrics`; open when unset.
    #[arg(long, env = "HEARTH_METRICS_TOKEN", value_name = "TOKEN", hide_env_values = true)]
    pub metrics_token: Option<Secret>,

    /// LiteFS mount directory; its `.primary` file tells this node's role. Unset: standalone.
    #[arg(long, env = "HEARTH_LITEFS_DIR", value_name = "DIR")]
    pub litefs_dir: Option<PathBuf>,

    /// Runner pools, comma-separated; the first is the default runner.
    #[arg(long, env = "HEARTH_RUNNERS", value_name = "LIST", default_value = "ts,go", value_parser = parse_runners)]
    pub runners: RunnerList,

    /// Percentage ramp of organizations to a runner, e.g. `go=10` (stable per organization).
    #[arg(long, env = "HEARTH_RUNNER_RAMP", value_name = "RUNNER=PERCENT[,…]")]
    pub runner_ramp: Option<String>,

    /// Runner flags and ramp: `on`, or `off` (the kill switch: everything goes to the default runner).
    #[arg(long, env = "HEARTH_RUNNER_FLAGS", value_name = "on|off", default_value = "on", value_parser = parse_bool,
          action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub runner_flags: bool,

    /// Runs the embedded worker (default runner, inside `serve`) executes at once. Turns mostly
    /// wait on the upstream model, so this is a concurrency limit, not a thread count.
    #[arg(long, env = "HEARTH_WORKERS", value_name = "N", default_value_t = 1024,
          value_parser = clap::value_parser!(u16).range(1..=65535))]
    pub workers: u16,

    /// Run no embedded workers (every run waits for an external worker).
    #[arg(long, env = "HEARTH_NO_EMBEDDED_WORKERS", value_name = "BOOL", default_value = "false",
          value_parser = parse_bool, num_args = 0..=1, default_missing_value = "true")]
    pub no_embedded_workers: bool,

    /// Seconds a claim is leased before a heartbeat must extend it.
    #[arg(long, env = "HEARTH_LEASE_S", value_name = "SECONDS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(5..=86_400))]
    pub lease_s: u64,

    /// Attempts a run gets: a run whose worker stopped while holding it is retried until then,
    /// and then fails with `max_attempts_exceeded`.
    #[arg(long, env = "HEARTH_MAX_ATTEMPTS", value_name = "N", default_value_t = 3,
          value_parser = clap::value_parser!(u32).range(1..=100))]
    pub max_attempts: u32,

    /// Seconds between worker heartbeats.
    #[arg(long, env = "HEARTH_HEARTBEAT_S", value_name = "SECONDS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=3_600))]
    pub heartbeat_s: u64,

    /// Model calls an agent turn may make before it fails.
    #[arg(long, env = "HEARTH_MAX_STEPS", value_name = "N", default_value_t = 8,
          value_parser = clap::value_parser!(u32).range(1..=100))]
    pub max_steps: u32,

    /// Longest a server-side tool call may take, in seconds.
    #[arg(long, env = "HEARTH_TOOL_TIMEOUT_S", value_name = "SECONDS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..=3_600))]
    pub tool_timeout_s: u64,

    /// Secret of HS256 user JWTs in `X-Runtime-User`.
    #[arg(long, env = "HEARTH_JWT_SECRET", value_name = "SECRET", hide_env_values = true)]
    pub jwt_secret: Option<Secret>,

    /// PEM public key (RS256, ES256 or EdDSA) of user JWTs: the PEM text, or a path to a file.
    #[arg(long, env = "HEARTH_JWT_PUBLIC_KEY", value_name = "PEM|PATH")]
    pub jwt_public_key: Option<String>,

    /// Required `iss` of user JWTs.
    #[arg(long, env = "HEARTH_JWT_ISSUER", value_name = "ISS")]
    pub jwt_issuer: Option<String>,

    /// Required `aud` of user JWTs.
    #[arg(long, env = "HEARTH_JWT_AUDIENCE", value_name = "AUD")]
    pub jwt_audience: Option<String>,

    /// Require the `X-Runtime-User` JWT on the chat and runs APIs.
    #[arg(long, env = "HEARTH_REQUIRE_USER", value_name = "BOOL", default_value = "false", value_parser = parse_bool,
          action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub require_user: bool,

    /// Requests per minute per API key (off when unset).
    #[arg(long, env = "HEARTH_KEY_RPM", value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub key_rpm: Option<u32>,

    /// Requests per minute per user (off when unset).
    #[arg(long, env = "HEARTH_USER_RPM", value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub user_rpm: Option<u32>,

    /// Offer the test-only `test__*` tools (echo, sleep, fail, loop) to every run. For tests and
    /// demos only.
    #[arg(long, env = "HEARTH_TEST_TOOLS", value_name = "BOOL", default_value = "false", value_parser = parse_bool,
          action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub test_tools: bool,

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

    /// Read connections in the SQLite pool.
    #[arg(long, env = "HEARTH_DB_READERS", value_name = "N", default_value_t = 8,
          value_parser = clap::value_parser!(u32).range(1..=256))]
    pub db_readers: u32,
}

impl ServeConfig {
    /// The resolver's rules, with the ramp validated against the runners.
    ///
    /// # Errors
    /// A message naming HEARTH_RUNNER_RAMP when the ramp is invalid.
    pub fn resolver_rules(&self) -> Result<crate::domain::resolver::ResolverRules, String> {
        let runners = self.runners.0.clone();
        let ramp = match &self.runner_ramp {
            Some(text) if !text.trim().is_empty() => Some(
                crate::domain::resolver::Ramp::parse(text, &runners)
                    .map_err(|e| format!("invalid HEARTH_RUNNER_RAMP (--runner-ramp): {e}"))?,
            ),
            _ => None,
        };
        Ok(crate::domain::resolver::ResolverRules { runners, ramp, flags_enabled: self.runner_flags })
    }

    /// Provider settings: a provider is configured when its key or base URL is set.
    #[must_use]
    pub fn provider_settings(&self) -> crate::llm::ProviderSettings {
        let provider = |key: &Option<Secret>, url: &Option<String>, default: &str| {
            (key.is_some() || url.is_some()).then(|| {
                (
                    url.clone().unwrap_or_else(|| default.to_owned()),
                    key.as_ref().map(|k| k.expose().to_owned()),
                )
            })
        };
        crate::llm::ProviderSettings {
            openai: provider(&self.openai_api_key, &self.openai_base_url, "https://api.openai.com/v1"),
            anthropic: provider(
                &self.anthropic_api_key,
                &self.anthropic_base_url,
                "https://api.anthropic.com",
            ),
            connect_timeout: std::time::Duration::from_secs(self.upstream_connect_timeout_s),
            read_timeout: std::time::Duration::from_secs(self.upstream_timeout_s),
            retries: self.upstream_retries,
        }
    }

    /// The static API key: GATEWAY_API_KEY, else the legacy MESHI_RUNTIME_API_KEY.
    ///
    /// # Errors
    /// When the legacy variable holds an invalid value.
    pub fn static_api_key(&self) -> Result<Option<Secret>, String> {
        if let Some(key) = &self.api_key {
            return Ok(Some(key.clone()));
        }
        match std::env::var("MESHI_RUNTIME_API_KEY") {
            Ok(value) => {
                value.parse().map(Some).map_err(|e| format!("invalid value for MESHI_RUNTIME_API_KEY: {e}"))
            }
            Err(_) => Ok(None),
        }
    }
}

/// Runner pool names, in order; the first is the default runner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunnerList(pub Vec<String>);

fn parse_runners(s: &str) -> Result<RunnerList, String> {
    let names: Vec<String> =
        s.split(',').map(str::trim).filter(|n| !n.is_empty()).map(str::to_owned).collect();
    if names.is_empty() {
        return Err("name at least one runner, e.g. ts,go".into());
    }
    if let Some(bad) = names.iter().find(|n| {
        n.len() > 32
            || !n.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
    }) {
        return Err(format!("`{bad}` is not a runner name (lowercase letters, digits, - and _)"));
    }
    Ok(RunnerList(names))
}

fn parse_bool(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err("expected true or false".into()),
    }
}

/// Parses a byte size: a number with an optional unit (B, KB, KiB, MB, MiB, GB, GiB).
///
/// # Errors
/// When the text is not such a size, or is zero.
pub fn parse_size(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let number: usize = digits.parse().map_err(|_| format!("`{s}` is not a size like 1MiB"))?;
    let multiplier: usize = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" | "k" => 1_000,
        "kib" => 1 << 10,
        "mb" | "m" => 1_000_000,
        "mib" => 1 << 20,
        "gb" | "g" => 1_000_000_000,
        "gib" => 1 << 30,
        other => return Err(format!("unknown size unit `{other}` (use B, KiB, MiB, GiB, KB, MB, GB)")),
    };
    match number.checked_mul(multiplier) {
        Some(0) => Err("must be greater than zero".into()),
        Some(bytes) => Ok(bytes),
        None => Err("too large".into()),
    }
}

fn parse_http_url(s: &str) -> Result<String, String> {
    let ok = (s.starts_with("http://") || s.starts_with("https://"))
        && s.len() > 8
        && !s.contains(char::is_whitespace);
    if ok {
        Ok(s.trim_end_matches('/').to_owned())
    } else {
        Err("expected an http:// or https:// URL".into())
    }
}

fn parse_sqlite_url(s: &str) -> Result<PathBuf, String> {
    let path = s.strip_prefix("sqlite://").or_else(|| s.strip_prefix("sqlite:")).ok_or_else(|| {
        "only sqlite:PATH URLs are supported (hearth stores everything in one SQLite file)".to_owned()
    })?;
    let path = path.split('?').next().unwrap_or_default();
    if path.is_empty() || path == ":memory:" {
        return Err("needs a file path, e.g. sqlite:./data/hearth.db".into());
    }
    Ok(PathBuf::from(path))
}

fn parse_log_filter(s: &str) -> Result<String, String> {
    tracing_subscriber::EnvFilter::try_new(s).map_err(|e| e.to_string())?;
    Ok(s.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_show_in_debug() {
        let secret: Secret = "hk_verysecret".parse().unwrap();
        assert_eq!(format!("{secret:?}"), "Secret(***)");
        assert!(!format!("{:?}", Some(secret)).contains("verysecret"));
    }

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_size("1MiB").unwrap(), 1 << 20);
        assert_eq!(parse_size("512 KiB").unwrap(), 512 << 10);
        assert_eq!(parse_size("2000").unwrap(), 2000);
        assert!(parse_size("0").is_err());
        assert!(parse_size("1 parsec").is_err());
        assert!(parse_size("lots").is_err());
    }

    #[test]
    fn database_urls_must_be_sqlite_files() {
        assert_eq!(parse_sqlite_url("sqlite:./x.db").unwrap(), PathBuf::from("./x.db"));
        assert_eq!(parse_sqlite_url("sqlite:///var/x.db").unwrap(), PathBuf::from("/var/x.db"));
        assert!(parse_sqlite_url("postgres://localhost/x").is_err());
        assert!(parse_sqlite_url("sqlite::memory:").is_err());
    }

    #[test]
    fn booleans_are_strict() {
        assert!(parse_bool("TRUE").unwrap());
        assert!(!parse_bool("off").unwrap());
        assert!(parse_bool("maybe").is_err());
    }
}
