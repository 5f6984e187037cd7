//! The admin JSON API (SPEC §7, docs/API.md "Admin API"): its bearer auth (only an admin token:
//! HEARTH_ADMIN_TOKEN or a stored one), workers, organizations, the guarded and audited runner
//! flag, and minting and revoking API keys, against the real binary.

use reqwest::Method;
use rusqlite::Connection;
use serde_json::{Value, json};

use crate::runs::{KEY, assert_error, cli, options};
use crate::support::Hearth;

/// The admin token the tests' servers get from the environment.
pub(crate) const ADMIN: &str = "admin-test-token-3f9a";

/// A server with a static API key, the test tools and [`ADMIN`] as its admin token.
pub(crate) async fn admin_server() -> Hearth {
    options().env("HEARTH_ADMIN_TOKEN", ADMIN).start().await
}

/// Calls the admin API with `token` (none when `None`); returns the status and JSON body.
pub(crate) async fn call(
    hearth: &Hearth,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> (u16, Value) {
    let mut request = reqwest::Client::new().request(method, hearth.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Registers a worker through the worker protocol with a new worker token; returns its id.
pub(crate) async fn register_worker(hearth: &Hearth, name: &str, runtime: &str, version: &str) -> String {
    let out = cli(hearth, &["workers", "token", "create", "--name", "admin-test"]);
    let token = out.lines().last().unwrap().trim().to_owned();
    let body =
        json!({"name": name, "runtime": runtime, "version": version, "hostname": "test-host", "capacity": 2});
    let response = reqwest::Client::new()
        .post(hearth.url("/v1/workers/register"))
        .bearer_auth(&token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    answer["worker_id"].as_str().unwrap().to_owned()
}

/// An audit row: (old, new, actor, reason, forced).
type Audit = (Option<String>, Option<String>, String, Option<String>, bool);

/// The audit rows of `slug`, oldest first.
fn audit(hearth: &Hearth, slug: &str) -> Vec<Audit> {
    let conn = Connection::open(hearth.db_path()).unwrap();
    let mut stmt = conn
        .prepare(
            "SELECT f.old, f.new, f.actor, f.reason, f.forced FROM flag_changes f
             JOIN organizations o ON o.id = f.organization_id WHERE o.slug = ?1 ORDER BY f.id",
        )
        .unwrap();
    let rows = stmt.query_map([slug], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)));
    rows.unwrap().collect::<Result<_, _>>().unwrap()
}

#[tokio::test]
async fn only_an_admin_token_opens_the_admin_api() {
    let hearth = admin_server().await;
    let worker_token =
        cli(&hearth, &["workers", "token", "create"]).lines().last().unwrap().trim().to_owned();
    for (token, what) in [
        (None, "no token"),
        (Some("wrong"), "a wrong token"),
        (Some(KEY), "an API key"),
        (Some(worker_token.as_str()), "a worker token"),
    ] {
        let (status, body) = call(&hearth, Method::GET, "/admin/api/workers", token, None).await;
        assert_eq!(status, 401, "{what}: {body}");
        assert_eq!(body["error"]["code"], "invalid_api_key", "{what}: {body}");
        assert_eq!(body["error"]["type"], "invalid_request_error", "{what}: {body}");
    }
    let (status, _) = call(
        &hearth,
        Method::POST,
        "/admin/api/keys",
        Some(KEY),
        Some(&json!({"org": "default", "name": "x"})),
    )
    .await;
    assert_eq!(status, 401, "an API key cannot mint keys");
    let (status, body) = call(&hearth, Method::GET, "/admin/api/workers", Some(ADMIN), None).await;
    assert_eq!((status, body["object"].as_str()), (200, Some("list")), "{body}");

    // Without HEARTH_ADMIN_TOKEN, the token first run printed (stored as a hash) opens it.
    let first_run = options().start().await;
    let printed = first_run.admin_token().expect("first run prints an admin token");
    let (status, _) = call(&first_run, Method::GET, "/admin/api/orgs", Some(&printed), None).await;
    assert_eq!(status, 200);
    let (status, _) = call(&first_run, Method::GET, "/admin/api/orgs", Some(ADMIN), None).await;
    assert_eq!(status, 401, "no environment token on this server");
}

#[tokio::test]
async fn workers_show_health_and_a_draining_worker_is_not_healthy() {
    let hearth = admin_server().await;
    register_worker(&hearth, "go-ready", "go", "1.2.0").await;
    let draining = register_worker(&hearth, "go-leaving", "go", "1.2.0").await;
    let (status, _) = call(&hearth, Method::GET, "/admin/api/workers", Some(ADMIN), None).await;
    assert_eq!(status, 200);
    // The worker says it drains on its heartbeat (its token is the CLI's; the admin API's drain
    // is a page action, tested with the pages): mark it through the protocol's own path.
    let conn = Connection::open(hearth.db_path()).unwrap();
    conn.execute("UPDATE workers SET status = 'draining' WHERE id = ?1", [&draining]).unwrap();
    let (_, body) = call(&hearth, Method::GET, "/admin/api/workers", Some(ADMIN), None).await;
    let workers = body["data"].as_array().unwrap();
    let find = |name: &str| {
        workers.iter().find(|w| w["name"] == name).cloned().unwrap_or_else(|| panic!("{name} in {body}"))
    };
    let ready = find("go-ready");
    assert_eq!(ready["object"], "worker");
    assert_eq!((ready["runtime"].as_str(), ready["version"].as_str()), (Some("go"), Some("1.2.0")));
    assert_eq!((ready["healthy"].as_bool(), ready["heartbeat_stale"].as_bool()), (Some(true), Some(false)));
    assert_eq!(ready["below_minimum"], false);
    assert!(ready["id"].as_str().unwrap().starts_with("wrk_"));
    let leaving = find("go-leaving");
    assert_eq!((leaving["status"].as_str(), leaving["healthy"].as_bool()), (Some("draining"), Some(false)));
    assert!(
        workers.iter().any(|w| w["embedded"] == true && w["runtime"] == "ts"),
        "the embedded worker: {body}"
    );
}

#[tokio::test]
async fn a_runner_flag_is_guarded_forced_audited_and_cleared() {
    let hearth = admin_server().await;
    cli(&hearth, &["orgs", "create", "acme"]);
    let put = |slug: &str, body: Value| {
        let path = format!("/admin/api/orgs/{slug}/runner");
        let hearth = &hearth;
        async move { call(hearth, Method::PUT, &path, Some(ADMIN), Some(&body)).await }
    };

    // No healthy go worker: refused, nothing written.
    let (status, body) = put("acme", json!({"runner": "go", "reason": "try"})).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "conflict");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("no healthy worker of runtime `go`"),
        "{body}"
    );
    assert!(audit(&hearth, "acme").is_empty());

    // Forced: set, and audited as forced with the API as actor.
    let (status, body) = put("acme", json!({"runner": "go", "force": true, "reason": "canary"})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["object"], "runner_flag_change");
    assert_eq!(
        (body["old"].clone(), body["new"].as_str(), body["forced"].as_bool()),
        (Value::Null, Some("go"), Some(true))
    );
    assert_eq!(body["effective_runner"], "go");
    assert_eq!(
        audit(&hearth, "acme"),
        [(None, Some("go".into()), "admin-api".into(), Some("canary".into()), true)]
    );
    let (_, orgs) = call(&hearth, Method::GET, "/admin/api/orgs", Some(ADMIN), None).await;
    let acme = orgs["data"].as_array().unwrap().iter().find(|o| o["slug"] == "acme").unwrap().clone();
    assert_eq!(
        (acme["runner_default"].as_str(), acme["effective_runner"].as_str()),
        (Some("go"), Some("go"))
    );
    assert!(acme["runner_reason"].as_str().unwrap().contains("flag"), "{acme}");
    let default = orgs["data"].as_array().unwrap().iter().find(|o| o["slug"] == "default").unwrap().clone();
    assert_eq!(
        (default["runner_default"].clone(), default["effective_runner"].as_str()),
        (Value::Null, Some("ts"))
    );

    // A healthy go worker lets an unforced flip through.
    register_worker(&hearth, "go-1", "go", "1.0.0").await;
    let (status, body) = put("default", json!({"runner": "go"})).await;
    assert_eq!((status, body["forced"].as_bool()), (200, Some(false)), "{body}");
    assert_eq!(audit(&hearth, "default"), [(None, Some("go".into()), "admin-api".into(), None, false)]);

    // Clearing with null.
    let (status, body) = put("acme", json!({"runner": null, "reason": "rollback"})).await;
    assert_eq!(
        (status, body["new"].clone(), body["effective_runner"].as_str()),
        (200, Value::Null, Some("ts")),
        "{body}"
    );
    assert_eq!(audit(&hearth, "acme").len(), 2);

    // Refusals in OpenAI's shape.
    let (status, body) = put("acme", json!({"runner": "rust"})).await;
    assert_eq!((status, body["error"]["param"].as_str()), (400, Some("runner")), "{body}");
    let (status, body) = put("nope", json!({"runner": "go", "force": true})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("not_found")), "{body}");
    let (status, body) = put("acme", json!({"force": true})).await;
    assert_eq!(status, 400, "a missing runner field never clears: {body}");
    assert_eq!(audit(&hearth, "acme").len(), 2, "no refused change is audited");
}

