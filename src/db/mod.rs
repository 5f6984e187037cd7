//! The SQLite store: a pool of reader connections and one writer connection that batches commits.
//!
//! Every connection gets the pragmas of SPEC §2. Reads run on the caller's thread with a pooled
//! connection, or, when they follow writes closely, on the writer's connection
//! ([`Db::read_on_writer`]: its cache is never stale). Writes never race: they are closures queued for the one writer connection. The
//! caller that finds the writer free (after yielding once, so that the other tasks ready on its
//! thread queue their writes too) becomes the *leader*: on its own thread, it opens a
//! `BEGIN IMMEDIATE` transaction, runs every job waiting in the queue (each inside its own
//! savepoint, so one failing job rolls back alone), commits once, and only then answers each
//! caller. A lone writer thus pays no thread hand-off, and concurrent writers share commits. Many concurrent writers therefore cost one fsync-free WAL commit per batch (group
//! commit) and never see `SQLITE_BUSY` from each other; LiteFS sees few transactions.

pub mod admin_tokens;
pub mod api_keys;
pub mod flag_changes;
pub mod messages;
pub mod migrate;
pub mod organizations;
pub mod run_events;
pub mod runs;
pub mod sessions;
pub mod users;
pub mod workers;

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::Connection;
use tokio::sync::oneshot;

/// Pragmas applied to every connection, reader or writer. `page_size` takes effect only on a
/// new, empty file (before WAL mode is set); an existing database keeps its page size. 2 KiB
/// pages halve the bytes every commit checksums, copies and writes to the WAL (a commit
/// rewrites each page it touches, whole) for hearth's small rows; measured in
/// docs/PERFORMANCE.md. LiteFS and Litestream handle any page size.
const PRAGMAS: &str = "PRAGMA page_size = 2048;
PRAGMA journal_mode = WAL;
PRAGMA synchronous = NORMAL;
PRAGMA foreign_keys = ON;
PRAGMA busy_timeout = 5000;
PRAGMA temp_store = MEMORY;";

/// Prepared statements kept per connection: more than hearth has, so hot paths never re-parse.
///
/// A bare `LIMIT ?` would defeat the cache: SQLite re-prepares such a statement every time it is
/// run with a new binding (the limit can change its plan), so hearth writes `LIMIT +?N`. A test
/// below shows the difference, and another checks no `LIMIT ?` comes back.
const STATEMENT_CACHE: usize = 256;

/// How many queued write jobs one transaction may take at most.
const MAX_BATCH: usize = 512;

