//! `GET /v1/sessions/{id}` is bounded: a page of the conversation (newest first pages, oldest
//! first within a page) with a cursor to the older one.

use serde_json::{Value, json};

use crate::runs::{Api, assert_error, echo, options, with};

#[tokio::test]
async fn a_sessions_messages_come_in_pages_with_a_cursor() {
    let hearth = options().start().await;
    let api = Api::new(&hearth);
    let first = api.start(&echo("one")).await;
    let session = first["session_id"].as_str().unwrap().to_owned();
    api.wait_end(first["id"].as_str().unwrap()).await;
    for text in ["two", "three"] {
        let run = api.start(&with(echo(text), &json!({"session_id": session}))).await;
        api.wait_end(run["id"].as_str().unwrap()).await;
    }
    let texts = |view: &Value| -> Vec<String> {
        view["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["content"].as_str().unwrap_or("").to_owned())
            .collect()
    };
    let (status, whole) = api.get(&format!("/v1/sessions/{session}")).await;
    assert_eq!(status, 200, "{whole}");
    assert_eq!(texts(&whole), ["one", "one", "two", "two", "three", "three"]);
    assert_eq!(whole["messages_before"], Value::Null);
    assert_eq!(whole["runs"].as_array().unwrap().len(), 3);

    let (_, newest) = api.get(&format!("/v1/sessions/{session}?limit=4")).await;
    assert_eq!(texts(&newest), ["two", "two", "three", "three"]);
    let before = newest["messages_before"].as_i64().expect("a cursor to the older page");
    let (_, older) = api.get(&format!("/v1/sessions/{session}?limit=4&before={before}")).await;
    assert_eq!(texts(&older), ["one", "one"]);
    assert_eq!(older["messages_before"], Value::Null);

    let bad =
        api.request(reqwest::Method::GET, &format!("/v1/sessions/{session}?limit=0")).send().await.unwrap();
    assert_error(bad, 400, "invalid_request").await;
}
