//! The runs API: dispatch, resolved profiles, waiting, tools, cancellation, queues per runner,
//! double texting, sessions and runner flags.
//!
//! The helpers at the top (an authenticated client, waits, event reads) are shared with
//! `streams.rs` and `auth.rs`.

use std::time::{Duration, Instant};

use reqwest::header::HeaderMap;
use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::{Value, json};

use crate::support::{Hearth, Options, hearth_cmd, stderr_of};

/// The static service key the tests start servers with.
pub(crate) const KEY: &str = "runs-test-static-key-5d1c";
/// The longest any test waits for a run to end or for something to show.
pub(crate) const PATIENCE: Duration = Duration::from_secs(45);

/// A server with the static key and the test tools.
pub(crate) fn options() -> Options {
    Hearth::options().env("GATEWAY_API_KEY", KEY).env("HEARTH_TEST_TOOLS", "1")
}

/// A chat request to the `echo` model with one user message.
pub(crate) fn echo(text: &str) -> Value {
    json!({"model": "echo", "messages": [{"role": "user", "content": text}]})
}

/// `body` with extra top-level fields.
pub(crate) fn with(mut body: Value, extra: &Value) -> Value {
    for (k, v) in extra.as_object().expect("extra fields are an object") {
        body[k] = v.clone();
    }
    body
}

/// Whether a run status is terminal.
pub(crate) fn terminal(status: &Value) -> bool {
    matches!(status.as_str(), Some("completed" | "failed" | "cancelled"))
}

/// Asserts an error answer in OpenAI's shape with this status and code; returns the body.
pub(crate) async fn assert_error(response: reqwest::Response, status: u16, code: &str) -> Value {
    let got = response.status().as_u16();
    let text = response.text().await.expect("an error body");
    assert_eq!(got, status, "{text}");
    let body: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    let error = body["error"].as_object().unwrap_or_else(|| panic!("no error object: {body}"));
    for field in ["message", "type", "param", "code"] {
        assert!(error.contains_key(field), "error lacks `{field}`: {body}");
    }
    assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
    assert!(error["type"].is_string(), "{body}");
    assert_eq!(error["code"], code, "{body}");
    body
}

/// An API client of one server: a service key and, optionally, a user JWT.
#[derive(Clone)]
pub(crate) struct Api {
    base: String,
    key: Option<String>,
    user: Option<String>,
    http: reqwest::Client,
}

impl Api {
    /// A client of `hearth` with the static test key.
    pub(crate) fn new(hearth: &Hearth) -> Self {
        Self::with_key(hearth, KEY)
    }

