//! Changing an organization's runner flag (`features.runner_default`): the healthy-worker guard
//! with the version gate, and the audit in `flag_changes`.

use crate::db::flag_changes::{self, FlagChange};
use crate::db::{Db, DbError, organizations, workers};
use crate::domain::version::{MinVersions, Version};

use super::HEALTHY_WITHIN_MS;

/// Why a runner flag could not be changed.
#[derive(Debug, thiserror::Error)]
pub enum FlagError {
    /// No organization has this slug.
    #[error("no organization with slug `{0}`")]
    UnknownOrg(String),
    /// The runner is not one of HEARTH_RUNNERS.
    #[error("unknown runner `{0}` (HEARTH_RUNNERS lists the runners)")]
    UnknownRunner(String),
    /// No healthy worker of the runtime at or above its minimum version, and the change was not
    /// forced.
    #[error("{}", no_healthy_worker(.runtime, .minimum.as_ref(), .older))]
    NoHealthyWorker {
        /// The runtime the flag would send runs to.
        runtime: String,
        /// Its minimum version (HEARTH_RUNNER_MIN_VERSION), if it has one.
        minimum: Option<Version>,
        /// The healthy workers of the runtime below that minimum, as `name (version)`.
        older: Vec<String>,
    },
    /// Storage failed.
    #[error(transparent)]
    Db(#[from] DbError),
}

fn no_healthy_worker(runtime: &str, minimum: Option<&Version>, older: &[String]) -> String {
    let at = minimum.map(|v| format!(" at version ≥ {v} (HEARTH_RUNNER_MIN_VERSION)")).unwrap_or_default();
    let older = if older.is_empty() {
        String::new()
    } else {
        format!("; the healthy ones run older versions: {}", older.join(", "))
    };
    format!(
        "no healthy worker of runtime `{runtime}`{at} is registered (healthy: active, with a \
         heartbeat within 2 minutes; see `hearth workers list`){older}; start one, or pass --force \
         to set the flag anyway (audited as forced)"
    )
}

/// A requested change of an organization's `runner_default` flag.
#[derive(Debug, Clone)]
pub struct FlagUpdate {
    /// The organization's slug.
    pub org_slug: String,
    /// The runner, or `None` to clear the flag.
    pub runner: Option<String>,
    /// Skip the healthy-worker check (audited).
    pub force: bool,
    /// Who asks.
    pub actor: String,
    /// Why.
    pub reason: Option<String>,
}

/// What a flag change is checked against: the settings `serve` runs with.
#[derive(Debug, Clone, Copy)]
pub struct FlagPolicy<'a> {
    /// The runner pools (HEARTH_RUNNERS): a flag must name one of them.
    pub runners: &'a [String],
    /// The minimum worker version per runtime (HEARTH_RUNNER_MIN_VERSION): only a healthy worker
    /// at or above it lets a flag be set to its runtime unforced.
    pub min_versions: &'a MinVersions,
}

/// Sets or clears `runner_default`, audited in `flag_changes`. Affects only new dispatches.
///
/// Setting runner X is refused unless at least one healthy worker of runtime X (active, a
/// heartbeat within [`HEALTHY_WITHIN_MS`]) runs a version at or above X's minimum, unless the
/// update is forced. Clearing is never refused: it sends new dispatches back to the ramp or the
/// default runner.
///
/// # Errors
/// Unknown organization or runner, no healthy worker (unless forced), or storage failure.
pub async fn set_runner_flag(
    db: &Db,
    policy: FlagPolicy<'_>,
    update: FlagUpdate,
) -> Result<FlagChange, FlagError> {
    if let Some(runner) = &update.runner
        && !policy.runners.contains(runner)
    {
        return Err(FlagError::UnknownRunner(runner.clone()));
    }
    let min_versions = policy.min_versions.clone();
    db.write(move |conn| {
        let now = crate::db::now_ms();
        let Some(org) = organizations::find_organization_by_slug(conn, &update.org_slug)? else {
            return Ok(Err(FlagError::UnknownOrg(update.org_slug)));
        };
        if let Some(runner) = &update.runner
            && !update.force
            && let Err(refused) = guard(conn, &min_versions, runner, now)?
        {
            return Ok(Err(refused));
        }
        let mut features = org.features.clone();
        let old = flag_text(&features);
        match (&update.runner, features.as_object_mut()) {
            (Some(r), Some(map)) => {
                map.insert("runner_default".into(), serde_json::json!(r));
            }
            (None, Some(map)) => {
                map.remove("runner_default");
            }
            (runner, None) => features = serde_json::json!({"runner_default": runner}),
        }
        organizations::update_features(conn, &org.id, &features, now)?;
        let change = FlagChange {
            organization_id: org.id,
            old,
            new: update.runner,
            actor: update.actor,
            reason: update.reason,
            forced: update.force,
            at: now,
        };
        flag_changes::insert_flag_change(conn, &change)?;
        Ok(Ok(change))
    })
    .await?
}

/// The flag as the audit records it: a runner name, or the JSON text of a malformed value.
fn flag_text(features: &serde_json::Value) -> Option<String> {
    match features.get("runner_default")? {
        serde_json::Value::Null => None,
        serde_json::Value::String(runner) => Some(runner.clone()),
        other => Some(other.to_string()),
    }
}

/// The healthy-worker guard: the healthy workers of `runtime` are read with SQL, and their
/// versions compared with the minimum here, as versions (never as text in SQL).
fn guard(
    conn: &rusqlite::Connection,
    min_versions: &MinVersions,
    runtime: &str,
    now: i64,
) -> Result<Result<(), FlagError>, DbError> {
    let healthy = workers::list_healthy_workers(conn, runtime, now - HEALTHY_WITHIN_MS)?;
    if healthy.iter().any(|w| min_versions.admits(runtime, &w.version)) {
        return Ok(Ok(()));
    }
    Ok(Err(FlagError::NoHealthyWorker {
        runtime: runtime.to_owned(),
        minimum: min_versions.minimum(runtime),
        older: healthy.iter().map(|w| format!("{} ({})", w.name, w.version)).collect(),
    }))
}
