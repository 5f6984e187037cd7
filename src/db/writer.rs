//! The one writer connection: write jobs queue for it, and whoever finds it free leads a batch.
//!
//! Writes never race: they are closures queued for the one writer connection. The caller that
//! finds the writer free (after yielding once, so that the other tasks ready on its thread queue
//! their writes too) becomes the *leader*: on its own thread, it opens a `BEGIN IMMEDIATE`
//! transaction, runs every job waiting in the queue (each inside its own savepoint, so one
//! failing job rolls back alone), commits once, and only then answers each caller. A lone writer
//! thus pays no thread hand-off, and concurrent writers share commits. Many concurrent writers
//! therefore cost one fsync-free WAL commit per batch (group commit) and never see
//! `SQLITE_BUSY` from each other; LiteFS sees few transactions. Reads that follow writes
//! closely may queue here too ([`Db::read_on_writer`]).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use rusqlite::Connection;
use tokio::sync::oneshot;

use super::{Db, DbError};

/// How many queued write jobs one transaction may take at most.
const MAX_BATCH: usize = 512;

type Deliver = Box<dyn FnOnce(Option<&Arc<rusqlite::Error>>) + Send>;
/// A queued write: given the writer's connection and how to guard it (or the error that kept
/// the transaction from opening), it runs and returns how to answer its caller once the commit
/// outcome is known, and whether it succeeded.
type Job = Box<dyn FnOnce(Result<(&Connection, Guard), &Arc<rusqlite::Error>>) -> (Deliver, bool) + Send>;

/// How a job is isolated from the other jobs of its transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Guard {
    /// The first job of a transaction runs bare: if it fails, the whole transaction (only its
    /// own writes) is rolled back and a new one begins. A savepoint would copy every page it
    /// touches into the statement journal for nothing.
    Bare,
    /// Later jobs run in a savepoint, so a failing one rolls back alone.
    Savepoint,
}

/// A job waiting for the writer: a write (in the batch's transaction) or a read (before it,
/// on the same connection, outside any transaction).
struct Queued {
    read: bool,
    job: Job,
}

/// The one writer connection and the jobs waiting for it.
pub(super) struct Writer {
    /// The connection; whoever holds it leads (runs the queued jobs).
    pub(super) conn: Mutex<Connection>,
    queue: Mutex<VecDeque<Queued>>,
    /// Batches committed so far (the checkpoint loop skips a pass when it has not moved).
    commits: AtomicU64,
    /// Write jobs those batches carried (per commit: how many writers shared it).
    writes: AtomicU64,
}

impl Writer {
    /// The writer of `conn`, with nothing queued or committed yet.
    pub(super) fn new(conn: Connection) -> Self {
        Self {
            conn: Mutex::new(conn),
            queue: Mutex::new(VecDeque::new()),
            commits: AtomicU64::new(0),
            writes: AtomicU64::new(0),
        }
    }
}

impl Db {
    /// Runs `f` inside the writer's current transaction and answers once it is committed.
    ///
    /// An error from `f` rolls back `f`'s own changes only; other writes of the batch commit.
    ///
    /// # Errors
    /// Whatever `f` returns, a commit failure, or [`DbError::WriterGone`] after shutdown.
    pub async fn write<T, F>(&self, f: F) -> Result<T, DbError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, DbError> + Send + 'static,
    {
        self.submit(false, move |conn| match conn {
            Ok((conn, Guard::Savepoint)) => run_in_savepoint(conn, f),
            Ok((conn, Guard::Bare)) => run_caught(conn, f),
            Err(e) => Err(DbError::Commit(Arc::clone(e))),
        })
        .await
    }

    /// Runs `f` on the writer's connection, at the start of the next batch (before its writes,
    /// inside their transaction; alone, in a read transaction). That connection's page cache
    /// is never stale (only it writes), so a read that follows writes closely costs no page
    /// re-reads, and it sees every write committed before it — what a pooled reader pays for
    /// after each commit. It is answered at once, never counts as a commit, and must not write
    /// (nothing would guard it).
    ///
    /// # Errors
    /// Whatever `f` returns, or [`DbError::WriterGone`] after shutdown.
    pub async fn read_on_writer<T, F>(&self, f: F) -> Result<T, DbError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, DbError> + Send + 'static,
    {
        self.submit(true, move |conn| match conn {
            Ok((conn, _)) => run_caught(conn, f),
            Err(e) => Err(DbError::Commit(Arc::clone(e))),
        })
        .await
    }

