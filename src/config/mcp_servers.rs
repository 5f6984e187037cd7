//! The MCP servers JSON (`{"mcpServers": {…}}`), parsed field by field so that every mistake is
//! reported as `mcpServers.NAME.FIELD: what is wrong`.

use std::fmt;

use serde_json::{Map, Value};

/// One MCP server (Streamable HTTP).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct McpServerConfig {
    /// Its name: tools are exposed as `NAME__tool`.
    pub name: String,
    /// The Streamable HTTP endpoint, e.g. `https://tools.example.com/mcp`.
    pub url: String,
    /// Headers sent with every request, `${VAR}` already replaced.
    pub headers: Vec<McpHeader>,
    /// Send a short-lived JWT hearth signs for the user (`Authorization: Bearer`).
    pub user_assertion: bool,
    /// Longest one tool call may take, in milliseconds (`None`: HEARTH_TOOL_TIMEOUT_S).
    pub timeout_ms: Option<u64>,
    /// Only these tools are exposed (`None`: all).
    pub allowed_tools: Option<Vec<String>>,
    /// Offered to requests that name a model or alias (agents list their servers themselves).
    pub default: bool,
}

/// A header sent to an MCP server; its `Debug` hides the value (it may hold a credential).
#[derive(Clone, PartialEq, Eq)]
pub struct McpHeader {
    /// Its name, lower-case.
    pub name: String,
    /// Its value.
    pub value: String,
}

impl fmt::Debug for McpHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "McpHeader({}: ***)", self.name)
    }
}

/// Headers the MCP transport sets itself.
const RESERVED_HEADERS: &[&str] =
    &["accept", "content-type", "mcp-session-id", "mcp-protocol-version", "last-event-id", "host"];
/// The longest `timeout_ms`: an hour.
const MAX_TIMEOUT_MS: u64 = 3_600_000;

