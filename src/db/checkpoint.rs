//! WAL checkpoints: one pass ([`Db::checkpoint`]) and the policy of when `serve` runs one
//! ([`run_policy`]).

use std::sync::{Arc, PoisonError};
use std::time::Duration;

use rusqlite::Connection;
use tokio_util::sync::CancellationToken;

use super::{Db, DbError};

impl Db {
    /// Copies committed WAL frames back into the database file (`PASSIVE`: never waits on
    /// readers, and leaves frames Litestream has not read yet to a later pass), in two steps:
    /// the bulk from a reader connection while writes go on, then the few frames committed
    /// meanwhile on the writer's connection between two batches (when `catch_up`: writes wait
    /// for it, `fsync`s included). With no commit landing during that second pass the whole log
    /// is usually backfilled, so the next write transaction starts the WAL over from its
    /// beginning. (A checkpoint from another connection alone never catches up with the last
    /// commit under steady writes, and the WAL grew without bound: 1.2 GB in a ten-minute
    /// benchmark.) Runs on the blocking pool; [`run_policy`] decides when, and whether to catch
    /// up.
    /// Returns `(log frames, frames backfilled)` after the last pass.
    ///
    /// # Errors
    /// On a pool or SQLite failure.
    pub async fn checkpoint(&self, catch_up: bool) -> Result<(i64, i64), DbError> {
        let (writer, pool) = (Arc::clone(&self.writer), self.pool.clone());
        tokio::task::spawn_blocking(move || {
            let pass = |conn: &Connection| {
                conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| Ok((r.get::<_, i64>(1)?, r.get(2)?)))
            };
            let (frames, backfilled) = pass(&*pool.get()?)?;
            if frames <= 0 || !catch_up {
                return Ok((frames, backfilled));
            }
            let conn = writer.conn.lock().unwrap_or_else(PoisonError::into_inner);
            let last = pass(&conn);
            drop(conn);
            // Writes that queued while the checkpoint held the connection run now.
            writer.lead();
            Ok(last?)
        })
        .await
        .map_err(|e| DbError::Task(e.to_string()))?
    }
}

/// How often the checkpoint loop looks at the WAL.
const CHECKPOINT_LOOK: Duration = Duration::from_millis(50);
/// Commits after which the next look checkpoints (under load: a pass every 50 ms).
const CHECKPOINT_COMMITS: u64 = 64;
/// Longest a committed write waits for its checkpoint (light load).
const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);

/// Whether the checkpoint loop runs a pass now: never when nothing was committed since a pass
/// that copied the whole log back (`clean`: the commit count then); else once
/// [`CHECKPOINT_COMMITS`] commits have come since the last pass, or [`CHECKPOINT_EVERY`] has
/// gone by. Small checkpoints keep each pass's `fsync`s short: while one runs, requests wait
/// on the disk and on the cores it takes. Measured (docs/PERFORMANCE.md): a pass a second
/// stalled every request ~20 ms once a second (p99 50 ms at 32 clients); every 250 ms, p99
/// 13–15 ms at 32 clients and 2.8–2.9 ms at one; every 50 ms, 10.6–12.0 and 1.9–2.0 ms at the
/// same throughput. Light load keeps the 250 ms pace (fewer flushes for the same writes).
fn checkpoint_due(commits: u64, at_last_pass: u64, since_last_pass: Duration, clean: Option<u64>) -> bool {
    clean != Some(commits)
        && (commits.saturating_sub(at_last_pass) >= CHECKPOINT_COMMITS || since_last_pass >= CHECKPOINT_EVERY)
}

/// Passes in a row that may leave the WAL's restart to a later pass while writes come one at a
/// time.
const CATCH_UP_ALONE: u32 = 4;

/// Whether a checkpoint pass also catches up with the last commit on the writer's connection
/// (see `Db::checkpoint`), which lets the WAL start over but holds every write until its
/// `fsync`s are done. When writes come one at a time (one write a commit since the last pass),
/// each such stall delays the one request in flight, so it comes every [`CATCH_UP_ALONE`]th
/// pass: at one client, 1 % of requests met one, which set the p99 (1.55–1.60 ms; 1.28–1.40
/// with every fourth pass, in alternating pairs). When writers share commits, a stall meets many requests whatever
/// its pace and its length sets the tail, which a log restarted at every pass keeps short
/// (p99 at 32 clients 7.4–7.8 ms against 7.8–9.1 every fourth pass). docs/PERFORMANCE.md.
fn catch_up_due(passes_without: u32, commits: u64, writes: u64) -> bool {
    passes_without.saturating_add(1) >= CATCH_UP_ALONE || writes > commits
}

