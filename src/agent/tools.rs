//! Server-side tools: the [`Toolbox`] that chooses a turn's tools, the executor interface the
//! loop calls, and the test-only `test` tools.
//!
//! Tools are chosen per turn: at dispatch, [`Toolbox::offered`] names the tools a profile gets;
//! when the turn executes, [`Toolbox::for_turn`] gives the executor for that organization and
//! user (MCP servers, a later issue, plug in here: their client sessions are per user). The `test` tools exist only when
//! HEARTH_TEST_TOOLS is on: `test__echo` returns its `text`, `test__sleep` waits `ms`
//! milliseconds (cancellable), `test__fail` fails with its `message`, `test__panic` panics (a bug
//! inside a turn, on purpose), and `test__loop` answers
//! with a directive that makes the `echo` model call it again (to exercise `max_steps`).

use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::{Value, json};

use crate::catalog::Agent;
use crate::domain::message::ToolSpec;
use crate::ids::OrgId;

/// The outcome of a tool call: its text, or an error text shown to the model as an error.
pub type ToolResult = Result<String, String>;

/// Executes server-side tools.
pub trait ToolExecutor: Send + Sync {
    /// Tools offered to the model, by exposed name.
    fn specs(&self) -> Vec<ToolSpec>;

    /// Calls `name` with `arguments`.
    fn call<'a>(&'a self, name: &'a str, arguments: Value) -> BoxFuture<'a, ToolResult>;
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
    shared: std::sync::Arc<dyn ToolExecutor>,
}

impl Toolbox {
    /// The tools of this process: the test tools when `test_tools` (HEARTH_TEST_TOOLS), else none.
    #[must_use]
    pub fn new(test_tools: bool) -> Self {
        let shared: std::sync::Arc<dyn ToolExecutor> =
            if test_tools { std::sync::Arc::new(TestTools) } else { std::sync::Arc::new(NoTools) };
        Self { shared }
    }

    /// Names of the tools offered at dispatch: every tool for a plain model; only the agent's
    /// servers' tools (`server__tool`) for an agent.
    #[must_use]
    pub fn offered(&self, agent: Option<&Agent>) -> Vec<String> {
        let names = self.shared.specs().into_iter().map(|s| s.name);
        match agent {
            None => names.collect(),
            Some(agent) => names
                .filter(|n| {
                    n.split_once("__")
                        .is_some_and(|(server, _)| agent.mcp_servers.iter().any(|s| s == server))
                })
                .collect(),
        }
    }

    /// The executor of one turn's tools, for `scope`.
    #[must_use]
    pub fn for_turn(&self, _scope: TurnScope<'_>) -> std::sync::Arc<dyn ToolExecutor> {
        std::sync::Arc::clone(&self.shared)
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