/// Failures of the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// SQLite refused or failed a statement.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// No pooled connection could be had.
    #[error("connection pool: {0}")]
    Pool(#[from] r2d2::Error),
    /// A stored JSON column did not parse.
    #[error("stored JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// The batch this write belonged to failed to commit.
    #[error("commit failed: {0}")]
    Commit(Arc<rusqlite::Error>),
    /// The write was dropped before it ran (the store is closing).
    #[error("the database writer has stopped")]
    WriterGone,
    /// A blocking task panicked or was cancelled.
    #[error("database task failed: {0}")]
    Task(String),
    /// Opening the database file failed.
    #[error("cannot open database {path}: {reason}")]
    Open {
        /// The file that could not be opened.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

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
struct Writer {
    conn: Mutex<Connection>,
    queue: Mutex<VecDeque<Queued>>,
    /// Batches committed so far (the checkpoint loop skips a pass when it has not moved).
    commits: AtomicU64,
    /// Write jobs those batches carried (per commit: how many writers shared it).
    writes: AtomicU64,
}

/// Handle to the store; cheap to clone.
#[derive(Clone)]
pub struct Db {
    pool: r2d2::Pool<SqliteConnectionManager>,
    writer: Arc<Writer>,
    path: Arc<PathBuf>,
}

impl Db {
    /// Opens (creating if needed) the database at `path` with `readers` pooled read connections.
    ///
    /// # Errors
    /// When the directory or the file cannot be created or opened.
    pub fn open(path: &Path, readers: u32) -> Result<Self, DbError> {
        let open_err = |reason: String| DbError::Open { path: path.to_path_buf(), reason };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| open_err(e.to_string()))?;
        }
        let writer_conn = Connection::open(path).map_err(|e| open_err(e.to_string()))?;
        writer_conn.execute_batch(PRAGMAS).map_err(|e| open_err(e.to_string()))?;
        writer_conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        // Commits run on request threads: they must not also copy the WAL back into the database
        // now and then. `checkpoint` does that in the background instead.
        // Once the log starts over, its file is cut back to this size (bytes).
        writer_conn
            .execute_batch("PRAGMA wal_autocheckpoint = 0; PRAGMA journal_size_limit = 67108864")
            .map_err(|e| open_err(e.to_string()))?;
        let manager = SqliteConnectionManager::file(path).with_init(|c| {
            c.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
            c.execute_batch(PRAGMAS)
        });
        let pool = r2d2::Pool::builder()
            .max_size(readers.max(1))
            .min_idle(Some(1))
            .connection_timeout(Duration::from_secs(10))
            .build(manager)
            .map_err(|e| open_err(e.to_string()))?;
        let writer = Arc::new(Writer {
            conn: Mutex::new(writer_conn),
            queue: Mutex::new(VecDeque::new()),
            commits: AtomicU64::new(0),
            writes: AtomicU64::new(0),
        });
        Ok(Self { pool, writer, path: Arc::new(path.to_path_buf()) })
    }

    /// The database file.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` with a pooled read connection. Reads in WAL mode never wait on writers, and
    /// hearth's reads are short indexed lookups, so they run on the caller's thread: a hand-off
    /// to another thread would cost more than the read.
    ///
    /// # Errors
    /// Whatever `f` returns, or a pool failure.
    pub async fn read<T, F>(&self, f: F) -> Result<T, DbError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, DbError> + Send + 'static,
    {
        let conn = self.pool.get()?;
        f(&conn)
    }

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

/// An in-memory database at the latest schema with foreign keys off, for tests of one table's
/// SQL on its own (no parent rows to point at).
#[cfg(test)]
pub(crate) fn bare_schema() -> Connection {
    let conn = Connection::open_in_memory().unwrap();
    migrate::migrate_to(&conn, None).unwrap();
    conn.execute_batch("PRAGMA foreign_keys = OFF").unwrap();
    conn
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
    fn lead(&self) {
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

    /// Copies committed WAL frames back into the database file (`PASSIVE`: never waits on
    /// readers, and leaves frames Litestream has not read yet to a later pass), in two steps:
    /// the bulk from a reader connection while writes go on, then the few frames committed
    /// meanwhile on the writer's connection between two batches (when `catch_up`: writes wait
    /// for it, `fsync`s included). With no commit landing during that second pass the whole log
    /// is usually backfilled, so the next write transaction starts the WAL over from its
    /// beginning. (A checkpoint from another connection alone never catches up with the last
    /// commit under steady writes, and the WAL grew without bound: 1.2 GB in a ten-minute
    /// benchmark.) Runs on the blocking pool; `serve` decides when, and whether to catch up.
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

/// Rows one multi-row `INSERT` carries at most. A turn's events (or messages) go in one
/// statement rather than one each: SQLite's per-statement work (cursors opened, the tree
/// descended from the root, the statement reset) is most of a small row's cost.
pub const ROWS_PER_INSERT: usize = 8;

/// Multi-row `INSERT`s of one shape, for 1 to [`ROWS_PER_INSERT`] rows, each built once.
pub struct RowsInsert {
    head: &'static str,
    row: &'static str,
    shared: usize,
    per_row: usize,
    built: std::sync::OnceLock<Vec<String>>,
}

impl RowsInsert {
    /// `head VALUES row, row, …`: in `row`, `?N` (N ≤ `shared`) is a parameter every row shares
    /// and `$K` (K from 0 to `per_row` − 1) the row's own K-th, numbered after the shared ones
    /// row by row.
    #[must_use]
    pub const fn new(head: &'static str, row: &'static str, shared: usize, per_row: usize) -> Self {
        Self { head, row, shared, per_row, built: std::sync::OnceLock::new() }
    }

    /// The statement for `n` rows (clamped to 1..=[`ROWS_PER_INSERT`]).
    pub fn sql(&self, n: usize) -> &str {
        let all = self.built.get_or_init(|| {
            (1..=ROWS_PER_INSERT)
                .map(|n| {
                    let rows: Vec<String> = (0..n)
                        .map(|i| {
                            (0..self.per_row).rev().fold(self.row.to_owned(), |row, k| {
                                row.replace(&format!("${k}"), &format!("?{}", self.param(i, k)))
                            })
                        })
                        .collect();
                    format!("{} VALUES {}", self.head, rows.join(", "))
                })
                .collect()
        });
        all.get(n.clamp(1, ROWS_PER_INSERT) - 1).map_or("", String::as_str)
    }

    /// The number of row `i`'s own `k`-th parameter.
    #[must_use]
    pub const fn param(&self, i: usize, k: usize) -> usize {
        self.shared + 1 + i * self.per_row + k
    }
}

/// A value bound as its JSON text, written straight into one buffer (a `Value`'s `Display`
/// goes through the formatting machinery, write by write: ~7 % of a chat turn's instructions
/// before this). A value that does not serialize fails the statement: nothing is stored as
/// `null` in its place.
pub struct JsonText<'a, T: serde::Serialize + ?Sized = serde_json::Value>(pub &'a T);

impl<T: serde::Serialize + ?Sized> rusqlite::ToSql for JsonText<'_, T> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        let text = serde_json::to_string(self.0)
            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
        Ok(rusqlite::types::ToSqlOutput::from(text))
    }
}

