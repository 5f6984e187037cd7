//! The embedded worker pool inside `hearth serve`: it uses the same queue semantics as external
//! workers. It registers under a stable name (`HOST/embedded`, so a restart gives back what a
//! crashed process held) with its capacity (`--workers`, runs at once), claims with a lease,
//! heartbeats, and completes fenced on the attempt.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::Executor;
use crate::db::DbError;
use crate::db::workers::NewWorker;
use crate::ids::WorkerId;
use crate::queue::{Local, Queue};

/// Safety net: a claimer re-checks the queue this often even without a wake-up (covers work
/// dispatched by another process on the same database).
const IDLE_RECHECK: Duration = Duration::from_secs(5);

/// What the embedded pool runs on.
pub struct Embedded {
    /// The queue it claims from.
    pub queue: Arc<Queue>,
    /// Executes what it claims.
    pub executor: Arc<Executor>,
    /// The name it registers under: [`default_name`] for `serve` (stable, so a restart gives
    /// back what a crashed process held), one of its own for anything else sharing the database.
    pub name: String,
    /// The runner it serves (the default runner).
    pub runner: String,
    /// Runs at once.
    pub capacity: usize,
    /// Seconds between heartbeats.
    pub heartbeat: Duration,
    /// Cancelled at shutdown.
    pub shutdown: CancellationToken,
    /// Where its tasks are tracked.
    pub tasks: TaskTracker,
}

/// `serve`'s embedded worker name: `HOST/embedded`.
#[must_use]
pub fn default_name() -> String {
    format!("{}/embedded", hostname())
}

/// Starts the embedded worker: one registered worker (`pool.name`) that runs up to
/// `capacity` runs at once, after giving back what an earlier incarnation of it held.
///
/// # Errors
/// On a storage failure while registering.
pub async fn start(pool: Embedded) -> Result<WorkerId, DbError> {
    let host = hostname();
    let name = pool.name.clone();
    let new = NewWorker {
        name: name.clone(),
        runtime: pool.runner.clone(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        hostname: host,
        capacity: i64::try_from(pool.capacity).unwrap_or(i64::MAX),
        embedded: true,
    };
    let (worker, given_back) = pool.queue.register_worker(new).await?;
    for g in given_back {
        if g.requeued {
            tracing::warn!(run.id = %g.run, attempt = g.attempt, worker = %name, "re-queued a run this worker held before a restart");
        } else {
            tracing::error!(run.id = %g.run, attempt = g.attempt, worker = %name, "failed a run after its last attempt (HEARTH_MAX_ATTEMPTS)");
        }
    }
    let slots = Arc::new(Semaphore::new(pool.capacity.max(1)));
    pool.queue.set_local(Local {
        runner: pool.runner.clone(),
        worker: worker.clone(),
        slots: Arc::clone(&slots),
    });
    let pool = Arc::new(pool);
    let (claimer, id) = (Arc::clone(&pool), worker.clone());
    pool.tasks.spawn(async move { claim_loop(&claimer, &id, slots).await });
    let beater = Arc::clone(&pool);
    let id = worker.clone();
    pool.tasks.spawn(async move { heartbeat_loop(&beater, vec![worker]).await });
    Ok(id)
}

/// This machine's host name (`HOSTNAME`, else `/etc/hostname`, else `localhost`).
pub fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// Every HEARTH_HEARTBEAT_S: refreshes the workers' heartbeats and extends the leases of the
/// runs they hold.
async fn heartbeat_loop(pool: &Embedded, ids: Vec<WorkerId>) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(pool.heartbeat) => {}
            () = pool.shutdown.cancelled() => return,
        }
        if let Err(e) = pool.queue.heartbeat(&ids).await {
            tracing::warn!(error = %e, "embedded worker heartbeat failed");
        }
    }
}

/// Claims runs from the queue while a slot is free, executing each in its own task. Arms its
/// wake-up before looking, so work dispatched in between is never missed. (Runs dispatched
/// while a slot is free are taken at dispatch and never reach this loop.)
async fn claim_loop(pool: &Embedded, worker: &WorkerId, slots: Arc<Semaphore>) {
    let waker = pool.queue.waker(&pool.runner);
    let shutdown = &pool.shutdown;
    while !shutdown.is_cancelled() {
        let slot = tokio::select! {
            slot = Arc::clone(&slots).acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => return,
            },
            () = shutdown.cancelled() => return,
        };
        let notified = waker.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        match pool.queue.claim_and_start(&pool.runner, worker).await {
            Ok(Some(claimed)) => pool.executor.spawn(claimed, slot),
            Ok(None) => {
                drop(slot);
                tokio::select! {
                    () = &mut notified => {}
                    () = shutdown.cancelled() => {}
                    () = tokio::time::sleep(IDLE_RECHECK) => {}
                }
            }
            Err(e) => {
                drop(slot);
                tracing::error!(error = %e, worker.id = %worker, "claim failed; retrying in 1 s");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}
