//! Logging: a tracing subscriber writing JSON (or text) lines to stderr under an `EnvFilter`.
//!
//! Request spans carry `request.id`, and the JSON format prints the current span's fields on
//! every line, so each line logged while serving a request names that request.

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber. Call once, first thing.
///
/// # Errors
/// When the filter does not parse or a subscriber is already installed.
pub fn init(filter: &str, format: LogFormat) -> Result<(), String> {
    let filter = EnvFilter::try_new(filter).map_err(|e| format!("invalid HEARTH_LOG filter: {e}"))?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Json => {
            builder.json().flatten_event(true).with_current_span(true).with_span_list(false).try_init()
        }
        LogFormat::Text => builder.with_ansi(false).try_init(),
    };
    result.map_err(|e| e.to_string())
}
