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
    let filter =
        EnvFilter::try_new(quiet_rmcp(filter)).map_err(|e| format!("invalid HEARTH_LOG filter: {e}"))?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Json => {
            builder.json().flatten_event(true).with_current_span(true).with_span_list(false).try_init()
        }
        LogFormat::Text => builder.with_ansi(false).try_init(),
    };
    result.map_err(|e| e.to_string())
}

/// rmcp (the MCP client) logs every session it opens at INFO, with the server's whole
/// description — one per user and server: it logs at `warn` unless the filter names it.
fn quiet_rmcp(filter: &str) -> String {
    if filter.contains("rmcp") { filter.to_owned() } else { format!("{filter},rmcp=warn") }
}

/// Writes one of the SPEC §6 event lines (dispatch, claimed, completed) as a JSON object on
/// stderr, with nested objects kept as objects (the tracing formatter would quote them).
/// Written when the `hearth::events` target is enabled at INFO; `line` is built only then
/// (it clones the resolved profile, which would cost on every turn for nothing).
pub fn event_line(line: impl FnOnce() -> serde_json::Value) {
    if !tracing::enabled!(target: "hearth::events", tracing::Level::INFO) {
        return;
    }
    let mut line = line();
    let timestamp = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    if let Some(object) = line.as_object_mut() {
        object.insert("timestamp".into(), timestamp.into());
        object.insert("level".into(), "INFO".into());
        object.insert("target".into(), "hearth::events".into());
    }
    let mut text = line.to_string();
    text.push('\n');
    let _ = std::io::Write::write_all(&mut std::io::stderr().lock(), text.as_bytes());
}