/// Parses the servers JSON; `env` looks up the variables `${VAR}` names.
///
/// # Errors
/// `mcpServers.NAME.FIELD: what is wrong`.
pub fn parse_mcp_servers(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<McpServerConfig>, String> {
    let root: Value = serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
    let Value::Object(root) = root else {
        return Err("must be a JSON object {\"mcpServers\": {…}}".into());
    };
    if let Some(other) = root.keys().find(|k| *k != "mcpServers") {
        return Err(format!("unknown top-level field `{other}` (expected only mcpServers)"));
    }
    let servers = match root.get("mcpServers") {
        Some(Value::Object(servers)) => servers,
        Some(_) => return Err("mcpServers: must be an object of servers by name".into()),
        None => return Err("mcpServers: missing".into()),
    };
    servers.iter().map(|(name, entry)| parse_server(name, entry, env)).collect()
}

fn parse_server(
    name: &str,
    entry: &Value,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<McpServerConfig, String> {
    check_name(name).map_err(|e| format!("mcpServers.{name}: {e}"))?;
    let Value::Object(fields) = entry else { return Err(format!("mcpServers.{name}: must be an object")) };
    let at = |field: &str, problem: String| format!("mcpServers.{name}.{field}: {problem}");
    for key in fields.keys() {
        if !["url", "headers", "user_assertion", "timeout_ms", "allowed_tools", "default", "type"]
            .contains(&key.as_str())
        {
            let hint = if ["command", "args", "env"].contains(&key.as_str()) {
                " (stdio servers are not supported: hearth speaks Streamable HTTP to a url)"
            } else {
                " (expected url, headers, user_assertion, timeout_ms, allowed_tools, default, type)"
            };
            return Err(format!("mcpServers.{name}: unknown field `{key}`{hint}"));
        }
    }
    if let Some(kind) = fields.get("type") {
        match kind.as_str() {
            Some("http" | "streamable-http" | "streamable_http" | "streamableHttp") => {}
            _ => return Err(at("type", "only Streamable HTTP (\"http\") servers are supported".into())),
        }
    }
    let url = match fields.get("url") {
        Some(Value::String(url)) => expand(url, env).map_err(|e| at("url", e))?,
        Some(_) => return Err(at("url", "must be a string".into())),
        None => return Err(at("url", "missing".into())),
    };
    check_url(&url).map_err(|e| at("url", e))?;
    let user_assertion = boolean(fields, "user_assertion", false).map_err(|e| at("user_assertion", e))?;
    let headers = headers(fields.get("headers"), user_assertion, env).map_err(|e| at("headers", e))?;
    let timeout_ms = match fields.get("timeout_ms") {
        None => None,
        Some(v) => match v.as_u64() {
            Some(ms) if (1..=MAX_TIMEOUT_MS).contains(&ms) => Some(ms),
            _ => {
                return Err(at(
                    "timeout_ms",
                    format!("must be a whole number of milliseconds, 1 to {MAX_TIMEOUT_MS}"),
                ));
            }
        },
    };
    let allowed_tools = match fields.get("allowed_tools") {
        None => None,
        Some(Value::Array(items)) => Some(
            items
                .iter()
                .map(|i| i.as_str().filter(|s| !s.is_empty()).map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| at("allowed_tools", "must be an array of tool names".into()))?,
        ),
        Some(_) => return Err(at("allowed_tools", "must be an array of tool names".into())),
    };
    let default = boolean(fields, "default", true).map_err(|e| at("default", e))?;
    Ok(McpServerConfig {
        name: name.to_owned(),
        url,
        headers,
        user_assertion,
        timeout_ms,
        allowed_tools,
        default,
    })
}

/// A server's name becomes the prefix of its tools' names (`NAME__tool`), which models see.
fn check_name(name: &str) -> Result<(), String> {
    let ok_chars = name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if name.is_empty() || name.len() > 32 || !ok_chars || name.contains("__") || name.ends_with('_') {
        return Err(
            "a server name must be 1 to 32 letters, digits, `-` or `_`, without `__` and not ending in `_` \
                    (tools are exposed as NAME__tool)"
                .into(),
        );
    }
    if name == "test" {
        return Err("the name `test` is reserved for hearth's test tools".into());
    }
    Ok(())
}

fn check_url(url: &str) -> Result<(), String> {
    match reqwest::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => Ok(()),
        Ok(_) => Err(format!("`{url}` is not an http:// or https:// URL")),
        Err(e) => Err(format!("`{url}` is not a URL: {e}")),
    }
}

fn boolean(fields: &Map<String, Value>, field: &str, default: bool) -> Result<bool, String> {
    match fields.get(field) {
        None => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err("must be true or false".into()),
    }
}

fn headers(
    value: Option<&Value>,
    user_assertion: bool,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<McpHeader>, String> {
    let Some(value) = value else { return Ok(Vec::new()) };
    let Value::Object(map) = value else { return Err("must be an object of header names to strings".into()) };
    let mut out = Vec::with_capacity(map.len());
    for (name, value) in map {
        let lower = name.to_ascii_lowercase();
        if http::HeaderName::from_bytes(lower.as_bytes()).is_err() {
            return Err(format!("`{name}` is not a valid header name"));
        }
        if RESERVED_HEADERS.contains(&lower.as_str()) {
            return Err(format!("`{name}` is set by the MCP transport itself"));
        }
        if user_assertion && lower == "authorization" {
            return Err(format!(
                "`{name}` cannot be set with user_assertion: true (the assertion is the Authorization header)"
            ));
        }
        let Value::String(text) = value else { return Err(format!("`{name}`: must be a string")) };
        let text = expand(text, env).map_err(|e| format!("`{name}`: {e}"))?;
        if http::HeaderValue::from_str(&text).is_err() {
            return Err(format!("`{name}`: not a valid header value (control characters?)"));
        }
        out.push(McpHeader { name: lower, value: text });
    }
    Ok(out)
}

/// Replaces every `${VAR}` with the variable's value.
fn expand(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find('}').ok_or("an unclosed `${` (write ${VAR})")?;
        let var = &after[..end];
        if var.is_empty() || !var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("`${{{var}}}` is not a variable name"));
        }
        let value = env(var).ok_or_else(|| format!("the environment variable {var} is not set"))?;
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        (name == "TOKEN").then(|| "s3cret".to_owned())
    }

    fn parse(json: &str) -> Result<Vec<McpServerConfig>, String> {
        parse_mcp_servers(json, &env)
    }

    #[test]
    fn a_full_entry_parses_with_env_expansion() {
        let servers = parse(
            r#"{"mcpServers": {"search": {"url": "https://tools.example.com/mcp", "type": "http",
                "headers": {"X-Api-Key": "k-${TOKEN}"}, "timeout_ms": 1500, "allowed_tools": ["find"],
                "default": false}, "me": {"url": "http://127.0.0.1:9/mcp", "user_assertion": true}}}"#,
        )
        .unwrap();
        let search = servers.iter().find(|s| s.name == "search").unwrap();
        assert_eq!(search.headers, vec![McpHeader { name: "x-api-key".into(), value: "k-s3cret".into() }]);
        assert_eq!((search.timeout_ms, search.default), (Some(1500), false));
        assert_eq!(search.allowed_tools.as_deref(), Some(&["find".to_owned()][..]));
        let me = servers.iter().find(|s| s.name == "me").unwrap();
        assert!(me.user_assertion && me.default && me.timeout_ms.is_none() && me.allowed_tools.is_none());
        assert!(!format!("{search:?}").contains("s3cret"), "header values are hidden from Debug");
    }

    fn error_of(json: &str) -> String {
        parse(json).unwrap_err()
    }

    #[test]
    fn not_json_or_not_the_right_shape() {
        assert!(error_of("{").contains("not valid JSON"));
        assert!(error_of("[]").contains("mcpServers"));
        assert!(error_of(r#"{"servers": {}}"#).contains("unknown top-level field `servers`"));
        assert!(error_of(r#"{"mcpServers": []}"#).contains("mcpServers: must be an object"));
        assert!(error_of(r#"{"mcpServers": {"a": 1}}"#).contains("mcpServers.a: must be an object"));
    }

    #[test]
    fn a_bad_name_is_named() {
        for name in ["a__b", "a b", "", "x_", "test"] {
            let err = error_of(&format!(r#"{{"mcpServers": {{"{name}": {{"url": "http://h/mcp"}}}}}}"#));
            assert!(err.starts_with(&format!("mcpServers.{name}:")), "{err}");
        }
    }

    #[test]
    fn a_missing_or_bad_url_is_named() {
        assert_eq!(error_of(r#"{"mcpServers": {"s": {}}}"#), "mcpServers.s.url: missing");
        assert!(
            error_of(r#"{"mcpServers": {"s": {"url": 5}}}"#)
                .starts_with("mcpServers.s.url: must be a string")
        );
        assert!(error_of(r#"{"mcpServers": {"s": {"url": "ftp://h/x"}}}"#).starts_with("mcpServers.s.url:"));
        assert!(error_of(r#"{"mcpServers": {"s": {"url": "not a url"}}}"#).starts_with("mcpServers.s.url:"));
    }

    #[test]
    fn bad_headers_are_named() {
        let err = error_of(r#"{"mcpServers": {"s": {"url": "http://h", "headers": {"X-K": "${NOPE}"}}}}"#);
        assert!(err.starts_with("mcpServers.s.headers:") && err.contains("NOPE is not set"), "{err}");
        let err = error_of(r#"{"mcpServers": {"s": {"url": "http://h", "headers": {"X-K": "${TOKEN"}}}}"#);
        assert!(err.contains("unclosed"), "{err}");
        let err =
            error_of(r#"{"mcpServers": {"s": {"url": "http://h", "headers": {"Mcp-Session-Id": "x"}}}}"#);
        assert!(err.contains("set by the MCP transport"), "{err}");
        let err = error_of(r#"{"mcpServers": {"s": {"url": "http://h", "headers": {"X-K": 1}}}}"#);
        assert!(err.contains("must be a string"), "{err}");
        let err = error_of(r#"{"mcpServers": {"s": {"url": "http://h", "headers": ["a"]}}}"#);
        assert!(err.starts_with("mcpServers.s.headers:"), "{err}");
        let err = error_of(
            r#"{"mcpServers": {"s": {"url": "http://h", "user_assertion": true, "headers": {"Authorization": "Bearer x"}}}}"#,
        );
        assert!(err.contains("user_assertion"), "{err}");
    }

    #[test]
    fn bad_scalars_are_named() {
        let err = error_of(r#"{"mcpServers": {"s": {"url": "http://h", "timeout_ms": 0}}}"#);
        assert!(err.starts_with("mcpServers.s.timeout_ms:"), "{err}");
        let err = error_of(r#"{"mcpServers": {"s": {"url": "http://h", "timeout_ms": "5s"}}}"#);
        assert!(err.starts_with("mcpServers.s.timeout_ms:"), "{err}");
        let err = error_of(r#"{"mcpServers": {"s": {"url": "http://h", "user_assertion": "yes"}}}"#);
        assert!(err.starts_with("mcpServers.s.user_assertion:"), "{err}");
        let err = error_of(r#"{"mcpServers": {"s": {"url": "http://h", "default": 1}}}"#);
        assert!(err.starts_with("mcpServers.s.default:"), "{err}");
        let err = error_of(r#"{"mcpServers": {"s": {"url": "http://h", "allowed_tools": "add"}}}"#);
        assert!(err.starts_with("mcpServers.s.allowed_tools:"), "{err}");
        let err = error_of(r#"{"mcpServers": {"s": {"url": "http://h", "allowed_tools": [1]}}}"#);
        assert!(err.starts_with("mcpServers.s.allowed_tools:"), "{err}");
    }

    #[test]
    fn unknown_fields_and_other_transports_are_named() {
        let err = error_of(r#"{"mcpServers": {"s": {"url": "http://h", "timout_ms": 5}}}"#);
        assert!(err.contains("mcpServers.s: unknown field `timout_ms`"), "{err}");
        let err = error_of(r#"{"mcpServers": {"s": {"command": "npx", "args": []}}}"#);
        assert!(err.contains("stdio servers are not supported"), "{err}");
        let err = error_of(r#"{"mcpServers": {"s": {"url": "http://h", "type": "sse"}}}"#);
        assert!(err.starts_with("mcpServers.s.type:"), "{err}");
    }
}
