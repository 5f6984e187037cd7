//! `hearth workers token create | list | revoke` and `hearth workers list`, against a database
//! and a running server; and a worker token refused on the chat and runs API.

use std::path::Path;

use reqwest::Method;
use rusqlite::{Connection, params};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::runs::{Api, assert_error, cli, echo, options};
use crate::support::{self, Hearth, hearth_cmd, stderr_of, stdout_of};

/// Runs a subcommand that must succeed; returns its stdout.
fn ok(db: &Path, args: &[&str]) -> String {
    let out = hearth_cmd(db, args);
    assert!(out.status.success(), "hearth {args:?} failed: {}", stderr_of(&out));
    stdout_of(&out)
}

/// Runs a subcommand that must fail as bad input (exit 2); returns its stderr.
fn refused(db: &Path, args: &[&str]) -> String {
    let out = hearth_cmd(db, args);
    let stderr = stderr_of(&out);
    assert_eq!(out.status.code(), Some(2), "hearth {args:?}: {stderr}");
    stderr
}

fn json(db: &Path, args: &[&str]) -> Value {
    let stdout = ok(db, args);
    serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("hearth {args:?} printed no JSON ({e}):\n{stdout}"))
}

/// The secret of `workers token create`, checked to be alone on the last stdout line.
fn secret_of(stdout: &str) -> String {
    let lines: Vec<&str> = stdout.lines().collect();
    let (secret, rest) = lines.split_last().expect("token create prints lines");
    assert!(secret.starts_with("hwk_") && secret.len() == 4 + 64, "{stdout}");
    assert!(!secret.contains(char::is_whitespace), "the last line holds only the secret:\n{stdout}");
    assert!(!rest.is_empty() && rest.iter().all(|l| !l.contains(secret)), "printed alone:\n{stdout}");
    (*secret).to_owned()
}

