//! Storage faults while runs execute: a run whose end cannot be recorded is retried, and when
//! every try fails its lease lapses so the sweeper re-queues it — it is never left `running`
//! with its readers waiting. The failure is real SQLite refusing the write (a trigger the test
//! adds to the live database from outside), not a hook in hearth.

use std::time::Duration;

use serde_json::{Value, json};

use crate::runs::{Api, options};
use crate::support::Hearth;

/// Makes every write that ends a run fail, as a full disk would, until [`heal`].
fn break_run_endings(hearth: &Hearth) {
    let conn = rusqlite::Connection::open(hearth.db_path()).unwrap();
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    conn.execute_batch(
        "CREATE TRIGGER test_no_endings BEFORE UPDATE OF status ON runs
         WHEN NEW.status IN ('completed', 'failed', 'cancelled')
         BEGIN SELECT RAISE(ABORT, 'injected storage failure'); END;",
    )
    .unwrap();
}

fn heal(hearth: &Hearth) {
    let conn = rusqlite::Connection::open(hearth.db_path()).unwrap();
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    conn.execute_batch("DROP TRIGGER test_no_endings").unwrap();
}

/// A run that calls `test__sleep` first, so it is stored (with its first events) before it ends.
fn slow_run() -> Value {
    json!({"model": "echo", "messages": [{"role": "user", "content": r#"call:test__sleep {"ms": 300}"#}]})
}

fn fast_leases() -> crate::support::Options {
    options().env("HEARTH_LEASE_S", "5").env("HEARTH_HEARTBEAT_S", "1")
}

/// A log line about `run` whose message contains `says`.
fn logged(run: &str, says: &str) -> impl Fn(&Value) -> bool {
    let (run, says) = (run.to_owned(), says.to_owned());
    move |l: &Value| {
        l["run.id"] == run.as_str() && l["message"].as_str().is_some_and(|m| m.contains(says.as_str()))
    }
}

#[tokio::test]
async fn an_end_that_cannot_be_recorded_is_retried() {
    let hearth = fast_leases().start().await;
    let api = Api::new(&hearth);
    break_run_endings(&hearth);
    let run = api.start(&slow_run()).await;
    let id = run["id"].as_str().unwrap();
    hearth.wait_for_log(Duration::from_secs(20), logged(id, "retrying")).await;
    heal(&hearth);
    let ended = api.wait_end(id).await;
    assert_eq!(ended["status"], "completed", "{ended}");
    assert_eq!(ended["attempt"], 1, "recorded by a retry of the same attempt: {ended}");
}

#[tokio::test]
async fn a_run_whose_end_is_never_recorded_is_re_queued_not_wedged() {
    let hearth = fast_leases().start().await;
    let api = Api::new(&hearth);
    break_run_endings(&hearth);
    let run = api.start(&slow_run()).await;
    let id = run["id"].as_str().unwrap();
    hearth.wait_for_log(Duration::from_secs(30), logged(id, "letting its lease lapse")).await;
    heal(&hearth);
    // The heartbeat ends its lease instead of extending it; the sweeper re-queues it.
    let ended = api.wait_end(id).await;
    assert_eq!(ended["status"], "completed", "{ended}");
    assert_eq!(ended["attempt"], 2, "executed again after its lease lapsed: {ended}");
}
