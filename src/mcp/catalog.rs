//! Each MCP server's tool list: listed at start, again on `notifications/tools/list_changed` and
//! every HEARTH_MCP_REFRESH_S, through a session of hearth's own (no user, no assertion).
//!
//! A server that is down is retried with a growing pause (1 s doubling, at most the refresh
//! interval); the first failure of a streak logs one warning, the recovery one info line. Tools
//! are exposed as `server__tool`; a tool whose name or input schema a model could not use is
//! skipped with a warning, and a call to it answers why.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rmcp::model::Tool;
use rmcp::{ClientHandler, RoleClient, ServiceExt as _};
use serde_json::Value;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::McpServerConfig;
use crate::domain::message::ToolSpec;

/// A configured server and what it offers.
#[derive(Debug)]
pub struct Server {
    /// Its configuration.
    pub config: McpServerConfig,
    /// Its tools as last listed.
    tools: RwLock<ToolList>,
    /// Poked by `notifications/tools/list_changed`.
    changed: Arc<Notify>,
}

/// A server's tools as last listed.
#[derive(Debug, Default)]
struct ToolList {
    /// Offered, by exposed name.
    offered: Vec<ToolSpec>,
    /// The server's own name of each offered tool, by exposed name.
    names: HashMap<String, String>,
    /// Tools not offered, with why, by exposed name.
    skipped: HashMap<String, String>,
}

/// What a call to an exposed name should do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// Call the server's tool of this name.
    Tool(String),
    /// The tool exists but is not offered, for this reason.
    Skipped(String),
    /// No such tool.
    Unknown,
}

/// Notes `notifications/tools/list_changed` (the only notification hearth acts on).
#[derive(Debug, Clone)]
pub struct Watcher {
    changed: Option<Arc<Notify>>,
}

impl Watcher {
    /// A handler that ignores every notification (users' sessions).
    #[must_use]
    pub fn quiet() -> Self {
        Self { changed: None }
    }
}

impl ClientHandler for Watcher {
    async fn on_tool_list_changed(&self, _context: rmcp::service::NotificationContext<RoleClient>) {
        if let Some(changed) = &self.changed {
            changed.notify_one();
        }
    }

    fn get_info(&self) -> rmcp::model::ClientConfig {
        rmcp::model::ClientConfig::new(
            rmcp::model::ClientCapabilities::default(),
            rmcp::model::Implementation::new("hearth", env!("CARGO_PKG_VERSION")),
        )
    }
}

impl Server {
    /// A server with no tools listed yet.
    #[must_use]
    pub fn new(config: McpServerConfig) -> Self {
        Self { config, tools: RwLock::default(), changed: Arc::new(Notify::new()) }
    }

    /// Its offered tools (exposed names).
    #[must_use]
    pub fn specs(&self) -> Vec<ToolSpec> {
        self.tools.read().map(|t| t.offered.clone()).unwrap_or_default()
    }

    /// What a call to `exposed` should do.
    #[must_use]
    pub fn lookup(&self, exposed: &str) -> Lookup {
        let Ok(tools) = self.tools.read() else { return Lookup::Unknown };
        if let Some(name) = tools.names.get(exposed) {
            Lookup::Tool(name.clone())
        } else if let Some(why) = tools.skipped.get(exposed) {
            Lookup::Skipped(why.clone())
        } else {
            Lookup::Unknown
        }
    }

    /// Replaces the tool list with `tools` as listed; returns how many are offered.
    pub fn set_tools(&self, tools: Vec<Tool>) -> usize {
        let mut list = ToolList::default();
        for tool in tools {
            let exposed = format!("{}__{}", self.config.name, tool.name);
            if let Some(allowed) = &self.config.allowed_tools
                && !allowed.iter().any(|a| *a == tool.name)
            {
                continue;
            }
            let schema = Value::Object((*tool.input_schema).clone());
            if let Err(why) = check_name(&exposed).and_then(|()| check_schema(&schema)) {
                tracing::warn!(mcp.server = %self.config.name, tool = %exposed, reason = %why,
                    "skipping an MCP tool a model could not use");
                list.skipped.insert(exposed, why);
                continue;
            }
            let description = tool.description.as_deref().or(tool.title.as_deref()).unwrap_or_default();
            list.names.insert(exposed.clone(), tool.name.to_string());
            list.offered.push(ToolSpec {
                name: exposed,
                description: description.to_owned(),
                parameters: schema,
            });
        }
        let n = list.offered.len();
        if let Ok(mut tools) = self.tools.write() {
            *tools = list;
        }
        n
    }
}

