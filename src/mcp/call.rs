//! One MCP tool call for a turn, and the turn's executor ([`McpTools`]).
//!
//! Every failure is a tool result marked as an error, worded for the model: an unknown or
//! skipped tool, arguments that are not an object, a server that cannot be reached (the call was
//! not sent), a JSON-RPC error, an `isError` result, or a transport that broke during
//! the call — whose outcome is unknown, so the model is told not to repeat it blindly.

use std::sync::Arc;

use futures::future::BoxFuture;
use rmcp::ServiceExt as _;
use rmcp::model::{CallToolRequestParams, CallToolResult, ContentBlock};
use rmcp::service::ServiceError;
use serde_json::Value;

use super::Mcp;
use super::catalog::{Lookup, Server, Watcher};
use super::sessions::{Client, SessionKey};
use super::transport::{Identity, transport};

/// A call's text, or an error text shown to the model as an error.
type ToolResult = Result<String, String>;

/// A turn's view of the MCP tools: calls act for its organization and user.
pub struct McpTools {
    /// The service.
    pub mcp: Arc<Mcp>,
    /// The turn's organization.
    pub org: String,
    /// The turn's user, if any.
    pub user: Option<String>,
}

impl McpTools {
    /// The `timeout_ms` of the server of `name`, if it sets one.
    #[must_use]
    pub fn timeout(&self, name: &str) -> Option<std::time::Duration> {
        let (_, server) = self.mcp.server_of(name)?;
        server.config.timeout_ms.map(std::time::Duration::from_millis)
    }

    /// Why `name` is not offered, when its server lists it but hearth skipped it.
    #[must_use]
    pub fn explain(&self, name: &str) -> Option<String> {
        match self.mcp.server_of(name)?.1.lookup(name) {
            Lookup::Skipped(why) => Some(format!("`{name}` is not available: {why}")),
            _ => None,
        }
    }

    /// Calls the exposed tool `name` with `arguments` (the caller applies the timeout).
    pub fn call<'a>(&'a self, name: &'a str, arguments: Value) -> BoxFuture<'a, ToolResult> {
        Box::pin(async move {
            let Some((index, server)) = self.mcp.server_of(name) else {
                return Err(format!("unknown tool `{name}`"));
            };
            let tool = match server.lookup(name) {
                Lookup::Tool(tool) => tool,
                Lookup::Skipped(why) => return Err(format!("`{name}` is not available: {why}")),
                Lookup::Unknown => {
                    return Err(format!(
                        "unknown tool `{name}` (MCP server `{}` does not offer it now)",
                        server.config.name
                    ));
                }
            };
            let Value::Object(arguments) = arguments else {
                return Err(format!("invalid arguments for `{name}`: they must be a JSON object"));
            };
            self.call_on(index, server, tool, arguments).await
        })
    }

    async fn call_on(
        &self,
        index: usize,
        server: &Arc<Server>,
        tool: String,
        arguments: serde_json::Map<String, Value>,
    ) -> ToolResult {
        let name = &server.config.name;
        if server.config.user_assertion && self.user.is_none() {
            return Err(format!(
                "MCP server `{name}` acts for a user and this run has none (send X-Runtime-User); the call was not sent"
            ));
        }
        let key = SessionKey { server: index, org: self.org.clone(), user: self.user.clone() };
        let client = self
            .mcp
            .sessions
            .get(&key, || self.open(server))
            .await
            .map_err(|e| format!("could not reach MCP server `{name}` ({e}); the call was not sent"))?;
        let params = CallToolRequestParams::new(tool.clone()).with_arguments(arguments);
        match client.call_tool(params).await {
            Ok(result) => result_text(&result),
            Err(ServiceError::McpError(e)) => {
                Err(format!("MCP server `{name}` refused the call to `{tool}`: {}", e.message))
            }
            Err(e) => {
                self.mcp.sessions.forget(&key, &client);
                Err(format!(
                    "the connection to MCP server `{name}` failed during the call to `{tool}` ({}); whether it took \
                     effect is unknown: do not repeat it blindly",
                    super::service_error(&e)
                ))
            }
        }
    }

    /// Opens this user's session with `server`.
    async fn open(&self, server: &Arc<Server>) -> Result<Client, String> {
        let identity = match (&self.mcp.signer, &self.user) {
            (Some(signer), Some(user)) if server.config.user_assertion => Some(Arc::new(Identity {
                signer: Arc::clone(signer),
                user: user.clone(),
                org: self.org.clone(),
                audience: server.config.url.clone(),
            })),
            _ => None,
        };
        Watcher::quiet()
            .serve(transport(&self.mcp.http, &server.config, identity))
            .await
            .map_err(|e| super::init_error(&e))
    }
}

/// A call's result as text for the model: its text blocks (other blocks as JSON), or its
/// structured content when it has no blocks; an error when the server marked it `isError`.
fn result_text(result: &CallToolResult) -> ToolResult {
    let mut parts: Vec<String> = result
        .content
        .iter()
        .map(|block| match block {
            ContentBlock::Text(t) => t.text.clone(),
            other => serde_json::to_string(other).unwrap_or_default(),
        })
        .collect();
    if parts.is_empty()
        && let Some(structured) = &result.structured_content
    {
        parts.push(structured.to_string());
    }
    let text = parts.join("\n");
    if result.is_error == Some(true) { Err(text) } else { Ok(text) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_become_text_and_is_error_an_error() {
        let ok = CallToolResult::success(vec![ContentBlock::text("4"), ContentBlock::text("more")]);
        assert_eq!(result_text(&ok), Ok("4\nmore".to_owned()));
        let failed = CallToolResult::error(vec![ContentBlock::text("boom")]);
        assert_eq!(result_text(&failed), Err("boom".to_owned()));
        let structured = CallToolResult::structured(serde_json::json!({"result": 4}));
        assert!(result_text(&structured).unwrap().contains("4"));
    }
}
