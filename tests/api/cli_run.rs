//! `hearth run TARGET --input TEXT`: one turn through the binary, locally (the database, an
//! embedded worker, no server) and with `--url` against a live `hearth serve`; the answer on
//! stdout, tool progress on stderr, exit 0 / 1 / 130.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{self, Hearth, command, hearth_cmd, run, stderr_of, stdout_of};

#[test]
fn a_local_echo_turn_prints_the_answer_and_exits_0() {
    let dir = support::data_dir();
    let db = support::db_in(dir.path());
    let out = hearth_cmd(&db, &["run", "echo", "--input", "hello from cron"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    assert_eq!(stdout_of(&out), "hello from cron\n");
    assert!(!stderr_of(&out).contains("API key:"), "a local run mints no credentials");

    let out = hearth_cmd(&db, &["run", "echo", "--input", "as json", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let run: Value = serde_json::from_str(&stdout_of(&out)).unwrap();
    assert_eq!(run["status"], "completed");
    assert_eq!(run["output"]["content"], "as json");
    assert!(run["id"].as_str().unwrap().starts_with("run_"));
    // The run is in the local database, like any other.
    let conn = rusqlite::Connection::open(&db).unwrap();
    let stored: String = conn
        .query_row("SELECT status FROM runs WHERE id = ?1", [run["id"].as_str().unwrap()], |r| r.get(0))
        .unwrap();
    assert_eq!(stored, "completed");
    // Each local run had a worker of its own, left draining.
    let workers: Vec<(String, String)> = conn
        .prepare("SELECT name, status FROM workers")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(workers.len(), 2, "{workers:?}");
    assert!(
        workers.iter().all(|(name, status)| name.contains("/run-") && status == "draining"),
        "{workers:?}"
    );
}

#[tokio::test]
async fn a_local_run_beside_a_running_serve_leaves_the_servers_worker_alone() {
    let hearth = Hearth::start().await;
    let key = hearth.api_key().unwrap();
    let out = hearth_cmd(&hearth.db_path(), &["run", "echo", "--input", "beside serve"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    assert_eq!(stdout_of(&out), "beside serve\n");
    assert!(!hearth.stderr().contains("re-queued"), "{}", hearth.stderr());
    // The server's own embedded worker still serves.
    let body = serde_json::json!({"model": "echo", "messages": [{"role": "user", "content": "still here"}]});
    let answer = reqwest::Client::new()
        .post(hearth.url("/v1/chat/completions"))
        .bearer_auth(&key)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let conn = rusqlite::Connection::open(hearth.db_path()).unwrap();
    let status: String =
        conn.query_row("SELECT status FROM workers WHERE name LIKE '%/embedded'", [], |r| r.get(0)).unwrap();
    assert_eq!(status, "active");
}

#[test]
fn an_unknown_target_exits_1_saying_so() {
    let dir = support::data_dir();
    let out = hearth_cmd(&support::db_in(dir.path()), &["run", "no-such-model", "--input", "hi"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = stderr_of(&out);
    assert!(stderr.contains("no-such-model") && stderr.contains("not found"), "{stderr}");
    assert!(stdout_of(&out).is_empty());
}

#[test]
fn a_tool_chain_reports_progress_on_stderr_and_a_failed_run_exits_1() {
    let dir = support::data_dir();
    let db = support::db_in(dir.path());
    let out = run(command(&db).env("HEARTH_TEST_TOOLS", "true").args([
        "run",
        "echo",
        "--input",
        "call:test__loop {}",
    ]));
    let stderr = stderr_of(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("[tool] test__loop started") && stderr.contains("[tool] test__loop finished"),
        "{stderr}"
    );
    assert!(stderr.contains("failed: the agent reached max_steps"), "{stderr}");
    assert!(stdout_of(&out).is_empty(), "no answer on stdout");
}

#[test]
fn ctrl_c_cancels_the_run_and_exits_130() {
    let dir = support::data_dir();
    let db = support::db_in(dir.path());
    let mut child = command(&db)
        .env("HEARTH_TEST_TOOLS", "true")
        .args(["run", "echo", "--input", r#"call:test__sleep {"ms": 60000}"#])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let line = lines.next().expect("hearth run ended before the tool started").unwrap();
        if line.contains("[tool] test__sleep started") {
            break;
        }
        assert!(Instant::now() < deadline, "the tool never started");
    }
    let status = std::process::Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{rest:?}");
    let conn = rusqlite::Connection::open(&db).unwrap();
    let stored: String = conn.query_row("SELECT status FROM runs", [], |r| r.get(0)).unwrap();
    assert_eq!(stored, "cancelled", "{rest:?}");
}

#[tokio::test]
async fn with_url_it_drives_a_running_hearth_over_http() {
    let hearth = Hearth::options().env("HEARTH_TEST_TOOLS", "true").start().await;
    let key = hearth.api_key().unwrap();
    // Another directory, no database: everything goes through the server.
    let elsewhere = support::data_dir();
    let local_db = support::db_in(elsewhere.path());
    let remote = |args: &[&str], key: Option<&str>| {
        let mut cmd = command(&local_db);
        cmd.args(["run", "--url", hearth.base_url()]).args(args);
        if let Some(key) = key {
            cmd.env("HEARTH_API_KEY", key);
        }
        run(&mut cmd)
    };

    let out = remote(&["echo", "--input", "over http"], Some(&key));
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    assert_eq!(stdout_of(&out), "over http\n");
    assert!(!local_db.exists(), "a --url run opened a local database");

    let out = remote(&["echo", "--input", "call:test__loop {}", "--json"], Some(&key));
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    assert!(stderr_of(&out).contains("[tool] test__loop started"), "{}", stderr_of(&out));
    let run: Value = serde_json::from_str(&stdout_of(&out)).unwrap();
    assert_eq!(run["status"], "failed");
    // The same run, read through the server's API.
    let served: Value = hearth
        .get_with_key(&format!("/v1/runs/{}", run["id"].as_str().unwrap()), &key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(served["status"], "failed");

    let out = remote(&["no-such-model", "--input", "hi"], Some(&key));
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr_of(&out).contains("no-such-model"), "{}", stderr_of(&out));

    let out = remote(&["echo", "--input", "hi"], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr_of(&out).contains("HEARTH_API_KEY"), "{}", stderr_of(&out));

    let out = remote(&["echo", "--input", "hi"], Some("hk_wrong"));
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr_of(&out).contains("401"), "{}", stderr_of(&out));
}
