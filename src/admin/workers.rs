//! Workers as an operator sees them: the registry row plus what follows from the time now —
//! heartbeat age, health, and whether the version is below the runtime's minimum — and the
//! drain action.
//!
//! Healthy means what the runner-flag guard counts: `active` (not draining) with a heartbeat
//! within 2 minutes (SPEC §6). A draining worker claims nothing new, so it is not capacity and
//! is never counted healthy, whatever its heartbeat; `heartbeat_stale` says separately whether
//! its heartbeat is older than 2 minutes.

use serde::Serialize;

use super::AdminError;
use crate::db::workers::{self, WorkerListing};
use crate::db::{Db, DbError, now_ms};
use crate::domain::version::MinVersions;
use crate::ids::WorkerId;
use crate::runner::HEALTHY_WITHIN_MS;

/// A worker with its health at a moment.
#[derive(Debug, Clone, Serialize)]
pub struct WorkerView {
    /// The registry row.
    #[serde(flatten)]
    pub worker: WorkerListing,
    /// Seconds since its last heartbeat (0 when the clock is behind).
    pub heartbeat_age_s: i64,
    /// Its heartbeat is older than 2 minutes.
    pub heartbeat_stale: bool,
    /// Active with a fresh heartbeat: it can take new runs, and it satisfies the flag guard
    /// (given its version passes the minimum).
    pub healthy: bool,
    /// Its version is below HEARTH_RUNNER_MIN_VERSION for its runtime (absent when the caller
    /// does not know the minimums, as `hearth workers list`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub below_minimum: Option<bool>,
}

impl WorkerView {
    /// The view of `worker` at `now` (Unix ms), judged against `min_versions` when given.
    #[must_use]
    pub fn new(worker: WorkerListing, now: i64, min_versions: Option<&MinVersions>) -> Self {
        let age_ms = now.saturating_sub(worker.last_heartbeat_at).max(0);
        let stale = age_ms > HEALTHY_WITHIN_MS;
        let below_minimum = min_versions.map(|m| !m.admits(&worker.runtime, &worker.version));
        Self {
            heartbeat_age_s: age_ms / 1000,
            heartbeat_stale: stale,
            healthy: !stale && worker.status == "active",
            below_minimum,
            worker,
        }
    }
}

/// Every registered worker, by runtime then name, judged now.
///
/// # Errors
/// On a storage failure.
pub async fn worker_views(db: &Db, min_versions: Option<&MinVersions>) -> Result<Vec<WorkerView>, DbError> {
    let listed = db.read(workers::list_workers).await?;
    let now = now_ms();
    Ok(listed.into_iter().map(|w| WorkerView::new(w, now, min_versions)).collect())
}

/// Marks worker `id` draining. `text` is the id as given, for the error.
pub(super) async fn drain(db: &Db, id: Option<WorkerId>, text: &str) -> Result<(), AdminError> {
    let unknown = || AdminError::NotFound(format!("no worker with id `{text}`"));
    let Some(id) = id else { return Err(unknown()) };
    let embedded = db
        .write(move |conn| {
            let embedded = workers::find_worker_embedded(conn, &id)?;
            if embedded == Some(false) {
                workers::mark_draining(conn, &id)?;
            }
            Ok(embedded)
        })
        .await?;
    match embedded {
        None => Err(unknown()),
        Some(true) => Err(AdminError::Invalid {
            param: "worker",
            message:
                "an embedded worker runs inside `hearth serve` and stops with it; it cannot be drained alone"
                    .into(),
        }),
        Some(false) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listing(status: &str, version: &str, last_heartbeat_at: i64) -> WorkerListing {
        WorkerListing {
            id: WorkerId::new(),
            name: "w".into(),
            runtime: "go".into(),
            version: version.into(),
            hostname: "h".into(),
            capacity: 4,
            status: status.into(),
            embedded: false,
            registered_at: 0,
            last_heartbeat_at,
            in_flight: 0,
        }
    }

    #[test]
    fn healthy_means_active_with_a_heartbeat_within_two_minutes() {
        let now = 1_000_000_000;
        let fresh = WorkerView::new(listing("active", "1.0.0", now - 1_500), now, None);
        assert_eq!((fresh.heartbeat_age_s, fresh.healthy, fresh.below_minimum), (1, true, None));
        let edge = WorkerView::new(listing("active", "1.0.0", now - HEALTHY_WITHIN_MS), now, None);
        assert!(edge.healthy, "exactly 2 minutes is still healthy, as the flag guard counts it");
        let stale = WorkerView::new(listing("active", "1.0.0", now - HEALTHY_WITHIN_MS - 1), now, None);
        assert_eq!((stale.heartbeat_age_s, stale.healthy, stale.heartbeat_stale), (120, false, true));
        let ahead = WorkerView::new(listing("active", "1.0.0", now + 5_000), now, None);
        assert_eq!((ahead.heartbeat_age_s, ahead.healthy), (0, true), "clock skew reads as 0");
        let draining = WorkerView::new(listing("draining", "1.0.0", now), now, None);
        assert_eq!((draining.healthy, draining.heartbeat_stale), (false, false), "draining is not capacity");
    }

    #[test]
    fn versions_below_the_minimum_are_flagged() {
        let min = MinVersions::parse("go=0.5.0").unwrap();
        let old = WorkerView::new(listing("active", "0.4.9", 0), 0, Some(&min));
        assert_eq!(old.below_minimum, Some(true));
        let ok = WorkerView::new(listing("active", "0.10.0", 0), 0, Some(&min));
        assert_eq!(ok.below_minimum, Some(false));
    }
}
