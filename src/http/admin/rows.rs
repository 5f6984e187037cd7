//! The rows the admin templates print, made from the service's values: every field is plain
//! text (or a number or flag), formatted here, escaped by the template.

use super::pages::FilterView;
use super::view::{self, When};
use crate::admin::{KeyListing, RunnerLoad, TimedRun, WorkerView};
use crate::db::flag_changes::FlagChange;
use crate::db::run_stats::FailedRun;
use crate::db::session_search::SessionListing;
use crate::domain::message::Message;
use crate::runner::OrgRunner;

/// A runner on the overview.
pub(super) struct RunnerRow {
    pub(super) runner: String,
    pub(super) queued: i64,
    pub(super) oldest_wait: String,
    pub(super) healthy: usize,
    pub(super) unhealthy: usize,
    pub(super) configured: bool,
}

impl From<&RunnerLoad> for RunnerRow {
    fn from(r: &RunnerLoad) -> Self {
        Self {
            runner: r.runner.clone(),
            queued: r.queued,
            oldest_wait: if r.queued == 0 { "—".into() } else { view::duration(r.oldest_wait_ms) },
            healthy: r.healthy_workers,
            unhealthy: r.unhealthy_workers,
            configured: r.configured,
        }
    }
}

/// A recent failure on the overview.
pub(super) struct FailureRow {
    pub(super) run_id: String,
    pub(super) session_id: String,
    pub(super) runner: String,
    pub(super) finished: When,
    pub(super) code: String,
    pub(super) message: String,
}

impl FailureRow {
    pub(super) fn new(f: &FailedRun, now: i64) -> Self {
        Self {
            run_id: f.id.to_string(),
            session_id: f.session_id.to_string(),
            runner: f.runner.clone(),
            finished: When::at(f.finished_at, now),
            code: f.code.clone().unwrap_or_else(|| "error".into()),
            message: f.message.clone().unwrap_or_default(),
        }
    }
}

/// A worker on the workers page.
pub(super) struct WorkerRow {
    pub(super) id: String,
    pub(super) name: String,
    pub(super) runtime: String,
    pub(super) version: String,
    pub(super) below_minimum: bool,
    pub(super) hostname: String,
    pub(super) heartbeat: When,
    pub(super) healthy: bool,
    pub(super) draining: bool,
    pub(super) stale: bool,
    pub(super) in_flight: i64,
    pub(super) capacity: i64,
    pub(super) embedded: bool,
    pub(super) can_drain: bool,
}

impl WorkerRow {
    pub(super) fn new(v: &WorkerView, now: i64) -> Self {
        let w = &v.worker;
        let draining = w.status == "draining";
        Self {
            id: w.id.to_string(),
            name: w.name.clone(),
            runtime: w.runtime.clone(),
            version: w.version.clone(),
            below_minimum: v.below_minimum == Some(true),
            hostname: w.hostname.clone(),
            heartbeat: When::at(w.last_heartbeat_at, now),
            healthy: v.healthy,
            draining,
            stale: v.heartbeat_stale,
            in_flight: w.in_flight,
            capacity: w.capacity,
            embedded: w.embedded,
            can_drain: !w.embedded && !draining,
        }
    }
}

/// The badge class of a session status.
pub(super) fn session_class(status: &str) -> &'static str {
    if status == "running" { "run" } else { "muted" }
}

/// The badge class of a run status.
fn run_class(status: &str) -> &'static str {
    match status {
        "completed" => "ok",
        "failed" => "bad",
        "cancelled" => "warn",
        "queued" => "muted",
        _ => "run",
    }
}

/// A session in the listing.
pub(super) struct SessionRowView {
    pub(super) id: String,
    pub(super) org: String,
    pub(super) org_id: String,
    pub(super) user: String,
    pub(super) status: String,
    pub(super) status_class: &'static str,
    pub(super) runner: String,
    pub(super) created: When,
    pub(super) updated: When,
}

impl SessionRowView {
    pub(super) fn new(s: &SessionListing, now: i64) -> Self {
        Self {
            id: s.id.to_string(),
            org: s.org_slug.clone().unwrap_or_default(),
            org_id: s.organization_id.to_string(),
            user: s.user_id.clone().unwrap_or_else(|| "—".into()),
            status_class: session_class(&s.status),
            status: s.status.clone(),
            runner: s.runner.clone().unwrap_or_else(|| "—".into()),
            created: When::at(s.created_at, now),
            updated: When::at(s.updated_at, now),
        }
    }
}

/// An event in a run's timeline.
pub(super) struct EventView {
    pub(super) seq: i64,
    pub(super) kind: &'static str,
    pub(super) class: &'static str,
    pub(super) offset: String,
    pub(super) abs: String,
    pub(super) data: String,
}

/// A run on the session page, with its timeline.
pub(super) struct RunView {
    pub(super) id: String,
    pub(super) status: String,
    pub(super) status_class: &'static str,
    pub(super) runner: String,
    pub(super) attempt: i64,
    pub(super) worker: String,
    pub(super) created: When,
    pub(super) took: String,
    pub(super) error: String,
    pub(super) events: Vec<EventView>,
    pub(super) truncated: bool,
}