/// Checkpoints the WAL whenever [`checkpoint_due`] says so (see [`Db::checkpoint`]), until
/// `shutdown` is cancelled; an idle store is left alone. `serve` spawns it on a writer node.
pub async fn run_policy(db: Db, shutdown: CancellationToken) {
    let mut look = tokio::time::interval(CHECKPOINT_LOOK);
    look.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut clean, mut at_last_pass, mut last_pass) = (None, 0, std::time::Instant::now());
    let (mut writes_at_last_pass, mut passes_without) = (0, 0);
    loop {
        tokio::select! {
            _ = look.tick() => {}
            () = shutdown.cancelled() => return,
        }
        let commits = db.commits();
        if !checkpoint_due(commits, at_last_pass, last_pass.elapsed(), clean) {
            continue;
        }
        let writes = db.writes();
        let catch_up = catch_up_due(
            passes_without,
            commits.saturating_sub(at_last_pass),
            writes.saturating_sub(writes_at_last_pass),
        );
        passes_without = if catch_up { 0 } else { passes_without + 1 };
        (at_last_pass, writes_at_last_pass, last_pass) = (commits, writes, std::time::Instant::now());
        match db.checkpoint(catch_up).await {
            // Look again unless the log was copied back whole.
            Ok((frames, backfilled)) => clean = (frames <= 0 || backfilled >= frames).then_some(commits),
            Err(e) => tracing::warn!(error = %e, "WAL checkpoint failed; will retry"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clean_store_is_never_checkpointed_again_until_something_is_committed() {
        assert!(!checkpoint_due(7, 7, Duration::from_secs(3600), Some(7)));
        assert!(checkpoint_due(8, 7, CHECKPOINT_EVERY, Some(7)));
    }

    #[test]
    fn writes_one_at_a_time_catch_up_every_fourth_pass_and_shared_commits_every_pass() {
        let alone: Vec<bool> = (0..8)
            .scan(0, |without, _| {
                let due = catch_up_due(*without, 100, 100);
                *without = if due { 0 } else { *without + 1 };
                Some(due)
            })
            .collect();
        assert_eq!(alone, [false, false, false, true, false, false, false, true]);
        assert!(catch_up_due(0, 100, 101), "writers sharing commits");
        assert!(catch_up_due(0, 64, 400));
    }

    #[test]
    fn light_writes_wait_for_the_slow_pace_and_heavy_ones_do_not() {
        let (soon, later) = (CHECKPOINT_LOOK, CHECKPOINT_EVERY);
        assert!(!checkpoint_due(10, 0, soon, None), "a few commits wait for the slow pace");
        assert!(checkpoint_due(10, 0, later, None));
        assert!(checkpoint_due(CHECKPOINT_COMMITS, 0, soon, None), "many commits do not wait");
        assert!(!checkpoint_due(CHECKPOINT_COMMITS + 5, 6, soon, None));
        // A pass that left frames behind (a reader held them) is retried at the slow pace.
        assert!(!checkpoint_due(3, 3, soon, None));
        assert!(checkpoint_due(3, 3, later, None));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[expect(clippy::disallowed_methods, reason = "the test joins the task it spawns")]
    async fn the_wal_starts_over_under_steady_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.db");
        let db = Db::open(&path, 2).unwrap();
        db.write(|c| Ok(c.execute_batch("CREATE TABLE t (x BLOB)")?)).await.unwrap();
        let writes = 10_000;
        let writer = {
            let db = db.clone();
            tokio::spawn(async move {
                for _ in 0..writes {
                    db.write(|c| Ok(c.execute("INSERT INTO t VALUES (zeroblob(3000))", []).map(|_| ())?))
                        .await
                        .unwrap();
                }
            })
        };
        let (mut seen, mut passes, mut restarts) = (0, 0, 0);
        while !writer.is_finished() {
            let (frames, _) = db.checkpoint(true).await.unwrap();
            // A log only shrinks when it started over: frames are never removed from its end.
            restarts += usize::from(frames < seen);
            (seen, passes) = (frames, passes + 1);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        writer.await.unwrap();
        assert!(passes > 4, "too few checkpoints ran ({passes}) to tell");
        // How often it starts over under load depends on how the machine schedules the passes
        // (a busy shared machine delays them); that it does, does not.
        assert!(restarts > 0, "the WAL never started over in {passes} passes during {writes} writes");
        // Once writes pause, one pass lets the next write start the log over from its beginning.
        db.checkpoint(true).await.unwrap();
        db.write(|c| Ok(c.execute("INSERT INTO t VALUES (1)", []).map(|_| ())?)).await.unwrap();
        let (frames, _) = db.checkpoint(false).await.unwrap();
        assert!(frames < 16, "the WAL did not start over after a quiet pass: {frames} frames");
    }
}
