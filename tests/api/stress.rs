//! The fleet under fire: many runs through several `hearth worker` processes that are killed
//! (SIGKILL) at random while they work. Every run must reach exactly one terminal state; none is
//! lost, none is completed twice, and no session gets a turn's messages twice.
//!
//! The test command runs a small version (`HEARTH_STRESS_RUNS`, default 300 runs, 4 workers);
//! `HEARTH_STRESS_RUNS=5000 cargo test --test api stress -- --nocapture` runs the full one and
//! prints its figures.

use std::time::{Duration, Instant};

use rusqlite::Connection;
use serde_json::json;

use crate::runs::{Api, cli, echo, options, with};
use crate::support::WorkerProcess;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn runs_survive_workers_killed_at_random_and_end_exactly_once() {
    let runs: usize = std::env::var("HEARTH_STRESS_RUNS").ok().and_then(|n| n.parse().ok()).unwrap_or(300);
    let hearth = options()
        .env("HEARTH_WORKERS", "0")
        .env("HEARTH_LEASE_S", "5")
        .env("HEARTH_HEARTBEAT_S", "1")
        .env("HEARTH_MAX_ATTEMPTS", "20")
        .start()
        .await;
    let token = cli(&hearth, &["workers", "token", "create"]).lines().last().unwrap().trim().to_owned();
    let spawn = |name: &str| {
        WorkerProcess::start(
            &hearth,
            &token,
            "ts",
            name,
            &["--concurrency", "16"],
            &[("HEARTH_TEST_TOOLS", "true"), ("HEARTH_LOG", "warn")],
        )
    };
    let mut workers: Vec<WorkerProcess> = (0..4).map(|i| spawn(&format!("w{i}"))).collect();
    let api = Api::new(&hearth);
    let started = Instant::now();
    let submit = {
        let api = api.clone();
        tokio::spawn(async move {
            for i in 0..runs {
                // Some turns call a tool that takes a while, so kills meet runs mid-turn.
                let text = if i % 3 == 0 {
                    r#"call:test__sleep {"ms":300}"#.to_owned()
                } else {
                    format!("turn {i}")
                };
                api.start(&with(echo(&text), &json!({}))).await;
            }
        })
    };
    // Kill a worker every 300 ms while runs remain, restarting it under a new name (its runs are
    // swept once their lease expires) or its own (which gives back what it held at once).
    let db = hearth.db_path();
    let open = || -> Result<(i64, i64), rusqlite::Error> {
        let conn = Connection::open(&db)?;
        conn.query_row(
            "SELECT count(*), count(*) FILTER (WHERE status IN ('completed','failed','cancelled')) FROM runs",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
    };
    let (mut kills, mut generation) = (0, 0);
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (total, ended) = open().unwrap_or((0, 0));
        if submit.is_finished() && total == i64::try_from(runs).unwrap() && ended == total {
            break;
        }
        assert!(Instant::now() < deadline, "{ended} of {total} runs ended in 10 minutes");
        if ended < i64::try_from(runs).unwrap() - 20 {
            let victim = (kills * 7 + 3) % workers.len();
            workers[victim].kill9();
            generation += 1;
            let name =
                if generation % 2 == 0 { format!("w{victim}") } else { format!("w{victim}-g{generation}") };
            workers[victim] = spawn(&name);
            kills += 1;
        }
    }
    submit.await.unwrap();
    let elapsed = started.elapsed();
    let conn = Connection::open(hearth.db_path()).unwrap();
    let count = |sql: &str| -> i64 { conn.query_row(sql, [], |r| r.get(0)).unwrap() };
    let completed = count("SELECT count(*) FROM runs WHERE status = 'completed'");
    let failed = count("SELECT count(*) FROM runs WHERE status = 'failed'");
    let retried = count("SELECT count(*) FROM runs WHERE attempt > 1");
    eprintln!(
        "stress: {runs} runs, 4 workers, {kills} kills in {:.1} s ({:.0} runs/s): {completed} completed, {failed} failed, {retried} retried",
        elapsed.as_secs_f64(),
        runs as f64 / elapsed.as_secs_f64()
    );
    assert!(kills >= 3 && retried > 0, "too few kills ({kills}) or no retried run: the test proved nothing");
    assert_eq!(count("SELECT count(*) FROM runs WHERE status NOT IN ('completed','failed','cancelled')"), 0);
    assert_eq!(completed + failed, i64::try_from(runs).unwrap(), "every run ended completed or failed");
    // Exactly one terminal event per run, and it is the run's last event.
    let wrong_terminals = count(
        "SELECT count(*) FROM (SELECT run_id FROM run_events
                                WHERE type IN ('run.completed','run.failed','run.cancelled')
                                GROUP BY run_id HAVING count(*) != 1)",
    );
    assert_eq!(wrong_terminals, 0, "a run with more than one terminal event");
    let after_terminal = count(
        "SELECT count(*) FROM run_events e JOIN run_events t ON t.run_id = e.run_id
           AND t.type IN ('run.completed','run.failed','run.cancelled') AND e.seq > t.seq",
    );
    assert_eq!(after_terminal, 0, "an event landed after a terminal event");
    // Completed once: each completed single-turn session holds its turn's two messages, once.
    let doubled = count(
        "SELECT count(*) FROM (SELECT r.session_id FROM runs r JOIN messages m ON m.session_id = r.session_id
                                WHERE r.status = 'completed' GROUP BY r.session_id HAVING count(*) != 2)",
    );
    assert_eq!(doubled, 0, "a session got a turn's messages twice (or not at all)");
    let status_mismatch = count(
        "SELECT count(*) FROM runs r JOIN run_events t ON t.run_id = r.id
           AND t.type IN ('run.completed','run.failed','run.cancelled') WHERE t.type != 'run.' || r.status",
    );
    assert_eq!(status_mismatch, 0, "a terminal event that disagrees with its run's status");
}
