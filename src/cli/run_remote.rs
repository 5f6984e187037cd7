//! `hearth run --url URL`: the turn through a running hearth's API — `POST /v1/runs`, its events
//! long-polled for tool progress until the terminal one, then `GET /v1/runs/{id}`; Ctrl-C
//! posts `/cancel`.

use std::time::Duration;

use serde_json::{Value, json};

use crate::cli::client::Api;
use crate::config::Secret;
/// Terminal event types.
const TERMINAL: [&str; 3] = ["run.completed", "run.failed", "run.cancelled"];

/// Runs the turn on the server at `url`; returns the run's JSON and whether Ctrl-C stopped it.
///
/// # Errors
/// The server unreachable, or refusing the run (the message is its error's).
pub async fn run(url: &str, key: &Secret, target: &str, text: &str) -> anyhow::Result<(Value, bool)> {
    // Long-polls wait up to 30 s on the server.
    let client = crate::llm::http::client(Duration::from_secs(10), Duration::from_secs(60))
        .map_err(|e| anyhow::anyhow!("HTTP client: {e}"))?;
    let api =
        Api { client, base: url.trim_end_matches('/').to_owned(), auth: format!("Bearer {}", key.expose()) };
    let body = json!({"model": target, "messages": [{"role": "user", "content": text}]});
    // Listening before the run starts: a Ctrl-C at any moment after is seen.
    let mut interrupt = crate::cli::Interrupt::listen()?;
    let run = api.call("v1/runs", Some(&body)).await?;
    let id =
        run["id"].as_str().ok_or_else(|| anyhow::anyhow!("{url} answered a run without an id: {run}"))?;
    let id = id.to_owned();
    let mut seq = 0_i64;
    let interrupted = loop {
        let path = format!("v1/runs/{id}/events?offset={seq}&live=long-poll");
        let events = tokio::select! {
            events = api.call(&path, None) => events?,
            _ = interrupt.recv() => {
                super::super::progress(&format!("interrupted: cancelling run {id}"));
                api.call(&format!("v1/runs/{id}/cancel"), Some(&json!({}))).await?;
                break true;
            }
        };
        let mut ended = false;
        for event in events.as_array().into_iter().flatten() {
            seq = seq.max(event["seq"].as_i64().unwrap_or_default());
            let kind = event["type"].as_str().unwrap_or_default();
            if let Some(line) = super::progress_of(kind, &event["data"]) {
                super::super::progress(&line);
            }
            ended |= TERMINAL.contains(&kind);
        }
        if ended {
            break false;
        }
    };
    let run = api.call(&format!("v1/runs/{id}?wait=10"), None).await?;
    Ok((run, interrupted))
}
