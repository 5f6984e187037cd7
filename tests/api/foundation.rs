//! Foundation: health, readiness, metrics, first-run credentials, settings errors, shutdown, request ids.

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{self, Hearth, hearth_cmd, stderr_of, stdout_of};

/// Asserts a 401 in OpenAI's error shape.
async fn assert_unauthorized(response: reqwest::Response) {
    assert_eq!(response.status(), 401);
    let body: Value = response.json().await.expect("a JSON error body");
    let error = &body["error"];
    assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
    assert_eq!(error["type"], "invalid_request_error", "{body}");
    assert_eq!(error["code"], "invalid_api_key", "{body}");
    assert!(error.as_object().is_some_and(|e| e.contains_key("param")), "{body}");
}

async fn models_status(hearth: &Hearth, key: &str) -> u16 {
    hearth.get_with_key("/v1/models", key).send().await.unwrap().status().as_u16()
}

/// Asserts that no secret occurs in the database file or its WAL.
fn assert_not_stored(db: &Path, secrets: &[&str]) {
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    for file in [db.to_path_buf(), wal.into()] {
        let Ok(bytes) = std::fs::read(&file) else { continue };
        for secret in secrets {
            let found = bytes.windows(secret.len()).any(|w| w == secret.as_bytes());
            assert!(!found, "{} holds a plaintext secret", file.display());
        }
    }
}

#[tokio::test]
async fn health_is_ok() {
    let hearth = Hearth::start().await;
    let response = hearth.get("/health").send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.json::<Value>().await.unwrap(), json!({"status": "ok"}));
}

#[tokio::test]
async fn ready_reports_the_standalone_role_and_schema_version() {
    let hearth = Hearth::start().await;
    let response = hearth.get("/ready").send().await.unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "ready", "{body}");
    assert_eq!(body["role"], "standalone", "{body}");
    assert!(body["schema_version"].as_u64().is_some_and(|v| v > 0), "{body}");
}

fn has_line(text: &str, prefix: &str, labels: &[&str]) -> bool {
    text.lines().any(|l| l.starts_with(prefix) && labels.iter().all(|label| l.contains(label)))
}