#[tokio::test]
async fn keys_are_minted_once_and_revoked_idempotently() {
    let hearth = admin_server().await;
    cli(&hearth, &["orgs", "create", "acme"]);
    let (status, key) = call(
        &hearth,
        Method::POST,
        "/admin/api/keys",
        Some(ADMIN),
        Some(&json!({"org": "acme", "name": "ci"})),
    )
    .await;
    assert_eq!(status, 201, "{key}");
    let fields: Vec<&str> = key.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(fields, ["created_at", "id", "name", "object", "org", "secret"], "{key}");
    assert_eq!(
        (key["object"].as_str(), key["org"].as_str(), key["name"].as_str()),
        (Some("api_key"), Some("acme"), Some("ci"))
    );
    let (id, secret) = (key["id"].as_str().unwrap().to_owned(), key["secret"].as_str().unwrap().to_owned());
    assert!(id.starts_with("key_") && secret.starts_with("hk_"), "{key}");
    assert!(key["created_at"].as_i64().unwrap() > 1_600_000_000_000);
    assert_eq!(
        hearth.get_with_key("/v1/sessions", &secret).send().await.unwrap().status(),
        200,
        "the key works"
    );
    let listed = cli(&hearth, &["keys", "list", "--json"]);
    assert!(listed.contains(&id) && !listed.contains(&secret), "listed without its secret");

    let path = format!("/admin/api/keys/{id}");
    let (status, body) = call(&hearth, Method::DELETE, &path, Some(ADMIN), None).await;
    assert_eq!((status, body), (200, json!({"object": "api_key", "id": id, "revoked": true})));
    assert_eq!(
        hearth.get_with_key("/v1/sessions", &secret).send().await.unwrap().status(),
        401,
        "revoked at once"
    );
    let (status, body) = call(&hearth, Method::DELETE, &path, Some(ADMIN), None).await;
    assert_eq!((status, body["revoked"].as_bool()), (200, Some(true)), "idempotent: {body}");

    let (status, body) =
        call(&hearth, Method::DELETE, "/admin/api/keys/key_doesnotexist", Some(ADMIN), None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("not_found")), "{body}");
    let response = reqwest::Client::new()
        .post(hearth.url("/admin/api/keys"))
        .bearer_auth(ADMIN)
        .json(&json!({"org": "nope", "name": "x"}))
        .send()
        .await
        .unwrap();
    assert_error(response, 404, "not_found").await;
    let (status, body) = call(
        &hearth,
        Method::POST,
        "/admin/api/keys",
        Some(ADMIN),
        Some(&json!({"org": "acme", "name": " "})),
    )
    .await;
    assert_eq!((status, body["error"]["param"].as_str()), (400, Some("name")), "{body}");
}
