//! Runner migration from the command line: `orgs set-runner` guarded by a healthy worker of the
//! runtime at its minimum version (`--force` overrides, audited), and `orgs show` printing the
//! runner a new dispatch would get and why — checked against what a running server stamps.

use std::path::Path;
use std::process::Output;

use rusqlite::{Connection, params};
use serde_json::Value;

use crate::runs::{Api, echo, options};
use crate::support::{self, Hearth, stderr_of, stdout_of};

/// Runs `hearth --db DB ARGS` with extra environment variables.
fn hearth(db: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut cmd = support::command(db);
    for (name, value) in env {
        cmd.env(name, value);
    }
    support::run(cmd.args(args))
}

/// Runs a subcommand that must succeed; returns its stdout.
fn ok(db: &Path, env: &[(&str, &str)], args: &[&str]) -> String {
    let out = hearth(db, env, args);
    assert!(out.status.success(), "hearth {args:?} with {env:?} failed: {}", stderr_of(&out));
    stdout_of(&out)
}

/// Runs a subcommand that must be refused as bad input (exit 2); returns its stderr.
fn refused(db: &Path, env: &[(&str, &str)], args: &[&str]) -> String {
    let out = hearth(db, env, args);
    let stderr = stderr_of(&out);
    assert_eq!(out.status.code(), Some(2), "hearth {args:?} with {env:?} was not refused: {stderr}");
    stderr
}

/// `orgs show SLUG --json` with these settings.
fn show(db: &Path, env: &[(&str, &str)], slug: &str) -> Value {
    let stdout = ok(db, env, &["orgs", "show", slug, "--json"]);
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("orgs show printed no JSON ({e}):\n{stdout}"))
}

fn now_ms() -> i64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    i64::try_from(now.as_millis()).unwrap()
}

fn open(db: &Path) -> Connection {
    let conn = Connection::open(db).unwrap();
    conn.busy_timeout(std::time::Duration::from_secs(5)).unwrap();
    conn
}

/// Registers a worker row as the worker protocol would leave it, its last heartbeat `age_ms` ago.
fn worker(db: &Path, name: &str, runtime: &str, version: &str, status: &str, age_ms: i64) {
    let at = now_ms() - age_ms;
    open(db)
        .execute(
            "INSERT INTO workers (id, name, runtime, version, hostname, capacity, status, embedded,
                                  registered_at, last_heartbeat_at)
             VALUES (?1, ?2, ?3, ?4, 'box', 4, ?5, 0, ?6, ?6)",
            params![format!("wrk_{name}"), name, runtime, version, status, at],
        )
        .unwrap();
}

/// The audit rows of `slug`: (old, new, actor, reason, forced), oldest first.
type Audit = (Option<String>, Option<String>, String, Option<String>, bool);

fn audit(db: &Path, slug: &str) -> Vec<Audit> {
    let conn = open(db);
    let mut stmt = conn
        .prepare(
            "SELECT f.old, f.new, f.actor, f.reason, f.forced FROM flag_changes f
             JOIN organizations o ON o.id = f.organization_id WHERE o.slug = ?1 ORDER BY f.id",
        )
        .unwrap();
    let rows = stmt.query_map([slug], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)));
    rows.unwrap().collect::<Result<_, _>>().unwrap()
}

/// A migrated database with the organization `acme`.
fn acme() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = support::data_dir();
    let db = support::db_in(dir.path());
    ok(&db, &[], &["migrate"]);
    ok(&db, &[], &["orgs", "create", "acme"]);
    (dir, db)
}

const MIN_GO: (&str, &str) = ("HEARTH_RUNNER_MIN_VERSION", "go=0.10.0");

#[test]
fn set_runner_is_refused_without_a_healthy_worker_of_the_runtime() {
    let (_dir, db) = acme();
    let set = ["orgs", "set-runner", "acme", "go", "--reason", "move"];
    let message = refused(&db, &[], &set);
    assert!(message.contains("no healthy worker of runtime `go`"), "{message}");
    assert!(message.contains("--force"), "the refusal says how to override it: {message}");

    // None of these is a healthy worker of `go`: a stale heartbeat, a draining one, another runtime.
    worker(&db, "go-stale", "go", "1.0.0", "active", 125_000);
    worker(&db, "go-draining", "go", "1.0.0", "draining", 1_000);
    worker(&db, "ts-fresh", "ts", "1.0.0", "active", 1_000);
    let message = refused(&db, &[], &set);
    assert!(message.contains("no healthy worker of runtime `go`"), "{message}");

    assert!(show(&db, &[], "acme")["runner_default"].is_null(), "a refused flip set the flag");
    assert!(audit(&db, "acme").is_empty(), "a refused flip was audited as a change");
}