impl RunView {
    pub(super) fn new(t: &TimedRun, now: i64) -> Self {
        let r = &t.run;
        let status = r.status.as_str();
        let events = t
            .events
            .iter()
            .map(|e| {
                let kind = e.kind().as_str();
                let class = match kind {
                    "run.completed" => "ok",
                    "run.failed" => "bad",
                    "run.cancelled" => "warn",
                    _ => "muted",
                };
                EventView {
                    seq: e.seq,
                    kind,
                    class,
                    offset: view::duration(e.created_at.saturating_sub(r.created_at).max(0)),
                    abs: view::absolute(e.created_at),
                    data: view::compact(&e.data, 400),
                }
            })
            .collect();
        Self {
            id: r.id.to_string(),
            status: status.to_owned(),
            status_class: run_class(status),
            runner: r.runner.clone(),
            attempt: r.attempt,
            worker: r.claimed_by.as_ref().map_or_else(|| "—".into(), ToString::to_string),
            created: When::at(r.created_at, now),
            took: r
                .finished_at
                .map_or_else(|| "—".into(), |f| view::duration(f.saturating_sub(r.created_at))),
            error: r.error.as_ref().map(|e| format!("{}: {}", e.code, e.message)).unwrap_or_default(),
            events,
            truncated: t.truncated,
        }
    }
}

/// A message of the conversation.
pub(super) struct MessageView {
    pub(super) role: &'static str,
    pub(super) content: String,
    pub(super) tool_calls: String,
    pub(super) tool_call_id: String,
}

impl From<&Message> for MessageView {
    fn from(m: &Message) -> Self {
        Self {
            role: m.role.as_str(),
            content: m.content.clone().unwrap_or_default(),
            tool_calls: if m.tool_calls.is_empty() { String::new() } else { view::pretty(&m.tool_calls) },
            tool_call_id: m.tool_call_id.clone().unwrap_or_default(),
        }
    }
}

/// An organization in the list.
pub(super) struct OrgRow {
    pub(super) slug: String,
    pub(super) name: String,
    pub(super) id: String,
    pub(super) flag: String,
    pub(super) effective: String,
    pub(super) reason: String,
}

impl From<&OrgRunner> for OrgRow {
    fn from(o: &OrgRunner) -> Self {
        let flag = o
            .runner_default
            .as_ref()
            .map_or_else(String::new, |v| v.as_str().map_or_else(|| v.to_string(), str::to_owned));
        Self {
            slug: o.organization.slug.clone(),
            name: o.organization.name.clone(),
            id: o.organization.id.to_string(),
            flag,
            effective: o.effective_runner.clone(),
            reason: o.runner_reason.clone(),
        }
    }
}

/// An audit row.
pub(super) struct ChangeRow {
    pub(super) at: When,
    pub(super) old: String,
    pub(super) new: String,
    pub(super) actor: String,
    pub(super) forced: bool,
    pub(super) reason: String,
}

impl ChangeRow {
    pub(super) fn new(c: &FlagChange, now: i64) -> Self {
        let runner = |r: &Option<String>| r.clone().unwrap_or_else(|| "—".into());
        Self {
            at: When::at(c.at, now),
            old: runner(&c.old),
            new: runner(&c.new),
            actor: c.actor.clone(),
            forced: c.forced,
            reason: c.reason.clone().unwrap_or_default(),
        }
    }
}

/// An API key in the list.
pub(super) struct KeyRow {
    pub(super) id: String,
    pub(super) org: String,
    pub(super) name: String,
    pub(super) prefix: String,
    pub(super) status: &'static str,
    pub(super) status_class: &'static str,
    pub(super) created: When,
    pub(super) last_used: When,
}

impl KeyRow {
    pub(super) fn new(k: &KeyListing, now: i64) -> Self {
        let key = &k.key;
        let (status, status_class) = if key.revoked_at.is_some() {
            ("revoked", "bad")
        } else if key.expires_at.is_some_and(|at| at <= now) {
            ("expired", "warn")
        } else {
            ("active", "ok")
        };
        Self {
            id: key.id.to_string(),
            org: k.org_slug.clone().unwrap_or_default(),
            name: key.name.clone(),
            prefix: key.prefix.clone(),
            status,
            status_class,
            created: When::at(key.created_at, now),
            last_used: When::maybe(key.last_used_at, now),
        }
    }
}

/// Percent-encodes a query-string value (everything but unreserved characters).
pub(super) fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The filters as a query string prefix (`org=a&status=idle&`), empty ones left out.
pub(super) fn filter_query(f: &FilterView) -> String {
    let pairs = [
        ("org", &f.org),
        ("status", &f.status),
        ("runner", &f.runner),
        ("user", &f.user),
        ("since", &f.since),
        ("until", &f.until),
    ];
    pairs.iter().filter(|(_, v)| !v.is_empty()).map(|(k, v)| format!("{k}={}&", encode(v))).collect()
}
