//! `hearth worker` processes beside `hearth serve --workers 0`: the same binary as external
//! workers, each serving one runner; drains on SIGTERM; a killed worker's run is swept and
//! completes on another.

use std::time::Duration;

use serde_json::{Value, json};

use crate::runs::{Api, PATIENCE, cli, echo, options, terminal_count, types};
use crate::support::{Hearth, WorkerProcess};

/// A server with no embedded worker, the test tools, short leases; and a worker token.
async fn server() -> (Hearth, String) {
    let hearth = options()
        .env("HEARTH_WORKERS", "0")
        .env("HEARTH_LEASE_S", "5")
        .env("HEARTH_HEARTBEAT_S", "1")
        .start()
        .await;
    let token = cli(&hearth, &["workers", "token", "create", "--name", "fleet"])
        .lines()
        .last()
        .unwrap()
        .trim()
        .to_owned();
    (hearth, token)
}

fn worker(hearth: &Hearth, token: &str, runner: &str, name: &str, args: &[&str]) -> WorkerProcess {
    WorkerProcess::start(hearth, token, runner, name, args, &[("HEARTH_TEST_TOOLS", "true")])
}

/// The id of the worker a run's `run.started` events name, in order.
async fn started_by(api: &Api, run: &str) -> Vec<Value> {
    let events = api.all_events(run).await;
    events.iter().filter(|e| e["type"] == "run.started").map(|e| e["data"]["worker_id"].clone()).collect()
}

/// The worker id `hearth workers list` gives a worker name.
fn worker_id(hearth: &Hearth, name: &str) -> Value {
    let listed: Value = serde_json::from_str(&cli(hearth, &["workers", "list", "--json"])).unwrap();
    listed.as_array().unwrap().iter().find(|w| w["name"] == name).map_or(Value::Null, |w| w["id"].clone())
}

