//! LiteFS roles, live, with a temporary directory standing in for the LiteFS mount: a replica
//! answers writes with `fly-replay` and runs no worker; removing `.primary` promotes it (runs
//! execute), writing it again demotes it.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{self, Hearth, hearth_cmd, stderr_of, stdout_of};

/// A migrated database with the `default` organization and an API key, made with the CLI (no
/// `serve` ran on it, so no worker ever registered).
fn prepared() -> (tempfile::TempDir, String) {
    let dir = support::data_dir();
    let db = support::db_in(dir.path());
    for args in [&["migrate"][..], &["orgs", "create", "default"]] {
        let out = hearth_cmd(&db, args);
        assert!(out.status.success(), "{args:?}: {}", stderr_of(&out));
    }
    let out = hearth_cmd(&db, &["keys", "create", "--org", "default", "--name", "roles"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let key = stdout_of(&out).lines().last().unwrap().trim().to_owned();
    (dir, key)
}

fn workers(db: &Path) -> i64 {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.query_row("SELECT count(*) FROM workers", [], |r| r.get(0)).unwrap()
}

fn key_last_used(db: &Path) -> Option<i64> {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.query_row("SELECT last_used_at FROM api_keys", [], |r| r.get(0)).unwrap()
}

async fn chat(hearth: &Hearth, key: &str, text: &str) -> reqwest::Response {
    let body = json!({"model": "echo", "messages": [{"role": "user", "content": text}]});
    let url = hearth.url("/v1/chat/completions");
    reqwest::Client::new().post(url).bearer_auth(key).json(&body).send().await.unwrap()
}

async fn ready(hearth: &Hearth) -> Value {
    hearth.get("/ready").send().await.unwrap().json().await.unwrap()
}

async fn wait_role(hearth: &Hearth, role: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while ready(hearth).await["role"] != role {
        assert!(Instant::now() < deadline, "not {role} after 10 s: {}", hearth.stderr());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn assert_replayed(response: reqwest::Response, what: &str) {
    assert_eq!(response.status(), 409, "{what}");
    let replay = response.headers().get("fly-replay").map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(replay.as_deref(), Some("instance=machine-a"), "{what}");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "read_only_replica", "{what}: {body}");
}

#[tokio::test]
async fn a_replica_replays_writes_runs_no_worker_and_switches_roles_live() {
    let (dir, key) = prepared();
    let mount = tempfile::tempdir().unwrap();
    let primary_file = mount.path().join(".primary");
    std::fs::write(&primary_file, "machine-a\n").unwrap();
    let hearth = Hearth::options()
        .env("HEARTH_LITEFS_DIR", mount.path().to_str().unwrap())
        .env("HEARTH_HEARTBEAT_S", "1")
        .start_in(dir)
        .await;
    let db = hearth.db_path();

    // A replica: reads served, writes replayed to the primary, nothing written by a GET.
    let body = ready(&hearth).await;
    assert_eq!(
        (body["role"].as_str(), body["primary"].as_str()),
        (Some("replica"), Some("machine-a")),
        "{body}"
    );
    assert_eq!(body["status"], "ready");
    assert_replayed(chat(&hearth, &key, "hello").await, "chat").await;
    let client = reqwest::Client::new();
    let register =
        client.post(hearth.url("/v1/workers/register")).bearer_auth("hwk_x").json(&json!({})).send();
    assert_replayed(register.await.unwrap(), "worker protocol").await;
    let cancel = client.post(hearth.url("/v1/runs/run_x/cancel")).bearer_auth(&key).send();
    assert_replayed(cancel.await.unwrap(), "cancel").await;
    for path in ["/v1/models", "/v1/sessions"] {
        let read = hearth.get_with_key(path, &key).send().await.unwrap();
        assert_eq!(read.status(), 200, "GET {path} on a replica");
    }
    assert_eq!(key_last_used(&db), None, "a GET on a replica refreshed the key's last_used_at");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(workers(&db), 0, "a replica registered a worker");

    // Promoted: the embedded pool starts and runs execute.
    std::fs::remove_file(&primary_file).unwrap();
    wait_role(&hearth, "primary").await;
    hearth
        .wait_for_log(Duration::from_secs(10), |l| {
            l["message"].as_str().is_some_and(|m| m.starts_with("promoted"))
        })
        .await;
    let answer = chat(&hearth, &key, "after promotion").await;
    assert_eq!(answer.status(), 200, "chat on the new primary");
    let answer: Value = answer.json().await.unwrap();
    assert!(
        answer["choices"][0]["message"]["content"].as_str().unwrap().contains("after promotion"),
        "{answer}"
    );
    assert_eq!(workers(&db), 1, "the promoted node's embedded worker");
    assert!(key_last_used(&db).is_some(), "a writer records the key's use");

    // Demoted again: writes are replayed, the pool stops heartbeating.
    std::fs::write(&primary_file, "machine-a").unwrap();
    wait_role(&hearth, "replica").await;
    hearth
        .wait_for_log(Duration::from_secs(10), |l| {
            l["message"].as_str().is_some_and(|m| m.starts_with("demoted"))
        })
        .await;
    assert_replayed(chat(&hearth, &key, "after demotion").await, "chat after demotion").await;
    let beat = || -> i64 {
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.query_row("SELECT last_heartbeat_at FROM workers", [], |r| r.get(0)).unwrap()
    };
    let before = beat();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(beat(), before, "the demoted node's worker still heartbeats (HEARTH_HEARTBEAT_S=1)");
}

#[tokio::test]
async fn a_replica_waits_for_the_primary_to_migrate_then_serves() {
    let dir = support::data_dir();
    let mount = tempfile::tempdir().unwrap();
    std::fs::write(mount.path().join(".primary"), "machine-a").unwrap();
    let db = support::db_in(dir.path());
    // The primary's migrations and bootstrap arrive a little after the replica starts.
    let writer_db = db.clone();
    let primary = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1500));
        let out = hearth_cmd(&writer_db, &["migrate"]);
        assert!(out.status.success());
        let out = hearth_cmd(&writer_db, &["orgs", "create", "default"]);
        assert!(out.status.success());
    });
    let hearth =
        Hearth::options().env("HEARTH_LITEFS_DIR", mount.path().to_str().unwrap()).start_in(dir).await;
    primary.join().unwrap();
    assert!(hearth.stderr().contains("waiting for it"), "{}", hearth.stderr());
    let body = ready(&hearth).await;
    assert_eq!((body["status"].as_str(), body["role"].as_str()), (Some("ready"), Some("replica")), "{body}");
    assert_eq!(workers(&db), 0);
}
