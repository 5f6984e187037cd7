//! Server-side tools: the [`Toolbox`] that chooses a turn's tools, the executor interface the
//! loop calls, and the test-only `test` tools.
//!
//! Tools are chosen per turn: at dispatch, [`Toolbox::offered`] names the tools a profile gets;
//! when the turn executes, [`Toolbox::for_turn`] gives the executor for that organization and
//! user: the MCP servers' tools (`mcp::`, whose client sessions are per user) and, when on, the
//! test tools. The `test` tools exist only when
//! HEARTH_TEST_TOOLS is on: `test__echo` returns its `text`, `test__sleep` waits `ms`
//! milliseconds (cancellable), `test__fail` fails with its `message`, `test__panic` panics (a bug
//! inside a turn, on purpose), and `test__loop` answers
//! with a directive that makes the `echo` model call it again (to exercise `max_steps`).

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::{Value, json};

use crate::catalog::Agent;
use crate::domain::message::ToolSpec;
use crate::ids::OrgId;
use crate::mcp::Mcp;
use crate::mcp::call::McpTools;

/// The outcome of a tool call: its text, or an error text shown to the model as an error.
pub type ToolResult = Result<String, String>;

/// Executes server-side tools.
pub trait ToolExecutor: Send + Sync {
    /// Tools offered to the model, by exposed name.
    fn specs(&self) -> Vec<ToolSpec>;

    /// Calls `name` with `arguments`.
    fn call<'a>(&'a self, name: &'a str, arguments: Value) -> BoxFuture<'a, ToolResult>;

    /// The longest a call of `name` may take, when the tool sets its own (an MCP server's
    /// `timeout_ms`); else the turn's HEARTH_TOOL_TIMEOUT_S applies.
    fn timeout(&self, _name: &str) -> Option<Duration> {
        None
    }

    /// Why `name` is not offered, when the executor knows it (an MCP tool with a malformed
    /// schema): the model is told so instead of "unknown tool".
    fn explain(&self, _name: &str) -> Option<String> {
        None
    }
}

/// Who a turn's tools act for.
#[derive(Debug, Clone, Copy)]
pub struct TurnScope<'a> {
    /// The organization.
    pub org: &'a OrgId,
    /// The user, if the run has one.
    pub user: Option<&'a str>,
}

/// Chooses the server-side tools of each turn.
pub struct Toolbox {
    test_tools: bool,
    mcp: Option<Arc<Mcp>>,
}

impl Toolbox {
    /// The tools of this process: the MCP servers' (when configured) and the test tools when
    /// `test_tools` (HEARTH_TEST_TOOLS).
    #[must_use]
    pub fn new(test_tools: bool, mcp: Option<Arc<Mcp>>) -> Self {
        Self { test_tools, mcp: mcp.filter(|m| !m.is_empty()) }
    }

    /// Names of the tools offered at dispatch. A plain model gets the test tools and the tools
    /// of every MCP server not marked `"default": false`; an agent gets only its servers' tools
    /// (`server__tool`; `test` names the test tools).
    #[must_use]
    pub fn offered(&self, agent: Option<&Agent>) -> Vec<String> {
        let servers = agent.map(|a| a.mcp_servers.as_slice());
        let test = self.test_tools && servers.is_none_or(|s| s.iter().any(|n| n == "test"));
        let mut names: Vec<String> =
            if test { TestTools.specs().into_iter().map(|s| s.name).collect() } else { Vec::new() };
        if let Some(mcp) = &self.mcp {
            names.extend(mcp.offered(servers));
        }
        names
    }

    /// The executor of one turn's tools, for `scope`.
    #[must_use]
    pub fn for_turn(&self, scope: TurnScope<'_>) -> Arc<dyn ToolExecutor> {
        let mcp = self.mcp.as_ref().map(|mcp| McpTools {
            mcp: Arc::clone(mcp),
            org: scope.org.to_string(),
            user: scope.user.map(str::to_owned),
        });
        if mcp.is_none() && !self.test_tools {
            return Arc::new(NoTools);
        }
        Arc::new(TurnTools { test: self.test_tools, mcp })
    }
}