#[test]
fn set_runner_is_refused_when_the_healthy_workers_run_below_the_minimum_version() {
    let (_dir, db) = acme();
    // 0.9.0 is below 0.10.0 as a version, though not as text: the gate must compare versions.
    worker(&db, "go-old", "go", "0.9.0", "active", 1_000);
    let set = ["orgs", "set-runner", "acme", "go"];
    let message = refused(&db, &[MIN_GO], &set);
    assert!(message.contains("runtime `go` at version ≥ 0.10.0"), "the minimum is named: {message}");
    assert!(message.contains("go-old (0.9.0)"), "the worker below it is named: {message}");
    assert!(message.contains("--force"), "{message}");
    assert!(show(&db, &[], "acme")["runner_default"].is_null(), "a refused flip set the flag");
    assert!(audit(&db, "acme").is_empty(), "a refused flip was audited as a change");

    // Without a minimum the same worker is enough: the refusal was the version gate's.
    ok(&db, &[], &set);
    assert_eq!(show(&db, &[], "acme")["runner_default"], "go");
}

#[test]
fn set_runner_with_force_is_accepted_and_audited_as_forced() {
    let (_dir, db) = acme();
    worker(&db, "go-old", "go", "0.9.0", "active", 1_000);
    // Settings `serve` would refuse stop even a forced flip before it changes anything.
    let bad_ramp =
        refused(&db, &[("HEARTH_RUNNER_RAMP", "rust=5")], &["orgs", "set-runner", "acme", "go", "--force"]);
    assert!(bad_ramp.contains("HEARTH_RUNNER_RAMP"), "{bad_ramp}");
    assert!(audit(&db, "acme").is_empty(), "{bad_ramp}");
    let stdout = ok(&db, &[MIN_GO], &["orgs", "set-runner", "acme", "go", "--force", "--reason", "go-live"]);
    assert!(stdout.contains("runner_default (none) -> go (forced)"), "{stdout}");
    assert!(stdout.contains("new dispatches go to: go (organization flag runner_default=go)"), "{stdout}");
    assert_eq!(
        audit(&db, "acme"),
        [(None, Some("go".into()), "cli".into(), Some("go-live".into()), true)],
        "the forced flip is audited as forced, with its reason"
    );

    let shown = show(&db, &[], "acme");
    assert_eq!(shown["runner_default"], "go", "{shown}");
    let [change] = shown["flag_changes"].as_array().unwrap().as_slice() else { panic!("{shown}") };
    assert_eq!((&change["forced"], &change["reason"]), (&true.into(), &"go-live".into()), "{change}");
    let text = ok(&db, &[], &["orgs", "show", "acme"]);
    let row = text.lines().find(|l| l.contains("go-live")).unwrap_or_else(|| panic!("{text}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cells[1..], ["-", "go", "cli", "yes", "go-live"], "{text}");
}

#[test]
fn set_runner_is_accepted_without_force_once_a_healthy_worker_at_the_minimum_exists() {
    let (_dir, db) = acme();
    worker(&db, "go-old", "go", "0.9.0", "active", 1_000);
    refused(&db, &[MIN_GO], &["orgs", "set-runner", "acme", "go"]);
    worker(&db, "go-new", "go", "0.10.0", "active", 100_000);
    let stdout = ok(&db, &[MIN_GO], &["orgs", "set-runner", "acme", "go", "--reason", "workers up"]);
    assert!(stdout.contains("runner_default (none) -> go") && !stdout.contains("forced"), "{stdout}");
    assert_eq!(
        audit(&db, "acme"),
        [(None, Some("go".into()), "cli".into(), Some("workers up".into()), false)]
    );

    ok(&db, &[], &["orgs", "clear-runner", "acme", "--reason", "back"]);
    let shown = show(&db, &[], "acme");
    assert!(shown["runner_default"].is_null(), "{shown}");
    let changes: Vec<&Value> = shown["flag_changes"].as_array().unwrap().iter().map(|c| &c["new"]).collect();
    assert_eq!(changes, [&Value::Null, &Value::from("go")], "newest first: {shown}");
}

#[tokio::test]
async fn the_embedded_worker_is_a_healthy_worker_of_the_default_runner_at_its_own_version() {
    let hearth = Hearth::start().await;
    let db = hearth.db_path();
    let message =
        refused(&db, &[("HEARTH_RUNNER_MIN_VERSION", "ts=99.0.0")], &["orgs", "set-runner", "default", "ts"]);
    let version = env!("CARGO_PKG_VERSION");
    assert!(message.contains("≥ 99.0.0") && message.contains(&format!("({version})")), "{message}");
    let stdout = ok(
        &db,
        &[("HEARTH_RUNNER_MIN_VERSION", &format!("ts={version}"))],
        &["orgs", "set-runner", "default", "ts"],
    );
    assert!(stdout.contains("-> ts") && !stdout.contains("forced"), "{stdout}");
}

/// `orgs show`'s effective runner and reason with `env`, checked against the resolved profile
/// of a run a server with the same settings dispatches now; returns the reason.
async fn shown_as_dispatched(hearth: &Hearth, env: &[(&str, &str)], runner: &str, reason: &str) -> String {
    let shown = show(&hearth.db_path(), env, "default");
    assert_eq!(shown["effective_runner"], runner, "{shown}");
    let shown_reason = shown["runner_reason"].as_str().unwrap().to_owned();
    assert!(shown_reason.starts_with(reason), "{shown_reason}");
    let run = Api::new(hearth).start(&echo("which runner?")).await;
    let profile = &run["resolved_profile"];
    assert_eq!(
        (&profile["runner"], &profile["runner_reason"]),
        (&shown["effective_runner"], &shown["runner_reason"]),
        "orgs show differs from the dispatch: {shown}"
    );
    shown_reason
}

fn set_features(db: &Path, sql: &str) {
    open(db).execute(sql, []).unwrap();
}

#[tokio::test]
async fn orgs_show_prints_the_runner_a_new_dispatch_gets_and_why() {
    let mut hearth = options().start().await;
    let db = hearth.db_path();
    shown_as_dispatched(&hearth, &[], "ts", "default runner").await;

    ok(&db, &[], &["orgs", "set-runner", "default", "go", "--force", "--reason", "flag"]);
    shown_as_dispatched(&hearth, &[], "go", "organization flag runner_default=go").await;
    let text = ok(&db, &[], &["orgs", "show", "default"]);
    assert!(text.contains("runner flag: go\n"), "{text}");
    assert!(text.contains("effective runner: go (organization flag runner_default=go)"), "{text}");

    // Malformed or unknown flags fail closed to the default runner, and say so.
    set_features(
        &db,
        r#"UPDATE organizations SET features = '{"runner_default": 7}' WHERE slug = 'default'"#,
    );
    let reason = shown_as_dispatched(&hearth, &[], "ts", "failure-closed: invalid runner_default").await;
    assert!(reason.contains('7'), "{reason}");
    set_features(
        &db,
        "UPDATE organizations SET features = json_set(features, '$.runner_default', 'cobol') WHERE slug = 'default'",
    );
    shown_as_dispatched(&hearth, &[], "ts", "failure-closed: invalid runner_default value \"cobol\"").await;
    set_features(&db, "UPDATE organizations SET features = 'go' WHERE slug = 'default'");
    shown_as_dispatched(&hearth, &[], "ts", "failure-closed: could not read organization flags").await;
    let text = ok(&db, &[], &["orgs", "show", "default"]);
    assert!(text.contains("features: not JSON, as stored: go"), "{text}");

    // The ramp applies to an organization without a flag; the kill switch overrides flag and ramp.
    set_features(&db, "UPDATE organizations SET features = '{}' WHERE slug = 'default'");
    let ramp = [("HEARTH_RUNNER_RAMP", "go=100")];
    hearth.set_env(ramp[0].0, ramp[0].1);
    hearth.restart().await;
    shown_as_dispatched(&hearth, &ramp, "go", "ramp go=100% (organization bucket").await;
    ok(&db, &[], &["orgs", "set-runner", "default", "ts", "--reason", "pin to ts"]);
    shown_as_dispatched(&hearth, &ramp, "ts", "organization flag runner_default=ts").await;

    let off = [("HEARTH_RUNNER_RAMP", "go=100"), ("HEARTH_RUNNER_FLAGS", "off")];
    ok(&db, &[], &["orgs", "set-runner", "default", "go", "--force"]);
    hearth.set_env(off[1].0, off[1].1);
    hearth.restart().await;
    shown_as_dispatched(
        &hearth,
        &off,
        "ts",
        "default runner: runner flags are off (HEARTH_RUNNER_FLAGS=off)",
    )
    .await;
    let shown = show(&db, &off, "default");
    assert_eq!(shown["runner_default"], "go", "the flag is still shown under the kill switch: {shown}");
    assert_eq!(shown["resolved_with"]["runner_flags"], false, "{shown}");
}

#[tokio::test]
async fn a_direct_sql_update_of_the_flag_takes_effect_on_the_next_dispatch_unguarded_and_unaudited() {
    let hearth = options().start().await;
    let db = hearth.db_path();
    let api = Api::new(&hearth);
    // The statement docs/RUNNERS.md gives, with no worker of `go` anywhere.
    set_features(
        &db,
        "UPDATE organizations SET features = json_set(features, '$.runner_default', 'go') WHERE slug = 'default'",
    );
    let run = api.start(&echo("after the update")).await;
    assert_eq!(run["runner"], "go", "the next dispatch reads the flag, with no guard: {run}");
    assert!(audit(&db, "default").is_empty(), "a direct update writes no audit row");
    // Nor is the runner name checked: an unknown one fails closed to the default runner.
    set_features(
        &db,
        "UPDATE organizations SET features = json_set(features, '$.runner_default', 'g0') WHERE slug = 'default'",
    );
    let run = api.start(&echo("a typo")).await;
    assert_eq!(run["runner"], "ts", "{run}");
    let reason = run["resolved_profile"]["runner_reason"].as_str().unwrap();
    assert!(reason.starts_with("failure-closed: invalid runner_default value \"g0\""), "{reason}");
    assert_eq!(api.wait_end(run["id"].as_str().unwrap()).await["status"], "completed");
}
