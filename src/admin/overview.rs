//! The overview: per runner, queue depth and oldest wait with its healthy and unhealthy
//! workers; the runs finished in the last hour by status; the latest failures.

use serde::Serialize;

use super::workers::worker_views;
use crate::db::run_stats::{self, FailedRun};
use crate::db::{Db, DbError, now_ms, runs};
use crate::runner::RunnerSettings;

/// One runner pool now.
#[derive(Debug, Clone, Serialize)]
pub struct RunnerLoad {
    /// Its name.
    pub runner: String,
    /// Runs queued for it.
    pub queued: i64,
    /// Milliseconds the oldest queued run has waited (0 when none).
    pub oldest_wait_ms: i64,
    /// Workers that can take its runs now.
    pub healthy_workers: usize,
    /// Its workers that cannot: stale heartbeat, or draining.
    pub unhealthy_workers: usize,
    /// Whether it is one of HEARTH_RUNNERS (a worker or run may name another).
    pub configured: bool,
}

/// What the overview page shows.
#[derive(Debug, Clone, Serialize)]
pub struct Overview {
    /// Per runner: the configured ones first, in order, then any other seen.
    pub runners: Vec<RunnerLoad>,
    /// Runs finished in the last hour, per terminal status.
    pub finished_last_hour: Vec<(String, i64)>,
    /// The latest failed runs.
    pub recent_failures: Vec<FailedRun>,
}

/// Reads the overview.
pub(super) async fn overview(db: &Db, settings: &RunnerSettings) -> Result<Overview, DbError> {
    let now = now_ms();
    let (depths, finished_last_hour, recent_failures) = db
        .read(move |conn| {
            Ok((
                runs::queue_depths(conn)?,
                run_stats::finished_since(conn, now - 3_600_000)?,
                run_stats::recent_failures(conn, 10)?,
            ))
        })
        .await?;
    let workers = worker_views(db, Some(&settings.min_versions)).await?;
    let mut names: Vec<String> = settings.runners.clone();
    let seen = depths.iter().map(|(r, _, _)| r).chain(workers.iter().map(|w| &w.worker.runtime));
    for name in seen {
        if !names.contains(name) {
            names.push(name.clone());
        }
    }
    let runners = names
        .into_iter()
        .map(|runner| {
            let depth = depths.iter().find(|(r, _, _)| *r == runner);
            let mine = workers.iter().filter(|w| w.worker.runtime == runner);
            let healthy = mine.clone().filter(|w| w.healthy).count();
            RunnerLoad {
                queued: depth.map_or(0, |d| d.1),
                oldest_wait_ms: depth.map_or(0, |d| now.saturating_sub(d.2).max(0)),
                healthy_workers: healthy,
                unhealthy_workers: mine.count() - healthy,
                configured: settings.runners.contains(&runner),
                runner,
            }
        })
        .collect();
    Ok(Overview { runners, finished_last_hour, recent_failures })
}
