//! `hearth check --url URL`: the post-deploy integration check. With the admin token
//! (`HEARTH_ADMIN_TOKEN`, or `--admin-token @FILE`) it mints a temporary API key through the
//! admin API, drives a chat turn answered whole and one streamed, reads the run, its event log
//! and its session back through the API, revokes the key (whatever happened before), proves the
//! revoked key is refused, and prints one line per step and a summary. Exit 0 when every step
//! passed, 1 otherwise, 2 for bad settings.

use std::time::{Duration, Instant};

use clap::Args;
use serde_json::{Value, json};

use super::client::{Answer, Api, Verb};
use super::{ConfigError, Exit, output};
use crate::config::Secret;

/// `hearth check` settings.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The deployed hearth to check.
    #[arg(long, env = "HEARTH_URL", value_name = "URL")]
    pub url: String,
    /// Its admin token: in the environment, or `@FILE` (a value on the command line is refused).
    #[arg(long, env = "HEARTH_ADMIN_TOKEN", value_name = "@FILE", hide_env_values = true)]
    pub admin_token: Option<Secret>,
    /// The model of the check's turns (`echo` answers with the input, checked word for word).
    #[arg(long, value_name = "NAME", default_value = "echo")]
    pub model: String,
    /// The organization the temporary key belongs to.
    #[arg(long, value_name = "SLUG", default_value = "default")]
    pub org: String,
}

/// The outcome of the steps so far.
struct Report {
    passed: usize,
    failed: usize,
}

impl Report {
    fn step(
        &mut self,
        name: &str,
        started: Instant,
        outcome: Result<String, String>,
    ) -> anyhow::Result<bool> {
        let ms = started.elapsed().as_millis();
        let ok = outcome.is_ok();
        let line = match outcome {
            Ok(detail) if detail.is_empty() => format!("ok    {name} ({ms} ms)"),
            Ok(detail) => format!("ok    {name} ({ms} ms): {detail}"),
            Err(why) => format!("FAIL  {name} ({ms} ms): {why}"),
        };
        output::line(&line)?;
        if ok {
            self.passed += 1;
        } else {
            self.failed += 1;
        }
        Ok(ok)
    }
}

/// Runs the check.
///
/// # Errors
/// [`ConfigError`] without an admin token; [`Exit`] 1 when a step failed.
pub async fn run(args: CheckArgs) -> anyhow::Result<()> {
    let token = args.admin_token.as_ref().ok_or_else(|| {
        ConfigError(
            "hearth check needs the admin token: set HEARTH_ADMIN_TOKEN, or pass --admin-token @FILE".into(),
        )
    })?;
    let client = crate::llm::http::client(Duration::from_secs(10), Duration::from_secs(60))
        .map_err(|e| anyhow::anyhow!("HTTP client: {e}"))?;
    let base = args.url.trim_end_matches('/').to_owned();
    let admin =
        Api { client: client.clone(), base: base.clone(), auth: format!("Bearer {}", token.expose()) };
    let mut report = Report { passed: 0, failed: 0 };

    let at = Instant::now();
    let health = admin.send(Verb::Get, "ready").await;
    report.step("ready", at, expect(health, 200).map(|r| format!("role {}", r.json()["role"])))?;

    let at = Instant::now();
    let name = format!("hearth-check-{}", crate::db::now_ms());
    let minted =
        expect(admin.send(Verb::Post(&json!({"org": args.org, "name": name})), "admin/api/keys").await, 201);
    let key = minted.as_ref().ok().and_then(|a| {
        let v = a.json();
        Some((v["id"].as_str()?.to_owned(), v["secret"].as_str()?.to_owned()))
    });
    let mint_outcome = match (&minted, &key) {
        (Ok(_), Some((id, _))) => Ok(format!("temporary key {id}")),
        (Ok(a), None) => Err(format!("no id and secret in {}", a.json())),
        (Err(e), _) => Err(e.clone()),
    };
    report.step("mint a temporary API key (admin API)", at, mint_outcome)?;
    if let Some((id, secret)) = key {
        let api = Api { client, base: base.clone(), auth: format!("Bearer {secret}") };
        turns(&api, &args.model, &mut report).await?;
        let at = Instant::now();
        let revoked =
            expect(admin.send(Verb::Delete, &format!("admin/api/keys/{id}")).await, 200).and_then(|a| {
                if a.json()["revoked"] == true { Ok(String::new()) } else { Err(a.json().to_string()) }
            });
        report.step("revoke the temporary key", at, revoked)?;
        let at = Instant::now();
        let refused = expect(api.send(Verb::Get, "v1/models").await, 401).map(|_| String::new());
        report.step("the revoked key is refused", at, refused)?;
    }
    output::line(&format!(
        "hearth check {}: {} passed, {} failed ({base})",
        if report.failed == 0 { "passed" } else { "FAILED" },
        report.passed,
        report.failed
    ))?;
    if report.failed == 0 { Ok(()) } else { Err(Exit(1).into()) }
}