    /// Queues `run` for the writer (a read or a write), leads the batch when the writer is
    /// free, and waits for the answer: a write's once its batch is committed (a commit failure
    /// fails it), a read's at once.
    async fn submit<T, R>(&self, read: bool, run: R) -> Result<T, DbError>
    where
        T: Send + 'static,
        R: FnOnce(Result<(&Connection, Guard), &Arc<rusqlite::Error>>) -> Result<T, DbError> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |conn| {
            let result = run(conn);
            let ok = result.is_ok();
            let deliver: Deliver = Box::new(move |commit_error| {
                let answer = match (result, commit_error) {
                    (Ok(_), Some(e)) => Err(DbError::Commit(Arc::clone(e))),
                    (result, _) => result,
                };
                // The caller may have gone away (request cancelled); a write stands.
                let _ = tx.send(answer);
            });
            (deliver, ok)
        });
        self.writer.queue.lock().unwrap_or_else(PoisonError::into_inner).push_back(Queued { read, job });
        // Let the other tasks ready on this thread queue their writes first, so they share this
        // commit instead of each committing alone (under load, most commits carried one write
        // otherwise). `yield_now` also lets the runtime poll for I/O first; a self-wake that
        // skipped it made bigger batches but fewer requests/s (docs/PERFORMANCE.md). The guard
        // leads even if this caller goes away while it yields: a queued write stands.
        let leader = LeadOnDrop(&self.writer);
        tokio::task::yield_now().await;
        drop(leader);
        rx.await.map_err(|_| DbError::WriterGone)?
    }
}

fn run_in_savepoint<T>(
    conn: &Connection,
    f: impl FnOnce(&Connection) -> Result<T, DbError>,
) -> Result<T, DbError> {
    conn.prepare_cached("SAVEPOINT job")?.execute([])?;
    let result = run_caught(conn, f);
    if result.is_ok() {
        conn.prepare_cached("RELEASE job")?.execute([])?;
    } else {
        conn.execute_batch("ROLLBACK TO job; RELEASE job")?;
    }
    result
}

/// Runs a job, turning a panic into an error.
fn run_caught<T>(conn: &Connection, f: impl FnOnce(&Connection) -> Result<T, DbError>) -> Result<T, DbError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(conn)))
        .unwrap_or_else(|_| Err(DbError::Task("a write job panicked".into())))
}

/// Leads the writer when dropped (see [`Db::submit`]).
struct LeadOnDrop<'a>(&'a Writer);

impl Drop for LeadOnDrop<'_> {
    fn drop(&mut self) {
        self.0.lead();
    }
}

impl Writer {
    /// Runs queued jobs while the writer is free: whoever gets the connection commits every job
    /// waiting, then looks again, so no job is left behind when the connection is released.
    pub(super) fn lead(&self) {
        loop {
            let Ok(conn) = self.conn.try_lock() else { return };
            let batch: Vec<Queued> = {
                let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
                let take = queue.len().min(MAX_BATCH);
                queue.drain(..take).collect()
            };
            if batch.is_empty() {
                return;
            }
            let writes = run_batch(&conn, batch);
            if writes > 0 {
                self.commits.fetch_add(1, Ordering::Relaxed);
                self.writes.fetch_add(writes as u64, Ordering::Relaxed);
            }
            drop(conn);
            if self.queue.lock().unwrap_or_else(PoisonError::into_inner).is_empty() {
                return;
            }
        }
    }
}

impl Db {
    /// How many write batches have been committed (or tried) since the store was opened: a
    /// cheap way to tell whether anything was written since the last look.
    #[must_use]
    pub fn commits(&self) -> u64 {
        self.writer.commits.load(Ordering::Relaxed)
    }