/// Milliseconds since the Unix epoch, the unit of every stored timestamp.
#[must_use]
pub fn now_ms() -> i64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    i64::try_from(now.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open_temp() -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("t.db"), 4).unwrap();
        (dir, db)
    }

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

    #[tokio::test]
    async fn every_connection_has_the_pragmas() {
        let (_dir, db) = open_temp();
        let (mode, fk, timeout, sync): (String, i64, i64, i64) = db
            .read(|c| {
                Ok((
                    c.query_row("PRAGMA journal_mode", [], |r| r.get(0))?,
                    c.query_row("PRAGMA foreign_keys", [], |r| r.get(0))?,
                    c.query_row("PRAGMA busy_timeout", [], |r| r.get(0))?,
                    c.query_row("PRAGMA synchronous", [], |r| r.get(0))?,
                ))
            })
            .await
            .unwrap();
        assert_eq!((mode.as_str(), fk, sync), ("wal", 1, 1));
        assert!(timeout >= 5000);
        let page: i64 = db.read(|c| Ok(c.query_row("PRAGMA page_size", [], |r| r.get(0))?)).await.unwrap();
        assert_eq!(page, 2048, "a new database gets 2 KiB pages");
    }

    #[tokio::test]
    async fn an_existing_database_keeps_its_page_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        {
            let old = Connection::open(&path).unwrap();
            old.execute_batch(
                "PRAGMA page_size = 4096; PRAGMA journal_mode = WAL; CREATE TABLE t (x INTEGER)",
            )
            .unwrap();
            old.execute("INSERT INTO t VALUES (7)", []).unwrap();
        }
        let db = Db::open(&path, 2).unwrap();
        db.write(|c| Ok(c.execute("INSERT INTO t VALUES (8)", []).map(|_| ())?)).await.unwrap();
        let (page, sum): (i64, i64) = db
            .read(|c| {
                Ok((
                    c.query_row("PRAGMA page_size", [], |r| r.get(0))?,
                    c.query_row("SELECT sum(x) FROM t", [], |r| r.get(0))?,
                ))
            })
            .await
            .unwrap();
        assert_eq!((page, sum), (4096, 15));
        let ok: String =
            db.read(|c| Ok(c.query_row("PRAGMA integrity_check", [], |r| r.get(0))?)).await.unwrap();
        assert_eq!(ok, "ok");
    }
}

