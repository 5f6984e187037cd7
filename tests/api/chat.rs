//! The chat API's answers about a turn that did not complete: the error status, the run's ids
//! on every answer, and the shape of the terminal event in the run's log.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::runs::{Api, assert_error, cli, echo, header, options, with};
use crate::support::Hearth;

/// The run and session ids of a chat answer, asserting both are there.
fn ids(response: &reqwest::Response) -> (String, String) {
    let headers = response.headers();
    let run = header(headers, "x-run-id").unwrap_or_else(|| panic!("no X-Run-Id: {headers:?}")).to_owned();
    let session =
        header(headers, "x-session-id").unwrap_or_else(|| panic!("no X-Session-Id: {headers:?}")).to_owned();
    assert!(run.starts_with("run_") && session.starts_with("ses_"), "{run} {session}");
    (run, session)
}

/// The last event of the run's log, which must be its one terminal event.
async fn terminal_event(api: &Api, run: &str) -> Value {
    let events = api.all_events(run).await;
    events.last().cloned().unwrap_or_else(|| panic!("no events for {run}"))
}

/// Asserts a failed or cancelled terminal event carries `{error: {message, code}, usage}`.
fn assert_ended_shape(event: &Value, kind: &str, code: &str) {
    assert_eq!(event["type"], kind, "{event}");
    let data = &event["data"];
    assert_eq!(data["error"]["code"], code, "{event}");
    assert!(data["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{event}");
    for field in ["prompt_tokens", "completion_tokens", "total_tokens"] {
        assert!(data["usage"][field].is_u64(), "usage.{field} missing: {event}");
    }
}

#[tokio::test]
async fn a_chat_turn_that_fails_answers_500_with_its_run_and_session_ids() {
    let hearth = options().env("HEARTH_MAX_STEPS", "2").start().await;
    let api = Api::new(&hearth);
    let response = api
        .request(Method::POST, "/v1/chat/completions")
        .json(&echo("call:test__loop {}"))
        .send()
        .await
        .unwrap();
    let (run, session) = ids(&response);
    assert_error(response, 500, "run_failed").await;
    let stored = api.run(&run).await;
    assert_eq!((&stored["status"], &stored["session_id"]), (&json!("failed"), &json!(session)), "{stored}");
    assert_eq!(stored["error"]["code"], "max_steps_exceeded", "{stored}");
    assert_ended_shape(&terminal_event(&api, &run).await, "run.failed", "max_steps_exceeded");
}

/// Puts the `default` organization on the `go` runner, which no worker serves: its turns wait
/// in the queue until cancelled.
fn no_worker_for_default(hearth: &Hearth) {
    cli(hearth, &["orgs", "set-runner", "default", "go", "--force", "--reason", "test"]);
}

/// The id of the caller's only run, once it is queued.
async fn only_queued_run(api: &Api) -> String {
    for _ in 0..100 {
        let (_, list) = api.get("/v1/sessions").await;
        if let Some(session) = list["data"].as_array().and_then(|s| s.first()) {
            let (_, full) = api.get(&format!("/v1/sessions/{}", session["id"].as_str().unwrap())).await;
            if let Some(run) = full["runs"].as_array().and_then(|r| r.first()) {
                assert_eq!(run["status"], "queued", "{run}");
                return run["id"].as_str().unwrap().to_owned();
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no queued run appeared")
}

#[tokio::test]
async fn a_chat_turn_whose_queued_run_is_cancelled_answers_409_with_its_ids() {
    for stream in [false, true] {
        let hearth = options().start().await;
        no_worker_for_default(&hearth);
        let api = Api::new(&hearth);
        let chat = {
            let api = api.clone();
            let body = with(echo("never runs"), &json!({"stream": stream}));
            tokio::spawn(
                async move { api.request(Method::POST, "/v1/chat/completions").json(&body).send().await },
            )
        };
        let run = only_queued_run(&api).await;
        let (status, cancelled) = api.cancel(&run).await;
        assert_eq!((status.as_u16(), &cancelled["status"]), (200, &json!("cancelled")), "{cancelled}");
        let response = chat.await.unwrap().unwrap();
        assert_eq!(ids(&response).0, run, "stream: {stream}");
        assert_error(response, 409, "conflict").await;
        assert_ended_shape(&terminal_event(&api, &run).await, "run.cancelled", "cancelled");
    }
}

#[tokio::test]
async fn a_chat_turn_for_a_runner_without_a_live_worker_fails_fast_with_503() {
    let hearth = options().env("HEARTH_NO_WORKER_WAIT_S", "1").start().await;
    no_worker_for_default(&hearth);
    let api = Api::new(&hearth);
    for stream in [false, true] {
        let asked = std::time::Instant::now();
        let body = with(echo("nobody serves go"), &json!({"stream": stream}));
        let response = api.request(Method::POST, "/v1/chat/completions").json(&body).send().await.unwrap();
        let (run, _) = ids(&response);
        let error = assert_error(response, 503, "unavailable").await;
        assert!(asked.elapsed() < Duration::from_secs(10), "bounded: {:?}", asked.elapsed());
        let message = error["error"]["message"].as_str().unwrap();
        assert!(message.contains("`go`") && message.contains("HEARTH_NO_WORKER_WAIT_S"), "{message}");
        let stored = api.run(&run).await;
        assert_eq!(stored["status"], "cancelled", "nothing is left queued: {stored}");
        assert_ended_shape(&terminal_event(&api, &run).await, "run.cancelled", "cancelled");
    }
}

#[tokio::test]
async fn too_many_messages_or_tools_in_one_request_are_refused() {
    let hearth = options().start().await;
    let api = Api::new(&hearth);
    let many: Vec<Value> = (0..1025).map(|i| json!({"role": "user", "content": format!("m{i}")})).collect();
    let body = json!({"model": "echo", "messages": many});
    let response = api.request(Method::POST, "/v1/chat/completions").json(&body).send().await.unwrap();
    let error = assert_error(response, 400, "invalid_request").await;
    assert_eq!(error["error"]["param"], "messages", "{error}");
    let tools: Vec<Value> = (0..129)
        .map(|i| json!({"type": "function", "function": {"name": format!("t{i}"), "parameters": {}}}))
        .collect();
    let body = with(echo("hi"), &json!({"tools": tools}));
    let response = api.request(Method::POST, "/v1/chat/completions").json(&body).send().await.unwrap();
    let error = assert_error(response, 400, "invalid_request").await;
    assert_eq!(error["error"]["param"], "tools", "{error}");
    let ok: Vec<Value> = (0..1024).map(|i| json!({"role": "user", "content": format!("m{i}")})).collect();
    let response = api
        .request(Method::POST, "/v1/chat/completions")
        .json(&json!({"model": "echo", "messages": ok}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "1,024 messages are fine");
}
