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
type Job = Box<dyn FnOnce(Result<(&Connection, Guard), &Arc<rusqlite::Error>>) -> (Deliver, Ran) + Send>;

/// How a job ran: fine, failed for its own reasons, or failed because the storage did (the
/// error's text, for `/ready`).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Ran {
    Ok,
    Failed,
    StorageFailed(String),
}

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
    /// Why the last write batch failed for the storage's sake (full, I/O error), until a batch
    /// commits again: what `/ready` reports.
    failing: Mutex<Option<String>>,
}

impl Writer {
    /// The writer of `conn`, with nothing queued or committed yet.
    pub(super) fn new(conn: Connection) -> Self {
        Self {
            conn: Mutex::new(conn),
            queue: Mutex::new(VecDeque::new()),
            commits: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            failing: Mutex::new(None),
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
            let ran = match &result {
                Ok(_) => Ran::Ok,
                Err(e) if e.is_transient() => Ran::StorageFailed(e.to_string()),
                Err(_) => Ran::Failed,
            };
            let deliver: Deliver = Box::new(move |commit_error| {
                let answer = match (result, commit_error) {
                    (Ok(_), Some(e)) => Err(DbError::Commit(Arc::clone(e))),
                    (result, _) => result,
                };
                // The caller may have gone away (request cancelled); a write stands.
                let _ = tx.send(answer);
            });
            (deliver, ran)
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
            let (writes, health) = run_batch(&conn, batch);
            match health {
                Health::Committed => *self.failing.lock().unwrap_or_else(PoisonError::into_inner) = None,
                Health::Failing(why) => {
                    *self.failing.lock().unwrap_or_else(PoisonError::into_inner) = Some(why);
                }
                Health::Unknown => {}
            }
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

    /// Why writes are failing for the storage's sake (disk full, I/O errors): the error of the
    /// last failed batch, until a batch commits again. `None` while writes succeed.
    #[must_use]
    pub fn write_failure(&self) -> Option<String> {
        self.writer.failing.lock().unwrap_or_else(PoisonError::into_inner).clone()
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
fn run_batch(conn: &Connection, batch: Vec<Queued>) -> (usize, Health) {
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
        return (0, Health::Unknown);
    }
    let begin = || {
        let begun = conn.prepare_cached("BEGIN IMMEDIATE").and_then(|mut s| s.execute([])).map(|_| ());
        begun.map_err(|e| {
            tracing::error!(error = %e, "database writer could not begin a transaction");
            Arc::new(e)
        })
    };
    let mut open = begin();
    let mut health = match &open {
        Ok(()) => Health::Unknown,
        Err(e) => Health::Failing(e.to_string()),
    };
    run_reads(reads);
    let mut guard = Guard::Bare;
    #[expect(clippy::cast_precision_loss, reason = "a batch holds at most MAX_BATCH jobs")]
    metrics::histogram!("hearth_db_commit_writes").record(writes.len() as f64);
    let writes_run = writes.len();
    // The answers of the jobs in the open transaction, given once its fate is known.
    let mut pending: Vec<Deliver> = Vec::with_capacity(writes.len());
    for Queued { job, .. } in writes {
        let (deliver, ran) = job(open.as_ref().map(|()| (conn, guard)));
        let ok = ran == Ran::Ok;
        if let Ran::StorageFailed(why) = ran {
            health = Health::Failing(why);
        }
        if let Err(e) = &open {
            deliver(Some(e));
            continue;
        }
        if guard == Guard::Bare && !ok {
            // Only this job's writes are in the transaction: roll them back, answer it (its own
            // error), and begin again for the next job.
            let _ = conn.execute_batch("ROLLBACK");
            deliver(None);
            open = begin();
            if let Err(e) = &open {
                health = Health::Failing(e.to_string());
            }
            continue;
        }
        if conn.is_autocommit() {
            // SQLite rolled the whole transaction back (disk full, I/O error): nothing of it
            // stands, so every job in it is answered failed — and none after is mistaken for
            // part of it.
            let e = Arc::new(rolled_back());
            tracing::error!(error = %e, jobs = pending.len() + 1, "a write batch was rolled back by SQLite");
            for earlier in pending.drain(..) {
                earlier(Some(&e));
            }
            deliver(Some(&e));
            if !matches!(health, Health::Failing(_)) {
                health = Health::Failing(e.to_string());
            }
            open = begin();
            if let Err(e) = &open {
                health = Health::Failing(e.to_string());
            }
            guard = Guard::Bare;
            continue;
        }
        pending.push(deliver);
        guard = Guard::Savepoint;
    }
    if let Ok(()) = open {
        if pending.is_empty() {
            // Nothing of this transaction is left to keep (every job failed or was answered).
            let _ = conn.execute_batch("ROLLBACK");
        } else {
            let outcome =
                conn.prepare_cached("COMMIT").and_then(|mut s| s.execute([])).map(|_| ()).map_err(Arc::new);
            match &outcome {
                Err(e) => {
                    tracing::error!(error = %e, jobs = pending.len(), "database commit failed");
                    let _ = conn.execute_batch("ROLLBACK");
                    health = Health::Failing(e.to_string());
                }
                Ok(()) if !matches!(health, Health::Failing(_)) => health = Health::Committed,
                Ok(()) => {}
            }
            for deliver in pending {
                deliver(outcome.as_ref().err());
            }
        }
    }
    (writes_run, health)
}

/// What a batch tells of the storage's health.
#[derive(Debug)]
enum Health {
    /// It committed writes and nothing failed for the storage's sake.
    Committed,
    /// Something failed for the storage's sake (the error's text).
    Failing(String),
    /// Nothing to tell (no write committed, nothing failed).
    Unknown,
}

/// The error given to the jobs of a transaction SQLite rolled back on its own.
fn rolled_back() -> rusqlite::Error {
    rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ABORT),
        Some("the write batch's transaction was rolled back by SQLite (disk full or I/O error)".into()),
    )
}

#[cfg(test)]
mod tests;