#[cfg(test)]
mod statement_tests {
    use rusqlite::StatementStatus;

    use super::Connection;

    fn reprepares(sql: &str) -> i32 {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (k TEXT, n INTEGER, PRIMARY KEY (k, n)) WITHOUT ROWID").unwrap();
        for limit in 1..=3 {
            conn.prepare_cached(sql)
                .unwrap()
                .query_map(rusqlite::params!["k", limit], |_| Ok(()))
                .unwrap()
                .count();
        }
        conn.prepare_cached(sql).unwrap().get_status(StatementStatus::RePrepare)
    }

    #[test]
    fn a_bound_limit_is_written_so_the_statement_is_not_prepared_again() {
        let bare = concat!("SELECT n FROM t WHERE k = ?1 ORDER BY n LIMIT ", "?2");
        assert!(reprepares(bare) > 0, "SQLite changed: revisit");
        assert_eq!(reprepares("SELECT n FROM t WHERE k = ?1 ORDER BY n LIMIT +?2"), 0);
    }

    /// Every source file of `src/db` (where the SQL lives), with its text.
    fn db_sources() -> Vec<(std::path::PathBuf, String)> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/db");
        let paths = std::fs::read_dir(dir).unwrap().map(|entry| entry.unwrap().path());
        paths.map(|path| (path.clone(), std::fs::read_to_string(&path).unwrap())).collect()
    }

    #[test]
    fn no_statement_binds_a_bare_limit() {
        for (path, text) in db_sources() {
            // `LIMIT ?` and a parameter number: a bound limit as SQL writes it.
            let bare = text
                .match_indices("LIMIT ?")
                .filter(|(at, m)| text[at + m.len()..].chars().next().is_some_and(|c| c.is_ascii_digit()));
            assert_eq!(bare.count(), 0, "{} binds a bare `LIMIT ?`: write `LIMIT +?N`", path.display());
        }
    }

    #[test]
    fn a_long_constant_in_list_opens_a_temporary_table_each_run() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (k TEXT, s TEXT); CREATE INDEX t_ks ON t (k, s);").unwrap();
        let temporary = |sql: &str| {
            let mut stmt = conn.prepare(&format!("EXPLAIN {sql}")).unwrap();
            let ops: Vec<String> = stmt.query_map([], |r| r.get(1)).unwrap().map(Result::unwrap).collect();
            ops.iter().filter(|op| *op == "OpenEphemeral").count()
        };
        assert!(temporary(concat!("SELECT 1 FROM t WHERE k = 'a' AND s IN ", "('x', 'y', 'z')")) > 0);
        assert_eq!(temporary("SELECT 1 FROM t WHERE k = 'a' AND s = 'x'"), 0);
    }

    #[test]
    fn no_statement_has_a_long_constant_in_list() {
        // See the test above: each run of such a statement builds and drops a b-tree (the runs
        // status CHECK and the session-settling query cost ~11 % of a turn's instructions).
        for (path, text) in db_sources() {
            for (at, _) in text.match_indices("IN ('") {
                let list = &text[at + "IN ".len()..];
                let list = &list[..list.find(')').unwrap_or(list.len())];
                assert!(
                    list.matches(',').count() < 2,
                    "{}: `IN {list})`: write equalities (or list at most two values)",
                    path.display()
                );
            }
        }
    }
}

#[cfg(test)]
mod wal_tests {
    use super::*;

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
        let (mut largest, mut passes) = (0, 0);
        while !writer.is_finished() {
            let (frames, _) = db.checkpoint(true).await.unwrap();
            (largest, passes) = (largest.max(frames), passes + 1);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        writer.await.unwrap();
        // Each write adds at least one frame: a log that never started over would hold them all.
        assert!(passes > 4, "too few checkpoints ran ({passes}) to tell");
        assert!(largest < writes / 2, "the WAL kept growing: {largest} frames after {writes} writes");
    }
}