    /// A client of `hearth` with `key`.
    pub(crate) fn with_key(hearth: &Hearth, key: &str) -> Self {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(90)).build().expect("http client");
        Self { base: hearth.base_url().to_owned(), key: Some(key.to_owned()), user: None, http }
    }

    /// The same client without any key.
    pub(crate) fn anonymous(&self) -> Self {
        Self { key: None, user: None, ..self.clone() }
    }

    /// The same client acting for a user (`X-Runtime-User: jwt`).
    pub(crate) fn as_user(&self, jwt: &str) -> Self {
        Self { user: Some(jwt.to_owned()), ..self.clone() }
    }

    /// A request to `path` with the client's credentials.
    pub(crate) fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(key) = &self.key {
            request = request.bearer_auth(key);
        }
        if let Some(user) = &self.user {
            request = request.header("X-Runtime-User", user);
        }
        request
    }

    /// `POST /v1/runs` with `body`.
    pub(crate) async fn post_run(&self, body: &Value) -> reqwest::Response {
        self.request(Method::POST, "/v1/runs").json(body).send().await.expect("POST /v1/runs")
    }

    /// Starts a run, asserting 202; returns the run.
    pub(crate) async fn start(&self, body: &Value) -> Value {
        let response = self.post_run(body).await;
        let status = response.status();
        let text = response.text().await.expect("a body");
        assert_eq!(status, StatusCode::ACCEPTED, "POST /v1/runs {body}: {text}");
        serde_json::from_str(&text).expect("a JSON run")
    }

    /// A GET answering JSON: (status, body).
    pub(crate) async fn get(&self, path: &str) -> (StatusCode, Value) {
        let response = self.request(Method::GET, path).send().await.expect("GET");
        let status = response.status();
        let text = response.text().await.expect("a body");
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, body)
    }

    /// The run as it stands (200 asserted).
    pub(crate) async fn run(&self, id: &str) -> Value {
        let (status, body) = self.get(&format!("/v1/runs/{id}")).await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// Waits for the run to end; returns it.
    pub(crate) async fn wait_end(&self, id: &str) -> Value {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let (status, run) = self.get(&format!("/v1/runs/{id}?wait=10")).await;
            assert_eq!(status, 200, "{run}");
            if terminal(&run["status"]) {
                return run;
            }
            assert!(Instant::now() < deadline, "run {id} did not end within {PATIENCE:?}: {run}");
        }
    }

    /// `GET /v1/runs/{id}/events?QUERY` (plain): the headers and the events (200 asserted).
    pub(crate) async fn events(&self, id: &str, query: &str) -> (HeaderMap, Vec<Value>) {
        let response = self
            .request(Method::GET, &format!("/v1/runs/{id}/events?{query}"))
            .send()
            .await
            .expect("GET events");
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.expect("a body");
        assert_eq!(status, 200, "events?{query}: {text}");
        let events: Value = serde_json::from_str(&text).expect("a JSON array of events");
        (headers, events.as_array().expect("an array").clone())
    }

    /// Every event of the run, from the start.
    pub(crate) async fn all_events(&self, id: &str) -> Vec<Value> {
        self.events(id, "offset=-1").await.1
    }

    /// `POST /v1/runs/{id}/cancel`: (status, body).
    pub(crate) async fn cancel(&self, id: &str) -> (StatusCode, Value) {
        let response =
            self.request(Method::POST, &format!("/v1/runs/{id}/cancel")).send().await.expect("POST cancel");
        let status = response.status();
        let body = response.json().await.expect("a JSON body");
        (status, body)
    }
}

/// A response header as text.
pub(crate) fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The types of events, in order.
pub(crate) fn types(events: &[Value]) -> Vec<&str> {
    events.iter().map(|e| e["type"].as_str().expect("an event type")).collect()
}

/// How many terminal events `kinds` holds.
pub(crate) fn terminal_count(kinds: &[&str]) -> usize {
    kinds.iter().filter(|k| ["run.completed", "run.failed", "run.cancelled"].contains(k)).count()
}

