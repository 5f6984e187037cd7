//! The worker protocol over HTTP (docs/worker-protocol.md), driven by the test as an external
//! worker of the `go` runner: registration and its version gate, long-poll claims, appends and
//! completion, fencing, cancels through the heartbeat, drains.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use crate::runs::{Api, KEY, assert_error, cli, echo, options, types};
use crate::support::Hearth;

/// A worker of the protocol: a worker token and, once registered, its id.
struct Worker {
    http: reqwest::Client,
    base: String,
    token: String,
    id: String,
}

impl Worker {
    /// Mints a worker token with the CLI.
    fn new(hearth: &Hearth) -> Self {
        let out = cli(hearth, &["workers", "token", "create", "--name", "test"]);
        let token = out.lines().last().unwrap().trim().to_owned();
        Self { http: reqwest::Client::new(), base: hearth.base_url().to_owned(), token, id: String::new() }
    }

    async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let response = self
            .http
            .request(Method::POST, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn register(&mut self, name: &str, version: &str) -> Value {
        let body =
            json!({"name": name, "runtime": "go", "version": version, "hostname": "test", "capacity": 2});
        let (status, answer) = self.post("/v1/workers/register", &body).await;
        assert_eq!(status, 200, "{answer}");
        self.id = answer["worker_id"].as_str().unwrap().to_owned();
        answer
    }

    async fn claim(&self, wait_s: f64) -> Vec<Value> {
        let (status, answer) =
            self.post(&format!("/v1/workers/{}/claim", self.id), &json!({"max": 4, "wait_s": wait_s})).await;
        assert_eq!(status, 200, "{answer}");
        answer["runs"].as_array().unwrap().clone()
    }

    async fn append(&self, run: &str, attempt: i64, from_seq: i64, texts: &[&str]) -> (u16, Value) {
        let events: Vec<Value> =
            texts.iter().map(|t| json!({"type": "text.delta", "data": {"text": t}})).collect();
        let body = json!({"worker_id": self.id, "attempt": attempt, "from_seq": from_seq, "events": events});
        self.post(&format!("/v1/runs/{run}/events"), &body).await
    }

    async fn complete(&self, run: &str, attempt: i64, content: &str) -> (u16, Value) {
        let body = json!({"worker_id": self.id, "attempt": attempt, "status": "completed",
                          "output": {"content": content, "tool_calls": []},
                          "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}});
        self.post(&format!("/v1/runs/{run}/complete"), &body).await
    }

    async fn heartbeat(&self, status: &str) -> Value {
        let (code, answer) = self
            .post(&format!("/v1/workers/{}/heartbeat", self.id), &json!({"in_flight": 1, "status": status}))
            .await;
        assert_eq!(code, 200, "{answer}");
        answer
    }
}

/// A server whose `default` organization is on the `go` runner, which only the test serves.
async fn go_server(extra: &[(&str, &str)]) -> Hearth {
    let mut opts = options();
    for (k, v) in extra {
        opts = opts.env(k, v);
    }
    let hearth = opts.start().await;
    cli(&hearth, &["orgs", "set-runner", "default", "go", "--force", "--reason", "test"]);
    hearth
}

#[tokio::test]
async fn a_worker_registers_claims_appends_and_completes_over_http() {
    let hearth = go_server(&[]).await;
    let api = Api::new(&hearth);
    let mut worker = Worker::new(&hearth);
    let registered = worker.register("go-1", "1.0.0").await;
    assert_eq!((registered["heartbeat_s"].as_u64(), registered["lease_s"].as_u64()), (Some(10), Some(60)));

    let run = api.start(&echo("hello worker")).await;
    let id = run["id"].as_str().unwrap();
    let claimed = worker.claim(5.0).await;
    assert_eq!(claimed.len(), 1, "{claimed:?}");
    let claim = &claimed[0];
    assert_eq!(
        (claim["run"]["id"].as_str(), claim["attempt"].as_i64(), claim["next_seq"].as_i64()),
        (Some(id), Some(1), Some(3))
    );
    assert_eq!(claim["run"]["input"]["messages"][0]["content"], "hello worker", "{claim}");
    assert_eq!(claim["resolved_profile"]["runner"], "go", "{claim}");
    assert_eq!(api.run(id).await["status"], "running");

    let (status, appended) = worker.append(id, 1, 3, &["hello ", "worker"]).await;
    assert_eq!((status, appended["next_seq"].as_i64()), (200, Some(5)), "{appended}");
    // Idempotent on seq: the same append again changes nothing.
    let (status, again) = worker.append(id, 1, 3, &["HELLO ", "WORKER"]).await;
    assert_eq!((status, again["next_seq"].as_i64()), (200, Some(5)), "{again}");
    // A gap is refused, naming the seq that comes next.
    let (status, gap) = worker.append(id, 1, 9, &["x"]).await;
    assert_eq!(status, 400, "{gap}");
    assert_eq!(gap["error"]["param"], "from_seq", "{gap}");

    let (status, done) = worker.complete(id, 1, "hello worker").await;
    assert_eq!((status, &done["recorded"]), (200, &json!(true)), "{done}");
    let (status, retry) = worker.complete(id, 1, "hello worker").await;
    assert_eq!((status, &retry["recorded"]), (200, &json!(false)), "a retry is idempotent: {retry}");

    let finished = api.run(id).await;
    assert_eq!(
        (&finished["status"], &finished["output"]["content"]),
        (&json!("completed"), &json!("hello worker"))
    );
    assert_eq!(finished["usage"]["total_tokens"], 3, "{finished}");
    let events = api.all_events(id).await;
    assert_eq!(types(&events), ["run.queued", "run.started", "text.delta", "text.delta", "run.completed"]);
    assert_eq!(events[2]["data"]["text"], "hello ", "the first append's text stays: {events:?}");
    let (_, session) = api.get(&format!("/v1/sessions/{}", finished["session_id"].as_str().unwrap())).await;
    let roles: Vec<&str> =
        session["messages"].as_array().unwrap().iter().map(|m| m["role"].as_str().unwrap()).collect();
    assert_eq!(roles, ["user", "assistant"], "{session}");

    // Nothing lands after the end: a late append is fenced.
    let (status, late) = worker.append(id, 1, 6, &["late"]).await;
    assert_eq!(status, 409, "{late}");
}

#[tokio::test]
async fn a_worker_that_lost_its_run_is_fenced_and_the_next_attempt_starts_clean() {
    let hearth = go_server(&[]).await;
    let api = Api::new(&hearth);
    let mut first = Worker::new(&hearth);
    first.register("go-1", "1.0.0").await;
    let id = api.start(&echo("retry me")).await["id"].as_str().unwrap().to_owned();
    let claim = first.claim(5.0).await;
    assert_eq!(claim.len(), 1);
    assert_eq!(first.append(&id, 1, 3, &["attempt one"]).await.0, 200);
    // Attempt 1 starts a tool it never sees finish (and one that does finish).
    let tools = json!({"worker_id": first.id, "attempt": 1, "from_seq": 4, "events": [
        {"type": "tool.started", "data": {"id": "c1", "name": "charge_card", "arguments": "{\"eur\":5}"}},
        {"type": "tool.started", "data": {"id": "c2", "name": "lookup", "arguments": "{}"}},
        {"type": "tool.finished", "data": {"id": "c2", "name": "lookup", "is_error": false, "result": "ok"}}]});
    assert_eq!(first.post(&format!("/v1/runs/{id}/events"), &tools).await.0, 200);
    let old_id = first.id.clone();

    // The worker restarts under its name: what it held is given back, attempt 2.
    let registered = first.register("go-1", "1.0.0").await;
    assert_eq!(registered["worker_id"], old_id.as_str(), "same name, same id");
    assert_eq!(registered["given_back"], json!([{"run_id": id, "attempt": 2, "requeued": true}]));
    let (status, stale) = first.append(&id, 1, 4, &["stale"]).await;
    assert_eq!(status, 409, "the old attempt's append is fenced: {stale}");
    assert_eq!(first.complete(&id, 1, "stale").await.0, 409);

    let again = first.claim(5.0).await;
    assert_eq!(again[0]["attempt"], 2, "{again:?}");
    // The interrupted call is handed to attempt 2, to be reported to the model, not replayed.
    assert_eq!(
        again[0]["interrupted_tool_calls"],
        json!([{"id": "c1", "name": "charge_card", "arguments": "{\"eur\":5}"}]),
        "{again:?}"
    );
    let next = again[0]["next_seq"].as_i64().unwrap();
    assert_eq!(first.append(&id, 2, next, &["attempt two"]).await.0, 200);
    assert_eq!(first.complete(&id, 2, "attempt two").await.0, 200);
    let done = api.run(&id).await;
    assert_eq!((&done["attempt"], &done["output"]["content"]), (&json!(2), &json!("attempt two")), "{done}");
    let events = api.all_events(&id).await;
    assert_eq!(events.iter().filter(|e| e["type"] == "run.started").count(), 2, "{events:?}");
    assert!(!events.iter().any(|e| e["data"]["text"] == "stale"), "{events:?}");
}

#[tokio::test]
async fn registration_below_the_minimum_version_is_refused_naming_it() {
    let hearth = go_server(&[("HEARTH_RUNNER_MIN_VERSION", "go=0.5.0")]).await;
    let worker = Worker::new(&hearth);
    let body = json!({"name": "old", "runtime": "go", "version": "0.4.9", "hostname": "h", "capacity": 1});
    let (status, refused) = worker.post("/v1/workers/register", &body).await;
    assert_eq!(status, 403, "{refused}");
    let message = refused["error"]["message"].as_str().unwrap();
    assert!(message.contains("0.5.0") && message.contains("HEARTH_RUNNER_MIN_VERSION"), "{message}");
    let ok = json!({"name": "new", "runtime": "go", "version": "0.5.0", "hostname": "h", "capacity": 1});
    assert_eq!(worker.post("/v1/workers/register", &ok).await.0, 200);
    let unknown =
        json!({"name": "x", "runtime": "cobol", "version": "9.0.0", "hostname": "h", "capacity": 1});
    let (status, body) = worker.post("/v1/workers/register", &unknown).await;
    assert_eq!((status, &body["error"]["param"]), (400, &json!("runtime")), "{body}");
}

#[tokio::test]
async fn an_api_key_is_refused_on_the_worker_protocol() {
    let hearth = go_server(&[]).await;
    let response = reqwest::Client::new()
        .post(hearth.url("/v1/workers/register"))
        .bearer_auth(KEY)
        .json(&json!({"name": "w", "runtime": "go", "version": "1.0.0"}))
        .send()
        .await
        .unwrap();
    assert_error(response, 401, "invalid_api_key").await;
}

#[tokio::test]
async fn a_claim_long_polls_and_is_woken_at_once_by_new_work() {
    let hearth = go_server(&[]).await;
    let api = Api::new(&hearth);
    let mut worker = Worker::new(&hearth);
    worker.register("go-1", "1.0.0").await;
    let started = Instant::now();
    assert!(worker.claim(0.3).await.is_empty(), "nothing to claim");
    assert!(started.elapsed() >= Duration::from_millis(250), "it waited");
    let worker = std::sync::Arc::new(worker);
    let claimer = {
        let worker = std::sync::Arc::clone(&worker);
        tokio::spawn(async move {
            let asked = Instant::now();
            (worker.claim(20.0).await, asked.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let id = api.start(&echo("wake up")).await["id"].as_str().unwrap().to_owned();
    let (claimed, waited) = claimer.await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0]["run"]["id"], id.as_str());
    assert!(waited < Duration::from_secs(10), "woken by the dispatch, not by its deadline: {waited:?}");
}

#[tokio::test]
async fn cancels_reach_the_worker_through_its_heartbeat_and_a_draining_worker_claims_nothing() {
    let hearth = go_server(&[]).await;
    let api = Api::new(&hearth);
    let mut worker = Worker::new(&hearth);
    worker.register("go-1", "1.0.0").await;
    let id = api.start(&echo("stop me")).await["id"].as_str().unwrap().to_owned();
    assert_eq!(worker.claim(5.0).await.len(), 1);
    assert_eq!(worker.heartbeat("active").await, json!({"cancel": [], "drain": false}));
    let canceller = {
        let api = api.clone();
        let id = id.clone();
        tokio::spawn(async move { api.cancel(&id).await })
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answer = worker.heartbeat("active").await;
        if answer["cancel"] == json!([id]) {
            break;
        }
        assert!(Instant::now() < deadline, "the cancel never reached the heartbeat: {answer}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let body = json!({"worker_id": worker.id, "attempt": 1, "status": "cancelled",
                      "error": {"message": "cancelled on request", "code": "cancelled"}});
    assert_eq!(worker.post(&format!("/v1/runs/{id}/complete"), &body).await.0, 200);
    let (_, cancelled) = canceller.await.unwrap();
    assert_eq!(cancelled["status"], "cancelled", "{cancelled}");

    assert_eq!(worker.heartbeat("draining").await["drain"], true);
    api.start(&echo("not for a draining worker")).await;
    assert!(worker.claim(0.5).await.is_empty(), "a draining worker claims nothing");
}
