//! Rollbacks across migrations: a binary starts on a database a newer hearth migrated when the
//! newer migrations were additive (the floor stayed at or below its own newest version), and
//! refuses, saying what to do, when a breaking one raised the floor above it.

use std::path::Path;

use crate::support::{self, Hearth, hearth_cmd, stderr_of};

/// Simulates a newer release having migrated `db`: one more migration applied (a table this
/// binary does not know, `user_version` one higher), leaving the floor at `floor`.
fn newer_release_migrated(db: &Path, floor: Option<i64>) -> i64 {
    let conn = rusqlite::Connection::open(db).unwrap();
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
    conn.execute_batch("CREATE TABLE from_a_newer_release (id INTEGER PRIMARY KEY)").unwrap();
    conn.pragma_update(None, "user_version", version + 1).unwrap();
    if let Some(floor) = floor {
        conn.execute("UPDATE schema_floor SET min_reader_version = ?1", [floor]).unwrap();
    }
    version
}

#[tokio::test]
async fn a_rolled_back_binary_serves_a_database_whose_newer_migrations_were_additive() {
    let dir = support::data_dir();
    let db = support::db_in(dir.path());
    let out = hearth_cmd(&db, &["migrate"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let latest = newer_release_migrated(&db, None);

    let hearth = Hearth::options().start_in(dir).await;
    let ready = hearth.get("/ready").send().await.unwrap();
    assert_eq!(ready.status(), 200, "a readable newer schema is ready");
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(body["schema_version"], latest);
    assert!(body["detail"].as_str().unwrap().contains("additive"), "{body}");
    let models = hearth.get("/v1/models").send().await.unwrap();
    assert_ne!(models.status(), 500);
    let version: i64 = rusqlite::Connection::open(hearth.db_path())
        .unwrap()
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, latest + 1, "the older binary migrated nothing back or forth");
}

#[test]
fn a_rolled_back_binary_refuses_a_database_past_a_breaking_migration_and_says_what_to_do() {
    let dir = support::data_dir();
    let db = support::db_in(dir.path());
    let out = hearth_cmd(&db, &["migrate"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let latest = newer_release_migrated(&db, None);
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute("UPDATE schema_floor SET min_reader_version = ?1", [latest + 1]).unwrap();
    drop(conn);

    for args in [&["serve", "--port", "0"][..], &["migrate"], &["keys", "list"]] {
        let out = hearth_cmd(&db, args);
        let stderr = stderr_of(&out);
        assert!(!out.status.success(), "hearth {args:?} started on a schema it cannot read");
        assert!(stderr.contains("Roll forward"), "hearth {args:?}: {stderr}");
        assert!(stderr.contains("litestream restore"), "hearth {args:?}: {stderr}");
    }
}

#[test]
fn a_fresh_database_records_a_floor_no_higher_than_this_binary() {
    let dir = support::data_dir();
    let db = support::db_in(dir.path());
    let out = hearth_cmd(&db, &["migrate"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let conn = rusqlite::Connection::open(&db).unwrap();
    let floor: i64 = conn.query_row("SELECT min_reader_version FROM schema_floor", [], |r| r.get(0)).unwrap();
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
    assert!(floor <= version, "floor {floor} above the schema {version}");
}