/// Runs a CLI subcommand that must succeed; returns its stdout.
pub(crate) fn cli(hearth: &Hearth, args: &[&str]) -> String {
    let out = hearth_cmd(&hearth.db_path(), args);
    assert!(out.status.success(), "hearth {args:?} failed: {}", stderr_of(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn is_ms_timestamp(value: &Value) -> bool {
    // After 2020-01-01 and before 2100: Unix milliseconds, not seconds.
    value.as_i64().is_some_and(|t| (1_577_836_800_000..4_102_444_800_000).contains(&t))
}

#[tokio::test]
async fn post_run_answers_202_with_the_run_its_resolved_profile_and_stream_url() {
    let hearth = options().start().await;
    let api = Api::new(&hearth);
    let response = api.post_run(&echo("hello")).await;
    assert_eq!(response.status(), 202);
    let run: Value = response.json().await.unwrap();
    let id = run["id"].as_str().unwrap();
    assert!(id.starts_with("run_"), "{run}");
    assert_eq!(run["object"], "run", "{run}");
    assert!(run["session_id"].as_str().is_some_and(|s| s.starts_with("ses_")), "{run}");
    assert!(matches!(run["status"].as_str(), Some("queued" | "claimed" | "running" | "completed")), "{run}");
    assert_eq!(run["runner"], "ts", "{run}");
    assert_eq!(run["attempt"], 1, "{run}");
    assert!(is_ms_timestamp(&run["created_at"]), "{run}");
    for field in ["started_at", "finished_at", "usage", "error"] {
        assert!(run.as_object().unwrap().contains_key(field), "run lacks `{field}`: {run}");
    }
    assert!(run["output"].as_object().is_some_and(|o| o.contains_key("content")), "{run}");
    assert_eq!(run["stream_url"], format!("/v1/runs/{id}/events?offset=-1&live=sse"), "{run}");

    let profile = &run["resolved_profile"];
    assert_eq!(profile["runner"], "ts", "{profile}");
    assert_eq!(profile["model"], "echo", "{profile}");
    assert_eq!(profile["provider"], "echo", "{profile}");
    assert_eq!(profile["max_steps"], 8, "{profile}");
    assert_eq!(profile["auth_mode"], "api-key", "{profile}");
    assert_eq!(profile["runner_reason"], "default runner", "{profile}");
    let tools: Vec<&str> = profile["tools"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert!(tools.contains(&"test__echo") && tools.contains(&"test__sleep"), "{profile}");

    // The run reads back with the same stamped profile, and the dispatch is logged.
    let read = api.run(id).await;
    assert_eq!(read["resolved_profile"], *profile);
    let line = hearth.wait_for_log(PATIENCE, |l| l["event"] == "dispatch" && l["runId"] == id).await;
    assert_eq!(line["sessionId"], run["session_id"], "{line}");
    assert_eq!(line["resolvedProfile"]["runner"], "ts", "{line}");
}

#[tokio::test]
async fn wait_returns_the_completed_run_with_the_echoed_text_and_usage() {
    let hearth = options().start().await;
    let api = Api::new(&hearth);
    let text = "hello there world";
    let run = api.start(&echo(text)).await;
    let id = run["id"].as_str().unwrap();

    let (status, done) = api.get(&format!("/v1/runs/{id}?wait=30")).await;
    assert_eq!(status, 200);
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["output"]["content"], text, "{done}");
    assert_eq!(done["output"]["tool_calls"], json!([]), "{done}");
    assert!(done["error"].is_null(), "{done}");
    // Honest character-based estimates: 17 characters → 5 tokens each way.
    assert_eq!(done["usage"]["completion_tokens"], 5, "{done}");
    assert_eq!(done["usage"]["prompt_tokens"], 5, "{done}");
    assert_eq!(done["usage"]["total_tokens"], 10, "{done}");
    let (created, started, finished) = (&done["created_at"], &done["started_at"], &done["finished_at"]);
    assert!(is_ms_timestamp(created) && is_ms_timestamp(started) && is_ms_timestamp(finished), "{done}");
    assert!(created.as_i64() <= started.as_i64() && started.as_i64() <= finished.as_i64(), "{done}");

    let events = api.all_events(id).await;
    let kinds = types(&events);
    assert_eq!(kinds.first(), Some(&"run.queued"), "{kinds:?}");
    assert_eq!(kinds.get(1), Some(&"run.started"), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"run.completed"), "{kinds:?}");
    assert!(kinds.contains(&"usage"), "{kinds:?}");
    let streamed: String = events
        .iter()
        .filter(|e| e["type"] == "text.delta")
        .map(|e| e["data"]["text"].as_str().unwrap())
        .collect();
    assert_eq!(streamed, text);

    // Waits above 60 s are cut to 60 (SPEC §6), not refused; a negative one is refused in
    // OpenAI's shape.
    let (status, capped) = api.get(&format!("/v1/runs/{id}?wait=1000")).await;
    assert_eq!((status.as_u16(), &capped["status"]), (200, &json!("completed")), "{capped}");
    let bad = api.request(Method::GET, &format!("/v1/runs/{id}?wait=-1")).send().await.unwrap();
    assert_error(bad, 400, "invalid_request").await;
    let missing = api.request(Method::GET, "/v1/runs/run_nosuchrun").send().await.unwrap();
    assert_error(missing, 404, "not_found").await;
}

#[tokio::test]
async fn server_tools_run_and_show_in_the_event_log() {
    let hearth = options().start().await;
    let api = Api::new(&hearth);
    let run = api.start(&echo(r#"call:test__echo {"text":"pong"}"#)).await;
    let id = run["id"].as_str().unwrap();
    let done = api.wait_end(id).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["output"]["content"], "pong", "{done}");
    assert_eq!(done["output"]["tool_calls"], json!([]), "server tools are not handed back: {done}");

    let events = api.all_events(id).await;
    let started: Vec<&Value> = events.iter().filter(|e| e["type"] == "tool.started").collect();
    let finished: Vec<&Value> = events.iter().filter(|e| e["type"] == "tool.finished").collect();
    let ([started], [finished]) = (started.as_slice(), finished.as_slice()) else {
        panic!("one tool.started and one tool.finished: {events:?}")
    };
    assert_eq!(started["data"]["name"], "test__echo", "{started}");
    assert_eq!(finished["data"]["name"], "test__echo", "{finished}");
    assert_eq!(finished["data"]["result"], "pong", "{finished}");
    assert_eq!(finished["data"]["is_error"], false, "{finished}");
    assert_eq!(started["data"]["id"], finished["data"]["id"]);
    assert!(started["seq"].as_i64() < finished["seq"].as_i64());
    assert_eq!(types(&events).last(), Some(&"run.completed"));
}

#[tokio::test]
async fn client_tool_calls_are_handed_back() {
    let hearth = options().start().await;
    let api = Api::new(&hearth);
    let body = with(
        echo(r#"call:get_weather {"city":"Oslo"}"#),
        &json!({"tools": [{"type": "function", "function": {
            "name": "get_weather",
            "description": "Weather of a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}
        }}]}),
    );
    let run = api.start(&body).await;
    let id = run["id"].as_str().unwrap();
    let done = api.wait_end(id).await;
    assert_eq!(done["status"], "completed", "{done}");
    let calls = done["output"]["tool_calls"].as_array().unwrap();
    let [call] = calls.as_slice() else { panic!("one tool call: {done}") };
    assert_eq!(call["type"], "function", "{call}");
    assert_eq!(call["function"]["name"], "get_weather", "{call}");
    assert_eq!(call["function"]["arguments"], r#"{"city":"Oslo"}"#, "{call}");
    assert!(call["id"].as_str().is_some_and(|s| !s.is_empty()), "{call}");
    let kinds = types(&api.all_events(id).await).join(",");
    assert!(!kinds.contains("tool.started"), "a client tool is not executed by the server: {kinds}");
}

#[tokio::test]
async fn hitting_max_steps_fails_the_run_with_a_clear_error() {
    let hearth = options().env("HEARTH_MAX_STEPS", "3").start().await;
    let api = Api::new(&hearth);
    let run = api.start(&echo("call:test__loop {}")).await;
    assert_eq!(run["resolved_profile"]["max_steps"], 3, "{run}");
    let id = run["id"].as_str().unwrap();
    let done = api.wait_end(id).await;
    assert_eq!(done["status"], "failed", "{done}");
    assert_eq!(done["error"]["code"], "max_steps_exceeded", "{done}");
    assert!(done["error"]["message"].as_str().unwrap().contains("max_steps"), "{done}");

    let events = api.all_events(id).await;
    let kinds = types(&events);
    assert_eq!(kinds.iter().filter(|k| **k == "tool.started").count(), 3, "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"run.failed"), "{kinds:?}");
    let terminal = events.last().unwrap();
    assert_eq!(terminal["data"]["error"]["code"], "max_steps_exceeded", "{terminal}");
}

#[tokio::test]
async fn cancel_stops_a_running_tool_and_ends_the_run_cancelled() {
    let hearth = options().start().await;
    let api = Api::new(&hearth);
    let run = api.start(&echo(r#"call:test__sleep {"ms":60000}"#)).await;
    let id = run["id"].as_str().unwrap();
    // Wait until the tool is really running.
    let deadline = Instant::now() + PATIENCE;
    while !types(&api.all_events(id).await).contains(&"tool.started") {
        assert!(Instant::now() < deadline, "the sleep tool never started");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(api.run(id).await["status"], "running");

    let asked = Instant::now();
    let (status, cancelled) = api.cancel(id).await;
    assert_eq!(status, 200, "{cancelled}");
    // The cancel answer waits (briefly) for the end: a 60 s tool must not have to finish first.
    assert_eq!(cancelled["status"], "cancelled", "{cancelled}");
    assert!(asked.elapsed() < Duration::from_secs(20), "cancel took {:?}", asked.elapsed());
    let done = api.wait_end(id).await;
    assert_eq!(done["status"], "cancelled", "{done}");
    assert_eq!(done["error"]["code"], "cancelled", "{done}");

    let events = api.all_events(id).await;
    let kinds = types(&events);
    assert_eq!(kinds.last(), Some(&"run.cancelled"), "{kinds:?}");
    assert_eq!(terminal_count(&kinds), 1, "{kinds:?}");
    let slept = events.iter().any(|e| e["type"] == "tool.finished" && e["data"]["result"] == "slept");
    assert!(!slept, "the tool was stopped, not awaited: {events:?}");

    // Cancelling a finished run changes nothing.
    let (status, again) = api.cancel(id).await;
    assert_eq!(status, 200);
    assert_eq!(again["status"], "cancelled", "{again}");
    assert_eq!(api.all_events(id).await.len(), kinds.len());
}

#[tokio::test]
async fn a_run_for_a_runner_without_workers_stays_queued_until_cancelled() {
    let hearth = options().env("HEARTH_RUNNER_RAMP", "go=100").start().await;
    let api = Api::new(&hearth);
    let run = api.start(&echo("anyone there?")).await;
    let id = run["id"].as_str().unwrap();
    assert_eq!(run["runner"], "go", "{run}");
    assert_eq!(run["status"], "queued", "{run}");
    let reason = run["resolved_profile"]["runner_reason"].as_str().unwrap();
    assert!(reason.starts_with("ramp go=100%"), "{reason}");

    // The embedded workers serve only `ts`: a bounded wait sees it still queued.
    let (status, still) = api.get(&format!("/v1/runs/{id}?wait=2")).await;
    assert_eq!(status, 200);
    assert_eq!(still["status"], "queued", "{still}");
    assert!(still["started_at"].is_null(), "{still}");
    let (headers, events) = api.events(id, "offset=-1").await;
    assert_eq!(types(&events), ["run.queued"]);
    assert_eq!(events[0]["data"]["runner"], "go", "{events:?}");
    assert_eq!(header(&headers, "stream-closed"), None);
    assert!(
        !hearth.log_lines().iter().any(|l| l["event"] == "claimed" && l["runId"] == id),
        "no worker may claim a go run"
    );

    let (status, cancelled) = api.cancel(id).await;
    assert_eq!(status, 200);
    assert_eq!(cancelled["status"], "cancelled", "{cancelled}");
    assert_eq!(types(&api.all_events(id).await), ["run.queued", "run.cancelled"]);
}

#[tokio::test]
async fn without_embedded_workers_runs_wait_in_the_queue() {
    let hearth = options().arg("--no-embedded-workers").start().await;
    let api = Api::new(&hearth);
    let run = api.start(&echo("queued")).await;
    assert_eq!(run["runner"], "ts", "{run}");
    let id = run["id"].as_str().unwrap();
    let (_, still) = api.get(&format!("/v1/runs/{id}?wait=2")).await;
    assert_eq!(still["status"], "queued", "{still}");
    assert_eq!(types(&api.all_events(id).await), ["run.queued"]);
}

#[tokio::test]
async fn a_second_run_continues_the_session_and_appends_its_messages() {
    let hearth = options().start().await;
    let api = Api::new(&hearth);
    let first = api.start(&echo("one")).await;
    let session = first["session_id"].as_str().unwrap().to_owned();
    assert_eq!(api.wait_end(first["id"].as_str().unwrap()).await["status"], "completed");
    let second = api.start(&with(echo("two"), &json!({"session_id": session}))).await;
    assert_eq!(second["session_id"], session.as_str(), "{second}");
    assert_eq!(api.wait_end(second["id"].as_str().unwrap()).await["status"], "completed");

    let (status, detail) = api.get(&format!("/v1/sessions/{session}")).await;
    assert_eq!(status, 200, "{detail}");
    assert_eq!(detail["id"], session.as_str(), "{detail}");
    let run_ids: Vec<&Value> = detail["runs"].as_array().unwrap().iter().map(|r| &r["id"]).collect();
    assert_eq!(run_ids, [&first["id"], &second["id"]], "{detail}");
    let messages: Vec<(&str, &str)> = detail["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["role"].as_str().unwrap(), m["content"].as_str().unwrap_or("")))
        .collect();
    assert_eq!(messages, [("user", "one"), ("assistant", "one"), ("user", "two"), ("assistant", "two")]);

    let (status, list) = api.get("/v1/sessions").await;
    assert_eq!(status, 200, "{list}");
    let listed: Vec<&Value> = list["data"].as_array().unwrap().iter().map(|s| &s["id"]).collect();
    assert_eq!(listed, [&json!(session)], "{list}");

    let unknown = api.post_run(&with(echo("x"), &json!({"session_id": "ses_nosuchsession"}))).await;
    assert_error(unknown, 404, "not_found").await;
}

#[tokio::test]
async fn double_texting_queues_behind_the_running_turn_or_is_rejected() {
    let hearth = options().start().await;
    let api = Api::new(&hearth);
    let first = api.start(&echo(r#"call:test__sleep {"ms":1500}"#)).await;
    let session = first["session_id"].as_str().unwrap().to_owned();
    let second = api.start(&with(echo("second"), &json!({"session_id": session}))).await;
    assert_eq!(second["status"], "queued", "{second}");

    // While the first turn is in flight, `on_busy: reject` is refused.
    let busy = api.post_run(&with(echo("third"), &json!({"session_id": session, "on_busy": "reject"}))).await;
    assert_error(busy, 409, "conflict").await;

    let first = api.wait_end(first["id"].as_str().unwrap()).await;
    let second = api.wait_end(second["id"].as_str().unwrap()).await;
    assert_eq!(first["status"], "completed", "{first}");
    assert_eq!(second["status"], "completed", "{second}");
    assert_eq!(second["output"]["content"], "second", "{second}");
    assert!(
        second["started_at"].as_i64().unwrap() >= first["finished_at"].as_i64().unwrap(),
        "FIFO per session: the second turn started before the first ended\nfirst: {first}\nsecond: {second}"
    );
    // The end of the first wakes the claimer at once; without the wake-up it would find the
    // second turn only at its 5 s idle re-check.
    let gap = second["started_at"].as_i64().unwrap() - first["finished_at"].as_i64().unwrap();
    assert!(gap < 2_000, "the queued turn waited {gap} ms after its session became free");

    // Once idle, the same request is accepted.
    let third = api.start(&with(echo("third"), &json!({"session_id": session, "on_busy": "reject"}))).await;
    assert_eq!(api.wait_end(third["id"].as_str().unwrap()).await["status"], "completed");
    let (_, detail) = api.get(&format!("/v1/sessions/{session}")).await;
    let users: Vec<&str> = detail["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "user")
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert_eq!(users, [r#"call:test__sleep {"ms":1500}"#, "second", "third"], "{detail}");
}

#[tokio::test]
async fn the_org_flag_routes_new_dispatches_and_stamped_runs_keep_their_runner() {
    let hearth = options().start().await;
    let api = Api::new(&hearth);
    let a = api.start(&echo("a")).await;
    let a_id = a["id"].as_str().unwrap();
    assert_eq!(a["runner"], "ts", "{a}");
    assert_eq!(api.wait_end(a_id).await["status"], "completed");

    cli(&hearth, &["orgs", "set-runner", "default", "go", "--force", "--reason", "test"]);
    let b = api.start(&echo("b")).await;
    let b_id = b["id"].as_str().unwrap();
    assert_eq!(b["runner"], "go", "{b}");
    assert_eq!(b["resolved_profile"]["runner"], "go", "{b}");
    let reason = b["resolved_profile"]["runner_reason"].as_str().unwrap();
    assert!(reason.contains("runner_default=go"), "{reason}");
    let line = hearth.wait_for_log(PATIENCE, |l| l["event"] == "dispatch" && l["runId"] == b_id).await;
    assert_eq!(line["resolvedProfile"]["runner"], "go", "{line}");

    // A flag change affects only new dispatches.
    let a_now = api.run(a_id).await;
    assert_eq!(a_now["runner"], "ts", "{a_now}");
    assert_eq!(a_now["resolved_profile"]["runner"], "ts", "{a_now}");
    let (_, b_now) = api.get(&format!("/v1/runs/{b_id}?wait=1")).await;
    assert_eq!(b_now["status"], "queued", "no go worker exists: {b_now}");

    cli(&hearth, &["orgs", "clear-runner", "default"]);
    let c = api.start(&echo("c")).await;
    assert_eq!(c["runner"], "ts", "{c}");
    assert_eq!(c["resolved_profile"]["runner_reason"], "default runner", "{c}");
    assert_eq!(api.wait_end(c["id"].as_str().unwrap()).await["status"], "completed");
    let b_now = api.run(b_id).await;
    assert_eq!(b_now["runner"], "go", "a queued run keeps its stamped runner: {b_now}");
    assert_eq!(b_now["status"], "queued", "{b_now}");
}

#[tokio::test]
async fn the_kill_switch_ignores_flags_and_ramps() {
    let hearth =
        options().env("HEARTH_RUNNER_FLAGS", "off").env("HEARTH_RUNNER_RAMP", "go=100").start().await;
    cli(&hearth, &["orgs", "set-runner", "default", "go", "--force"]);
    let api = Api::new(&hearth);
    let run = api.start(&echo("still ts")).await;
    assert_eq!(run["runner"], "ts", "{run}");
    let reason = run["resolved_profile"]["runner_reason"].as_str().unwrap();
    assert!(reason.contains("HEARTH_RUNNER_FLAGS=off"), "{reason}");
    assert_eq!(api.wait_end(run["id"].as_str().unwrap()).await["status"], "completed");
}

#[tokio::test]
async fn the_embedded_worker_runs_turns_of_different_sessions_at_once_up_to_its_capacity() {
    let hearth = options().env("HEARTH_WORKERS", "4").start().await;
    let api = Api::new(&hearth);
    let mut ids = Vec::new();
    for _ in 0..6 {
        let run = api.start(&echo(r#"call:test__sleep {"ms":1200}"#)).await;
        ids.push(run["id"].as_str().unwrap().to_owned());
    }
    let mut runs = Vec::new();
    for id in &ids {
        let run = api.wait_end(id).await;
        assert_eq!(run["status"], "completed", "{run}");
        runs.push(run);
    }
    let started: Vec<i64> = runs.iter().map(|r| r["started_at"].as_i64().unwrap()).collect();
    let finished: Vec<i64> = runs.iter().map(|r| r["finished_at"].as_i64().unwrap()).collect();
    let first_finish = *finished.iter().min().unwrap();
    // Four slots: four turns overlap, and the other two wait for a free slot.
    let overlapping = started.iter().filter(|s| **s < first_finish).count();
    assert_eq!(overlapping, 4, "started {started:?}, first finish {first_finish}");
}

/// Starts a run that sleeps `ms` in a tool, kills the server with SIGKILL once the run is
/// running, restarts it on the same database, and returns the run's id.
async fn crash_while_running(hearth: &mut Hearth, ms: u64) -> String {
    let api = Api::new(hearth);
    let run = api.start(&echo(&format!(r#"call:test__sleep {{"ms":{ms}}}"#))).await;
    let id = run["id"].as_str().unwrap().to_owned();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while api.run(&id).await["status"] != "running" {
        assert!(std::time::Instant::now() < deadline, "the run never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    hearth.kill9();
    hearth.restart().await;
    id
}

#[tokio::test]
async fn a_run_in_flight_when_the_server_dies_is_retried_after_the_restart() {
    let mut hearth = options().start().await;
    let id = crash_while_running(&mut hearth, 1500).await;
    let done = Api::new(&hearth).wait_end(&id).await;
    let api = Api::new(&hearth);
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["attempt"], 2, "{done}");
    assert_eq!(done["output"]["content"], "slept", "{done}");
    let events = api.all_events(&id).await;
    assert_eq!(events.iter().filter(|e| e["type"] == "run.started").count(), 2, "{events:?}");
    assert_eq!(events.iter().filter(|e| e["type"].as_str().unwrap().starts_with("run.c")).count(), 1);
}

#[tokio::test]
async fn a_run_whose_attempts_are_used_up_fails_clearly_instead_of_looping() {
    let mut hearth = options().env("HEARTH_MAX_ATTEMPTS", "1").start().await;
    let id = crash_while_running(&mut hearth, 5000).await;
    let api = Api::new(&hearth);
    let done = api.wait_end(&id).await;
    assert_eq!(done["status"], "failed", "{done}");
    assert_eq!(done["error"]["code"], "max_attempts_exceeded", "{done}");
    let events = api.all_events(&id).await;
    assert_eq!(events.last().unwrap()["type"], "run.failed", "{events:?}");
}

/// The embedded worker of a server that died comes back under another host name (a new
/// machine): the runs its old incarnation held are swept once their lease expires, and complete
/// on attempt 2, on the new worker.
#[tokio::test]
async fn a_run_held_by_a_worker_that_never_comes_back_is_swept_and_completes() {
    let mut hearth = options()
        .env("HOSTNAME", "old-machine")
        .env("HEARTH_LEASE_S", "5")
        .env("HEARTH_HEARTBEAT_S", "1")
        .start()
        .await;
    let api = Api::new(&hearth);
    let run = api.start(&echo(r#"call:test__sleep {"ms":2000}"#)).await;
    let id = run["id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(20);
    while api.run(&id).await["status"] != "running" {
        assert!(Instant::now() < deadline, "the run never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    hearth.kill9();
    hearth.set_env("HOSTNAME", "new-machine");
    hearth.restart().await;
    let api = Api::new(&hearth);
    let swept = |l: &Value| l["message"].as_str().is_some_and(|m| m.contains("worker was lost"));
    let line = hearth.wait_for_log(PATIENCE, swept).await;
    assert_eq!(line["run.id"], id.as_str(), "{line}");
    let done = api.wait_end(&id).await;
    assert_eq!((&done["status"], &done["attempt"]), (&json!("completed"), &json!(2)), "{done}");
    assert_eq!((&done["runner"], &done["output"]["content"]), (&json!("ts"), &json!("slept")), "{done}");
    let events = api.all_events(&id).await;
    let started: Vec<&Value> = events.iter().filter(|e| e["type"] == "run.started").collect();
    assert_eq!(started.len(), 2, "{events:?}");
    assert_ne!(started[0]["data"]["worker_id"], started[1]["data"]["worker_id"], "{events:?}");
    assert_eq!(terminal_count(&types(&events)), 1, "{events:?}");
}

/// `--workers 0` runs no embedded worker: runs wait in the queue.
#[tokio::test]
async fn workers_zero_runs_no_embedded_worker() {
    let hearth = options().env("HEARTH_WORKERS", "0").start().await;
    let api = Api::new(&hearth);
    let run = api.start(&echo("nobody takes me")).await;
    let id = run["id"].as_str().unwrap();
    let (_, still) = api.get(&format!("/v1/runs/{id}?wait=1")).await;
    assert_eq!(still["status"], "queued", "{still}");
    let (_, cancelled) = api.cancel(id).await;
    assert_eq!(cancelled["status"], "cancelled", "{cancelled}");
}

/// A bug inside a turn (the `test__panic` tool panics) fails that run with `internal_error`;
/// the worker and the server go on.
#[tokio::test]
async fn a_panic_inside_a_turn_fails_only_that_run() {
    let hearth = options().start().await;
    let api = Api::new(&hearth);
    let run = api.start(&echo("call:test__panic {}")).await;
    let done = api.wait_end(run["id"].as_str().unwrap()).await;
    assert_eq!(
        (&done["status"], &done["error"]["code"]),
        (&json!("failed"), &json!("internal_error")),
        "{done}"
    );
    let next = api.start(&echo("still here")).await;
    let next_done = api.wait_end(next["id"].as_str().unwrap()).await;
    assert_eq!(next_done["output"]["content"], "still here", "{next_done}");
}