    /// How many write jobs those commits carried: with [`Db::commits`], how many writers share
    /// a commit (one when writes come one at a time).
    #[must_use]
    pub fn writes(&self) -> u64 {
        self.writer.writes.load(Ordering::Relaxed)
    }
}

/// Runs a batch: one transaction for its writes, each answered after the commit, with its
/// reads first inside it, each answered at once (they change nothing, so they need no
/// savepoint); a batch of reads alone runs in one read transaction (one read lock taken and
/// released for them all, not one per statement). The first write runs bare (see [`Guard`]):
/// when it fails, its transaction is rolled back and the next write starts a new one, again
/// bare. Returns how many writes ran (none: no write transaction).
fn run_batch(conn: &Connection, batch: Vec<Queued>) -> usize {
    let (reads, writes): (Vec<Queued>, Vec<Queued>) = batch.into_iter().partition(|q| q.read);
    let run_reads = |reads: Vec<Queued>| {
        for read in reads {
            let (deliver, _) = (read.job)(Ok((conn, Guard::Bare)));
            deliver(None);
        }
    };
    if writes.is_empty() {
        let began = conn.prepare_cached("BEGIN").and_then(|mut s| s.execute([])).is_ok();
        run_reads(reads);
        if began {
            let _ = conn.prepare_cached("COMMIT").and_then(|mut s| s.execute([]));
        }
        return 0;
    }
    let begin = || {
        let begun = conn.prepare_cached("BEGIN IMMEDIATE").and_then(|mut s| s.execute([])).map(|_| ());
        begun.map_err(|e| {
            tracing::error!(error = %e, "database writer could not begin a transaction");
            Arc::new(e)
        })
    };
    let mut open = begin();
    run_reads(reads);
    let mut guard = Guard::Bare;
    #[expect(clippy::cast_precision_loss, reason = "a batch holds at most MAX_BATCH jobs")]
    metrics::histogram!("hearth_db_commit_writes").record(writes.len() as f64);
    let mut delivers: Vec<Deliver> = Vec::with_capacity(writes.len());
    for Queued { job, .. } in writes {
        let (deliver, ok) = job(open.as_ref().map(|()| (conn, guard)));
        delivers.push(deliver);
        if open.is_err() {
            continue;
        }
        match (guard, ok) {
            (Guard::Bare, false) => {
                let _ = conn.execute_batch("ROLLBACK");
                open = begin();
            }
            _ => guard = Guard::Savepoint,
        }
    }
    let outcome = match open {
        Ok(()) => conn.prepare_cached("COMMIT").and_then(|mut s| s.execute([])).map(|_| ()).map_err(Arc::new),
        Err(e) => Err(e),
    };
    if let Err(e) = &outcome {
        tracing::error!(error = %e, jobs = delivers.len(), "database commit failed");
        let _ = conn.execute_batch("ROLLBACK");
    }
    let writes = delivers.len();
    for deliver in delivers {
        deliver(outcome.as_ref().err());
    }
    writes
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::db::open_temp;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    #[expect(clippy::disallowed_methods, reason = "the test joins every task it spawns")]
    async fn many_concurrent_writers_never_see_busy() {
        let (_dir, db) = open_temp();
        db.write(|c| Ok(c.execute_batch("CREATE TABLE t (task INTEGER, n INTEGER)")?)).await.unwrap();
        let mut handles = Vec::new();
        for task in 0..64i64 {
            let db = db.clone();
            handles.push(tokio::spawn(async move {
                for n in 0..50i64 {
                    db.write(move |c| {
                        c.execute("INSERT INTO t VALUES (?1, ?2)", [task, n])?;
                        Ok(())
                    })
                    .await?;
                }
                Ok::<(), DbError>(())
            }));
        }
        for handle in handles {
            handle.await.unwrap().unwrap();
        }
        let count: i64 =
            db.read(|c| Ok(c.query_row("SELECT count(*) FROM t", [], |r| r.get(0))?)).await.unwrap();
        assert_eq!(count, 64 * 50);
    }

    #[tokio::test]
    async fn a_failing_job_rolls_back_alone() {
        let (_dir, db) = open_temp();
        db.write(|c| Ok(c.execute_batch("CREATE TABLE t (x INTEGER PRIMARY KEY)")?)).await.unwrap();
        let ok = db.write(|c| Ok(c.execute("INSERT INTO t VALUES (1)", [])?));
        let bad = db.write(|c| {
            c.execute("INSERT INTO t VALUES (2)", [])?;
            c.execute("INSERT INTO t VALUES (1)", [])?; // duplicate: fails this job only
            Ok(())
        });
        let (ok, bad) = tokio::join!(ok, bad);
        assert!(ok.is_ok());
        assert!(bad.is_err());
        let rows: Vec<i64> = db
            .read(|c| {
                let mut stmt = c.prepare("SELECT x FROM t ORDER BY x")?;
                let rows = stmt.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
                Ok(rows)
            })
            .await
            .unwrap();
        assert_eq!(rows, vec![1]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[expect(clippy::disallowed_methods, reason = "the test joins every task it spawns")]
    #[expect(clippy::await_holding_lock, reason = "holds the writer on purpose; writers only try_lock it")]
    async fn a_failing_first_job_of_a_batch_rolls_back_alone_and_the_rest_commit() {
        let (_dir, db) = open_temp();
        db.write(|c| Ok(c.execute_batch("CREATE TABLE t (x INTEGER PRIMARY KEY)")?)).await.unwrap();
        db.write(|c| Ok(c.execute("INSERT INTO t VALUES (1)", []).map(|_| ())?)).await.unwrap();
        // Hold the writer so the next jobs queue up and run as one batch, in this order.
        let held = db.writer.conn.lock().unwrap();
        let queued = |n: usize| {
            let db = db.clone();
            async move {
                while db.writer.queue.lock().unwrap().len() < n {
                    tokio::task::yield_now().await;
                }
            }
        };
        let first = tokio::spawn({
            let db = db.clone();
            async move {
                db.write(|c| {
                    c.execute("INSERT INTO t VALUES (2)", [])?;
                    c.execute("INSERT INTO t VALUES (1)", [])?; // duplicate: this job fails
                    Ok(())
                })
                .await
            }
        });
        queued(1).await;
        let second = tokio::spawn({
            let db = db.clone();
            async move { db.write(|c| Ok(c.execute("INSERT INTO t VALUES (3)", []).map(|_| ())?)).await }
        });
        queued(2).await;
        let third = tokio::spawn({
            let db = db.clone();
            async move {
                db.write(|c| {
                    c.execute("INSERT INTO t VALUES (4)", [])?;
                    c.execute("INSERT INTO t VALUES (3)", [])?; // fails too, inside a savepoint
                    Ok(())
                })
                .await
            }
        });
        queued(3).await;
        let fourth = tokio::spawn({
            let db = db.clone();
            async move { db.write(|c| Ok(c.execute("INSERT INTO t VALUES (5)", []).map(|_| ())?)).await }
        });
        queued(4).await;
        drop(held);
        db.writer.lead();
        assert!(first.await.unwrap().is_err());
        assert!(second.await.unwrap().is_ok());
        assert!(third.await.unwrap().is_err());
        assert!(fourth.await.unwrap().is_ok());
        let rows: Vec<i64> = db
            .read(|c| {
                let mut stmt = c.prepare("SELECT x FROM t ORDER BY x")?;
                let rows = stmt.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
                Ok(rows)
            })
            .await
            .unwrap();
        assert_eq!(rows, vec![1, 3, 5]);
    }

    /// A fresh store with one table `t (x INTEGER)`, created by a write of its own.
    async fn store_with_table(name: &str) -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join(name), 2).unwrap();
        db.write(|c| Ok(c.execute_batch("CREATE TABLE t (x INTEGER)")?)).await.unwrap();
        (dir, db)
    }

    #[tokio::test]
    async fn commits_count_write_batches_and_not_reads() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("c.db"), 2).unwrap();
        let start = db.commits();
        db.write(|c| Ok(c.execute_batch("CREATE TABLE t (x INTEGER)")?)).await.unwrap();
        db.write(|c| Ok(c.execute("INSERT INTO t VALUES (1)", []).map(|_| ())?)).await.unwrap();
        assert_eq!(db.commits(), start + 2);
        let n: i64 = db.read(|c| Ok(c.query_row("SELECT count(*) FROM t", [], |r| r.get(0))?)).await.unwrap();
        assert_eq!((n, db.commits()), (1, start + 2), "a read is not a commit");
        let n: i64 = db
            .read_on_writer(|c| Ok(c.query_row("SELECT count(*) FROM t", [], |r| r.get(0))?))
            .await
            .unwrap();
        assert_eq!((n, db.commits()), (1, start + 2), "nor is a read on the writer's connection");
    }

    #[tokio::test(flavor = "current_thread")]
    #[expect(clippy::disallowed_methods, reason = "the test joins every task it spawns")]
    async fn writes_ready_on_one_thread_at_once_share_one_commit() {
        let (_dir, db) = store_with_table("g.db").await;
        let (start, writes) = (db.commits(), db.writes());
        let tasks: Vec<_> = (0..10i64)
            .map(|x| {
                let db = db.clone();
                tokio::spawn(async move {
                    db.write(move |c| Ok(c.execute("INSERT INTO t VALUES (?1)", [x]).map(|_| ())?)).await
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        assert_eq!(db.commits(), start + 1, "ten writes ready together, one commit");
        assert_eq!(db.writes(), writes + 10, "which carried ten writes");
        let n: i64 = db.read(|c| Ok(c.query_row("SELECT count(*) FROM t", [], |r| r.get(0))?)).await.unwrap();
        assert_eq!(n, 10);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_write_whose_caller_goes_away_while_it_waits_still_commits() {
        use futures::FutureExt;
        let (_dir, db) = store_with_table("d.db").await;
        let write = db.write(|c| Ok(c.execute("INSERT INTO t VALUES (7)", []).map(|_| ())?));
        // Polled once (queued, yielding to other tasks), then dropped: the request went away.
        assert!(write.now_or_never().is_none(), "the write yields before it leads");
        let n: i64 = db.read(|c| Ok(c.query_row("SELECT count(*) FROM t", [], |r| r.get(0))?)).await.unwrap();
        assert_eq!(n, 1, "the queued write committed without another write to lead it");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    #[expect(clippy::disallowed_methods, reason = "the test joins every task it spawns")]
    async fn reads_on_the_writer_see_every_acknowledged_write_and_never_commit() {
        let (_dir, db) = store_with_table("r.db").await;
        let start = db.commits();
        let mut tasks = Vec::new();
        for i in 0..4 {
            let db = db.clone();
            tasks.push(tokio::spawn(async move {
                for j in 0..50 {
                    let x = i * 100 + j;
                    db.write(move |c| Ok(c.execute("INSERT INTO t VALUES (?1)", [x]).map(|_| ())?))
                        .await
                        .unwrap();
                    let seen: i64 = db
                        .read_on_writer(move |c| {
                            Ok(c.query_row("SELECT count(*) FROM t WHERE x = ?1", [x], |r| r.get(0))?)
                        })
                        .await
                        .unwrap();
                    assert_eq!(seen, 1, "write {x} read back");
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        let failed =
            db.read_on_writer(|c| Ok(c.query_row("SELECT nope FROM t", [], |r| r.get::<_, i64>(0))?)).await;
        assert!(failed.is_err(), "a failing read answers its error");
        let n: i64 = db.read(|c| Ok(c.query_row("SELECT count(*) FROM t", [], |r| r.get(0))?)).await.unwrap();
        assert_eq!(n, 200);
        assert!(db.commits() - start <= 200, "reads never commit");
        let before = db.commits();
        for _ in 0..20 {
            db.read_on_writer(|c| Ok(c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))?)).await.unwrap();
        }
        assert_eq!(db.commits(), before, "a batch of reads alone is no commit");
        let autocommit = db.read_on_writer(|c| Ok(c.is_autocommit())).await.unwrap();
        assert!(!autocommit, "reads run inside one transaction, not one per statement");
    }
}