#[tokio::test]
async fn runs_go_to_the_workers_of_their_runner_and_a_flip_moves_only_new_runs() {
    let (hearth, token) = server().await;
    let api = Api::new(&hearth);
    let _ts = worker(&hearth, &token, "ts", "ts-1", &[]);
    let _go = worker(&hearth, &token, "go", "go-1", &[]);
    let first = api.start(&echo("on ts")).await;
    let id = first["id"].as_str().unwrap();
    let done = api.wait_end(id).await;
    assert_eq!(
        (&done["status"], &done["output"]["content"]),
        (&json!("completed"), &json!("on ts")),
        "{done}"
    );
    let (ts_id, go_id) = (worker_id(&hearth, "ts-1"), worker_id(&hearth, "go-1"));
    assert_eq!(started_by(&api, id).await, std::slice::from_ref(&ts_id));

    cli(&hearth, &["orgs", "set-runner", "default", "go", "--reason", "move to go"]);
    let slow = api.start(&echo(r#"call:test__sleep {"ms":1500}"#)).await;
    let slow_id = slow["id"].as_str().unwrap().to_owned();
    assert_eq!(slow["runner"], "go");
    let deadline = std::time::Instant::now() + PATIENCE;
    while api.run(&slow_id).await["status"] != "running" {
        assert!(std::time::Instant::now() < deadline, "the go run never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Back to ts while the go run is in flight: it completes on go; new runs go to ts.
    cli(&hearth, &["orgs", "clear-runner", "default", "--reason", "roll back"]);
    let after = api.start(&echo("back on ts")).await;
    assert_eq!(after["runner"], "ts");
    let slow_done = api.wait_end(&slow_id).await;
    assert_eq!(
        (&slow_done["status"], &slow_done["runner"]),
        (&json!("completed"), &json!("go")),
        "{slow_done}"
    );
    assert_eq!(started_by(&api, &slow_id).await, [go_id]);
    let after_id = after["id"].as_str().unwrap();
    assert_eq!(api.wait_end(after_id).await["status"], "completed");
    assert_eq!(started_by(&api, after_id).await, [ts_id]);
}

#[tokio::test]
async fn sigterm_drains_a_worker_holding_a_run_and_it_exits_zero() {
    let (hearth, token) = server().await;
    let api = Api::new(&hearth);
    let mut ts = worker(&hearth, &token, "ts", "ts-1", &[]);
    let run = api.start(&echo(r#"call:test__sleep {"ms":1500}"#)).await;
    let id = run["id"].as_str().unwrap().to_owned();
    let deadline = std::time::Instant::now() + PATIENCE;
    while api.run(&id).await["status"] != "running" {
        assert!(std::time::Instant::now() < deadline, "the run never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    ts.signal("TERM");
    let status = ts.wait_exit(PATIENCE).await;
    assert!(status.success(), "{status}");
    let done = api.run(&id).await;
    assert_eq!(
        (&done["status"], &done["attempt"]),
        (&json!("completed"), &json!(1)),
        "finished before exiting: {done}"
    );
    let events = api.all_events(&id).await;
    assert_eq!(terminal_count(&types(&events)), 1, "{events:?}");
    // It claimed nothing new while draining.
    let next = api.start(&echo("waits")).await;
    let (_, still) = api.get(&format!("/v1/runs/{}?wait=1", next["id"].as_str().unwrap())).await;
    assert_eq!(still["status"], "queued", "{still}");
}

#[tokio::test]
async fn a_killed_workers_run_is_swept_and_completes_on_another_worker() {
    let (hearth, token) = server().await;
    let api = Api::new(&hearth);
    let mut doomed = worker(&hearth, &token, "ts", "doomed", &[]);
    let run = api.start(&echo(r#"call:test__sleep {"ms":3000}"#)).await;
    let id = run["id"].as_str().unwrap().to_owned();
    let deadline = std::time::Instant::now() + PATIENCE;
    while api.run(&id).await["status"] != "running" {
        assert!(std::time::Instant::now() < deadline, "the run never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    doomed.kill9();
    let _rescuer = worker(&hearth, &token, "ts", "rescuer", &[]);
    let done = api.wait_end(&id).await;
    assert_eq!((&done["status"], &done["attempt"]), (&json!("completed"), &json!(2)), "{done}");
    assert_eq!(done["output"]["content"], "slept", "{done}");
    let (doomed_id, rescuer_id) = (worker_id(&hearth, "doomed"), worker_id(&hearth, "rescuer"));
    assert_eq!(started_by(&api, &id).await, [doomed_id, rescuer_id]);
    let events = api.all_events(&id).await;
    assert_eq!(terminal_count(&types(&events)), 1, "{events:?}");
}

#[tokio::test]
async fn once_exits_after_one_run() {
    let (hearth, token) = server().await;
    let api = Api::new(&hearth);
    let first = api.start(&echo("one")).await;
    let second = api.start(&echo("two")).await;
    let mut once = worker(&hearth, &token, "ts", "ephemeral", &["--once"]);
    let status = once.wait_exit(PATIENCE).await;
    assert!(status.success(), "{status}");
    assert_eq!(api.run(first["id"].as_str().unwrap()).await["status"], "completed");
    assert_eq!(api.run(second["id"].as_str().unwrap()).await["status"], "queued", "only one run");
}

/// A streamed chat turn whose worker dies after the answer started: the retried attempt's
/// answer is never appended to the first's — the stream ends with an error and the run is
/// cancelled.
#[tokio::test]
async fn a_streamed_turn_whose_worker_dies_mid_answer_ends_with_an_error_not_a_second_answer() {
    let (hearth, token) = server().await;
    let api = Api::new(&hearth);
    let mut doomed = worker(&hearth, &token, "ts", "doomed", &[]);
    let body = json!({"model": "echo", "stream": true,
                      "messages": [{"role": "user", "content": "call:test__sleep {\"ms\":20000}"}]});
    let response =
        api.request(reqwest::Method::POST, "/v1/chat/completions").json(&body).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let run = response.headers()["x-run-id"].to_str().unwrap().to_owned();
    let reader = tokio::spawn(async move { response.text().await.unwrap() });
    let deadline = std::time::Instant::now() + PATIENCE;
    while !api.all_events(&run).await.iter().any(|e| e["type"] == "tool.started") {
        assert!(std::time::Instant::now() < deadline, "the tool never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    doomed.kill9();
    let _rescuer = worker(&hearth, &token, "ts", "rescuer", &[]);
    let text = tokio::time::timeout(PATIENCE, reader).await.unwrap().unwrap();
    assert!(text.contains("attempt 2") && text.contains("\"error\""), "{text}");
    assert!(!text.contains("[DONE]"), "{text}");
    let done = api.wait_end(&run).await;
    assert_eq!(done["status"], "cancelled", "{done}");
}

/// A server that forgets the worker (its database restored from a backup taken before the worker
/// registered): the worker registers again by itself and goes on serving.
#[tokio::test]
async fn a_worker_the_server_forgot_registers_again_and_goes_on() {
    let (hearth, token) = server().await;
    let api = Api::new(&hearth);
    let _ts = worker(&hearth, &token, "ts", "ts-1", &[]);
    let first = api.start(&echo("before")).await;
    assert_eq!(api.wait_end(first["id"].as_str().unwrap()).await["status"], "completed");
    let conn = rusqlite::Connection::open(hearth.db_path()).unwrap();
    conn.execute("DELETE FROM workers WHERE name = 'ts-1'", []).unwrap();
    assert_eq!(worker_id(&hearth, "ts-1"), Value::Null);
    // Its next heartbeat (1 s) is answered 404: it registers again.
    let deadline = std::time::Instant::now() + PATIENCE;
    while worker_id(&hearth, "ts-1") == Value::Null {
        assert!(std::time::Instant::now() < deadline, "the worker never registered again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = api.start(&echo("after")).await;
    let done = api.wait_end(after["id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "completed", "{done}");
}