/// Every byte SQLite keeps of the database: the file and its write-ahead log.
fn stored_bytes(db: &Path) -> Vec<u8> {
    let mut bytes = std::fs::read(db).expect("the database file");
    bytes.extend(std::fs::read(db.with_extension("db-wal")).unwrap_or_default());
    bytes
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[test]
fn token_create_prints_the_secret_alone_and_stores_only_its_hash() {
    let dir = support::data_dir();
    let db = support::db_in(dir.path());
    ok(&db, &["migrate"]);
    let named = secret_of(&ok(&db, &["workers", "token", "create", "--name", "build-box"]));
    let unnamed = secret_of(&ok(&db, &["workers", "token", "create"]));
    assert_ne!(named, unnamed);

    let conn = Connection::open(&db).unwrap();
    for (secret, name) in [(&named, "build-box"), (&unnamed, "worker")] {
        let expected: Vec<u8> = Sha256::digest(secret.as_bytes()).to_vec();
        let (stored_name, prefix): (String, String) = conn
            .query_row(
                "SELECT name, prefix FROM worker_tokens WHERE token_hash = ?1",
                params![expected],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap_or_else(|e| panic!("no row holds the SHA-256 of the secret ({e})"));
        assert_eq!(stored_name, name);
        assert!(secret.starts_with(&prefix) && prefix.len() < 16, "{prefix}");
    }
    drop(conn);
    let bytes = stored_bytes(&db);
    for secret in [&named, &unnamed] {
        assert!(!contains(&bytes, secret), "the database holds a secret");
        assert!(!contains(&bytes, &secret[20..]), "the database holds part of a secret");
    }
    let bad = refused(&db, &["workers", "token", "create", "--name", " "]);
    assert!(bad.contains("name"), "{bad}");
}

#[test]
fn tokens_are_listed_without_secrets_and_revoked() {
    let dir = support::data_dir();
    let db = support::db_in(dir.path());
    ok(&db, &["migrate"]);
    let first = secret_of(&ok(&db, &["workers", "token", "create", "--name", "a"]));
    let second = secret_of(&ok(&db, &["workers", "token", "create", "--name", "b"]));

    let tokens = json(&db, &["workers", "token", "list", "--json"]);
    let listed = tokens.as_array().unwrap();
    let names: Vec<&str> = listed.iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["b", "a"], "newest first: {tokens}");
    assert!(
        listed.iter().all(|t| t["revoked_at"].is_null() && t["id"].as_str().unwrap().starts_with("wtk_"))
    );
    for secret in [&first, &second] {
        assert!(!tokens.to_string().contains(secret.as_str()), "token list shows a secret");
    }
    let id = listed[1]["id"].as_str().unwrap().to_owned();

    let revoked = ok(&db, &["workers", "token", "revoke", &id]);
    assert!(revoked.contains(&id), "{revoked}");
    let tokens = json(&db, &["workers", "token", "list", "--json"]);
    let a = tokens.as_array().unwrap().iter().find(|t| t["id"] == id.as_str()).expect("still listed");
    assert!(a["revoked_at"].is_i64(), "{a}");
    assert!(tokens.as_array().unwrap().iter().any(|t| t["name"] == "b" && t["revoked_at"].is_null()));
    let table = ok(&db, &["workers", "token", "list"]);
    let row = table.lines().find(|l| l.contains(&id)).unwrap_or_else(|| panic!("{table}"));
    assert!(row.contains("revoked") && row.contains(&first[..11]), "{table}");
    assert!(!table.contains(&first) && !table.contains(&second), "{table}");

    assert!(refused(&db, &["workers", "token", "revoke", &id]).contains(&id), "revoking twice is refused");
    assert!(refused(&db, &["workers", "token", "revoke", "key_nope"]).contains("key_nope"));
}

/// Registers a worker and runs in the database behind a running server, as an external worker
/// and its claims would leave them.
fn seed_external_workers(db: &Path) {
    let conn = Connection::open(db).unwrap();
    conn.busy_timeout(std::time::Duration::from_secs(5)).unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis();
    let now = i64::try_from(now).unwrap();
    let org: String =
        conn.query_row("SELECT id FROM organizations WHERE slug = 'default'", [], |r| r.get(0)).unwrap();
    let worker = "INSERT INTO workers (id, name, runtime, version, hostname, capacity, status, embedded,
                                       registered_at, last_heartbeat_at)
                  VALUES (?1, ?2, 'go', '0.5.0', 'box-2', 8, ?3, 0, ?4, ?5)";
    conn.execute(worker, params!["wrk_fakego", "ext-go", "draining", now, now]).unwrap();
    conn.execute(worker, params!["wrk_fakeold", "ext-old", "active", now - 300_000, now - 300_000]).unwrap();
    conn.execute(
        "INSERT INTO agent_sessions (id, organization_id, status, created_at, updated_at)
         VALUES ('ses_fake', ?1, 'running', ?2, ?2)",
        params![org, now],
    )
    .unwrap();
    // Two runs held by ext-go (a lease an hour out, so the sweeper leaves them), one it finished,
    // one still queued.
    for (id, status, holder) in [
        ("run_fake1", "claimed", Some("wrk_fakego")),
        ("run_fake2", "running", Some("wrk_fakego")),
        ("run_fake3", "completed", Some("wrk_fakego")),
        ("run_fake4", "queued", None),
    ] {
        conn.execute(
            "INSERT INTO runs (id, session_id, organization_id, status, runner, resolved_profile, input,
                               claimed_by, lease_expires_at, created_at, updated_at)
             VALUES (?1, 'ses_fake', ?2, ?3, 'go', '{}', '{}', ?4, ?5, ?6, ?6)",
            params![id, org, status, holder, now + 3_600_000, now],
        )
        .unwrap();
    }
}

