//! Server-side tools: the executor interface the loop calls, and the test-only `test` tools.
//!
//! MCP servers plug in behind [`ToolExecutor`] (a later issue). The `test` tools exist only when
//! HEARTH_TEST_TOOLS is on: `test__echo` returns its `text`, `test__sleep` waits `ms`
//! milliseconds (cancellable), `test__fail` fails with its `message`, and `test__loop` answers
//! with a directive that makes the `echo` model call it again (to exercise `max_steps`).

use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::{Value, json};

use crate::domain::message::ToolSpec;

/// The outcome of a tool call: its text, or an error text shown to the model as an error.
pub type ToolResult = Result<String, String>;

/// Executes server-side tools.
pub trait ToolExecutor: Send + Sync {
    /// Tools offered to the model, by exposed name.
    fn specs(&self) -> Vec<ToolSpec>;

    /// Calls `name` with `arguments`.
    fn call<'a>(&'a self, name: &'a str, arguments: Value) -> BoxFuture<'a, ToolResult>;
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
                other => Err(format!("unknown tool `{other}`")),
            }
        })
    }
}