/// The chat turns and the reads of their run, event log and session.
async fn turns(api: &Api, model: &str, report: &mut Report) -> anyhow::Result<()> {
    let text = format!("hearth check {}", crate::db::now_ms());
    let at = Instant::now();
    let body = json!({"model": model, "messages": [{"role": "user", "content": text}]});
    let whole = expect(api.send(Verb::Post(&body), "v1/chat/completions").await, 200);
    let ids = whole.as_ref().ok().map(|a| (header(a, "x-run-id"), header(a, "x-session-id")));
    let outcome = whole.and_then(|a| {
        let content = a.json()["choices"][0]["message"]["content"].as_str().map(str::to_owned);
        match content {
            Some(c) if model != "echo" || c == text => Ok(format!("{} characters", c.len())),
            Some(c) => Err(format!("echo answered {c:?}, not {text:?}")),
            None => Err(format!("no answer in {}", a.json())),
        }
    });
    report.step("chat turn answered whole", at, outcome)?;

    let at = Instant::now();
    let streamed = json!({"model": model, "stream": true, "messages": [{"role": "user", "content": text}]});
    let outcome = expect(api.send(Verb::Post(&streamed), "v1/chat/completions").await, 200).and_then(|a| {
        let body = String::from_utf8_lossy(&a.body).into_owned();
        let frames: Vec<&str> = body.lines().filter_map(|l| l.strip_prefix("data: ")).collect();
        if frames.last() != Some(&"[DONE]") {
            return Err("the stream did not end with data: [DONE]".into());
        }
        let content: String = frames
            .iter()
            .filter_map(|f| serde_json::from_str::<Value>(f).ok())
            .filter_map(|c| c["choices"][0]["delta"]["content"].as_str().map(str::to_owned))
            .collect();
        if model == "echo" && content != text {
            return Err(format!("echo streamed {content:?}, not {text:?}"));
        }
        Ok(format!("{} chunks", frames.len()))
    });
    report.step("chat turn streamed", at, outcome)?;

    let Some((Some(run), Some(session))) = ids else {
        let at = Instant::now();
        return report
            .step("the turn's run and session", at, Err("no X-Run-Id / X-Session-Id".into()))
            .map(|_| ());
    };
    let at = Instant::now();
    let outcome = expect(api.send(Verb::Get, &format!("v1/runs/{run}")).await, 200).and_then(|a| {
        let v = a.json();
        if v["status"] == "completed" {
            Ok(format!("{run} completed"))
        } else {
            Err(format!("run is {}", v["status"]))
        }
    });
    report.step("read the run", at, outcome)?;

    let at = Instant::now();
    let outcome = expect(api.send(Verb::Get, &format!("v1/runs/{run}/events?offset=-1")).await, 200)
        .and_then(|a| event_log(&a.json()));
    report.step("read the run's event log", at, outcome)?;

    let at = Instant::now();
    let outcome = expect(api.send(Verb::Get, &format!("v1/sessions/{session}")).await, 200).and_then(|a| {
        let v = a.json();
        let has_run = v["runs"].as_array().is_some_and(|runs| runs.iter().any(|r| r["id"] == run.as_str()));
        let messages = v["messages"].as_array().map_or(0, Vec::len);
        if has_run && messages >= 2 {
            Ok(format!("{messages} messages"))
        } else {
            Err(format!("the session lacks the run or its messages: {v}"))
        }
    });
    report.step("read the session", at, outcome)?;
    Ok(())
}

/// Events numbered 1..n without a gap, `run.queued` first, exactly one terminal event, last.
fn event_log(events: &Value) -> Result<String, String> {
    let events = events.as_array().ok_or_else(|| format!("not a list: {events}"))?;
    let seqs: Vec<i64> = events.iter().filter_map(|e| e["seq"].as_i64()).collect();
    if seqs != (1..=i64::try_from(events.len()).unwrap_or(0)).collect::<Vec<_>>() {
        return Err(format!("seqs are not 1..n: {seqs:?}"));
    }
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
    let terminal =
        kinds.iter().filter(|k| matches!(**k, "run.completed" | "run.failed" | "run.cancelled")).count();
    if kinds.first() != Some(&"run.queued") || terminal != 1 || kinds.last() != Some(&"run.completed") {
        return Err(format!("unexpected event types: {kinds:?}"));
    }
    Ok(format!("{} events", events.len()))
}

fn header(answer: &Answer, name: &str) -> Option<String> {
    answer.headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

/// The answer when it has `status`, else why not.
fn expect(answer: anyhow::Result<Answer>, status: u16) -> Result<Answer, String> {
    match answer {
        Ok(a) if a.status.as_u16() == status => Ok(a),
        Ok(a) => Err(format!("HTTP {} (expected {status}): {}", a.status.as_u16(), a.message())),
        Err(e) => Err(e.to_string()),
    }
}