#[tokio::test]
async fn metrics_count_requests_by_route_method_and_status() {
    let hearth = Hearth::start().await;
    assert_eq!(hearth.get("/health").send().await.unwrap().status(), 200);
    let response = hearth.get("/metrics").send().await.unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    let text = response.text().await.unwrap();
    let labels = [r#"route="/health""#, r#"method="GET""#, r#"status="200""#];
    assert!(has_line(&text, "hearth_http_requests_total{", &labels), "{text}");
    assert!(has_line(&text, "hearth_http_request_duration_seconds_bucket{", &labels), "{text}");
}

/// Invented methods and paths do not grow the label set: they are counted as `other` and
/// `unmatched`, whatever they are.
#[tokio::test]
async fn metrics_labels_stay_bounded_whatever_clients_send() {
    let hearth = Hearth::start().await;
    let client = reqwest::Client::new();
    for i in 0..5 {
        let method = reqwest::Method::from_bytes(format!("INVENTED{i}").as_bytes()).unwrap();
        client.request(method, hearth.url(&format!("/nowhere/{i}"))).send().await.unwrap();
    }
    let text = hearth.get("/metrics").send().await.unwrap().text().await.unwrap();
    assert!(!text.contains("INVENTED") && !text.contains("/nowhere"), "{text}");
    let labels = [r#"route="unmatched""#, r#"method="other""#];
    assert!(has_line(&text, "hearth_http_requests_total{", &labels), "{text}");
}

#[tokio::test]
async fn metrics_token_is_enforced_when_set() {
    let hearth = Hearth::options().env("HEARTH_METRICS_TOKEN", "metrics-secret-1").start().await;
    assert_eq!(hearth.get("/metrics").send().await.unwrap().status(), 401);
    assert_eq!(hearth.get_with_key("/metrics", "wrong").send().await.unwrap().status(), 401);
    assert_eq!(hearth.get("/health").send().await.unwrap().status(), 200, "health stays open");
    let response = hearth.get_with_key("/metrics", "metrics-secret-1").send().await.unwrap();
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    assert!(
        has_line(&text, "hearth_http_requests_total{", &[r#"route="/metrics""#, r#"status="401""#]),
        "{text}"
    );
}

#[tokio::test]
async fn first_run_prints_credentials_once_and_stores_only_their_hashes() {
    let mut hearth = Hearth::start().await;
    let key = hearth.api_key().expect("first run prints an API key");
    let admin = hearth.admin_token().expect("first run prints an admin token");
    assert!(key.starts_with("hk_") && key.len() > 20, "{key}");
    assert!(admin.starts_with("hadm_") && admin.len() > 20, "{admin}");

    let response = hearth.get_with_key("/v1/models", &key).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert!(body["data"].as_array().unwrap().iter().any(|m| m["id"] == "echo"), "{body}");
    assert_unauthorized(hearth.get_with_key("/v1/models", "hk_not-a-real-key").send().await.unwrap()).await;
    assert_unauthorized(hearth.get_with_key("/v1/models", &admin).send().await.unwrap()).await;
    assert_unauthorized(hearth.get("/v1/models").send().await.unwrap()).await;
    assert_not_stored(&hearth.db_path(), &[&key, &admin]);

    hearth.sigterm();
    assert!(hearth.wait_exit(Duration::from_secs(15)).await.success());
    assert_not_stored(&hearth.db_path(), &[&key, &admin]);

    hearth.restart().await;
    assert_eq!(hearth.api_key(), None);
    assert_eq!(hearth.admin_token(), None);
    let stderr = hearth.stderr();
    assert!(!stderr.contains("first run") && !stderr.contains(&key) && !stderr.contains(&admin), "{stderr}");
    assert_eq!(models_status(&hearth, &key).await, 200, "the key survives a restart");
    assert_not_stored(&hearth.db_path(), &[&key, &admin]);
}

#[tokio::test]
async fn environment_credentials_replace_the_first_run_ones() {
    let static_key = "static-test-key-7f3a";
    let admin = "admin-test-token-9c2e";
    let hearth =
        Hearth::options().env("GATEWAY_API_KEY", static_key).env("HEARTH_ADMIN_TOKEN", admin).start().await;
    assert_eq!(hearth.api_key(), None);
    assert_eq!(hearth.admin_token(), None);
    let stderr = hearth.stderr();
    assert!(!stderr.contains("first run"), "{stderr}");
    assert!(!stderr.contains(static_key) && !stderr.contains(admin), "secrets were logged:\n{stderr}");

    assert_eq!(models_status(&hearth, static_key).await, 200);
    assert_unauthorized(hearth.get_with_key("/v1/models", "static-test-key-7f3b").send().await.unwrap())
        .await;

    let out = hearth_cmd(&hearth.db_path(), &["keys", "list", "--json"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let keys: Value = serde_json::from_str(&stdout_of(&out)).unwrap();
    assert_eq!(keys, json!([]));
}

#[tokio::test]
async fn a_static_key_alone_still_gets_an_admin_token() {
    let hearth = Hearth::options().env("GATEWAY_API_KEY", "static-only-key-0123").start().await;
    assert!(hearth.admin_token().is_some_and(|t| t.starts_with("hadm_")), "{}", hearth.stderr());
    assert_eq!(hearth.api_key(), None);
    assert_eq!(models_status(&hearth, "static-only-key-0123").await, 200);
}

#[tokio::test]
async fn the_legacy_static_key_alias_is_accepted() {
    let hearth = Hearth::options().env("MESHI_RUNTIME_API_KEY", "legacy-key-42").start().await;
    assert_eq!(hearth.api_key(), None, "no API key is created when the legacy key is set");
    assert_eq!(models_status(&hearth, "legacy-key-42").await, 200);
    assert_eq!(models_status(&hearth, "legacy-key-43").await, 401);
}

#[tokio::test]
async fn a_killed_server_restarts_on_the_same_database() {
    let mut hearth = Hearth::start().await;
    let key = hearth.api_key().unwrap();
    assert_eq!(models_status(&hearth, &key).await, 200);
    hearth.kill9();
    hearth.restart().await;
    assert_eq!(hearth.api_key(), None, "a crash does not make the next start a first run");
    assert_eq!(hearth.get("/ready").send().await.unwrap().status(), 200);
    assert_eq!(models_status(&hearth, &key).await, 200);
}

#[test]
fn bad_settings_stop_start_up_naming_the_setting() {
    let cases = [
        ("PORT", "notaport"),
        ("HEARTH_AUTO_MIGRATE", "maybe"),
        ("HEARTH_MAX_BODY", "lots"),
        ("HEARTH_HOST", "not-an-address"),
        ("HEARTH_WORKERS", "65536"),
        ("HEARTH_LOG_FORMAT", "xml"),
        ("HEARTH_RUNNER_RAMP", "nosuchrunner=10"),
    ];
    for (name, value) in cases {
        let dir = support::data_dir();
        let mut cmd = support::command(&support::db_in(dir.path()));
        // PORT=0 first, so a setting that is wrongly accepted cannot collide on 8080.
        let out = support::run(cmd.arg("serve").env("PORT", "0").env(name, value));
        let stderr = stderr_of(&out);
        assert_eq!(out.status.code(), Some(2), "{name}={value}: {stderr}");
        assert!(stderr.contains(name), "{name}={value}: the message does not name {name}:\n{stderr}");
        assert!(!stderr.contains("\"listening\""), "{name}={value}: started anyway");
    }
}

#[test]

fn a_rejected_secret_is_not_echoed() {
    let dir = support::data_dir();
    let mut cmd = support::command(&support::db_in(dir.path()));
    let out = support::run(cmd.arg("serve").env("PORT", "0").env("GATEWAY_API_KEY", "leaky secret"));
    let stderr = stderr_of(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("GATEWAY_API_KEY"), "{stderr}");
    assert!(!stderr.contains("leaky secret"), "the secret's value is shown:\n{stderr}");
}

#[test]
fn a_bad_flag_names_its_environment_variable_too() {
    let dir = support::data_dir();
    let out = support::run(support::command(&support::db_in(dir.path())).args(["serve", "--port", "x"]));
    let stderr = stderr_of(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--port") && stderr.contains("PORT"), "{stderr}");
}

#[tokio::test]
async fn auto_migrate_off_refuses_an_unmigrated_database_until_hearth_migrate() {
    let dir = support::data_dir();
    let db = support::db_in(dir.path());
    let serve = || {
        let mut cmd = support::command(&db);
        cmd.args(["serve", "--host", "127.0.0.1", "--port", "0"]).env("HEARTH_AUTO_MIGRATE", "false");
        cmd
    };
    let out = support::run(&mut serve());
    let stderr = stderr_of(&out);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("hearth migrate"), "{stderr}");

    let migrate = hearth_cmd(&db, &["migrate"]);
    assert!(migrate.status.success(), "{}", stderr_of(&migrate));
    let hearth = Hearth::options().env("HEARTH_AUTO_MIGRATE", "false").start_in(dir).await;
    assert_eq!(hearth.get("/ready").send().await.unwrap().status(), 200);
}

#[tokio::test]

async fn boolean_settings_take_a_value_as_flags_too() {
    let dir = support::data_dir();
    let db = support::db_in(dir.path());
    let out = support::run(support::command(&db).args(["serve", "--port", "0", "--auto-migrate", "false"]));
    let stderr = stderr_of(&out);
    assert!(!out.status.success() && stderr.contains("hearth migrate"), "{stderr}");
    hearth_cmd(&db, &["migrate"]);
    let hearth =
        Hearth::options().arg("--auto-migrate=false").arg("--require-user=false").start_in(dir).await;
    assert_eq!(hearth.get("/ready").send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn the_default_address_listens_on_ipv4_and_ipv6() {
    let hearth = Hearth::options().default_host().start().await;
    let listening = hearth.wait_for_log(Duration::from_secs(5), |l| l["message"] == "listening").await;
    let addr = listening["addr"].as_str().unwrap_or_default().to_owned();
    assert!(addr.starts_with("[::]:"), "the default address is ::, dual-stack: {listening}");
    // The harness talks to 127.0.0.1: IPv4 reaches a socket bound to `::`.
    assert_eq!(hearth.get("/health").send().await.unwrap().status(), 200);
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("this machine has no IPv6 loopback: skipping the [::1] half");
        return;
    }
    let port = addr.rsplit(':').next().unwrap();
    let client = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(10)).build().unwrap();
    let response = client.get(format!("http://[::1]:{port}/health")).send().await;
    let response = response.unwrap_or_else(|e| panic!("no answer over [::1]:{port}: {e}"));
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn sigterm_stops_an_idle_server_cleanly_and_promptly() {
    let mut hearth = Hearth::start().await;
    assert_eq!(hearth.get("/health").send().await.unwrap().status(), 200);
    let started = Instant::now();
    hearth.sigterm();
    let status = hearth.wait_exit(Duration::from_secs(20)).await;
    let took = started.elapsed();
    assert_eq!(status.code(), Some(0), "{}", hearth.stderr());
    assert!(took < Duration::from_secs(5), "an idle server took {took:?} to stop");
    let logs = hearth.log_lines();
    let stderr = hearth.stderr();
    assert!(logs.iter().any(|l| l["message"] == "signal received" && l["signal"] == "SIGTERM"), "{stderr}");
    assert!(logs.iter().any(|l| l["message"] == "stopped; database closed"), "{stderr}");
}

#[tokio::test]
async fn sigterm_during_a_slow_request_lets_it_finish() {
    let mut hearth = Hearth::options().env("HEARTH_TEST_TOOLS", "true").start().await;
    let key = hearth.api_key().unwrap();
    let client = reqwest::Client::new();
    let run: Value = client
        .post(hearth.url("/v1/runs"))
        .bearer_auth(&key)
        .json(&json!({"model": "echo", "messages": [{"role": "user", "content": "call:test__sleep {\"ms\":1500}"}]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let url = hearth.url(&format!("/v1/runs/{}?wait=20", run["id"].as_str().unwrap()));
    let slow = tokio::spawn(async move { client.get(url).bearer_auth(key).send().await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    hearth.sigterm();
    let response = slow.await.unwrap().expect("the in-flight request gets its answer");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "completed", "the run in flight finished during the grace period: {body}");
    assert_eq!(body["output"]["content"], "slept");
    let status = hearth.wait_exit(Duration::from_secs(30)).await;
    assert_eq!(status.code(), Some(0), "{}", hearth.stderr());
}

#[tokio::test]
async fn every_request_log_line_carries_the_response_request_id() {
    let hearth = Hearth::start().await;
    let key = hearth.api_key().unwrap();
    let requests = [
        hearth.get("/health"),
        hearth.get("/ready"),
        hearth.get("/metrics"),
        hearth.get("/v1/models"),
        hearth.get_with_key("/v1/models", &key),
        hearth.get("/no/such/route"),
    ];
    let mut ids = HashSet::new();
    for request in requests {
        let response = request.send().await.unwrap();
        let id = response.headers().get("x-request-id").expect("an x-request-id header");
        let id = id.to_str().unwrap().to_owned();
        assert!(!id.is_empty());
        let path = response.url().path().to_owned();
        hearth
            .wait_for_log(Duration::from_secs(5), |l| {
                l["span"]["request.id"] == id.as_str() && l["span"]["http.path"] == path.as_str()
            })
            .await;
        assert!(ids.insert(id), "request ids must be unique");
    }
    for line in hearth.log_lines() {
        if line["span"]["name"] == "request" {
            let id = line["span"]["request.id"].as_str().unwrap_or_default();
            assert!(ids.contains(id), "a request's log line without its request id: {line}");
        }
    }
}

#[tokio::test]
async fn a_client_request_id_is_kept_only_when_it_is_plain_and_short() {
    let hearth = Hearth::start().await;
    let echoed = |id: &str| {
        let request = hearth.get("/health").header("x-request-id", id);
        async move {
            let response = request.send().await.unwrap();
            response.headers()["x-request-id"].to_str().unwrap().to_owned()
        }
    };
    assert_eq!(echoed("trace-42.a_b:c").await, "trace-42.a_b:c");
    let long = "x".repeat(129);
    for hostile in [r#"x" level="ERROR"#, "<script>alert(1)</script>", long.as_str(), "a b"] {
        let id = echoed(hostile).await;
        assert_ne!(id, hostile, "an unfit request id was kept");
        assert!(uuid::Uuid::parse_str(&id).is_ok(), "no fresh id made for {hostile:?}: {id}");
        hearth.wait_for_log(Duration::from_secs(5), |l| l["span"]["request.id"] == id.as_str()).await;
    }
    assert!(!hearth.stderr().contains("<script>"), "a hostile request id reached the log");
}
