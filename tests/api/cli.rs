//! The command line: `migrate`, `orgs`, `keys` against a database, `serve --help`, and which
//! database setting wins.

use std::path::Path;
use std::process::Output;

use serde_json::Value;

use crate::support::{self, Hearth, command_in, hearth_cmd, stderr_of, stdout_of};

/// Runs a subcommand that must succeed; returns its stdout.
fn ok(db: &Path, args: &[&str]) -> String {
    let out = hearth_cmd(db, args);
    assert!(out.status.success(), "hearth {args:?} failed: {}", stderr_of(&out));
    stdout_of(&out)
}

/// Runs a subcommand that must fail as bad input (exit 2); returns its stderr.
fn refused(db: &Path, args: &[&str]) -> String {
    let out: Output = hearth_cmd(db, args);
    let stderr = stderr_of(&out);
    assert_eq!(out.status.code(), Some(2), "hearth {args:?}: {stderr}");
    stderr
}

fn json(db: &Path, args: &[&str]) -> Value {
    let stdout = ok(db, args);
    serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("hearth {args:?} printed no JSON ({e}):\n{stdout}"))
}

#[test]
fn migrate_is_idempotent() {
    let dir = support::data_dir();
    let db = support::db_in(dir.path());
    let first = ok(&db, &["migrate"]);
    assert!(first.contains("applied"), "{first}");
    assert!(db.exists());
    let second = ok(&db, &["migrate"]);
    assert!(second.contains("nothing to do"), "{second}");
    assert!(!second.contains("applied "), "{second}");
    let page: i64 =
        rusqlite::Connection::open(&db).unwrap().query_row("PRAGMA page_size", [], |r| r.get(0)).unwrap();
    assert_eq!(page, 2048, "a database hearth creates has 2 KiB pages");
}

#[test]
fn commands_on_a_missing_database_say_how_to_create_it() {
    let dir = support::data_dir();
    let db = support::db_in(dir.path());
    let stderr = refused(&db, &["orgs", "list"]);
    assert!(stderr.contains("hearth migrate"), "{stderr}");
    assert!(!db.exists(), "a read command must not create the database");
}