#[tokio::test]
async fn workers_list_shows_the_embedded_worker_and_external_ones() {
    let hearth = Hearth::start().await;
    let db = hearth.db_path();
    let workers = json(&db, &["workers", "list", "--json"]);
    let [embedded] = workers.as_array().unwrap().as_slice() else { panic!("one worker: {workers}") };
    assert_eq!(embedded["runtime"], "ts", "{embedded}");
    assert_eq!(embedded["embedded"], true, "{embedded}");
    assert_eq!(embedded["healthy"], true, "{embedded}");
    assert_eq!(embedded["in_flight"], 0, "{embedded}");
    assert_eq!(embedded["status"], "active", "{embedded}");
    assert!(embedded["id"].as_str().unwrap().starts_with("wrk_"), "{embedded}");
    assert!(embedded["name"].as_str().unwrap().ends_with("/embedded"), "{embedded}");
    assert!(embedded["heartbeat_age_s"].as_i64().is_some_and(|s| (0..60).contains(&s)), "{embedded}");
    for field in ["version", "hostname", "capacity", "last_heartbeat_at", "registered_at"] {
        assert!(!embedded[field].is_null(), "no {field}: {embedded}");
    }

    seed_external_workers(&db);
    let workers = json(&db, &["workers", "list", "--json"]);
    let by_name = |name: &str| -> Value {
        workers.as_array().unwrap().iter().find(|w| w["name"] == name).cloned().unwrap_or_else(|| {
            panic!("{name} is not listed: {workers}");
        })
    };
    let go = by_name("ext-go");
    assert_eq!(
        (&go["runtime"], &go["version"], &go["hostname"]),
        (&"go".into(), &"0.5.0".into(), &"box-2".into())
    );
    // A draining worker claims nothing new: not healthy (not capacity), though its heartbeat
    // is fresh.
    assert_eq!(
        (&go["status"], &go["embedded"], &go["healthy"], &go["heartbeat_stale"]),
        (&"draining".into(), &false.into(), &false.into(), &false.into())
    );
    assert_eq!(go["in_flight"], 2, "claimed and running count, completed and queued do not: {go}");
    assert_eq!(go["capacity"], 8, "{go}");
    let old = by_name("ext-old");
    assert_eq!(
        (&old["healthy"], &old["heartbeat_stale"], &old["in_flight"]),
        (&false.into(), &true.into(), &0.into()),
        "{old}"
    );
    assert!(old["heartbeat_age_s"].as_i64().is_some_and(|s| (299..400).contains(&s)), "seconds: {old}");
    assert_eq!(by_name(embedded["name"].as_str().unwrap())["in_flight"], 0);

    let table = ok(&db, &["workers", "list"]);
    assert!(table.starts_with("ID") && table.contains("IN_FLIGHT") && table.contains("HEALTHY"), "{table}");
    let row = table.lines().find(|l| l.contains("ext-go")).unwrap_or_else(|| panic!("{table}"));
    for cell in ["go", "0.5.0", "box-2", "draining"] {
        assert!(row.split_whitespace().any(|c| c == cell), "no {cell} in {row}");
    }
}

#[tokio::test]
async fn a_worker_token_is_refused_on_the_chat_and_runs_api() {
    let hearth = options().start().await;
    let secret = secret_of(&cli(&hearth, &["workers", "token", "create", "--name", "w1"]));
    let api = Api::with_key(&hearth, &secret);
    for path in ["/v1/chat/completions", "/v1/runs"] {
        let response = api.request(Method::POST, path).json(&echo("hello")).send().await.unwrap();
        let body = assert_error(response, 401, "invalid_api_key").await;
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains("worker token") && message.contains("worker protocol"), "{path}: {message}");
    }
    // The server itself answers a service key, so the refusal is the token's.
    let response =
        Api::new(&hearth).request(Method::POST, "/v1/chat/completions").json(&echo("hi")).send().await;
    assert_eq!(response.unwrap().status(), 200);
    assert!(!hearth.stderr().contains(&secret), "a worker token was logged");
}