/// OpenAI's rule for function names: `^[a-zA-Z0-9_-]{1,64}$`.
fn check_name(exposed: &str) -> Result<(), String> {
    let ok =
        exposed.len() <= 64 && exposed.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(format!("`{exposed}` is not a valid tool name for models (letters, digits, _ and -, at most 64)"))
    }
}

/// The input schema must describe an object (MCP requires it), and every nested schema must be
/// well-formed where a model relies on it: `properties` an object of schemas, `required` a list
/// of names, `type` a JSON Schema type name (or a list of them).
pub(crate) fn check_schema(schema: &Value) -> Result<(), String> {
    if schema.get("type").and_then(Value::as_str) != Some("object") {
        return Err("its input schema is malformed: `type` must be \"object\"".into());
    }
    check_subschema(schema, "").map_err(|why| format!("its input schema is malformed: {why}"))
}

const JSON_TYPES: &[&str] = &["string", "number", "integer", "boolean", "object", "array", "null"];

fn check_subschema(schema: &Value, at: &str) -> Result<(), String> {
    let Value::Object(map) = schema else {
        return if schema.is_boolean() { Ok(()) } else { Err(format!("`{at}` is not a schema")) };
    };
    let type_ok = |t: &Value| t.as_str().is_some_and(|t| JSON_TYPES.contains(&t));
    match map.get("type") {
        None => {}
        Some(Value::Array(types)) if types.iter().all(type_ok) => {}
        Some(t) if type_ok(t) => {}
        Some(t) => return Err(format!("`{at}/type` is {t}, not a JSON Schema type")),
    }
    match map.get("properties") {
        None => {}
        Some(Value::Object(props)) => {
            for (name, sub) in props {
                check_subschema(sub, &format!("{at}/properties/{name}"))?;
            }
        }
        Some(_) => return Err(format!("`{at}/properties` must be an object")),
    }
    if let Some(required) = map.get("required")
        && !required.as_array().is_some_and(|r| r.iter().all(Value::is_string))
    {
        return Err(format!("`{at}/required` must be an array of property names"));
    }
    if let Some(items) = map.get("items") {
        check_subschema(items, &format!("{at}/items"))?;
    }
    for key in ["anyOf", "oneOf", "allOf"] {
        if let Some(list) = map.get(key) {
            let Value::Array(list) = list else { return Err(format!("`{at}/{key}` must be an array")) };
            for (i, sub) in list.iter().enumerate() {
                check_subschema(sub, &format!("{at}/{key}/{i}"))?;
            }
        }
    }
    Ok(())
}

/// Keeps `server`'s tool list fresh until `shutdown`.
pub async fn keep_listed(
    server: Arc<Server>,
    http: reqwest::Client,
    refresh: Duration,
    shutdown: CancellationToken,
) {
    let mut pause = Duration::from_secs(1);
    let mut down = false;
    let name = server.config.name.clone();
    loop {
        let watcher = Watcher { changed: Some(Arc::clone(&server.changed)) };
        let connect = watcher.serve(super::transport::transport(&http, &server.config, None));
        let failure = tokio::select! {
            () = shutdown.cancelled() => return,
            c = connect => match c {
                Ok(client) => match relist_until_broken(&server, &client, refresh, &shutdown, &mut down).await {
                    None => return,
                    Some(Broken { error, listed }) => {
                        if listed {
                            pause = Duration::from_secs(1);
                        }
                        error
                    }
                },
                Err(e) => super::init_error(&e),
            },
        };
        // One line per outage, not one per retry.
        if !std::mem::replace(&mut down, true) {
            tracing::warn!(mcp.server = %name, url = %without_credentials(&server.config.url), error = %failure,
                "MCP server unreachable: its tools are not offered until it answers (retrying)");
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(pause) => {}
        }
        pause = (pause * 2).min(refresh);
    }
}