#[test]
fn orgs_create_list_show_and_refuse_bad_input() {
    let dir = support::data_dir();
    let db = support::db_in(dir.path());
    ok(&db, &["migrate"]);
    let created = ok(&db, &["orgs", "create", "acme", "--name", "Acme Inc"]);
    assert!(created.contains("acme"), "{created}");

    let list = json(&db, &["orgs", "list", "--json"]);
    assert!(list.as_array().unwrap().iter().any(|o| o["slug"] == "acme"), "{list}");
    assert!(ok(&db, &["orgs", "list"]).contains("acme"));

    let org = json(&db, &["orgs", "show", "acme", "--json"]);
    assert_eq!(org["slug"], "acme", "{org}");
    assert_eq!(org["name"], "Acme Inc", "{org}");
    assert!(org["id"].as_str().unwrap().starts_with("org_"), "{org}");

    let duplicate = refused(&db, &["orgs", "create", "acme"]);
    assert!(duplicate.contains("acme") && duplicate.contains("already exists"), "{duplicate}");
    let bad = refused(&db, &["orgs", "create", "Not_A_Slug"]);
    assert!(bad.contains("slug"), "{bad}");
    let unknown = refused(&db, &["orgs", "show", "nosuchorg"]);
    assert!(unknown.contains("nosuchorg"), "{unknown}");
    assert_eq!(json(&db, &["orgs", "list", "--json"]).as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn keys_made_and_revoked_by_the_cli_take_effect_on_a_running_server() {
    let hearth = Hearth::start().await;
    let db = hearth.db_path();
    ok(&db, &["orgs", "create", "acme"]);

    let stdout = ok(&db, &["keys", "create", "--org", "acme", "--name", "ci"]);
    let lines: Vec<&str> = stdout.lines().collect();
    let (secret, rest) = lines.split_last().expect("keys create prints lines");
    assert!(secret.starts_with("hk_") && !secret.contains(char::is_whitespace), "{stdout}");
    assert!(rest.iter().all(|l| !l.contains(secret)), "the secret is printed alone:\n{stdout}");
    let response = hearth.get_with_key("/v1/models", secret).send().await.unwrap();
    assert_eq!(response.status(), 200);

    let keys = json(&db, &["keys", "list", "--org", "acme", "--json"]);
    let [key] = keys.as_array().unwrap().as_slice() else { panic!("one key for acme: {keys}") };
    assert_eq!(key["name"], "ci", "{key}");
    assert!(key["revoked_at"].is_null(), "{key}");
    assert!(!keys.to_string().contains(secret), "keys list shows a secret");
    let id = key["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("key_"), "{id}");

    let revoked = ok(&db, &["keys", "revoke", &id]);
    assert!(revoked.contains(&id), "{revoked}");
    let response = hearth.get_with_key("/v1/models", secret).send().await.unwrap();
    assert_eq!(response.status(), 401, "a revoked key must stop working at once");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_api_key", "{body}");

    let all = json(&db, &["keys", "list", "--json"]);
    let listed = all.as_array().unwrap().iter().find(|k| k["id"] == id.as_str()).expect("still listed");
    assert!(listed["revoked_at"].is_i64(), "{listed}");
    let first_run_key = hearth.api_key().unwrap();
    assert_eq!(hearth.get_with_key("/v1/models", &first_run_key).send().await.unwrap().status(), 200);

    assert!(refused(&db, &["keys", "create", "--org", "nosuchorg", "--name", "x"]).contains("nosuchorg"));
    assert!(refused(&db, &["keys", "revoke", &id]).contains(&id), "revoking twice is refused");
    refused(&db, &["keys", "list", "--org", "nosuchorg"]);
}

#[test]
fn serve_help_documents_flags_with_their_environment_variables() {
    let dir = support::data_dir();
    let db = support::db_in(dir.path());
    let mut cmd = support::command(&db);
    let out = support::run(cmd.args(["serve", "--help"]).env("GATEWAY_API_KEY", "help-must-hide-this"));
    assert!(out.status.success(), "{}", stderr_of(&out));
    let help = stdout_of(&out);
    for needle in
        ["--port", "PORT", "GATEWAY_API_KEY", "HEARTH_ADMIN_TOKEN", "HEARTH_MAX_BODY", "HEARTH_AUTO_MIGRATE"]
    {
        assert!(help.contains(needle), "serve --help does not mention {needle}:\n{help}");
    }
    assert!(!help.contains("help-must-hide-this"), "--help shows a secret's value");
    assert!(!db.exists(), "--help must not create a database");
}

/// A Postgres URL with a password, as an older deployment's secrets may still hold.
const POSTGRES_URL: &str = "postgres://u:secret@h/db";

#[tokio::test]
async fn a_database_url_of_another_database_is_ignored_with_a_warning_when_hearth_db_is_set() {
    let dir = support::data_dir();
    let db = support::db_in(dir.path());
    let out = support::run(
        command_in(dir.path()).env("HEARTH_DB", &db).env("DATABASE_URL", POSTGRES_URL).arg("migrate"),
    );
    let stderr = stderr_of(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(db.exists(), "HEARTH_DB names the database");
    assert!(stderr.contains("DATABASE_URL") && stderr.contains("postgres"), "no warning:\n{stderr}");
    assert!(!stderr.contains("secret"), "the URL's password is shown:\n{stderr}");

    // `serve` with `--db` (the harness passes it) starts the same way.
    let hearth = Hearth::options().env("DATABASE_URL", POSTGRES_URL).start_in(dir).await;
    assert_eq!(hearth.get("/ready").send().await.unwrap().status(), 200);
    let warning = hearth
        .log_lines()
        .into_iter()
        .find(|l| l["level"] == "WARN" && l.to_string().contains("DATABASE_URL"))
        .unwrap_or_else(|| panic!("no warning naming DATABASE_URL:\n{}", hearth.stderr()));
    assert!(warning.to_string().contains("postgres"), "{warning}");
    assert!(!hearth.stderr().contains("secret"), "the URL's password is shown:\n{}", hearth.stderr());
}

#[test]
fn a_database_url_of_another_database_is_refused_when_it_is_the_only_database_setting() {
    for args in [&["migrate"][..], &["serve"]] {
        let dir = support::data_dir();
        // PORT=0, so a `serve` that wrongly starts cannot collide on 8080.
        let out = support::run(
            command_in(dir.path()).env("DATABASE_URL", POSTGRES_URL).env("PORT", "0").args(args),
        );
        let stderr = stderr_of(&out);
        assert_eq!(out.status.code(), Some(2), "hearth {args:?}: {stderr}");
        assert!(
            stderr.contains("DATABASE_URL"),
            "hearth {args:?}: the message does not name DATABASE_URL:\n{stderr}"
        );
        assert!(!stderr.contains("secret"), "hearth {args:?}: the URL's password is shown:\n{stderr}");
        assert!(!stderr.contains("\"listening\""), "hearth {args:?}: started anyway");
        assert!(!dir.path().join("data").exists(), "hearth {args:?} created the default database");
    }
}