/// One turn's tools: MCP tools for its organization and user, and the test tools when on.
struct TurnTools {
    test: bool,
    mcp: Option<McpTools>,
}

impl TurnTools {
    fn mcp_of(&self, name: &str) -> Option<&McpTools> {
        self.mcp.as_ref().filter(|m| m.mcp.owns(name))
    }
}

impl ToolExecutor for TurnTools {
    fn specs(&self) -> Vec<ToolSpec> {
        let mut specs = if self.test { TestTools.specs() } else { Vec::new() };
        if let Some(mcp) = &self.mcp {
            specs.extend(mcp.mcp.specs());
        }
        specs
    }

    fn call<'a>(&'a self, name: &'a str, arguments: Value) -> BoxFuture<'a, ToolResult> {
        match self.mcp_of(name) {
            Some(mcp) => mcp.call(name, arguments),
            None if self.test => TestTools.call(name, arguments),
            None => NoTools.call(name, arguments),
        }
    }

    fn timeout(&self, name: &str) -> Option<Duration> {
        self.mcp_of(name)?.timeout(name)
    }

    fn explain(&self, name: &str) -> Option<String> {
        self.mcp_of(name)?.explain(name)
    }
}

/// `test__panic`: a bug inside a turn, on purpose (HEARTH_TEST_TOOLS only).
#[expect(clippy::panic, reason = "the test tool that exercises the turn's panic boundary")]
fn test_panic() -> ToolResult {
    panic!("test__panic was called")
}

/// No server-side tools.
#[derive(Debug, Clone, Copy)]
pub struct NoTools;

impl ToolExecutor for NoTools {
    fn specs(&self) -> Vec<ToolSpec> {
        Vec::new()
    }

    fn call<'a>(&'a self, name: &'a str, _arguments: Value) -> BoxFuture<'a, ToolResult> {
        Box::pin(async move { Err(format!("unknown tool `{name}`")) })
    }
}

/// The test-only tools (HEARTH_TEST_TOOLS).
#[derive(Debug, Clone, Copy)]
pub struct TestTools;

fn spec(name: &str, description: &str, parameters: Value) -> ToolSpec {
    ToolSpec { name: name.into(), description: description.into(), parameters }
}

impl ToolExecutor for TestTools {
    fn specs(&self) -> Vec<ToolSpec> {
        let text = json!({"type": "object", "properties": {"text": {"type": "string"}}});
        vec![
            spec("test__echo", "Returns its `text` argument.", text),
            spec(
                "test__sleep",
                "Waits `ms` milliseconds, then returns `slept`.",
                json!({"type": "object", "properties": {"ms": {"type": "integer"}}}),
            ),
            spec(
                "test__fail",
                "Fails with its `message`.",
                json!({"type": "object", "properties": {"message": {"type": "string"}}}),
            ),
            spec("test__loop", "Asks the echo model to call it again.", json!({"type": "object"})),
            spec(
                "test__panic",
                "Panics (tests that a bug inside a turn fails only that run).",
                json!({"type": "object"}),
            ),
        ]
    }

    fn call<'a>(&'a self, name: &'a str, arguments: Value) -> BoxFuture<'a, ToolResult> {
        Box::pin(async move {
            match name {
                "test__echo" => {
                    Ok(arguments.get("text").and_then(Value::as_str).unwrap_or_default().to_owned())
                }
                "test__sleep" => {
                    let ms = arguments.get("ms").and_then(Value::as_u64).unwrap_or(100).min(600_000);
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    Ok("slept".to_owned())
                }
                "test__fail" => {
                    Err(arguments.get("message").and_then(Value::as_str).unwrap_or("failed").to_owned())
                }
                "test__loop" => Ok("call:test__loop {}".to_owned()),
                "test__panic" => test_panic(),
                other => Err(format!("unknown tool `{other}`")),
            }
        })
    }
}
