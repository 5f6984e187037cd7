//! `Idempotency-Key` on `POST /v1/runs` and `POST /v1/chat/completions`: a retry gets the turn
//! its key started — never a second turn in the session — and a key is the caller's own.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::runs::{Api, assert_error, echo, header, options, with};

async fn post(api: &Api, path: &str, key: &str, body: &Value) -> reqwest::Response {
    api.request(Method::POST, path).header("idempotency-key", key).json(body).send().await.unwrap()
}

fn replayed(response: &reqwest::Response) -> bool {
    header(response.headers(), "idempotent-replayed") == Some("true")
}

/// The session's messages and runs.
async fn session(api: &Api, id: &str) -> (usize, usize) {
    let (status, view) = api.get(&format!("/v1/sessions/{id}")).await;
    assert_eq!(status, 200, "{view}");
    (view["messages"].as_array().unwrap().len(), view["runs"].as_array().unwrap().len())
}

#[tokio::test]
async fn a_retried_run_request_gets_the_same_run() {
    let hearth = options().start().await;
    let api = Api::new(&hearth);
    let first = post(&api, "/v1/runs", "k-1", &echo("once")).await;
    assert_eq!(first.status(), 202);
    assert!(!replayed(&first));
    let first: Value = first.json().await.unwrap();
    let again = post(&api, "/v1/runs", "k-1", &echo("once")).await;
    assert_eq!(again.status(), 202);
    assert!(replayed(&again), "{:?}", again.headers());
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["id"], first["id"], "{again}");
    api.wait_end(first["id"].as_str().unwrap()).await;
    assert_eq!(session(&api, first["session_id"].as_str().unwrap()).await, (2, 1));

    // Another key is another run.
    let other: Value = post(&api, "/v1/runs", "k-2", &echo("once")).await.json().await.unwrap();
    assert_ne!(other["id"], first["id"]);
}

#[tokio::test]
async fn a_key_reused_with_another_request_or_malformed_is_400() {
    let hearth = options().start().await;
    let api = Api::new(&hearth);
    assert_eq!(post(&api, "/v1/runs", "k", &echo("one")).await.status(), 202);
    let body = assert_error(post(&api, "/v1/runs", "k", &echo("two")).await, 400, "invalid_request").await;
    assert_eq!(body["error"]["param"], "Idempotency-Key", "{body}");
    let body =
        assert_error(post(&api, "/v1/chat/completions", "a key", &echo("x")).await, 400, "invalid_request")
            .await;
    assert_eq!(body["error"]["param"], "Idempotency-Key", "{body}");
}

#[tokio::test]
async fn a_key_belongs_to_its_caller() {
    let hearth = options().start().await;
    let api = Api::new(&hearth);
    let key = crate::runs::cli(&hearth, &["keys", "create", "--org", "default", "--name", "other"]);
    let other = Api::with_key(&hearth, key.lines().last().unwrap().trim());
    let mine: Value = post(&api, "/v1/runs", "shared", &echo("x")).await.json().await.unwrap();
    let theirs = post(&other, "/v1/runs", "shared", &echo("x")).await;
    assert!(!replayed(&theirs));
    let theirs: Value = theirs.json().await.unwrap();
    assert_ne!(mine["id"], theirs["id"], "another caller's equal key started its own run");
}

#[tokio::test]
async fn a_retried_chat_turn_replays_its_answer_streamed_or_not() {
    let hearth = options().start().await;
    let api = Api::new(&hearth);
    let first = post(&api, "/v1/chat/completions", "c-1", &echo("hello there")).await;
    assert_eq!(first.status(), 200);
    let run = header(first.headers(), "x-run-id").unwrap().to_owned();
    let session_id = header(first.headers(), "x-session-id").unwrap().to_owned();
    let first: Value = first.json().await.unwrap();
    let again = post(&api, "/v1/chat/completions", "c-1", &echo("hello there")).await;
    assert_eq!(again.status(), 200);
    assert!(replayed(&again));
    assert_eq!(header(again.headers(), "x-run-id"), Some(run.as_str()));
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["choices"][0]["message"]["content"], first["choices"][0]["message"]["content"]);
    assert_eq!(session(&api, &session_id).await, (2, 1), "one turn in the session");

    let streamed = with(echo("streamed words"), &json!({"stream": true}));
    let text = |body: String| -> String {
        body.lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .filter(|d| *d != "[DONE]")
            .map(|d| serde_json::from_str::<Value>(d).unwrap())
            .filter_map(|c| c["choices"][0]["delta"]["content"].as_str().map(str::to_owned))
            .collect()
    };
    let one = post(&api, "/v1/chat/completions", "c-2", &streamed).await;
    let run = header(one.headers(), "x-run-id").unwrap().to_owned();
    let one = text(one.text().await.unwrap());
    let two = post(&api, "/v1/chat/completions", "c-2", &streamed).await;
    assert!(replayed(&two));
    assert_eq!(header(two.headers(), "x-run-id"), Some(run.as_str()));
    assert_eq!(text(two.text().await.unwrap()), one);
    assert_eq!(one, "streamed words");
}

#[tokio::test]
async fn a_chat_turn_whose_client_went_away_is_started_again_by_its_retry() {
    let hearth = options().start().await;
    let api = Api::new(&hearth);
    let slow = echo(r#"call:test__sleep {"ms": 3000}"#);
    let request = post(&api, "/v1/chat/completions", "gone", &slow);
    // The client gives up (a timeout): its run is cancelled.
    assert!(tokio::time::timeout(Duration::from_millis(500), request).await.is_err());
    let mut cancelled = None;
    for _ in 0..100 {
        let (_, sessions) = api.get("/v1/sessions").await;
        let run = sessions["data"][0]["id"].as_str().map(str::to_owned);
        if let Some(session) = run {
            let (_, view) = api.get(&format!("/v1/sessions/{session}")).await;
            if view["runs"][0]["status"] == "cancelled" {
                cancelled = view["runs"][0]["id"].as_str().map(str::to_owned);
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let cancelled = cancelled.expect("the abandoned turn's run was cancelled");
    let retry = post(&api, "/v1/chat/completions", "gone", &slow).await;
    assert_eq!(retry.status(), 200);
    assert!(!replayed(&retry), "a new run answers the retry");
    assert_ne!(header(retry.headers(), "x-run-id"), Some(cancelled.as_str()));
}