/// The URL as it may be logged: without a `user:password@`.
fn without_credentials(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.to_string()
        }
        Err(_) => String::new(),
    }
}

/// Why a listing session ended.
struct Broken {
    error: String,
    /// Whether it listed the tools at least once.
    listed: bool,
}

/// Lists the tools now, and again on each change notification or refresh tick; returns what
/// broke the session, or `None` at shutdown. `down` is cleared (with one info line) by a listing.
async fn relist_until_broken(
    server: &Server,
    client: &rmcp::service::RunningService<RoleClient, Watcher>,
    refresh: Duration,
    shutdown: &CancellationToken,
    down: &mut bool,
) -> Option<Broken> {
    let mut listed = false;
    loop {
        match client.list_all_tools().await {
            Ok(tools) => {
                let n = server.set_tools(tools);
                if std::mem::take(down) {
                    tracing::info!(mcp.server = %server.config.name, "MCP server is up again");
                }
                tracing::info!(mcp.server = %server.config.name, tools = n, "listed the MCP server's tools");
                listed = true;
            }
            Err(e) => return Some(Broken { error: super::service_error(&e), listed }),
        }
        tokio::select! {
            () = shutdown.cancelled() => return None,
            () = server.changed.notified() => {}
            () = tokio::time::sleep(refresh) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn schemas_a_model_cannot_use_are_refused() {
        assert!(
            check_schema(
                &json!({"type": "object", "properties": {"a": {"type": "number"}}, "required": ["a"]})
            )
            .is_ok()
        );
        assert!(check_schema(&json!({"type": "object"})).is_ok());
        assert!(check_schema(&json!({"type": "string"})).is_err());
        assert!(check_schema(&json!({"type": "object", "properties": 5})).is_err());
        assert!(check_schema(&json!({"type": "object", "properties": {"a": 5}})).is_err());
        assert!(check_schema(&json!({"type": "object", "required": "a"})).is_err());
        let err =
            check_schema(&json!({"type": "object", "properties": {"x": {"type": "nonsense"}}})).unwrap_err();
        assert!(err.contains("/properties/x/type"), "{err}");
        assert!(check_schema(&json!({"type": "object", "properties": {"l": {"type": "array", "items": {"type": ["string", "null"]}},
            "type": {"anyOf": [{"type": "string"}, true]}}})).is_ok());
        assert!(
            check_schema(&json!({"type": "object", "properties": {"l": {"type": "array", "items": 3}}}))
                .is_err()
        );
    }

    #[test]
    fn tools_are_exposed_prefixed_filtered_and_checked() {
        let config = crate::config::parse_mcp_servers(
            r#"{"mcpServers": {"calc": {"url": "http://h/mcp", "allowed_tools": ["add", "bad", "we ird"]}}}"#,
            &|_| None,
        )
        .unwrap();
        let server = Server::new(config[0].clone());
        let tool = |name: &'static str, schema: Value| {
            let Value::Object(schema) = schema else { unreachable!() };
            Tool::new(name, "d", Arc::new(schema))
        };
        let n = server.set_tools(vec![
            tool("add", json!({"type": "object"})),
            tool("sub", json!({"type": "object"})),
            tool("bad", json!({"type": "array"})),
            tool("we ird", json!({"type": "object"})),
        ]);
        assert_eq!(n, 1);
        assert_eq!(server.specs()[0].name, "calc__add");
        assert_eq!(server.lookup("calc__add"), Lookup::Tool("add".into()));
        assert!(matches!(server.lookup("calc__bad"), Lookup::Skipped(why) if why.contains("malformed")));
        assert!(matches!(server.lookup("calc__we ird"), Lookup::Skipped(_)));
        assert_eq!(server.lookup("calc__sub"), Lookup::Unknown, "not in allowed_tools");
    }
}
